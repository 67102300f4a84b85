"""What a reverse-mode hypergradient costs, relative to one training run.

Problem: the digits MLP (`hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)`),
trained by `optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])` with weight decay in the loss,
in float32, for each horizon T given by `--steps` (default 200 and 1000). Rows, per T:

- `train`: one training run, the library's unit of compute (`hypergrad.search.run_flops`): training
  plus scoring the trained parameters on validation and test, i.e. one search trial,
  `jax.jit(lambda h, k, d: objective.loss_and_scores(h, k, d)[1])` with the data as an argument;
- `Reverse()` (per-step rematerialisation saving matrix products, `store="dots"`),
  `Reverse(store="residuals")` (plain autodiff of the scan: the behaviour before `store` existed),
  `Reverse(store="states")` (the hand-written VJP of the loop), `Reverse(checkpoint_every=1,
  store="residuals")`, and `Reverse(checkpoint_every=k)` with each store:
  `hg.hypergradient(objective, h, key, method=m)`, which also returns the value and computes the
  scores. k is the divisor of T closest to sqrt(T) (the smaller one on a tie): 10 at T=200, 25 at
  T=1000, 40 at T=2000. A divisor leaves no remainder segment, which `Objective.run_steps` would
  otherwise run as one more checkpointed scan of a different length (a second loop in the program).

Minibatch indices (`Problem.batch_indices`: top-k of uniforms from `fold_in(key, t)`) are drawn
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
import json
import math
import os
import platform
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

import hypergrad as hg
from hypergrad import accounting
from hypergrad.hypergradient import compiled_value_and_grad

MiB = 2.0**20


# -- the benchmark problem -------------------------------------------------------------------------
def optimizer(h):
    return optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])


def make_problem() -> hg.Problem:
    return hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)


def make_objective(problem: hg.Problem, num_steps: int):
    objective = hg.Objective(problem, optimizer, num_steps=num_steps)
    hparams = {
        "lr": jnp.full((num_steps,), 0.1, jnp.float32),
        "momentum": jnp.asarray(0.9, jnp.float32),
        "weight_decay": jnp.asarray(1e-4, jnp.float32),
    }
    return objective, hparams, jax.random.key(0)


def segment_length(num_steps: int) -> int:
    """The divisor of `num_steps` closest to sqrt(num_steps) (the smaller on a tie): no remainder."""
    divisors = [k for k in range(1, num_steps + 1) if num_steps % k == 0]
    return min(divisors, key=lambda k: (abs(k - math.sqrt(num_steps)), k))


def methods(num_steps: int) -> dict[str, hg.Reverse]:
    k = segment_length(num_steps)
    return {
        "Reverse()": hg.Reverse(),
        'Reverse(store="residuals")': hg.Reverse(store="residuals"),
        'Reverse(store="states")': hg.Reverse(store="states"),
        'Reverse(checkpoint_every=1, store="residuals")': hg.Reverse(checkpoint_every=1, store="residuals"),
        f"Reverse(checkpoint_every={k})": hg.Reverse(checkpoint_every=k),
        f'Reverse(checkpoint_every={k}, store="residuals")': hg.Reverse(checkpoint_every=k, store="residuals"),
        f'Reverse(checkpoint_every={k}, store="states")': hg.Reverse(checkpoint_every=k, store="states"),
    }


def config_names(num_steps: int) -> list[str]:
    return ["train", *methods(num_steps)]


# -- one configuration: compile, run ----------------------------------------------------------------
class Config:
    """A compiled program of one row and the way `hg` users call it."""

    def __init__(self, name: str, objective, hparams, key, method=None):
        """`method`: the strategy of a method row; None looks `name` up in `methods` (this script's
        rows). Other benchmarks pass their own (`benchmarks/methods_vs_horizon.py`)."""
        self.name = name
        self.objective, self.hparams, self.key = objective, hparams, key
        start = time.perf_counter()
        if name == "train":  # one search trial: training plus all scores (`search.run_flops`)
            data = objective.problem.data
            run = jax.jit(lambda h, k, d: objective.loss_and_scores(h, k, d)[1])
            self.executable = run.lower(hparams, key, data).compile()
            self.compile_seconds = time.perf_counter() - start
            self.call = lambda: self.executable(self.hparams, self.key, data)
        else:
            self.method = methods(objective.num_steps)[name] if method is None else method
            args = (hparams, key, objective.problem.data)
            self.executable, self.compile_seconds = compiled_value_and_grad(objective, self.method, args)
            self.call = lambda: hg.hypergradient(self.objective, self.hparams, self.key, method=self.method)

    def memory(self) -> tuple[float, float]:
        """(temp, temp + arguments + outputs) in MiB, from XLA's memory analysis."""
        stats = self.executable.memory_analysis()
        if stats is None:
            return float("nan"), float("nan")
        temp = stats.temp_size_in_bytes
        total = temp + stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
        return temp / MiB, total / MiB

    def flops(self, cache: dict) -> float:
        """Total FLOPs at the objective's horizon, counted by `hypergrad.accounting` (traced, not
        compiled; cached there per objective). `cache` is unused, kept for the callers."""
        del cache
        if self.name == "train":
            return accounting.run_flops(self.objective, self.hparams, self.key)
        return accounting.hypergradient_flops(self.objective, self.method, self.hparams, self.key)


