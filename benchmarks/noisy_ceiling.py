"""How far issue 14's digits-noisy target is from what cleaning the labels can give (issue 14, "Measure").

    .venv/bin/python benchmarks/noisy_ceiling.py --out benchmarks/noisy_ceiling.md   # `make bench-ceiling`
    .venv/bin/python benchmarks/noisy_ceiling.py --smoke --out /tmp/ceiling.md      # structure only, seconds

The target asks the population's pick to beat random search's test accuracy at equal wall time by
more than the spread over seeds (`benchmarks/populations.py`). On `digits-noisy` (30% of the
training labels flipped) every strategy is bounded by how well it undoes the flips. This script
measures, on the same seeds as `populations.py` (0..4, `jax.random.key(seed)`, fixed before any
result was seen), budget 300 training runs each, the CPU split into one JAX device per core as
`hypergrad compare` does:

- oracle: the example weights fixed to the truth (1 for a clean example, 0 for a flipped one,
  `hg.problems.preset_corrupted_examples`) and random search over the other hyperparameters
  (rate, momentum, weight decay) with the whole budget: a ceiling no strategy that must find the
  flips itself is expected to pass;
- population: `hg.tune` with the plan `hypergrad compare` uses (`cli._budget_plan`), the training
  key fixed, by `hg.Reverse()` (the CLI's strategy on this preset until `--method auto` moved it to
  `hg.Implicit` holding the rates and momentum: `benchmarks/populations.py` measures that one);
- population, resample_key: the same plan with `resample_key=True` (a fresh training key per outer
  step), the remedy the README offers against fitting one key's noise;
- random: random search over the constants (one weight shared by every example), the budget's trials.

Each pick is the strategy's lowest validation loss; its test accuracy is reported, and for the
populations the ROC AUC with which the pick's example weights separate the flipped examples from
the clean ones (1: every flipped example weighted below every clean one). Wall seconds are not
compared here (`populations.py` does that), so the machine's load does not matter.

`--smoke`: T=10, budget 30, seed 0, and the caches kept between strategies (a program compiled once, not per
strategy: the results are the same); numbers mean little.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from hypergrad import cli
from hypergrad.problems.presets import preset, preset_corrupted_examples

import _common as common  # this directory's shared helpers

PRESET = "digits-noisy"
OUTER_LR = 0.1  # the CLI's default --outer-lr
STRATEGIES = ("oracle", "population", "population, resample_key", "random")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _without(space: hg.Space, name: str) -> hg.Space:
    return hg.Space({key: dist for key, dist in space.items if key != name})


def _auc(result, corrupted: np.ndarray) -> float:
    """ROC AUC with which the pick's example weights mark the flipped examples (a lower weight, a flip), as
    `hypergrad compare`'s report computes it."""
    return float(cli._weights_against_corruption({"pick": result}, corrupted)["pick"][2])


def one_seed(objective, space, corrupted: np.ndarray, seed: int, budget: float, fresh: bool = True) -> dict:
    """Every strategy on one training key, each from empty caches (`fresh=False`, the smoke's: caches kept, so
    a program another strategy compiled is not compiled again); {strategy: (test accuracy, AUC or None)}."""
    key = jax.random.key(seed)
    clear = hg.clear_caches if fresh else (lambda: None)
    clear()
    step_runs = hg.tune_step_cost(objective, space, key, hg.Reverse())
    padded = lambda n: cli._rows_run(n, cli.DEFAULT_CHUNK, jax.local_device_count())  # noqa: E731, as charged
    plan = cli._budget_plan(budget, step_runs, 1.0, len(space), rows=padded, warmup_rows=padded)
    trials = plan["random_trials"]
    oracle_objective = objective.with_fixed({"example_weight": jnp.asarray(~corrupted, jnp.float32)})
    runs = {
        "oracle": lambda: hg.random_search(oracle_objective, _without(space, "example_weight"), key, trials),
        "random": lambda: hg.random_search(objective, space, key, trials),
    }
    for name, resample in (("population", False), ("population, resample_key", True)):
        runs[name] = (lambda resample=resample: hg.tune(
            objective, space, key, method=hg.Reverse(), outer=optax.adam(OUTER_LR), steps=plan["tune_steps"],
            population=plan["population"], warmup=plan["warmup"], halving=plan["halving"], resample_key=resample))
    record = {"seed": seed, "plan": plan}
    for name in STRATEGIES:
        clear()
        started = time.perf_counter()
        result = runs[name]()
        record[name] = {"accuracy": float(result.best_trial.scores["test_accuracy"]),
                        "auc": _auc(result, corrupted) if name.startswith("population") else None,
                        "seconds": time.perf_counter() - started}
        log(f"seed {seed} {name}: test accuracy {record[name]['accuracy']:.4f}")
    return record


def render(records: list[dict]) -> tuple[list[str], list[str]]:
    """(the tables, the verdict lines) of the seeds measured so far."""
    per_seed = [[str(r["seed"]), *(f"{r[s]['accuracy']:.4f}" for s in STRATEGIES),
                 *(f"{r[s]['auc']:.3f}" for s in STRATEGIES[1:3])] for r in records]
    summary = []
    for name in STRATEGIES:
        accuracy = [r[name]["accuracy"] for r in records]
        auc = [r[name]["auc"] for r in records] if name.startswith("population") else None
        summary.append([name, common.median_range(accuracy), common.median_range(auc) if auc else "n/a"])
    random = [r["random"]["accuracy"] for r in records]
    verdicts = []
    for name in STRATEGIES[:3]:
        mine = [r[name]["accuracy"] for r in records]
        spread = max(max(mine) - min(mine), max(random) - min(random))
        margin = statistics.median(mine) - statistics.median(random)
        verdicts.append(f"{name}: median test accuracy minus random search's = {margin:+.4f} at equal compute, "
                        f"spread {spread:.4f}: {'beats it by more than the spread' if margin > spread else 'within it'}")
    return [
        "### Summary: median [min-max] over the seeds",
        common.table(["strategy", "test accuracy of pick", "ROC AUC of the pick's weights"], summary),
        "### Per seed: test accuracy of each pick, and the populations' ROC AUC",
        common.table(["seed", *STRATEGIES, "AUC population", "AUC population, resample_key"], per_seed),
    ], verdicts


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = common.report_parser(__doc__)
    args = parser.parse_args(argv)
    hg.use_cpu_cores()
    steps, budget, seeds = (10, 30.0, (0,)) if args.smoke else (None, 300.0, (0, 1, 2, 3, 4))
    objective, space = preset(PRESET, steps)
    corrupted = preset_corrupted_examples(PRESET)
    wall, records = time.perf_counter(), []
    for seed in seeds:
        records.append(one_seed(objective, space, corrupted, seed, budget, fresh=not args.smoke))
        tables, verdicts = render(records)
        done = len(records) == len(seeds)
        state = (f"whole run {time.perf_counter() - wall:.0f} s" if done
                 else f"**partial: {len(records)} of {len(seeds)} seeds so far**")
        header = [
            f"# {PRESET}: the target against the label-cleaning ceiling (issue 14)",
            f"Machine: jax {jax.__version__} on {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} "
            f"cores, {jax.local_device_count()} JAX devices); `benchmarks/noisy_ceiling.py {' '.join(argv) or ''}`; "
            f"{state}; budget {budget:g} training runs, T={objective.num_steps}, seeds {list(seeds)}.",
            "## Verdicts\n\n" + "\n".join(f"- {v}" for v in verdicts),
        ]
        common.write_report("\n\n".join(header + tables) + "\n", args.out, echo=done)


if __name__ == "__main__":
    main()
