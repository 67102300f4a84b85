"""What a reverse-mode hypergradient costs, relative to one training run.

Problem: the digits MLP (`hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)`),
trained by `optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])` with weight decay in the loss,
in float32, for each horizon T given by `--steps` (default 200 and 1000). Rows, per T:

- `train`: one training run, the library's unit of compute (`hypergrad.search.run_flops`): training
  plus scoring the trained parameters on validation and test, i.e. one search trial,
  `jax.jit(lambda h, k, d: objective.loss_and_scores(h, k, d)[1])` with the data as an argument;
- `Reverse()` (per-step rematerialisation saving only each step's input state, `store="steps"`),
  `Reverse(store="residuals")` (plain autodiff of the scan: the behaviour before `store` existed),
  `Reverse(store="states")` (the hand-written VJP of the loop), `Reverse(checkpoint_every=1,
  store="residuals")`, and `Reverse(checkpoint_every=k)` with each store:
  `hg.hypergradient(objective, h, key, method=m)`, which also returns the value and computes the
  scores. k is the divisor of T closest to sqrt(T) (the smaller one on a tie): 10 at T=200, 25 at
  T=1000, 40 at T=2000. A divisor leaves no remainder segment, which `Loop.run(checkpoint_every=)`
  (`hypergrad.loop.in_segments`) would otherwise run as one more checkpointed scan of a different length (a second loop in the program).

Minibatch indices (`Problem.batch_indices`: the epoch sampler, a keyed permutation per epoch) are drawn
inside each step by the training run and by `store="residuals"`, and all at once before the loop
(vectorised, the same indices) by the stores "dots" and "states".

Columns:

- time: median seconds of one call after warm-up (`block_until_ready`), over `--repeats` repeats.
  The repeats of all rows of one T are interleaved (and their order rotated), so that slow periods
  of the machine hit every row alike; `x train` is the ratio to the training run's median, and
  `x train (min)` the ratio of the fastest calls (steadier when other processes share the CPUs).
  A method's time includes `hg.hypergradient`'s argument checks and cache look-up (well under a
  millisecond).
- compile: seconds to trace, lower and compile the program (`jax.jit(...).lower().compile()` for
  training; `hypergrad.hypergradient.compiled_value_and_grad` for the methods, which is the
  program `hg.hypergradient` runs).
- XLA temp / XLA total: `executable.memory_analysis()` of the compiled program: temporary buffers,
  and temporaries plus arguments plus outputs (MiB). Every program takes the data splits (about
  0.45 MiB) as an argument.
- RSS peak +: peak resident memory of a subprocess (this script with a hidden `--child` flag)
  that builds the problem, gets this one program and runs it twice, minus that of a baseline
  subprocess that builds the problem and runs the training program once (at the first T). The
  parent compiles every program into a temporary persistent compilation cache, which the
  subprocesses load from, so the peak is the program's, not the compiler's (compiling `Reverse()`
  in the child would add roughly 100-150 MiB of compiler peak). The peak is VmHWM, which is
  `ru_maxrss` without the inheritance across exec: Linux carries `ru_maxrss` over from the forked
  copy of the parent, so every child would otherwise report the parent's RSS.
- RSS run +: growth of resident memory while the program runs in that subprocess (the peak is
  reset through /proc/self/clear_refs just before the runs; "n/a" where that is not allowed).
  Subprocesses run with a fixed glibc mmap threshold so that large buffers freed earlier cannot
  be silently reused, which would hide the program's own allocations.
- GFLOP / x train: the program's FLOPs counted from its trace by `hypergrad.accounting` (the
  counts `hypergrad.search.run_flops` (train) and `hypergrad.tune.hypergradient_flops` (methods)
  report); a checkpointed row counts its recomputed forward pass.

Run (about 5 minutes with the defaults on 2 CPU cores shared at load average 7, less when idle;
`--no-rss` and `--no-flops` skip the subprocesses and the FLOP counts; `--append` adds
the table to `--out` instead of overwriting it):

    .venv/bin/python benchmarks/hypergradient_cost.py --out benchmarks/hypergradient_cost.md
    .venv/bin/python benchmarks/hypergradient_cost.py --steps 2000 --repeats 3 --out benchmarks/hypergradient_cost.md --append

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import statistics
import shutil
import sys
import tempfile
import time

import jax

from _common import (  # this directory's shared helpers
    Config, add_child_arguments, child, config_names, fmt, make_objective, make_problem, run_child,
    time_interleaved, use_compilation_cache, write_report,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 1000], help="horizons T")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP accounting")
    parser.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS measurements")
    parser.add_argument("--jobs", type=int, default=2, help="RSS subprocesses run at once")
    parser.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    add_child_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.child:
        child(args)
        return

    wall = time.perf_counter()
    cache_dir = None
    if not args.no_rss:  # compile once here, load in the RSS subprocesses
        cache_dir = tempfile.mkdtemp(prefix="hypergradient_cost_cache_")
        use_compilation_cache(cache_dir)
    try:
        rows, rss_note = measure(args, wall, cache_dir)
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    table = render(rows, args, rss_note, time.perf_counter() - wall)
    write_report(table, args.out, append=args.append)


def measure(args, wall: float, cache_dir: str | None):
    # One-time costs of the first compilation in a process (backend start-up, first traces of the
    # model) would otherwise land on the first row's compile seconds: pay them on a 1-step run.
    problem = make_problem()
    warm_objective, warm_hparams, warm_key = make_objective(problem, 1)
    jax.block_until_ready(Config("train", warm_objective, warm_hparams, warm_key).call())
    rows = []  # dicts, in print order
    train_flops = None
    flop_lines: dict = {}  # Config.flops's cache argument (accounting caches the counts itself)
    for num_steps in args.steps:
        objective, hparams, key = make_objective(problem, num_steps)
        configs = [Config(name, objective, hparams, key) for name in config_names(num_steps)]
        times = time_interleaved(configs, args.repeats)
        train_time = statistics.median(times["train"])
        for config in configs:
            median = statistics.median(times[config.name])
            temp, total = config.memory()
            fastest = min(times[config.name])
            row = {"T": num_steps, "name": config.name, "time": median,
                   "spread": (fastest, max(times[config.name])), "ratio": median / train_time,
                   "ratio_min": fastest / min(times["train"]), "compile": config.compile_seconds,
                   "xla_temp": temp, "xla_total": total, "flops": None}
            if not args.no_flops:
                row["flops"] = config.flops(flop_lines)
                if config.name == "train":
                    train_flops = row["flops"]
                row["flops_ratio"] = row["flops"] / train_flops
            rows.append(row)
        print(f"measured T={num_steps} at {time.perf_counter() - wall:.0f}s", file=sys.stderr, flush=True)

    if not args.no_rss:
        jobs = [("baseline", args.steps[0])] + [(row["name"], row["T"]) for row in rows]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda job: run_child(*job, cache_dir), jobs))
        baseline = results[0]["maxrss_kib"]
        for row, result in zip(rows, results[1:]):
            row["rss_peak"] = (None if baseline is None or result["maxrss_kib"] is None
                               else (result["maxrss_kib"] - baseline) / 1024)
            row["rss_run"] = None if result["run_kib"] is None else result["run_kib"] / 1024
        rss_note = (f"baseline subprocess peak RSS {baseline / 1024:.0f} MiB" if baseline is not None
                    else "baseline subprocess failed")
    else:
        rss_note = "RSS not measured (--no-rss)"
    return rows, rss_note


def render(rows, args, rss_note: str, seconds: float) -> str:
    header = ["T", "method", "time (s)", "x train", "x train (min)", "compile (s)", "XLA temp (MiB)",
              "XLA total (MiB)", "RSS peak + (MiB)", "RSS run + (MiB)", "GFLOP", "FLOP x train"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [str(row["T"]), row["name"], fmt(row["time"], ".3f"), fmt(row["ratio"], ".2f"),
                 fmt(row["ratio_min"], ".2f"),
                 fmt(row["compile"], ".1f"), fmt(row["xla_temp"], ".1f"), fmt(row["xla_total"], ".1f"),
                 fmt(row.get("rss_peak"), ".0f"), fmt(row.get("rss_run"), ".0f"),
                 fmt(None if row["flops"] is None else row["flops"] / 1e9, ".2f"),
                 fmt(row.get("flops_ratio"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    cpu = os.cpu_count()
    notes = [
        "",
        f"digits MLP 64-50-10, batch 100, SGD + momentum, weight decay, float32; jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({platform.machine()}, {cpu} cores); arguments "
        f"`{' '.join(args.argv) or '(defaults)'}`; median of {args.repeats} "
        f"interleaved repeats after warm-up; {rss_note}; whole benchmark {seconds:.0f} s; load "
        f"average {os.getloadavg()[0]:.1f} at the end (other processes on the machine inflate times).",
        "Time spread (min-max, s): " + "; ".join(
            f"T={row['T']} {row['name']} {row['spread'][0]:.3f}-{row['spread'][1]:.3f}" for row in rows) + ".",
    ]
    return "\n".join(lines + notes)


if __name__ == "__main__":
    main()
