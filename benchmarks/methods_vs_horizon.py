"""Peak memory and time of every hypergradient method against the horizon T.

Problem: the digits MLP (`hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)`),
trained by `optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])` with weight decay in the loss,
in float32 (lr 0.1 at every step, momentum 0.9, weight decay 1e-4), for each horizon T given by
`--steps` (default 100, 1000 and 10000). The problem, objective and timing helpers are those of
`benchmarks/hypergradient_cost.py`, shared through `benchmarks/_common.py`. Rows, per T:

- `train`: one training run (training plus scoring, one search trial), the unit of the ratios;
- `Reverse()`, and `Reverse(checkpoint_every=k)` with k the divisor of T closest to sqrt(T);
- `Truncated(window=min(100, T))` (at T=100 it is the `Reverse()` program);
- `Forward(blocks=10)`: the lr schedule shared in 10 blocks, so 12 tangent directions at every T
  (10 blocks, momentum, weight decay); without sharing forward mode would need T + 2 JVPs;
- `Reversible()` (8 information bits per parameter per step, the default) and
  `Reversible(info_bits=1)` (exact for momentum >= 1/2, as here);
- `Implicit(maxiter=20)`: for the weight decay only, the one hyperparameter it can see. Its
  objective fixes lr = 0.1 and momentum = 0.9 inside the optimiser (`optax.sgd(0.1, momentum=0.9)`,
  the same training) and its hyperparameters are `{"weight_decay"}`;
- `ES(sigma=0.01, num_samples=8)` and `PES(sigma=0.01, num_samples=8, window=10)` (antithetic:
  17 training runs each, all samples vmapped at once), when `hypergrad.methods.es` exists;
- `indices`: not a method but a diagnostic: the program that draws the minibatch indices of all T
  steps up front, as `Reverse()` does with its stores "steps", "dots" and "states" (`Loop.draw_all`;
  `Problem.batch_indices(key, arange(T))`: the epoch sampler's T x batch indices). Its temporary
  memory is part of those rows' programs only: the other methods train through `Loop.run`, which
  draws `DRAW_BLOCK` steps' minibatches at a time (memory flat in T), and Reversible draws each
  step's minibatch inside the step.

Float64 and Reversible. Reversible needs `jax_enable_x64` for its int64 fixed-point arithmetic.
The script runs with x64 OFF, as a float32 user would, and compiles and calls only the two
Reversible rows inside `with jax.enable_x64(True):` (the problem and hyperparameters stay float32;
Reversible keeps float32 parameters outside its integer state). Turning x64 on for the whole run
instead would change the other rows: `Problem.batch_indices` draws float64 uniforms under x64,
which adds about 25% to the temporary memory of training (20.6 instead of 16.5 MiB at T=1000),
and it draws different minibatches (so Reversible's value differs slightly from the float32
`train` value; with x64 on for both, Reversible equals Reverse to ~2e-6 relative). A float64
subprocess would have lost the interleaved timing.

Columns:

- XLA temp / XLA total: `executable.memory_analysis()` of the compiled program (via
  `hypergrad.hypergradient.compiled_value_and_grad`, the program `hg.hypergradient` runs):
  temporary buffers, the primary measure of peak memory; and temporaries plus arguments plus
  outputs (MiB). Every program takes the data splits (about 0.45 MiB) as an argument.
- time: median seconds of one call of the compiled program after warm-up, over `--repeats`
  interleaved and rotated repeats (`_common.time_interleaved`); horizons of
  `--long` steps or more get `--long-repeats` repeats (default 1) and no warm-up call (the
  programs are compiled ahead of time, so the first call compiles nothing). `x train` is the ratio
  to the training run's median, `x train (min)` that of the fastest calls. Times are of the
  compiled program alone: `hg.hypergradient` adds the method's `check` to every call, shown as
  `check (ms)`: negligible except for Implicit, whose check traces the loss and the optimiser
  to find the hyperparameters it can see.
- compile: seconds to trace, lower and compile the program.
- RSS peak + / RSS run + (only with `--rss`): as in `hypergradient_cost.py`: peak resident
  memory of a subprocess that loads this one program from a persistent compilation cache and
  runs it twice, minus that of a baseline subprocess that runs the training program once (at the
  first T); and the growth of resident memory while the program runs.
- GFLOP / FLOP x train (only with `--flops`): the library's compute accounting,
  `hg.hypergradient_flops(objective, method, hparams, key)` and `hypergrad.search.run_flops` (counted from the
  traced programs by `hypergrad.accounting`).

The summary tables above the full one show XLA temp and `x train` by T, with the growth of the
temp from the first to the last T next to the growth of T.

Run (default: T = 100, 1000, 10000: 30 programs of 10-40 s compile each, two at a time, and
one call of each at T=10000; 9.7 minutes, 7.5 CPU-minutes, on 2 CPU cores shared at load average
4-6, less when idle; `--methods` picks rows by name prefix, `--skip NAME@T` leaves a row out at
one horizon, e.g. `--skip "PES(window=10)@10000"`):

    .venv/bin/python benchmarks/methods_vs_horizon.py --out benchmarks/methods_vs_horizon.md
    .venv/bin/python benchmarks/methods_vs_horizon.py --steps 100 1000 --repeats 5 --rss --flops

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import hypergrad as hg

import _common as cost  # this directory's shared helpers
from _common import Config, fmt, make_objective, make_problem, segment_length

MiB = cost.MiB
SIGMA, NUM_SAMPLES, PES_WINDOW = 0.01, 8, 10
TRUNCATION, BLOCKS, IMPLICIT_MAXITER = 100, 10, 20


def zero_order_methods():
    """(ES, PES), or None while `hypergrad.methods.es` is not there (imported lazily)."""
    try:
        from hypergrad.methods.es import ES, PES
    except ImportError:
        return None
    return ES, PES


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table at one horizon.

    Attributes:
        name: the exact method, as printed (its parameters may depend on T).
        family: the same method across horizons (the summary tables' row label).
        method: the strategy, or None for the training run.
        x64: compile and call under `jax.enable_x64(True)` (Reversible).
        implicit: the objective with lr and momentum fixed and only the weight decay as a
            hyperparameter.
    """

    name: str
    family: str
    method: Any = None
    x64: bool = False
    implicit: bool = False


