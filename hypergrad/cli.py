"""The `hypergrad` command.

    hypergrad compare --problem digits-mlp --budget 300 --out results/digits-mlp

runs gradient tuning, random search and grid search on a preset problem at the same compute
budget (in training-run equivalents), shows progress on stderr, prints the comparison table and
writes into DIR:

- `trials.jsonl`: every trial of every strategy, appended as it is produced;
- `results.json`: each strategy's full result and the comparison;
- `report.md`: the set-up, the comparison tables and the picks;
- PNG plots: best validation loss against compute; the learned schedule beside the best constant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np
import optax

import hypergrad as hg
from hypergrad.problems.presets import PRESETS, preset
from hypergrad._batching import balanced_chunk
from hypergrad.tune import tune_step_cost

__all__ = ["main"]


def _budget_plan(budget: float, step_runs: float, trial_runs: float, num_grid_axes: int) -> dict[str, int]:
    """How many tune steps, random trials and grid points fit in `budget` training runs."""
    steps = max(1, math.floor(budget / step_runs) - 1)  # the final iterate costs one more step
    trials = max(1, math.floor(budget / trial_runs))
    points = max(1, math.floor((budget / trial_runs) ** (1.0 / num_grid_axes) + 1e-9))
    return {"tune_steps": steps, "random_trials": trials, "grid_points_per_axis": points}


def _check_args(args: argparse.Namespace) -> None:
    if args.budget <= 0:
        raise SystemExit(f"--budget {args.budget}: give a positive number of training runs")
    if args.cpu_devices < 0:
        raise SystemExit(f"--cpu-devices {args.cpu_devices}: give 0 (one device per core) or a positive count")


def _use_devices(cpu_devices: int) -> None:
    """One JAX device per core (or `cpu_devices`), before anything computes, so searches shard."""
    if cpu_devices == 1:
        return
    try:
        hg.use_cpu_cores(None if cpu_devices == 0 else cpu_devices)
    except RuntimeError:  # main() called from a Python process where JAX is already running
        print("[devices] JAX had already started: searches use its devices as they are", file=sys.stderr)


def _fresh_log(out: str) -> str:
    """The trials log in `out`, the last run's kept aside rather than mixed in."""
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "trials.jsonl")
    if os.path.exists(log):
        os.replace(log, log + ".previous")
    return log


def _run_strategies(args, objective, space, key, method, plan, log, say) -> dict[str, hg.Result]:
    """Tune, random search and grid search, each within the plan's share of the budget."""
    # Chunks as equal as the memory bound allows, so padding wastes (almost) none of the budget, and
    # a multiple of the devices, so each chunk shards evenly across them.
    devices = jax.local_device_count()

    def chunk_for(num_trials):
        return math.ceil(balanced_chunk(num_trials, args.chunk_size) / devices) * devices

    progress = say or False
    return {
        "hypergradient": hg.tune(objective, space, key, method=method, outer=optax.adam(args.outer_lr),
                                 steps=plan["tune_steps"], log=log, progress=progress),
        "random": hg.random_search(objective, space, key, plan["random_trials"],
                                   chunk_size=chunk_for(plan["random_trials"]), log=log, progress=progress),
        "grid": hg.grid_search(objective, space, key, plan["grid_points_per_axis"],
                               chunk_size=chunk_for(plan["grid_points_per_axis"] ** len(space)),
                               log=log, progress=progress),
    }


def _write_outputs(args, objective, space, plan, results, elapsed) -> int:
    """Prints the comparison table; writes results.json, the plots (when matplotlib is there) and
    report.md into `args.out`. Returns the number of plots written."""
    report = hg.compare(results)
    table = report.to_markdown()
    print(table)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"problem": args.problem, "budget": args.budget, "plan": plan,
                   "comparison": report.to_dict(),
                   "results": {name: r.to_dict() for name, r in results.items()}}, f, indent=1)
    plots = []
    try:
        plots = report.plot(args.out)
    except ImportError as err:
        print(f"[plots skipped] {err}", file=sys.stderr)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(_report_markdown(args, objective, space, plan, results, table, plots, elapsed))
    return len(plots)


