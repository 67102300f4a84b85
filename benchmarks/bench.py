"""One command for hypergrad's speed, memory and compilation figures, measured side by side.

    .venv/bin/python benchmarks/bench.py --out benchmarks/RESULTS.md      # `make bench`, about 5 min on 2 CPU cores
    .venv/bin/python benchmarks/bench.py --quick --out /tmp/RESULTS.md    # structure only, well under a minute
    benchmarks/gpu.sh                                                     # the same tables on a GPU machine

On an accelerator the same tables come out, with a larger peak product (8192) and no RSS columns
(section 4 keeps XLA's memory analysis, which is the device's); the all-cores rows are CPU-only.

Prints one set of markdown tables and writes it to `--out` (each section is written there as soon as
it is measured, marked partial, so a run stopped later keeps it). Every figure is a ratio
or a share measured in this one run, so a slow or shared machine moves numerator and denominator
alike:

1. Hypergradient cost: seconds of `hg.hypergradient(objective, h, key, method=m)` over seconds of
   one training run (the library's compute unit: a search trial, training plus scoring) for the
   digits MLP (64-50-10 tanh, batch 100, SGD with momentum, per-step learning rates, weight decay;
   float32) at T=200 and T=2000, for `Reverse()` (default `store="steps"`: per-step
   rematerialisation keeping only each step's input state), `store="residuals"` (plain autodiff of the scan, the
   old default) and `store="states"` (the hand-written VJP of the loop), each without and with
   checkpointing (k = the divisor of T nearest sqrt(T); `--quick` has one checkpointed row).
   Targets: <= 3.0x without checkpointing, <= 4.0x with it. Timing, compile seconds, XLA memory
   analysis, peak RSS and FLOPs come from `benchmarks/hypergradient_cost.py` (see its docstring).
   A control beside it: training and `Reverse()` on the same problem with its minibatches in a
   fixed cyclic order (no random draw), which shows the share of a training run spent drawing
   minibatches and the ratio without that shared cost.
2. Search throughput: per-trial seconds of `hg.random_search` at 1, 16, 64 and 256 trials (the
   `digits-mlp` preset, T=200; each size called once to compile, then timed on a second call with
   a new key) against a Python loop over the same jitted single-trial program doing the same
   search (it draws the settings, trains each and reads its scores back; the program alone on
   pre-drawn settings is shown too, as a floor), and as a share of
   the machine's peak FLOP/s, measured here by the best of several large float32 matrix products.
   FLOPs per trial: `hypergrad.search.run_flops`. Also the 256-trial call at `chunk_size` 16 and 256
   (the default is 64); the 256-trial call in a fresh process with the CPU split into one JAX
   device per core (`hg.use_cpu_cores`), at chunk_size 64 and 128, which is how a search uses
   every core (XLA:CPU runs one device's program mostly on one thread); and the built-in MLP
   against the same network written with `nnx.Linear` (the batch-major layout it replaced).
   One-device shares are of the better of two peak measurements (before and after the searches);
   each all-cores call is paired with a peak measured just before it in its process. Target:
   >= 50% of peak at 256 trials, never slower than the loop.
3. Compilation, through the public API only: each call's `Result.compile_seconds` (hypergrad's own
   programs; 0 when all came from its cache) and the XLA compilations JAX reports
   (`jax.monitoring`'s backend-compile event: every program, the strategy's own and the small ones
   JAX compiles for eager operations on the hyperparameters), around `random_search` (256 trials)
   and `tune` (50 steps, from a given starting point): on a first call, then on a second call with a
   new key (and, for tune, a new starting point); random_search's `result.info["programs"]` is the number of programs its
   trials ran in. Target: one program each (random_search: `info["programs"]` 1), zero recompiles
   (the second call compiles no XLA program at all and reports 0 compile seconds). The library's
   own count of its programs is private, so the first call's XLA count (helpers included) is shown
   as measured, without a target.
4. Peak memory against T for Reverse with and without checkpointing (from section 1's programs).
5. Correctness of the fast paths: `Reverse()` (store "steps"), `Reverse(checkpoint_every=5)`
   (its default store, "dots"), and `Reverse(store="states")` with and without checkpointing, against central finite differences and against
   `Reverse(store="residuals")`, in float64 on a small problem (the
   iris MLP 4-8-3, minibatches of 16, T=20). Run last: it turns on `jax_enable_x64`.

`--quick` shrinks every section (T=20, 4 trials at T=10, 2 tune steps, no FLOP accounting, no RSS
subprocesses, no chunk-size study, the correctness checks as in the full run) so the tables' structure appears in well under a minute; its numbers mean
little. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import shutil

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg
from hypergrad.problems.presets import preset
from hypergrad.accounting import matmul_flops_per_second
from hypergrad.search import run_flops

import _common as common  # this directory's shared helpers (the section-1 rows among them)

TARGET_PLAIN, TARGET_CHECKPOINT, TARGET_PEAK = 3.0, 4.0, 0.50
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # JAX's event: one per XLA program compiled


class XlaCompilations:
    """A running count of XLA compilations, from JAX's public monitoring events (every program: a
    strategy's own and the helpers JAX compiles for eager operations). Read `count` before and after."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self.listen)

    def listen(self, event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE:
            self.count += 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(x, spec: str) -> str:
    return common.fmt(x, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- 1 and 4: hypergradient cost and memory ----------------------------------------------------------
def hypergradient_rows(args, cache_dir):
    """Section 1's rows, and its compiled programs by (T, name) for the draw control to reuse."""
    def names(T):  # checkpointing every step is the same recomputation as every k: one row suffices
        rows = [n for n in common.config_names(T) if "checkpoint_every=1," not in n]
        return rows[:5] if args.quick else rows
    problem = common.make_problem()
    warm = common.make_objective(problem, 1)
    jax.block_until_ready(common.Config("train", *warm).call())  # backend start-up off the first row
    rows, flop_lines, programs = [], {}, {}
    for T in args.steps:
        objective, hparams, key = common.make_objective(problem, T)
        configs = [common.Config(name, objective, hparams, key) for name in names(T)]
        programs.update({(T, config.name): config for config in configs})
        times = common.time_interleaved(configs, args.repeats)
        train_median, train_min = statistics.median(times["train"]), min(times["train"])
        train_flops = None
        for config in configs:
            temp, total = config.memory()
            row = {"T": T, "name": config.name, "time": statistics.median(times[config.name]),
                   "ratio": statistics.median(times[config.name]) / train_median,
                   "ratio_min": min(times[config.name]) / train_min, "compile": config.compile_seconds,
                   "xla_temp": temp, "xla_total": total, "flops": None, "flops_ratio": None,
                   "checkpointed": "checkpoint_every" in config.name}
            if not args.no_flops:
                row["flops"] = config.flops(flop_lines)
                train_flops = row["flops"] if config.name == "train" else train_flops
                row["flops_ratio"] = row["flops"] / train_flops
            rows.append(row)
        log(f"[1] hypergradient cost at T={T} done")
    if cache_dir is not None:
        import concurrent.futures

        jobs = [("baseline", args.steps[0])] + [(row["name"], row["T"]) for row in rows]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda job: common.run_child(*job, cache_dir, script=common.COST_SCRIPT), jobs))
        baseline = results[0]["maxrss_kib"]
        for row, result in zip(rows, results[1:]):
            row["rss_peak"] = (None if baseline is None or result["maxrss_kib"] is None
                               else (result["maxrss_kib"] - baseline) / 1024)
            row["rss_run"] = None if result["run_kib"] is None else result["run_kib"] / 1024
        log("[4] RSS subprocesses done")
    return rows, programs