def rows(num_steps: int) -> list[Row]:
    k = segment_length(num_steps)
    window = min(TRUNCATION, num_steps)
    out = [
        Row("train", "train"),
        Row("Reverse()", "Reverse()", hg.Reverse()),
        Row(f"Reverse(checkpoint_every={k})", "Reverse(checkpoint_every~sqrt(T))", hg.Reverse(checkpoint_every=k)),
        Row(f"Truncated(window={window})", f"Truncated(window=min({TRUNCATION},T))", hg.Truncated(window=window)),
        Row(f"Forward(blocks={BLOCKS})", f"Forward(blocks={BLOCKS})", hg.Forward(blocks=BLOCKS)),
        Row("Reversible()", "Reversible()", hg.Reversible(), x64=True),
        Row("Reversible(info_bits=1)", "Reversible(info_bits=1)", hg.Reversible(info_bits=1), x64=True),
        Row(f"Implicit(maxiter={IMPLICIT_MAXITER}) [weight_decay]", f"Implicit(maxiter={IMPLICIT_MAXITER}) [wd]",
            hg.Implicit(maxiter=IMPLICIT_MAXITER), implicit=True),
    ]
    zero_order = zero_order_methods()
    if zero_order is not None:
        es, pes = zero_order
        out += [
            Row(f"ES(sigma={SIGMA}, num_samples={NUM_SAMPLES})", "ES", es(sigma=SIGMA, num_samples=NUM_SAMPLES)),
            Row(f"PES(sigma={SIGMA}, num_samples={NUM_SAMPLES}, window={PES_WINDOW})", f"PES(window={PES_WINDOW})",
                pes(sigma=SIGMA, num_samples=NUM_SAMPLES, window=PES_WINDOW)),
        ]
    return out