def _compare(args: argparse.Namespace) -> int:
    _check_args(args)
    _use_devices(args.cpu_devices)
    objective, space = preset(args.problem, args.steps)
    key = jax.random.key(args.seed)
    log = _fresh_log(args.out)
    method = hg.Reverse(checkpoint_every=args.checkpoint_every)
    plan = _budget_plan(args.budget, tune_step_cost(objective, space, key, method), 1.0, len(space))
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.quiet else None
    if say:
        say(f"[plan] budget {args.budget:g} training runs of {objective.problem.name} (T={objective.num_steps}): "
            f"{plan['tune_steps']} tune steps, {plan['random_trials']} random trials, "
            f"{plan['grid_points_per_axis']}^{len(space)} grid points")
    started = time.perf_counter()
    results = _run_strategies(args, objective, space, key, method, plan, log, say)
    elapsed = time.perf_counter() - started
    num_plots = _write_outputs(args, objective, space, plan, results, elapsed)
    print(f"\nwrote {args.out}/report.md, trials.jsonl, results.json and {num_plots} plots "
          f"in {elapsed:.0f}s", file=sys.stderr)
    return 0


def _describe(hparams) -> str:
    parts = []
    for name, value in (hparams or {}).items():
        value = np.asarray(value)
        if value.ndim == 0:
            parts.append(f"{name}={value.item():.4g}")
        elif np.allclose(value, value.flat[0]):
            parts.append(f"{name}=constant {value.flat[0]:.4g}")
        else:
            parts.append(f"{name}=schedule {value.flat[0]:.3g} -> {value.flat[-1]:.3g} "
                         f"(min {value.min():.3g}, max {value.max():.3g})")
    return ", ".join(parts)


def _report_markdown(args, objective, space, plan, results, table, plots, elapsed) -> str:
    lines = [
        f"# hypergrad compare: {args.problem}",
        "",
        f"Budget: {args.budget:g} training runs (T={objective.num_steps} steps each) per strategy; seed {args.seed}; "
        f"{elapsed:.0f}s wall in all.",
        f"Plan: {plan['tune_steps']} outer steps of `tune` (Reverse, Adam {args.outer_lr} in unconstrained "
        f"coordinates), {plan['random_trials']} random trials, a {plan['grid_points_per_axis']}-point grid per axis.",
        "",
        "Space: " + ", ".join(f"`{name}`: {dist}" for name, dist in space.items),
        "",
        "Compute is counted in training-run equivalents: XLA FLOPs of each program (accounted per",
        "training step) divided by the FLOPs of one training run (training plus scoring the trained",
        "parameters, which is one search trial). Every strategy trains with the same key, so all tune",
        "one deterministic function; the pick is the lowest validation loss within the budget, and",
        "its test loss is reported. Compile seconds are separate from run seconds.",
        "",
        table,
        "",
        "## Picks",
        "",
    ]
    for name, result in results.items():
        best = result.best_trial
        lines.append(f"- **{name}**: {result.summary()}")
        if best is not None:
            lines.append(f"  - {_describe(best.hparams)}")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypergrad", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmp = commands.add_parser("compare", help="gradient tuning vs random vs grid search at equal compute")
    cmp.add_argument("--problem", default="digits-mlp", choices=sorted(PRESETS))
    cmp.add_argument("--budget", type=float, default=300, help="training-run equivalents per strategy")
    cmp.add_argument("--out", default="results", help="output folder")
    cmp.add_argument("--steps", type=int, default=None, help="training steps T (default: the preset's)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--outer-lr", type=float, default=0.1, help="Adam step of tune, unconstrained coordinates")
    cmp.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint segments for Reverse")
    cmp.add_argument("--chunk-size", type=int, default=64, help="trials per vmapped call of the baselines")
    cmp.add_argument("--cpu-devices", type=int, default=0,
                     help="JAX CPU devices that searches shard their trials over (0: one per core; 1: one device)")
    cmp.add_argument("--quiet", action="store_true", help="no progress lines")
    cmp.set_defaults(run=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
