"""Helpers every benchmark script shares: the benchmark problem and its configurations, timing,
peak-memory measurement in a child process, number formatting and report writing.

Scripts import it as a sibling (`python benchmarks/x.py` puts this directory on `sys.path`); it is
imported, never run. The section-1 rows (`hypergradient_cost.py`) are built here, so `bench.py`
and `methods_vs_horizon.py` reuse them without importing another script.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import resource
import subprocess
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

import hypergrad as hg
from hypergrad import accounting
from hypergrad.hypergradient import compiled_value_and_grad

from _report import table, write_report  # noqa: F401  re-exported: every script's report writing

HERE = os.path.dirname(os.path.abspath(__file__))
COST_SCRIPT = os.path.join(HERE, "hypergradient_cost.py")
"""The script a child process runs for one row's peak RSS, unless a caller names its own."""

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
        f'Reverse(checkpoint_every={k}, store="steps")': hg.Reverse(checkpoint_every=k, store="steps"),
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


def add_child_arguments(parser) -> None:
    """The hidden arguments with which a benchmark reruns one row in a subprocess (for its RSS)."""
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)


def use_compilation_cache(path: str) -> None:
    """JAX's persistent compilation cache in `path`, for every program however quick to compile
    (`hg.use_compilation_cache`)."""
    hg.use_compilation_cache(path)


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
    """Peak RSS of `script` (`COST_SCRIPT` by default) run with `--child name --child-steps num_steps`."""
    env = dict(os.environ)
    # A fixed threshold disables glibc's dynamic one: buffers of 128 KiB and more get their own
    # mappings and go back to the OS when freed, so the compiler's freed memory cannot hide the
    # program's allocations from RSS.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    cmd = [sys.executable, os.path.abspath(script or COST_SCRIPT), "--child", name, "--child-steps", str(num_steps)]
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


# -- profiles by XLA operation class (population_profile.py, search_throughput.py) -----------------
CLASSES = ["matrix products", "sums to hyperparameters", "other reductions", "elementwise",
           "transposes and copies", "store a state", "load a state", "buffer initialisation"]
NOT_OPS = re.compile(r"^\$|Thunk|Pjit|Execute|^while|^end: |Wait|ThreadpoolListener|ParseArguments|PythonRef")


def report_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a benchmark that writes markdown tables: its docstring's first paragraph as
    the description, `--out` (also write the tables there) and `--smoke` (tiny sizes)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the tables' structure in seconds")
    return parser


def median_range(values, spec: str = ".4f") -> str:
    """'median [min-max]' of `values`, each formatted with `spec` (how the quality tables summarise seeds)."""
    values = list(values)
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}-{max(values):{spec}}]"