class _CyclicBatches(hg.Problem):
    """The benchmark problem with its minibatches in a fixed cyclic order (step t takes examples
    t*b, ..., t*b + b - 1 mod n): the same shapes and gather, no random draw. A control only: the
    difference to the real problem is what drawing a minibatch costs (`hg.Problem.batch_indices`,
    the epoch stream) plus gathering in a random order rather than a contiguous one
    (`benchmarks/sampler.py` separates the two)."""

    def batch_indices(self, key, step):
        step = jnp.asarray(step)
        b, n = self.batch_size, self.num_train
        return ((step[..., None] * b + jnp.arange(b)) % n).astype(jnp.int32)


def draw_control_rows(args, programs: dict) -> list[dict]:
    """Training and Reverse() with the library's random minibatches (section 1's programs,
    `programs[(T, name)]`, reused) and with `_CyclicBatches`, interleaved, per T."""
    problem = common.make_problem()
    control = _CyclicBatches(**{f.name: getattr(problem, f.name) for f in dataclasses.fields(problem) if f.init})
    rows = []
    for T in args.steps:
        configs = {}
        objective, hparams, key = common.make_objective(control, T)
        for name in ("train", "Reverse()"):
            configs[("random (library)", name)] = library = copy.copy(programs[(T, name)])
            library.name = f"{name} random (library)"
            configs[("cyclic (control)", name)] = cyclic = common.Config(name, objective, hparams, key)
            cyclic.name = f"{name} cyclic (control)"
        times = common.time_interleaved(list(configs.values()), args.repeats)
        seconds = {k: statistics.median(times[c.name]) for k, c in configs.items()}
        for label in ("random (library)", "cyclic (control)"):
            train, reverse = seconds[(label, "train")], seconds[(label, "Reverse()")]
            rows.append({"T": T, "batches": label, "train": train, "reverse": reverse, "ratio": reverse / train,
                         "n": problem.num_train,
                         "draw_share": 1 - seconds[("cyclic (control)", "train")] / seconds[("random (library)", "train")]})
        log(f"[1] draw control at T={T} done")
    return rows


