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
"""

from __future__ import annotations

from collections.abc import Callable

import optax

from hypergrad.objective import Objective
from hypergrad.problem import Problem
from hypergrad.problems.logistic import logistic
from hypergrad.problems.mlp import mlp_classifier, noisy_mlp_classifier
from hypergrad.space import LogUniform, Space, Uniform

__all__ = ["PRESETS", "preset", "sgd_momentum_schedule"]


def sgd_momentum_schedule(hparams):
    """SGD with momentum whose step t uses the learning rate hparams["lr"][t]."""
    return optax.sgd(lambda step: hparams["lr"][step], momentum=hparams["momentum"])


PRESETS: dict[str, tuple[Callable[[], Problem], int]] = {
    "digits-mlp": (lambda: mlp_classifier("digits", hidden=(50,), batch_size=100), 200),
    "iris-mlp": (lambda: mlp_classifier("iris", hidden=(50,), batch_size=30), 200),
    "breast-cancer-logistic": (lambda: logistic("breast_cancer", batch_size=64), 200),
    "digits-noisy": (lambda: noisy_mlp_classifier("digits", noise=0.3, hidden=(50,), batch_size=100), 200),
}
EXAMPLE_WEIGHTS = ("digits-noisy",)
"""Presets whose space adds one weight per training example."""


def preset(name: str, num_steps: int | None = None) -> tuple[Objective, Space]:
    """The objective and space of a named set-up.

    Args:
        name: one of `PRESETS` ("digits-mlp", "iris-mlp", "breast-cancer-logistic", "digits-noisy").
        num_steps: training steps T (default 200); the schedule has T entries.
    """
    if name not in PRESETS:
        raise ValueError(f"problem={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    make_problem, default_steps = PRESETS[name]
    steps = default_steps if num_steps is None else num_steps
    objective = Objective(make_problem(), sgd_momentum_schedule, steps)
    dists = {
        "lr": LogUniform(1e-3, 3.0, shape=(objective.num_steps,)),
        "momentum": Uniform(0.0, 0.99),
        "weight_decay": LogUniform(1e-6, 1e-1),
    }
    if name in EXAMPLE_WEIGHTS:
        dists["example_weight"] = Uniform(0.0, 1.0, shape=(objective.problem.num_train,))
    return objective, Space(dists)