def x64_context(row: Row):
    return jax.enable_x64(True) if row.x64 else contextlib.nullcontext()


def implicit_objective(problem: hg.Problem, num_steps: int):
    """The benchmark's training with lr and momentum fixed: hyperparameters Implicit can see."""
    objective = hg.Objective(problem, lambda h: optax.sgd(0.1, momentum=0.9), num_steps=num_steps)
    return objective, {"weight_decay": jnp.asarray(1e-4, jnp.float32)}


def build(row: Row, problem: hg.Problem, num_steps: int) -> Config:
    """The compiled program of `row`; `config.call()` runs the compiled program alone."""
    objective, hparams, key = make_objective(problem, num_steps)
    if row.implicit:
        objective, hparams = implicit_objective(problem, num_steps)
    with x64_context(row):
        config = Config(row.name, objective, hparams, key, method=row.method)
    if row.method is not None:  # the program, without hg.hypergradient's per-call check
        data = objective.problem.data

        def call():
            with x64_context(row):
                return config.executable(hparams, key, data)

        config.call = call
        config.check_ms = check_ms(row, objective, hparams)
    config.row = row
    return config


def check_ms(row: Row, objective, hparams) -> float:
    """Median milliseconds of the method's `check`, which `hg.hypergradient` runs on every call."""
    times = []
    with x64_context(row):
        for _ in range(3):
            start = time.perf_counter()
            row.method.check(objective, hparams)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def indices_memory(problem: hg.Problem, num_steps: int) -> tuple[float, float]:
    """(temp, total) MiB of drawing all T steps' minibatch indices at once, as `Loop.draw_all` does for `Reverse()`."""
    draw = jax.jit(lambda key: problem.batch_indices(key, jnp.arange(num_steps)))
    stats = draw.lower(jax.random.key(0)).compile().memory_analysis()
    return stats.temp_size_in_bytes / MiB, (stats.temp_size_in_bytes + stats.output_size_in_bytes) / MiB


def flops(config: Config) -> float:
    objective, hparams, key = config.objective, config.hparams, config.key
    if config.row.method is None:
        from hypergrad.search import run_flops

        return run_flops(objective, hparams, key)
    with x64_context(config.row):
        return hg.hypergradient_flops(objective, config.row.method, hparams, key)


# -- subprocess: peak RSS of one row (with --rss) -------------------------------------------------
def child(args) -> None:
    if args.cache_dir:
        cost.use_compilation_cache(args.cache_dir)
    problem = make_problem()
    name = "train" if args.child == "baseline" else args.child
    row = next(r for r in rows(args.child_steps) if r.name == name)
    result = cost.child_rss(build(row, problem, args.child_steps), baseline=args.child == "baseline")
    print(json.dumps(result))


# -- the parent -------------------------------------------------------------------------------------
def selected(args, num_steps: int) -> tuple[list[Row], list[str]]:
    """(rows to measure at this horizon, names of those left out by --skip)."""
    skip = {tuple(s.rsplit("@", 1)) for s in args.skip}
    out, skipped = [], []
    for row in rows(num_steps):
        if args.methods and row.name != "train" and not any(row.name.startswith(m) for m in args.methods):
            continue
        if (row.name, str(num_steps)) in skip or (row.family, str(num_steps)) in skip:
            skipped.append(row.name)
            continue
        out.append(row)
    return out, skipped