# -- subprocess: peak RSS of one configuration ------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_rss_kib() -> int:
    """Peak RSS of this process image, in KiB.

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries that across `exec` from the forked copy of
    the parent, so every child would report the (larger) parent's RSS. VmHWM belongs to the
    address space created by `exec`, and is what `ru_maxrss` would be in a child started afresh.
    """
    try:
        return _status_kib("VmHWM")
    except (OSError, KeyError):  # not Linux: the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the resident set's high-water mark (Linux >= 4.0)
        return True
    except OSError:
        return False


def write_report(text: str, out: str | None, *, append: bool = False, echo: bool = True) -> None:
    """Prints `text` (unless `echo=False`) and, with `out`, writes it there (appended after a blank
    line with `append` when the file already has content); the shared ending of every benchmark
    script."""
    if echo:
        print(text)
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    appending = append and os.path.exists(out) and os.path.getsize(out) > 0
    with open(out, "a" if appending else "w") as f:
        f.write(("\n" if appending else "") + text.rstrip("\n") + "\n")


def add_child_arguments(parser) -> None:
    """The hidden arguments with which a benchmark reruns one row in a subprocess (for its RSS)."""
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)


def use_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in `path`, for every program however quick to compile."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def child(args) -> None:
    """Builds the problem, gets one program, runs it twice; prints peak RSS as JSON.

    The parent compiled every program into a persistent compilation cache, so the child loads it
    instead of compiling: the peak is the program's, not the compiler's (and the child is quick).
    """
    if args.cache_dir:
        use_compilation_cache(args.cache_dir)
    objective, hparams, key = make_objective(make_problem(), args.child_steps)
    if args.child == "baseline":
        print(json.dumps(child_rss(Config("train", objective, hparams, key), baseline=True)))
        return
    print(json.dumps(child_rss(Config(args.child, objective, hparams, key))))


def child_rss(config: Config, baseline: bool = False) -> dict:
    """In a child: runs `config` (once for a baseline, else twice) and returns its peak RSS (KiB)
    and, unless a baseline, the growth of RSS while it ran (None where that cannot be measured)."""
    if baseline:
        jax.block_until_ready(config.call())
        return {"maxrss_kib": _peak_rss_kib(), "run_kib": None}
    peak_compile = _peak_rss_kib()
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    for _ in range(2):
        jax.block_until_ready(config.call())
    run_kib = _status_kib("VmHWM") - before if reset else None
    return {"maxrss_kib": max(peak_compile, _peak_rss_kib()), "run_kib": run_kib}


def run_child(name: str, num_steps: int, cache_dir: str | None, script: str | None = None) -> dict:
    """Peak RSS of `script` (this file by default) run with `--child name --child-steps num_steps`."""
    env = dict(os.environ)
    # A fixed threshold disables glibc's dynamic one: buffers of 128 KiB and more get their own
    # mappings and go back to the OS when freed, so the compiler's freed memory cannot hide the
    # program's allocations from RSS.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    cmd = [sys.executable, os.path.abspath(script or __file__), "--child", name, "--child-steps", str(num_steps)]
    cmd += ["--cache-dir", cache_dir] if cache_dir else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"maxrss_kib": None, "run_kib": None}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent: measure and print ---------------------------------------------------------------
def time_interleaved(configs: list[Config], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each call, `repeats` per config, interleaved and rotated; after one untimed
    warm-up call of each unless `warmup=False` (for programs too slow to run twice)."""
    for config in configs if warmup else ():  # warm-up: first calls fill jit's and hypergradient's caches
        jax.block_until_ready(config.call())
    times: dict[str, list[float]] = {c.name: [] for c in configs}
    for r in range(repeats):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for config in order:
            start = time.perf_counter()
            jax.block_until_ready(config.call())
            times[config.name].append(time.perf_counter() - start)
    return times


def fmt(x, spec: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = format(x, spec)
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0"


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
    flop_lines: dict = {}  # (fixed, per step) per reference program: the same for every T
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
