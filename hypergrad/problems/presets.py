"""Named tuning set-ups: a built-in problem, its optimiser and its search space.

Each preset returns `(objective, space)` for the command line and for quick studies:
SGD with momentum driven by a per-step learning-rate schedule, with weight decay in the loss.

    lr              LogUniform(1e-3, 3.0, shape=(T,))   a per-step schedule (constant for baselines)
    momentum        Uniform(0.0, 0.99)
    weight_decay    LogUniform(1e-6, 1e-1)

`digits-noisy` is where gradients matter: digits with 30% of the training labels flipped (seeded)
and, besides the three above, one weight per training example (`example_weight`,
Uniform(0, 1, shape=(n_train,)), about 1,300 hyperparameters in all: data hyper-cleaning). The
baselines search the constants (one weight for every example, one rate for every step), as they do
for schedules; a gradient method can down-weight the corrupted examples one by one.

`digits-finetune` fine-tunes an MLP pretrained on digits 0-4 (cached on disk, `hg.problems.pretrained`)
on digits 5-9 with 10 labelled examples per class: one learning rate per layer, the L2-SP strength
and the warm-up length (`finetune_space`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax

from hypergrad._checks import check_count
from hypergrad.objective import Objective
from hypergrad.problem import Problem, as_problem
from hypergrad.problems.logistic import logistic
from hypergrad.problems.finetune import group_sgd, layer_groups, problem_groups
from hypergrad.problems.mlp import corrupted_examples, mlp_classifier, noisy_mlp_classifier
from hypergrad.problems.pretrained import digits_transfer
from hypergrad.space import LogUniform, Space, Uniform

__all__ = ["PRESETS", "finetune_space", "optimizer_hparams", "preset", "preset_corrupted_examples",
           "sgd_momentum_schedule"]


def sgd_momentum_schedule(hparams):
    """SGD with momentum whose step t uses the learning rate hparams["lr"][t]."""
    return optax.sgd(lambda step: hparams["lr"][step], momentum=hparams["momentum"])


_LABEL_NOISE = {"digits-noisy": {"dataset": "digits", "noise": 0.3}}
"""The data set and share of flipped training labels of each preset with label noise."""

PRESETS: dict[str, tuple[Callable[[], Problem], int]] = {
    "digits-mlp": (lambda: mlp_classifier("digits", hidden=(50,), batch_size=100), 200),
    "iris-mlp": (lambda: mlp_classifier("iris", hidden=(50,), batch_size=30), 200),
    "breast-cancer-logistic": (lambda: logistic("breast_cancer", batch_size=64), 200),
    "digits-noisy": (lambda: noisy_mlp_classifier(**_LABEL_NOISE["digits-noisy"], hidden=(50,), batch_size=100), 200),
    "digits-finetune": (lambda: digits_transfer(shots=10), 100),
}
FINETUNE = ("digits-finetune",)
"""Presets that fine-tune a pretrained model (`finetune_space`: per-layer rates, L2-SP, warm-up)."""
EXAMPLE_WEIGHTS = ("digits-noisy",)
"""Presets whose space adds one weight per training example."""


def preset(name: str, num_steps: int | None = None) -> tuple[Objective, Space]:
    """The objective and space of a named set-up.

    Args:
        name: one of `PRESETS` ("digits-mlp", "iris-mlp", "breast-cancer-logistic", "digits-noisy",
            "digits-finetune").
        num_steps: training steps T (default the preset's: 200, or 100 for "digits-finetune"); the
            schedule has T entries.

    Raises:
        ValueError: an unknown name, or `num_steps` not an int >= 1 (checked before the problem is
            built: "digits-finetune" pretrains its source model, seconds, on first use).
    """
    if name not in PRESETS:
        raise ValueError(f"problem={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    make_problem, default_steps = PRESETS[name]
    steps = default_steps if num_steps is None else check_count(num_steps, "num_steps")
    if name in FINETUNE:
        return finetune_space(make_problem(), steps)
    objective = Objective(make_problem(), sgd_momentum_schedule, steps)
    dists = {
        "lr": LogUniform(1e-3, 3.0, shape=(objective.num_steps,)),
        "momentum": Uniform(0.0, 0.99),
        "weight_decay": LogUniform(1e-6, 1e-1),
    }
    if name in EXAMPLE_WEIGHTS:
        dists["example_weight"] = Uniform(0.0, 1.0, shape=(objective.problem.num_train,))
    return objective, Space(dists)


def optimizer_hparams(name: str) -> tuple[str, ...]:
    """The hyperparameters of preset `name` that its optimiser reads and its training loss does not:
    the rate schedule and momentum (`sgd_momentum_schedule`), or for a fine-tuning preset the
    per-layer rates and the warm-up length (`group_sgd`). `hg.Implicit` cannot differentiate them
    (they change the path to a stationary point, not the point) and refuses them, so a tune by
    Implicit holds them (`tune(hold=...)`)."""
    if name not in PRESETS:
        raise ValueError(f"problem={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    return ("lr", "warmup") if name in FINETUNE else ("lr", "momentum")


def preset_corrupted_examples(name: str) -> np.ndarray | None:
    """Which training examples of preset `name` carry a flipped label (a boolean mask in the order
    of its `example_weight`s), for judging learned weights; None for a preset without label noise."""
    if name not in PRESETS:
        raise ValueError(f"problem={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    noise = _LABEL_NOISE.get(name)
    return None if noise is None else corrupted_examples(**noise)


def finetune_space(problem: Problem, num_steps: int) -> tuple[Objective, Space]:
    """A fine-tuning problem's objective (`group_sgd`, momentum 0.9) and its space: one rate per
    layer (`lr`, shape (layers,); the baselines search one rate shared by every layer), the L2-SP
    strength and the warm-up length (from 1, where `warmup_ramp` starts acting: any length up to 1
    is no warm-up and gets a zero hypergradient, to a quarter of the steps, at least 2). Three
    scalars for the grid. The groups are those `finetune` built the problem with, or the problem
    it is a copy of (`problem_groups(problem, copies=True)`: `problem.with_fixed({"l2sp": 0.1})`
    keeps the original's), else one per layer (`layer_groups` of its initial parameters).
    `problem` must be an `hg.Problem` (a preset's name or an Objective is a ValueError showing the
    call that fits) and `num_steps` an int >= 1 (a ValueError names it), both checked before the
    problem's `init` runs."""
    problem = _checked_finetune_problem(problem)
    num_steps = check_count(num_steps, "num_steps")
    groups = problem_groups(problem, copies=True)  # the groups finetune built it with: its penalties count them
    if groups is None:  # a problem another constructor built: one group per layer (a with_fixed copy's init takes h)
        groups = layer_groups(problem.initial_params(jax.random.key(0), {}))
    space = Space({
        "lr": LogUniform(1e-3, 1.0, shape=(len(groups),)),
        "l2sp": LogUniform(1e-4, 1.0),
        "warmup": Uniform(1.0, max(2.0, num_steps / 4)),
    })
    return Objective(problem, group_sgd(groups), num_steps), space


def _checked_finetune_problem(problem: object) -> Problem:
    """`problem` if it is an `hg.Problem`; a ValueError showing the fix for a preset's name or an
    Objective (the two slips that failed with "'str' object has no attribute 'init'")."""
    if isinstance(problem, str):
        hint = (f"for the preset's objective and space call hg.problems.preset({problem!r})" if problem in PRESETS
                else f"the presets are {sorted(PRESETS)}, built with hg.problems.preset(name)")
        raise ValueError(f"finetune_space(problem={problem!r}) takes a fine-tuning hg.Problem, not a name; {hint}")
    if isinstance(problem, Objective):
        raise ValueError("finetune_space(problem=...) was given an hg.Objective; it builds the objective itself: "
                         "pass the problem, finetune_space(objective.problem, num_steps)")
    return as_problem(problem)