def measure(args, wall: float, cache_dir: str | None):
    problem = make_problem()
    warm = make_objective(problem, 1)  # backend start-up and first traces off the first compile time
    jax.block_until_ready(Config("train", *warm).call())
    results, skipped = [], []
    for num_steps in args.steps:
        chosen, left_out = selected(args, num_steps)
        skipped += [(num_steps, name) for name in left_out]

        def compile_row(row):
            config = build(row, problem, num_steps)
            print(f"  T={num_steps} {row.name}: compiled in {config.compile_seconds:.1f}s "
                  f"at {time.perf_counter() - wall:.0f}s", file=sys.stderr, flush=True)
            return config

        # XLA compiles outside the GIL: a few programs at once shorten the run (each one's compile
        # seconds then include waiting for a core).
        with concurrent.futures.ThreadPoolExecutor(max(1, args.compile_jobs)) as pool:
            configs = list(pool.map(compile_row, chosen))
        long = num_steps >= args.long
        repeats = args.long_repeats if long else args.repeats
        times = cost.time_interleaved(configs, repeats, warmup=not long)
        train_time = statistics.median(times["train"])
        train_min = min(times["train"])
        train_flops = None
        for config in configs:
            temp, total = config.memory()
            row = {"T": num_steps, "name": config.name, "family": config.row.family,
                   "time": statistics.median(times[config.name]), "times": times[config.name],
                   "compile": config.compile_seconds, "check": getattr(config, "check_ms", None),
                   "xla_temp": temp, "xla_total": total, "repeats": repeats, "warmup": not long}
            row["ratio"] = row["time"] / train_time
            row["ratio_min"] = min(times[config.name]) / train_min
            if args.flops:
                row["flops"] = flops(config)
                if config.name == "train":
                    train_flops = row["flops"]
                row["flops_ratio"] = row["flops"] / train_flops
            results.append(row)
        temp, total = indices_memory(problem, num_steps)
        results.append({"T": num_steps, "name": "indices", "family": "indices (diagnostic)",
                        "xla_temp": temp, "xla_total": total})
        print(f"measured T={num_steps} at {time.perf_counter() - wall:.0f}s", file=sys.stderr, flush=True)

    rss_note = "RSS not measured (no --rss)"
    if args.rss:
        measured = [r for r in results if r["name"] != "indices"]
        jobs = [("baseline", args.steps[0])] + [(r["name"], r["T"]) for r in measured]
        script = os.path.abspath(__file__)
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            out = list(pool.map(lambda job: cost.run_child(*job, cache_dir, script=script), jobs))
        baseline = out[0]["maxrss_kib"]
        for row, result in zip(measured, out[1:]):
            row["rss_peak"] = (None if baseline is None or result["maxrss_kib"] is None
                               else (result["maxrss_kib"] - baseline) / 1024)
            row["rss_run"] = None if result["run_kib"] is None else result["run_kib"] / 1024
        rss_note = (f"RSS: baseline subprocess peak {baseline / 1024:.0f} MiB" if baseline is not None
                    else "RSS: baseline subprocess failed")
    return results, skipped, rss_note