def render_draw_control(rows) -> str:
    out = [[str(r["T"]), r["batches"], fmt(r["train"], ".4f"), fmt(r["reverse"], ".4f"), fmt(r["ratio"], ".2f"),
            fmt(100 * r["draw_share"], ".0f") + "%" if r["batches"].startswith("random") else ""] for r in rows]
    return table(["T", "minibatches", "train (s)", "Reverse() (s)", "Reverse() x train",
                  "drawing's share of the training run"], out)


def render_cost(rows) -> str:
    out = []
    for row in rows:
        if row["name"] == "train":
            target, verdict = "", ""
        else:
            target = TARGET_CHECKPOINT if row["checkpointed"] else TARGET_PLAIN
            verdict = "met" if row["ratio"] <= target else "missed"
            target = f"<= {target:.1f}"
        out.append([str(row["T"]), row["name"], fmt(row["time"], ".3f"), fmt(row["ratio"], ".2f"),
                    fmt(row["ratio_min"], ".2f"), target, verdict, fmt(row["compile"], ".1f"),
                    fmt(row["flops_ratio"], ".2f")])
    return table(["T", "method", "time (s)", "x train", "x train (min)", "target", "median vs target",
                  "compile (s)", "FLOP x train"], out)


def render_memory(rows) -> str:
    out = [[str(r["T"]), r["name"], fmt(r["xla_temp"], ".1f"), fmt(r["xla_total"], ".1f"),
            fmt(r.get("rss_peak"), ".0f"), fmt(r.get("rss_run"), ".0f")] for r in rows]
    return table(["T", "method", "XLA temp (MiB)", "XLA total (MiB)", "RSS peak + (MiB)", "RSS run + (MiB)"], out)