def hlo_computations(text: str) -> tuple[str | None, dict[str, list[str]]]:
    """(the entry computation's name, each computation's instruction lines) of an HLO module's text."""
    body, entry, current = collections.defaultdict(list), None, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%(\S+) .*\{$", line)
        if head:
            current = head.group(2)
            entry = current if head.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            body[current].append(line)
    return entry, body


def parse_hlo(text: str) -> tuple[dict, dict]:
    """(instruction -> (computation, output shape, operation, called computation)), and the loop of
    each computation that is the body of a T-step while loop: "backward" (a transposed loop, Reverse's
    backward pass) or "forward" (training, Reverse's forward pass)."""
    where, roots, loops = {}, {}, {}
    for current, lines in hlo_computations(text)[1].items():
        for line in lines:
            loop = re.search(r"while\(.*body=%(\S+?),.*op_name=\"([^\"]*)\"", line)
            if loop:
                loops[loop.group(1)] = "backward" if "transpose(" in loop.group(2) else "forward"
            inst = re.match(r"\s*(ROOT )?%(\S+) = (\S+) ([\w-]+)\(", line)
            if not inst:
                continue
            called = re.search(r"calls=%([\w.\-]+)", line)
            where[inst.group(2)] = (current, inst.group(3), inst.group(4), called.group(1) if called else None)
            if inst.group(1):
                roots[current] = inst.group(4)
    return {name: (comp, shape, op, roots.get(called)) for name, (comp, shape, op, called) in where.items()}, loops


def copies_per_step(text: str, num_steps: int) -> float:
    """Copies of floating-point buffers (HLO `copy` and `copy-start` instructions outside fusions)
    that a compiled program executes in its loops, over T: each loop body's copies times its runs
    (while loops' known trip counts, nested; `call`s and command buffers as often as their
    caller). Integer copies (loop counters, the random-bit generator's state) are left out.
    Loop-carried copies are what XLA inserts when an operation reading a loop's carried value is
    not ordered before the one overwriting it in place; on a GPU each is a kernel (a memcpy)."""
    entry, body = hlo_computations(text)
    runs: collections.Counter = collections.Counter()

    def visit(comp: str, times: float) -> None:
        runs[comp] += times
        for line in body[comp]:
            if " while(" in line:
                trips = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
                visit(re.search(r"body=%([\w.\-]+)", line).group(1), times * (int(trips.group(1)) if trips else 1))
            elif re.search(r" (call|conditional|custom-call)\(", line):  # not fusions: their copies are not kernels
                for callee in re.findall(r"(?:to_apply|calls|branch_computations)=\{?%([\w.\-]+)", line):
                    visit(callee, times)

    if entry is not None:
        visit(entry, 1.0)
    copies = sum(times * sum(1 for line in body[comp] if re.search(r" = (f|bf)\d+\[\S* copy(-start)?\(", line))
                 for comp, times in runs.items() if times > 1)
    return copies / num_steps


def op_class(name: str, shape: str, root: str | None, in_loop: bool, trials: int) -> str:
    base = re.sub(r"\.\d+$", "", name)
    inside = re.search(r"\[([\d,]*)\]", shape)
    dims = [int(d) for d in inside.group(1).split(",") if d] if inside else []
    if root == "dot" or base.startswith("dot"):
        return "matrix products"
    if root in ("reduce", "reduce-window") or "reduce" in base:
        per_trial = dims[:1] == [trials] and (len(dims) == 1 or all(d <= 2 for d in dims[1:]))
        return "sums to hyperparameters" if per_trial and in_loop else "other reductions"
    if "dynamic-update-slice" in base:
        return "store a state"
    if "dynamic-slice" in base:
        return "load a state"
    if not in_loop and ("broadcast" in base or root == "broadcast"):
        return "buffer initialisation"
    if "transpose" in base or base.startswith("copy") or root in ("transpose", "copy"):
        return "transposes and copies"
    return "elementwise"


def trace(executable, args, calls: int) -> dict[str, float]:
    """Microseconds per XLA operation name, per call."""
    for _ in range(2):
        jax.block_until_ready(executable(*args))
    with tempfile.TemporaryDirectory(prefix="hypergrad_profile_") as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(executable(*args))
        path = sorted(glob.glob(os.path.join(d, "**", "*perfetto*"), recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    micros: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not NOT_OPS.search(e["name"]):
            micros[e["name"]] += e["dur"] / calls
    return micros


def profile_by_class(name: str, executable, args, trials: int, calls: int) -> dict:
    """A compiled program's traced operation time per call, by (loop, operation class): `parse_hlo`
    places each operation in a loop, `op_class` names its class, `trace` times it (`calls` calls)."""
    where, loops = parse_hlo(executable.as_text())
    micros = trace(executable, args, calls)
    by = collections.defaultdict(float)
    for op, us in micros.items():
        comp, shape, kind, root = where.get(op, ("?", "", "", None))
        loop = loops.get(comp, "outside loops")
        loop = "training loop" if loop == "forward" and name == "search" else loop
        by[(loop, op_class(op, shape, root, loop != "outside loops", trials))] += us
    return {"by": dict(by), "total": sum(micros.values())}