def summary(results, steps, key: str, spec: str, title: str, growth: bool) -> list[str]:
    families = list(dict.fromkeys(r["family"] for r in results if key in r))
    header = [title] + [f"T={t}" for t in steps]
    if growth and len(steps) > 1:
        header.append(f"growth {steps[0]}->{steps[-1]} (T x{steps[-1] / steps[0]:g})")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for family in families:
        by_t = {r["T"]: r for r in results if r["family"] == family and key in r}
        cells = [family] + [fmt(by_t[t][key], spec) if t in by_t else "skipped" for t in steps]
        if growth and len(steps) > 1:
            first, last = by_t.get(steps[0]), by_t.get(steps[-1])
            cells.append(fmt(last[key] / first[key], ".1f") if first and last and first[key] > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(results, skipped, args, rss_note: str, seconds: float) -> str:
    steps = args.steps
    lines = ["XLA temporary memory (MiB) of the compiled program, by horizon:", ""]
    lines += summary(results, steps, "xla_temp", ".1f", "method", growth=True)
    lines += ["", "Time per hypergradient, in training runs (median time / median time of `train`; noisy):", ""]
    lines += summary([r for r in results if "ratio" in r], steps, "ratio", ".2f", "method", growth=False)
    lines += ["", "All measurements:", ""]
    header = ["T", "method", "XLA temp (MiB)", "XLA total (MiB)", "time (s)", "x train", "x train (min)",
              "compile (s)", "check (ms)"]
    if args.rss:
        header += ["RSS peak + (MiB)", "RSS run + (MiB)"]
    if args.flops:
        header += ["GFLOP", "FLOP x train"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in results:
        cells = [str(r["T"]), r["name"], fmt(r["xla_temp"], ".1f"), fmt(r["xla_total"], ".1f"),
                 fmt(r.get("time"), ".3f"), fmt(r.get("ratio"), ".2f"), fmt(r.get("ratio_min"), ".2f"),
                 fmt(r.get("compile"), ".1f"), fmt(r.get("check"), ".1f")]
        if args.rss:
            cells += [fmt(r.get("rss_peak"), ".0f"), fmt(r.get("rss_run"), ".0f")]
        if args.flops:
            cells += [fmt(None if r.get("flops") is None else r["flops"] / 1e9, ".2f"),
                      fmt(r.get("flops_ratio"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    timed = [r for r in results if "times" in r]
    repeat_note = "; ".join(
        f"T={t}: {r['repeats']} timed call(s) per row, interleaved, "
        f"{'after' if r['warmup'] else 'without'} a warm-up call"
        for t, r in {r["T"]: r for r in timed}.items())
    notes = [
        "",
        f"digits MLP 64-50-10, batch 100, SGD + momentum (lr 0.1, momentum 0.9), weight decay 1e-4, float32 "
        f"(Reversible rows compiled under `jax.enable_x64(True)`); jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} cores); arguments "
        f"`{' '.join(args.argv) or '(defaults)'}`; {repeat_note}; {rss_note}; whole benchmark {seconds:.0f} s; "
        f"load average {os.getloadavg()[0]:.1f} at the end (other processes on the machine inflate and scatter "
        "times; the memory columns are exact properties of the programs).",
    ]
    if zero_order_methods() is None:
        notes.append("ES and PES: not measured (`hypergrad.methods.es` not importable when this ran).")
    if skipped:
        notes.append("Skipped: " + ", ".join(f"{name} at T={t}" for t, name in skipped) + ".")
    notes.append("Time spread (min-max, s): " + "; ".join(
        f"T={r['T']} {r['name']} {min(r['times']):.3f}-{max(r['times']):.3f}" for r in timed) + ".")
    return "\n".join(lines + notes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000], help="horizons T")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (median), short horizons")
    parser.add_argument("--long", type=int, default=5000, help="horizons from this many steps are 'long'")
    parser.add_argument("--long-repeats", type=int, default=1, help="timed calls per row at long horizons "
                        "(no warm-up call)")
    parser.add_argument("--methods", nargs="+", default=[], help="only rows whose name starts with one of these")
    parser.add_argument("--skip", nargs="+", default=[], help="rows to leave out, as NAME@T (name or family)")
    parser.add_argument("--out", help="also write the markdown tables to this file")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS in subprocesses")
    parser.add_argument("--jobs", type=int, default=2, help="RSS subprocesses run at once")
    parser.add_argument("--compile-jobs", type=int, default=2, help="programs compiled at once")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (the library's accounting)")
    cost.add_child_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.child:
        child(args)
        return

    wall = time.perf_counter()
    cache_dir = None
    if args.rss:  # compile once here, load in the RSS subprocesses
        cache_dir = tempfile.mkdtemp(prefix="methods_vs_horizon_cache_")
        cost.use_compilation_cache(cache_dir)
    try:
        results, skipped, rss_note = measure(args, wall, cache_dir)
    finally:
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    table = render(results, skipped, args, rss_note, time.perf_counter() - wall)
    cost.write_report(table, args.out)


if __name__ == "__main__":
    main()
