"""Your own flax.nnx model, tuned by hypergrad exactly like a built-in problem.

The recipe (the README's): put the module in eval mode (`model.eval()`) and split it once,
`graphdef, params, rest = nnx.split(model, nnx.Param, ...)`, for its static graph definition and
the state that is not trained; `init(key)` builds the module with `nnx.Rngs(key)` and returns its
`nnx.Param` state (the parameters pytree); the losses merge the Params back with the rest,
`nnx.merge(graphdef, params, rest)(x)`. Only Params train: a model with BatchNorm or Dropout runs
in eval mode, its running statistics held fixed and dropout off, because the training loss is a
pure function of (params, hparams, batch) (no per-step state, no dropout key); a model in train
mode is refused. Here a residual MLP with LayerNorm (Params only, so `rest` is empty) on
scikit-learn's digits, tuned three ways within one budget of training runs: the hypergradient and
random search spend it; grid search runs the largest full grid that fits (3 points per axis, 27 of 60
runs; 4 per axis would be 64), and the report lines all three up at equal compute (`hg.compare`).

    python experiments/custom_nnx_model.py            # a short study (about a minute on 2 cores)
    python experiments/custom_nnx_model.py --smoke    # seconds, for CI

It writes report.md and trials.jsonl into --out (default results/custom_nnx_model; with --smoke
results/smoke/custom_nnx_model), a previous run's two moved into <out>/previous/ first. Each strategy's
result (its numbers, best and final trials: `_progress.result_record`) is kept in
<out>/custom_nnx_model.partial.json as it finishes, so an interrupted run leaves what it measured; the report
removes the file. A rerun does not resume from it: the three units are `hg.Result`s that `hg.compare` lines
up, which JSON does not give back as they were, so the rerun moves the file aside
(custom_nnx_model.partial.previous.json) and measures all three again (`_progress`'s keeping-only kind).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import hypergrad as hg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the experiments' helpers, also when this file is loaded by path rather than run
try:
    import _claims
    import _progress
finally:
    sys.path.remove(HERE)

NAME = "custom_nnx_model"


class ResidualMLP(nnx.Module):
    def __init__(self, d_in: int, width: int, num_classes: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(d_in, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.hidden = nnx.Linear(width, width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.gelu(self.embed(x))
        h = h + jax.nn.gelu(self.hidden(self.norm(h)))
        return self.head(h)


def build_problem(width: int, batch_size: int) -> hg.Problem:
    # Any arrays will do; here the built-in digits problem's train / validation / test splits.
    digits = hg.problems.mlp_classifier("digits", batch_size=batch_size)
    d_in, num_classes = digits.train_data[0].shape[1], 10

    def make(rngs):
        model = ResidualMLP(d_in, width, num_classes, rngs=rngs)
        model.eval()  # BatchNorm and Dropout, had it any, in inference mode (eval returns None)
        return model

    # The static structure and the state that is not trained (BatchNorm's statistics, RNG state:
    # none here), held fixed; only the nnx.Param leaves are the parameters.
    graphdef, _, rest = nnx.split(make(nnx.Rngs(0)), nnx.Param, ...)

    def logits(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def cross_entropy(params, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

    def train_loss(params, hparams, batch):
        l2 = sum(jnp.sum(w**2) for path, w in jax.tree_util.tree_leaves_with_path(params)
                 if "kernel" in jax.tree_util.keystr(path))
        return cross_entropy(params, batch) + 0.5 * hparams["weight_decay"] * l2

    def accuracy(params, batch):
        x, y = batch
        return (logits(params, x).argmax(-1) == y).mean()

    return hg.Problem(
        init=lambda key: nnx.split(make(nnx.Rngs(key)), nnx.Param, ...)[1],
        train_loss=train_loss,
        val_loss=cross_entropy,
        train_data=digits.train_data, val_data=digits.val_data, test_data=digits.test_data,
        batch_size=batch_size,
        metrics={"accuracy": accuracy},
        name="digits-residual-mlp",
    )


def set_aside(out: str, outputs=("report.md", "trials.jsonl")) -> None:
    """Creates `out` if missing and moves the last run's `outputs` in it together into `out/previous/`
    (replacing the older run's there), so that the folder's files describe one run, as `hypergrad compare`
    starts a fresh log."""
    os.makedirs(out, exist_ok=True)
    found = [name for name in outputs if os.path.exists(os.path.join(out, name))]
    if not found:
        return
    previous = os.path.join(out, "previous")
    os.makedirs(previous, exist_ok=True)
    for name in outputs:  # the older run's files go first, so previous/ never mixes two runs
        if os.path.exists(os.path.join(previous, name)):
            os.remove(os.path.join(previous, name))
    for name in found:
        os.replace(os.path.join(out, name), os.path.join(previous, name))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", help="a folder (default results/custom_nnx_model; with --smoke "
                                      "results/smoke/custom_nnx_model)")
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join("results", *(["smoke"] if args.smoke else []), "custom_nnx_model")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: is a file, not a folder; give a folder (it is created if missing)")
    # --smoke's budget, 8 = 2^3: the grid's 8 points (2 per axis) run in random search's program of 8 trials,
    # compiled once (a budget of 6 made a 1-point grid, a program of its own: one more compilation)
    steps, width, budget = (10, 8, 8) if args.smoke else (100, 64, 60)

    problem = build_problem(width, batch_size=32 if args.smoke else 100)
    objective = hg.Objective(
        problem, lambda h: optax.adamw(lambda t: h["lr"][t], b1=h["b1"], weight_decay=0.0), num_steps=steps)
    space = hg.Space({
        "lr": hg.LogUniform(1e-4, 1e-1, shape=(steps,)),
        "b1": hg.Uniform(0.5, 0.99),
        "weight_decay": hg.LogUniform(1e-6, 1e-1),
    })
    key = jax.random.key(0)
    # A fresh log, as `hypergrad compare` starts one: the last run's report and trials are moved
    # together into <out>/previous/ rather than appended to.
    set_aside(args.out)
    log = os.path.join(args.out, "trials.jsonl")
    # Each strategy's result kept as it finishes (keeping only: a rerun measures all three again).
    progress = _progress.Progress(args, NAME, {"steps": steps, "width": width, "budget": budget}, resume=False)
    step_runs = hg.tune_step_cost(objective, space, key)
    strategies = {
        "hypergradient": lambda: hg.tune(objective, space, key, steps=max(1, int(budget / step_runs) - 1),
                                         outer=optax.adam(0.1), log=log),
        "random": lambda: hg.random_search(objective, space, key, num_trials=budget, log=log),
        "grid": lambda: hg.grid_search(objective, space, key, points_per_axis=max(1, int(budget ** (1 / 3))),
                                       log=log),
    }
    results = {name: progress.unit(name, measure, _progress.result_record) for name, measure in strategies.items()}
    report = hg.compare(results)
    print(report.to_markdown())
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(report.to_markdown() + "\n")
    if os.path.exists(_claims.partial_path(args.out, NAME)):
        os.remove(_claims.partial_path(args.out, NAME))  # the report is written: the kept units are in it
    for name, result in results.items():
        assert result.best_trial is not None, f"{name} found no finite setting"
    return report


if __name__ == "__main__":
    main()