# -- 2: search throughput ---------------------------------------------------------------------------
def peak_flops(size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a size x size float32 matrix product (2 size^3 FLOPs)."""
    return matmul_flops_per_second(size, size, size, repeats=repeats)


def search_rows(args, xla: XlaCompilations):
    objective, space = preset("digits-mlp", num_steps=args.search_steps)
    key = jax.random.key(0)
    settings = space.sample(jax.random.key(5), max(args.trials))
    first = jax.tree.map(lambda a: a[0], settings)
    flops = run_flops(objective, first, key)
    single = jax.jit(lambda h, k, d: objective.loss_and_scores(h, k, d)[1])
    data = objective.problem.data
    jax.block_until_ready(single(first, key, data))

    def loop_search(sample_key, n):
        """The random search a user writes around the jitted objective: draw the n settings (one
        `space.sample`, as `random_search` does), then train and score them one at a time, reading
        each trial's scores back to rank it."""
        drawn = jax.device_get(space.sample(sample_key, n))
        return [float(jax.device_get(single({name: v[i] for name, v in drawn.items()}, key, data))["val_loss"])
                for i in range(n)]

    rows = []
    compile_rows = {}
    for n in args.trials:  # largest first: its first call compiles the chunk program (section 3)
        before = xla.count
        opening = hg.random_search(objective, space, key, num_trials=n)  # compiles (once per chunk shape)
        compiled = (xla.count - before, opening.compile_seconds, opening.info["programs"])
        loop_search(key, n)  # the loop's draw of n compiled outside the timing, as the search's is
        recompiled = [0, 0.0]  # XLA programs and hypergrad's compile seconds of the searches below
        # Small counts are timed over several calls (median per trial), the loop the same way:
        # one 30 ms call is within the machine's noise. Search calls and loop passes alternate,
        # so a slow spell of the machine hits both alike.
        reps = max(1, 64 // n)
        trials = [jax.tree.map(lambda a, i=i: a[i], settings) for i in range(n)]
        search_times, loop_times, bare_times = [], [], []
        for rep in range(reps):
            new_key = jax.random.key(1 + rep)  # made outside the timing, as the loop's key is
            before, start = xla.count, time.perf_counter()
            again = hg.random_search(objective, space, new_key, num_trials=n)
            search_times.append((time.perf_counter() - start) / n)
            recompiled = [recompiled[0] + xla.count - before, recompiled[1] + again.compile_seconds]
            start = time.perf_counter()
            loop_search(new_key, n)
            loop_times.append((time.perf_counter() - start) / n)
            start = time.perf_counter()
            for h in trials:
                jax.block_until_ready(single(h, key, data))
            bare_times.append((time.perf_counter() - start) / n)
        search_seconds, loop_seconds = statistics.median(search_times), statistics.median(loop_times)
        compile_rows[n] = (compiled, tuple(recompiled))
        rows.append({"trials": n, "chunk": min(64, n),  # 64: random_search's default chunk_size
                     "search": search_seconds, "loop": loop_seconds,
                     "bare": statistics.median(bare_times), "flops": flops})
        log(f"[2] random_search at {n} trials done")
    chunk_rows = []
    for chunk in args.chunks:
        n = max(args.trials)
        hg.random_search(objective, space, key, num_trials=n, chunk_size=chunk)
        start = time.perf_counter()
        hg.random_search(objective, space, jax.random.key(1), num_trials=n, chunk_size=chunk)
        seconds = (time.perf_counter() - start) / n
        chunk_rows.append({"trials": n, "chunk": chunk, "search": seconds, "flops": flops})
        log(f"[2] chunk_size={chunk} done")
    return sorted(rows, key=lambda r: r["trials"]), chunk_rows, compile_rows, flops


def _linear_mlp_problem():
    """The digits MLP as `nnx.Linear` layers (batch-major activations): the layout the built-in
    MLP replaced, timed beside it."""
    from flax import nnx

    class LinearMLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 50, rngs=rngs)
            self.out = nnx.Linear(50, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    digits = hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)  # its data: the bundled split
    return hg.problems.nnx_problem(LinearMLP, digits.train_data, digits.val_data, digits.test_data, batch_size=100,
                                   name="digits-mlp-linear")


def layout_rows(args) -> list[dict]:
    """256-trial random_search of the built-in (feature-major) digits MLP against the same network
    written with nnx.Linear, interleaved (median of 3 calls each, one device)."""
    builtin, space = preset("digits-mlp", num_steps=args.search_steps)
    linear = hg.Objective(_linear_mlp_problem(), builtin.optimizer, builtin.num_steps)
    n = max(args.trials)
    objectives = {"built-in MLP (FeatureMajorDense + affine)": builtin, "nnx.Linear layout": linear}
    for objective in objectives.values():
        hg.random_search(objective, space, jax.random.key(0), num_trials=n)  # compiles
    times = {name: [] for name in objectives}
    for rep in range(3):
        for name, objective in objectives.items():
            start = time.perf_counter()
            hg.random_search(objective, space, jax.random.key(1 + rep), num_trials=n)
            times[name].append((time.perf_counter() - start) / n)
    first = jax.tree.map(lambda a: a[0], space.sample(jax.random.key(5), 1))
    return [{"name": name, "trials": n, "seconds": statistics.median(times[name]),
             "flops": run_flops(objective, first, jax.random.key(0))} for name, objective in objectives.items()]


def render_layouts(rows, peak: float) -> str:
    base = rows[0]["seconds"]
    return table(["digits MLP written as", "trials", "ms/trial", "time / built-in", "GFLOP/trial", "% of peak"],
                 [[r["name"], str(r["trials"]), fmt(r["seconds"] * 1e3, ".2f"), fmt(r["seconds"] / base, ".2f"),
                   fmt(r["flops"] / 1e9, ".3f"), f"{100 * r['flops'] / r['seconds'] / peak:.0f}%"] for r in rows])


_SHARDED = """
import json, statistics, sys, time
import jax
import hypergrad as hg
hg.use_cpu_cores({devices})  # before anything computes
from hypergrad.accounting import matmul_flops_per_second
from hypergrad.problems.presets import preset
objective, space = preset("digits-mlp", num_steps={steps})
rows = []
for chunk in {chunks}:
    hg.random_search(objective, space, jax.random.key(0), num_trials={trials}, chunk_size=chunk)  # compiles
    pairs = []
    for rep in range({repeats}):
        # the peak measured right before each timed call: the machine's speed drifts over minutes
        peak = matmul_flops_per_second({matmul}, {matmul}, {matmul}, repeats=3)
        start = time.perf_counter()
        result = hg.random_search(objective, space, jax.random.key(1 + rep), num_trials={trials}, chunk_size=chunk)
        pairs.append(((time.perf_counter() - start) / {trials}, peak))
    rows.append({{"pairs": pairs, "devices": result.info["devices"], "chunk": chunk}})
print("ROW" + json.dumps(rows))
"""


def sharded_search_rows(args, trial_flops: float) -> dict | None:
    """random_search at the largest trial count in a fresh process whose CPU is split into one JAX
    device per core (`hg.use_cpu_cores`), so each chunk's trials are sharded over all cores (None
    on one core), at chunk_size 64 (the default: 32 trials per device on 2 cores) and 128. Each of
    5 timed calls is paired with a peak matmul measured just before it in the same process; the
    share of peak is the median over the pairs."""
    devices = os.cpu_count() or 1
    if devices < 2 or jax.devices()[0].platform != "cpu":
        return None
    import subprocess

    n = max(args.trials)
    code = _SHARDED.format(devices=devices, steps=args.search_steps, trials=n, chunks=[64, 128], repeats=5,
                           matmul=args.matmul)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    found = json.loads(next(line[3:] for line in out.splitlines() if line.startswith("ROW")))
    rows = []
    for row in found:
        seconds = statistics.median(t for t, _ in row["pairs"])
        rows.append({"devices": row["devices"], "chunk": row["chunk"], "seconds": seconds,
                     "flops_per_second": trial_flops / seconds,
                     "share": statistics.median(trial_flops / t / peak for t, peak in row["pairs"]),
                     "peaks": [peak for _, peak in row["pairs"]]})
    return {"trials": n, "rows": rows}


def render_search(rows, chunk_rows, peak: float, sharded: dict | None = None) -> str:
    """Section 2's tables; `peak` is the one-device rows' peak FLOP/s (the all-cores rows carry their own)."""
    out = []
    for r in rows:
        verdict = "faster" if r["search"] <= r["loop"] else "SLOWER"
        out.append([str(r["trials"]), str(r["chunk"]), fmt(r["search"] * 1e3, ".2f"), fmt(r["loop"] * 1e3, ".2f"),
                    fmt(r["loop"] / r["search"], ".2f"), verdict, fmt(r["bare"] * 1e3, ".2f"),
                    f"{100 * r['flops'] / r['search'] / peak:.0f}%", f"{100 * r['flops'] / r['loop'] / peak:.0f}%"])
    text = table(["trials", "chunk_size", "search ms/trial", "loop ms/trial", "loop / search", "vs loop",
                  "bare calls ms/trial", "search % of peak", "loop % of peak"], out)
    text += ("\n\nThe loop is the random search a user writes around the same jitted single-trial program: "
             "one `space.sample` of the n settings, then each trial trained, scored and its scores read "
             "back, as `random_search` does. `bare calls` times the program alone on settings drawn "
             "beforehand, nothing read back: a floor that no search reaches at one trial, since a search "
             "also draws and reads. Search calls, loop passes and bare passes alternate.")
    if sharded:
        text += (f"\n\nAll cores: {sharded['trials']} trials in a fresh process with the CPU split into one JAX "
                 "device per core (`hg.use_cpu_cores()`), each chunk's trials sharded across them; 5 timed calls, "
                 "each paired with a peak matmul measured just before it in that process (the share is the "
                 "median over the pairs):\n\n" + table(
                     ["devices", "chunk_size", "trials per device per call", "ms/trial (median)", "GFLOP/s",
                      "peak GFLOP/s (min-max)", "% of peak", "target >= 50%"],
                     [[str(r["devices"]), str(r["chunk"]), str(r["chunk"] // r["devices"]),
                       fmt(r["seconds"] * 1e3, ".2f"), fmt(r["flops_per_second"] / 1e9, ".1f"),
                       f"{min(r['peaks']) / 1e9:.0f}-{max(r['peaks']) / 1e9:.0f}", f"{100 * r['share']:.0f}%",
                       "met" if r["share"] >= TARGET_PEAK else "missed"] for r in sharded["rows"]]))
    if chunk_rows:
        text += "\n\nChunk size at " + str(chunk_rows[0]["trials"]) + " trials (one device):\n\n" + table(
            ["chunk_size", "ms/trial", "% of peak"],
            [[str(r["chunk"]), fmt(r["search"] * 1e3, ".2f"), f"{100 * r['flops'] / r['search'] / peak:.0f}%"]
             for r in chunk_rows])
    return text


# -- 3: compilation ---------------------------------------------------------------------------------
def tune_compile(args, xla: XlaCompilations):
    """((XLA programs, compile seconds) of a first tune, (the same) of a second with a new key and start)."""
    objective, space = preset("digits-mlp", num_steps=args.search_steps)
    # Both calls start from a given point (the second from a new one): a first call with `init=`
    # compiles JAX's small helpers for checking and mapping it, whatever its values.
    inits = [jax.tree.map(lambda a: a[0], space.sample(jax.random.key(seed), 1)) for seed in (8, 9)]
    keys = [jax.random.key(0), jax.random.key(1)]
    counts = []
    for key, init in zip(keys, inits):
        before = xla.count
        result = hg.tune(objective, space, key, steps=args.tune_steps, init=init)
        counts.append((xla.count - before, result.compile_seconds))
    return counts[0], counts[1]


def render_compile(search_compiles, tune_compiles, args) -> str:
    n = max(args.trials)
    (s_count, s_seconds, s_programs), s_again = search_compiles[n]
    (t_count, t_seconds), t_again = tune_compiles

    def reused(again):
        return again[0] == 0 and again[1] == 0.0

    rows = [[f"random_search, {n} trials", str(s_count), fmt(s_seconds, ".1f"), str(s_programs),
             f"{s_again[0]}, {s_again[1]:.1f} s", "met" if s_programs == 1 and reused(s_again) else "missed"],
            [f"tune, {args.tune_steps} steps", str(t_count), fmt(t_seconds, ".1f"), "",
             f"{t_again[0]}, {t_again[1]:.1f} s", "met" if reused(t_again) else "missed"]]
    return table(["call", "XLA programs compiled, first call (helpers included)", "compile (s) (`compile_seconds`)",
                  "programs its trials ran in (`info`)", "second call (new key and values): XLA programs, compile s",
                  "one program, reused"], rows)


# -- 5: correctness ---------------------------------------------------------------------------------
def correctness(args) -> list[list[str]]:
    jax.config.update("jax_enable_x64", True)
    import optax

    T = 20
    problem = hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=16)
    objective = hg.Objective(problem, lambda h: optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"]), T)
    hparams = {"lr": jnp.linspace(0.3, 0.05, T), "momentum": jnp.asarray(0.8), "weight_decay": jnp.asarray(1e-2)}
    key = jax.random.key(0)
    reference = hg.hypergradient(objective, hparams, key, method=hg.Reverse(store="residuals"))[1]
    rng = np.random.default_rng(0)
    rows = []
    for method in (hg.Reverse(), hg.Reverse(checkpoint_every=5), hg.Reverse(store="states"),
                   hg.Reverse(checkpoint_every=5, store="states")):
        value, grads = hg.hypergradient(objective, hparams, key, method=method)
        worst = 0.0
        for _ in range(3):
            v = {n: np.asarray(h) * rng.normal(size=np.shape(h)) for n, h in hparams.items()}
            eps = 1e-6
            f = lambda s: float(hg.hypergradient(objective, {n: hparams[n] + s * v[n] for n in hparams},  # noqa: E731
                                                 key, method=method)[0])
            fd = (f(eps) - f(-eps)) / (2 * eps)
            ad = sum(float(np.sum(np.asarray(grads[n]) * v[n])) for n in hparams)
            scale = sum(float(np.sum(np.abs(np.asarray(grads[n]) * v[n]))) for n in hparams)
            worst = max(worst, abs(fd - ad) / scale)
        agree = max(float(np.max(np.abs(np.asarray(grads[n]) - np.asarray(reference[n])))
                          / np.max(np.abs(np.asarray(reference[n])))) for n in hparams)
        rows.append([repr(method), f"{worst:.1e}", f"{agree:.1e}",
                     "exact" if worst < 1e-6 and agree < 1e-10 else "CHECK"])
    return rows


def cost_sections(args, cost_rows, draw_rows) -> list[str]:
    """Section 1's text: the cost table and the draw control."""
    return [
        "## 1. Hypergradient cost (digits MLP, time of `hg.hypergradient` / time of one training run)",
        render_cost(cost_rows),
        f"Median of {args.repeats} interleaved calls after warm-up; `x train (min)` is the ratio of the "
        "fastest calls. Targets: <= 3.0x without checkpointing, <= 4.0x with it (judged on the median).",
        "How much of those ratios the minibatch draw carries: the same training run and `Reverse()` with "
        "the minibatches in a fixed cyclic order (a control problem: same shapes and gather, no random "
        f"draw), {args.repeats} interleaved calls each. Drawing (the epoch sampler: a keyed "
        f"permutation of the {draw_rows[0]['n']} training examples, evaluated at each step's batch positions) is shared by numerator and denominator, so it "
        "pulls the ratio towards 1; without it the hypergradient's own cost shows:",
        render_draw_control(draw_rows),
    ]


def search_section(args, search, chunks, best_peak, sharded, peak, peak_after, trial_flops, layouts) -> list[str]:
    return [
        "## 2. Search throughput (digits-mlp preset, T=" + str(args.search_steps) + ")",
        render_search(search, chunks, best_peak, sharded),
        f"Peak (one-device rows): the better {args.matmul}x{args.matmul} float32 matmul of the two measured "
        f"before ({peak / 1e9:.0f} GFLOP/s) and after ({peak_after / 1e9:.0f} GFLOP/s) the searches. One trial: "
        f"{trial_flops / 1e9:.3f} GFLOP (`hypergrad.search.run_flops`). Target: >= 50% of "
        "peak at the largest trial count, never slower than the loop.",
        *([f"Layout of the model, one device, {max(args.trials)} trials (the same network, optimiser and "
           "space; FLOPs by `run_flops` of each):", render_layouts(layouts, best_peak)] if layouts else []),
    ]


# -- main -------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the tables' structure in well under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per hypergradient row")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP accounting of section 1")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS subprocesses of section 4")
    args = parser.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)"
    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    if args.quick:
        args.steps, args.repeats = [20], args.repeats or 2
        args.trials, args.chunks, args.search_steps, args.tune_steps = [4], [], 10, 2
        args.no_rss, args.no_flops, args.matmul = True, True, 512 if on_cpu else 2048
    else:
        args.steps, args.repeats = [200, 2000], args.repeats or 11
        args.trials, args.chunks, args.search_steps, args.tune_steps = [256, 64, 16, 1], [16, 256], 200, 50
        # The peak needs a product long enough to time: about 34 ms at 2048 on 2 CPU cores; on a
        # GPU a 2048 product takes tens of microseconds (launch-bound), an 8192 one milliseconds.
        args.matmul = 2048 if on_cpu else 8192
    if not on_cpu:
        args.no_rss = True  # the host's resident memory does not hold an accelerator's buffers
    wall = time.perf_counter()
    xla = XlaCompilations()  # counts from here on
    cache_dir = None
    if not args.no_rss:  # compile once here; the RSS subprocesses load the programs
        cache_dir = tempfile.mkdtemp(prefix="bench_cache_")
        common.use_compilation_cache(cache_dir)

    def header(seconds: float | None) -> list[str]:
        run = (f"whole run {seconds:.0f} s" if seconds is not None else
               "**partial: the run is still going, and rewrites this file with every section when it ends**")
        return [
            "# hypergrad benchmarks",
            f"Machine: jax {jax.__version__} on {device.platform}"
            + (f" ({platform.machine()}, {os.cpu_count()} cores)" if on_cpu else
               f" ({device.device_kind}; host {platform.machine()}, {os.cpu_count()} cores; float32 products at "
               "JAX's default precision, which on recent NVIDIA GPUs is TensorFloat-32 for the peak and the "
               "models alike)")
            + f"; `benchmarks/bench.py {argv_text}`; {run}; load average {os.getloadavg()[0]:.1f} "
            + ("at the end" if seconds is not None else "when this part was written")
            + " (other processes on the machine inflate times)."]

    def keep(parts: list[str]) -> None:  # every section on disk as it ends, kept if a later one fails or the run is stopped
        common.write_report("\n\n".join(header(None) + parts), args.out, echo=False)

    try:
        cost_rows, programs = hypergradient_rows(args, cache_dir)
        draw_rows = draw_control_rows(args, programs)
        first = cost_sections(args, cost_rows, draw_rows)
        keep(first)
        peak = peak_flops(args.matmul)
        log(f"[2] peak {peak / 1e9:.0f} GFLOP/s")
        search, chunks, search_compiles, trial_flops = search_rows(args, xla)
        sharded = None if args.quick else sharded_search_rows(args, trial_flops)
        layouts = [] if args.quick else layout_rows(args)
        log("[2] layouts done")
        peak_after = peak_flops(args.matmul)
        # One-device shares are of the better of the matmul rates measured before and after the
        # searches (the machine's speed drifts); the all-cores rows pair each call with its own.
        best_peak = max(peak, peak_after)
        second = search_section(args, search, chunks, best_peak, sharded, peak, peak_after, trial_flops, layouts)
        keep(first + second)
        tune_compiles = tune_compile(args, xla)
        log("[3] tune compilation done")
        third = ["## 3. Compilation (`Result.compile_seconds`, JAX's XLA compile events)",
                 render_compile(search_compiles, tune_compiles, args),
                 "## 4. Peak memory against T (programs of section 1)",
                 render_memory(cost_rows),
                 "XLA: `memory_analysis()` of the compiled program (temporaries; temporaries + arguments + outputs). "
                 "RSS: peak resident memory of a subprocess running the program, minus that of one running the "
                 "training program (see `benchmarks/hypergradient_cost.py`)" + (
                     "." if not args.no_rss else "; skipped here." if on_cpu else
                     "; not measured on an accelerator, whose buffers are not in the host's resident memory (XLA's "
                     "figures are the program's device memory).")]
        keep(first + second + third)
        checks = correctness(args)
        log("[5] correctness done")
    finally:
        if cache_dir:  # kept to the end: jax keeps writing to the cache it has started using
            shutil.rmtree(cache_dir, ignore_errors=True)
    seconds = time.perf_counter() - wall

    sections = [
        *header(seconds), *first, *second, *third,
        "## 5. Correctness of the fast paths (float64, iris MLP 4-8-3, batch 16, T=20)",
        table(["method", "max rel. error vs central differences (3 directions)", "max rel. diff vs Reverse(store='residuals')",
               "verdict"], checks),
    ]
    text = "\n\n".join(sections) + "\n"
    common.write_report(text, args.out)


if __name__ == "__main__":
    main()
