"""The all-cores random search as a share of the machine's peak (issue 17 item 5), by chunk size and
width, and where a search chunk's time goes.

    .venv/bin/python benchmarks/search_throughput.py --out benchmarks/search_throughput.md
    .venv/bin/python benchmarks/search_throughput.py --smoke                  # structure only, ~1 min

1. All cores: `hg.random_search`, 256 trials, in a fresh process whose CPU is split into one JAX
   device per core (`hg.use_cpu_cores()`, as `make bench`'s section 2 runs it), on the digits-mlp
   preset (50 hidden units, T=200) and the same objective and space with 100 hidden units, at
   several `chunk_size`s (64 is the default at 256 trials: `_batching.DEFAULT_CHUNK`). Each round
   measures the peak (the best of 3 float32 2048x2048 matrix products, as bench.py does) and then
   runs one search of every (width, chunk) in a rotated order; the share of a call is its FLOP/s
   (`hypergrad.search.run_flops` per trial) over its round's peak, and the table shows medians
   over rounds. `host` is the share of a search's wall time outside its chunks' own seconds
   (`Trial.seconds`: slicing, placing, running and reading back each chunk): drawing the settings,
   recording trials and the rest of the Python around the chunks.
   With `--malloc`, the same child runs again with glibc told to keep freed memory
   (`MALLOC_MMAP_MAX_=0`: XLA's buffers are then reused, not mapped and faulted in afresh every
   call), the two processes alternating; process-wide, so measured, not made a default.
2. One device, by operation class: the search's own chunk program (`search._search_program`) at N
   trials on one device, N = 8 and 32 (the rows each device runs per call at chunk_size 16 and 64
   on 2 cores), timed (median of interleaved calls) and traced by XLA operation with
   `population_profile.py`'s classes, in ms per trial; the matrix products' own FLOP/s (their
   FLOPs counted from the jaxpr's `dot_general`s) against the peak measured in the same process.

`--smoke`: T=10, 8 trials at chunk sizes 4 and 8 (every width and chunk row), one round; section 2 at
N=2 alone (one program: the table's columns are per N); numbers mean nothing.

Speed is measured here, never asserted in tests; every share is measured in one process on the same
load as its peak.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax

import hypergrad as hg
from hypergrad import accounting
from hypergrad._batching import first_row
from hypergrad._jaxprs import sub_jaxprs
from hypergrad.accounting import matmul_flops_per_second
from hypergrad.problems.presets import preset, sgd_momentum_schedule
from hypergrad.search import _search_program
from hypergrad.space import SAMPLE_STREAM

import _common as common  # noqa: E402  this directory's shared helpers

TARGET = 0.50
WIDTHS = (50, 100)


def objective_of(width: int, steps: int):
    """The digits-mlp preset's objective and space with `width` hidden units (50: the preset)."""
    objective, space = preset("digits-mlp", steps)
    if width != 50:
        problem = hg.problems.mlp_classifier("digits", hidden=(width,), batch_size=100)
        objective = hg.Objective(problem, sgd_momentum_schedule, steps)
    return objective, space


_CHILD = r"""
import json, statistics, sys, time
import jax
import hypergrad as hg
hg.use_cpu_cores()  # before anything computes
from hypergrad.accounting import matmul_flops_per_second
from hypergrad.search import run_flops
from search_throughput import objective_of
configs = [(w, c) for w in {widths} for c in {chunks}]
objectives = {{w: objective_of(w, {steps}) for w in {widths}}}
units = {{}}
for w, (objective, space) in objectives.items():
    first = jax.tree.map(lambda a: a[0], space.sample(jax.random.key(5), 1))
    units[w] = run_flops(objective, first, jax.random.key(0))
for w, c in configs:  # compiles each program
    hg.random_search(*objectives[w], jax.random.key(0), num_trials={trials}, chunk_size=c)
calls = {{f"{{w}},{{c}}": [] for w, c in configs}}
for rep in range({rounds}):
    peak = matmul_flops_per_second({matmul}, {matmul}, {matmul}, repeats=3)
    order = configs[rep % len(configs):] + configs[:rep % len(configs)]
    for w, c in order:
        start = time.perf_counter()
        result = hg.random_search(*objectives[w], jax.random.key(1 + rep), num_trials={trials}, chunk_size=c)
        wall = time.perf_counter() - start
        calls[f"{{w}},{{c}}"].append({{"wall": wall, "chunks": sum(t.seconds for t in result.trials), "peak": peak,
                                      "devices": result.info["devices"]}})
print("ROW" + json.dumps({{"calls": calls, "units": units}}))
"""


def all_cores(args, env_extra: dict | None = None) -> dict:
    """The child's calls {"width,chunk": [{wall, chunks, peak, devices}]} and FLOPs per trial by width."""
    code = _CHILD.format(widths=list(args.widths),
                         chunks=list(args.chunks), steps=args.steps, trials=args.trials, rounds=args.rounds,
                         matmul=args.matmul)
    here = os.path.dirname(os.path.abspath(__file__))  # the child imports this script's objective_of
    env = dict(os.environ, **(env_extra or {}),
               PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError("the all-cores child failed")
    return json.loads(next(line[3:] for line in out.stdout.splitlines() if line.startswith("ROW")))


def summarise(found: dict, trials: int) -> list[dict]:
    rows = []
    for name, calls in found["calls"].items():
        width, chunk = (int(x) for x in name.split(","))
        unit = found["units"][str(width)]
        per_trial = [c["wall"] / trials for c in calls]
        rows.append({"width": width, "chunk": chunk, "devices": calls[0]["devices"],
                     "ms": 1e3 * statistics.median(per_trial),
                     "gflops": unit / statistics.median(per_trial) / 1e9,
                     "share": statistics.median(unit / t / c["peak"] for t, c in zip(per_trial, calls)),
                     "peaks": [c["peak"] / 1e9 for c in calls],
                     "host": statistics.median(1 - c["chunks"] / c["wall"] for c in calls)})
    return sorted(rows, key=lambda r: (r["width"], r["chunk"]))


def render_all_cores(rows: list[dict], trials: int, label: str = "") -> str:
    return common_table(
        ["hidden units", "chunk_size", "trials per device per call", "ms/trial (median)", "GFLOP/s",
         "peak GFLOP/s (min-max)", "% of peak", "host share of wall", f"target >= {TARGET:.0%}" + label],
        [[str(r["width"]) + (" (preset)" if r["width"] == 50 else ""), str(r["chunk"]) + (" (default)" if r["chunk"] == min(64, trials) else ""),
          str(r["chunk"] // r["devices"]), f"{r['ms']:.2f}", f"{r['gflops']:.1f}",
          f"{min(r['peaks']):.0f}-{max(r['peaks']):.0f}", f"{100 * r['share']:.0f}%", f"{100 * r['host']:.1f}%",
          "met" if r["share"] >= TARGET else "missed"] for r in rows])


def common_table(header, rows) -> str:
    return common.table(header, rows)


# -- 2: one device, by operation class --------------------------------------------------------------
def product_flops(closed) -> float:
    """FLOPs of the `dot_general`s of a ClosedJaxpr (loops multiplied by their trip counts), counted
    as `hypergrad.accounting` counts them."""
    def count(jaxpr, consts) -> float:
        total = 0.0
        for eqn in accounting._live_eqns(jaxpr):
            name = eqn.primitive.name
            if name == "dot_general":
                total += accounting._dot_flops(eqn)
            elif name == "scan":
                body = eqn.params["jaxpr"]
                total += eqn.params["length"] * count(body.jaxpr, dict(zip(body.jaxpr.constvars, body.consts)))
            elif name == "while":
                body = eqn.params["body_jaxpr"]
                trips = accounting._while_trips(eqn, consts)
                total += (1 if trips is None else trips) * count(body.jaxpr, dict(zip(body.jaxpr.constvars, body.consts)))
            else:
                total += sum(count(sub, dict(zip(sub.constvars, c))) for sub, c in sub_jaxprs(eqn.params))
        return total
    return count(closed.jaxpr, dict(zip(closed.jaxpr.constvars, closed.consts)))


class _Call:
    def __init__(self, name, executable, args):
        self.name, self.executable, self.args = name, executable, args

    def call(self):
        return self.executable(*self.args)


def by_class(args) -> tuple[list[dict], float]:
    """Per N: ms per trial (median, untraced), traced ms per trial by class, FLOP/s of the whole and
    of the products; and the peak measured before and after (the better)."""
    objective, space = objective_of(50, args.steps)
    key, data = jax.random.key(0), objective.problem.data
    peak = matmul_flops_per_second(args.matmul, args.matmul, args.matmul, repeats=5)
    calls, units = [], {}
    for n in args.profile_trials:
        settings = space.sample(jax.random.key(1), n, stream=SAMPLE_STREAM)
        h0 = first_row(settings)
        executable, *_ = _search_program(objective, n, (settings, key, data), h0)
        calls.append(_Call(n, executable, (settings, key, data)))
        run = accounting.traced_run(objective, h0, key, data)
        units[n] = (accounting.run_flops(objective, h0, key), product_flops(run.jaxpr))
    times = common.time_interleaved(calls, args.repeats)
    rows = []
    for c in calls:
        n = c.name
        traced = common.profile_by_class("search", c.executable, c.args, n, args.calls)
        seconds = statistics.median(times[n]) / n
        classes = collections.defaultdict(float)
        for (loop, label), us in traced["by"].items():
            classes["scoring and set-up (outside the loop)" if loop == "outside loops" else label] += us / n / 1e3
        product_ms = classes.get("matrix products", 0.0)
        rows.append({"n": n, "ms": seconds * 1e3, "traced": traced["total"] / n / 1e3, "classes": dict(classes),
                     "gflops": units[n][0] / seconds / 1e9, "product_gflops": units[n][1] / product_ms / 1e6,
                     "product_share": units[n][1] / units[n][0]})
    peak = max(peak, matmul_flops_per_second(args.matmul, args.matmul, args.matmul, repeats=5))
    return rows, peak


def render_by_class(rows: list[dict], peak: float) -> str:
    labels = [c for c in common.CLASSES if any(c in r["classes"] for r in rows)]
    labels.append("scoring and set-up (outside the loop)")
    body = []
    for label in labels:
        line = [label]
        for r in rows:
            ms = r["classes"].get(label, 0.0)
            line += [f"{ms:.3f}", f"{100 * ms / r['traced']:.0f}%"]
        body.append(line)
    body.append(["**all operations (traced)**"] + [x for r in rows for x in (f"**{r['traced']:.3f}**", "100%")])
    body.append(["untraced call, median"] + [x for r in rows for x in (f"{r['ms']:.3f}", "")])
    body.append(["whole program: GFLOP/s, % of peak"] + [x for r in rows for x in (
        f"{r['gflops']:.1f}", f"{100 * r['gflops'] * 1e9 / peak:.0f}%")])
    body.append(["matrix products alone (traced): GFLOP/s, % of peak"] + [x for r in rows for x in (
        f"{r['product_gflops']:.1f}", f"{100 * r['product_gflops'] * 1e9 / peak:.0f}%")])
    header = ["operation class (ms per trial)"] + [h for r in rows for h in (f"N={r['n']}", "share")]
    return common.table(header, body)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--smoke", action="store_true",
                        help="T=10, 8 trials, 1 round, section 2 at N=2 alone: the tables' structure")
    parser.add_argument("--malloc", action="store_true", help="also the all-cores rows with MALLOC_MMAP_MAX_=0")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", default="16,32,64,128")
    parser.add_argument("--skip-profile", action="store_true")
    args = parser.parse_args(argv)
    args.widths = WIDTHS
    args.chunks = [int(c) for c in args.chunks.split(",")]
    args.steps, args.trials, args.matmul = 200, 256, 2048
    args.profile_trials, args.repeats, args.calls = (8, 32), 9, 3
    if args.smoke:
        args.steps, args.trials, args.rounds, args.chunks = 10, 8, 1, [4, 8]
        args.profile_trials, args.repeats, args.calls, args.matmul = (2,), 2, 1, 512
    load_start, wall = os.getloadavg(), time.perf_counter()
    sections = []
    found = all_cores(args)
    sections += [f"## 1. All cores ({os.cpu_count()} JAX devices), {args.trials} trials, T={args.steps}",
                 render_all_cores(summarise(found, args.trials), args.trials)]
    print("[1] all cores done", file=sys.stderr, flush=True)
    if args.malloc:
        pairs = {"default": [], "MALLOC_MMAP_MAX_=0": []}
        for _ in range(2):  # alternating processes
            pairs["default"].append(all_cores(args))
            pairs["MALLOC_MMAP_MAX_=0"].append(all_cores(args, {"MALLOC_MMAP_MAX_": "0"}))
        text = []
        for label, runs in pairs.items():
            merged = {"units": runs[0]["units"], "calls": {k: [c for r in runs for c in r["calls"][k]] for k in runs[0]["calls"]}}
            text += [f"glibc {label} (two processes, alternating with the other setting):",
                     render_all_cores(summarise(merged, args.trials), args.trials)]
        sections += ["### The same, glibc keeping freed memory or not"] + text
        print("[1] malloc done", file=sys.stderr, flush=True)
    if not args.skip_profile:
        rows, peak = by_class(args)
        sections += [f"## 2. One device, by operation class (digits-mlp, T={args.steps}; peak {peak / 1e9:.0f} GFLOP/s, "
                     f"the better of two {args.matmul}x{args.matmul} products before and after)",
                     render_by_class(rows, peak)]
    load_end = os.getloadavg()
    head = [
        "# Search throughput on all cores, and where a search chunk's time goes (issue 17 item 5)",
        f"Machine: jax {jax.__version__} on {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} cores); "
        f"`benchmarks/search_throughput.py {' '.join(argv) or '(defaults)'}`; whole run "
        f"{time.perf_counter() - wall:.0f} s; load average (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in load_start)} "
        f"at the start, {', '.join(f'{x:.1f}' for x in load_end)} at the end (other processes inflate times; "
        "each share is of a peak measured in the same process at the same time).",
    ]
    common.write_report("\n\n".join(head + sections) + "\n", args.out)


if __name__ == "__main__":
    main()
