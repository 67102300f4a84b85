"""`Reverse()` against training at every width, alone and vmapped, with an XLA profile by operation
class (issue 17 item 2; issue 14's throughput target).

    .venv/bin/python benchmarks/reverse_widths.py --out benchmarks/reverse_widths.md   # `make bench-widths`
    .venv/bin/python benchmarks/reverse_widths.py --smoke --out /tmp/reverse_widths.md # structure only

Problem: digits MLPs (`hg.problems.mlp_classifier("digits", hidden=..., batch_size=100)`) with
hidden layers 50, 100, 200, 400 and (100, 100), trained by SGD with momentum 0.9 and a per-step
rate schedule, weight decay in the loss, float32, for T = 200 and 2000 steps.

1. Widths. Rows per (width, T): `train` (one search trial: training plus scoring, the library's
   unit of compute), `Reverse()` and `Reverse(checkpoint_every=k)` (k the divisor of T nearest
   sqrt(T); its default store, "dots") through `hg.hypergradient`. Time: median (and min)
   seconds of one call over `--repeats` interleaved, rotated repeats after a warm-up call;
   `x train` is the ratio of medians, `x train (min)` of the fastest calls. FLOP ratio:
   hypergrad's accounting (`hg.hypergradient_flops` / `hg.run_flops`). `faults/call`: minor page faults per call (the
   first touch of memory the program's buffers get fresh from the OS), from `getrusage`.
   `copies/step`: copies of floating-point buffers the compiled program executes in its loops,
   per call over T (`_common.copies_per_step`: XLA's loop-carried copies; on a GPU each is a
   memcpy kernel, and there the time follows the kernel count).
   Targets (issue 17): <= 3.0x training without checkpointing, <= 4.0x with it.
2. Vmapped: N = 16 and 64 settings (per-step rates spread over 0.05-0.2) on one device, digits
   50 hidden units, T=200: `jax.jit(jax.vmap(...))` of the training trial and of `Reverse()`'s
   hypergradient; FLOP/s = N x the FLOPs above / median seconds. Target (issue 14): >= 80% of
   the training chunk's FLOP/s.
3. Profile: `jax.profiler` traces (perfetto) of a few calls of train, `Reverse()` and
   `Reverse(checkpoint_every=k)` at T=200 and two widths; every XLA operation (thunk) is put in
   a class by its name (matrix products, elementwise fusions, transposes and copies, stores and
   loads of per-step values, buffer initialisations, gathers); count per training step and
   share of the operations' time. Beside it the machine's memory copy bandwidth into warm and
   into fresh pages (numpy), which prices every byte Reverse stores per step.

At the first horizon (T=200) a `Reverse(store="dots")` row (the default store before `store="steps"`) sits beside,
in section 1 and in section 2, and in section 1 a `Reverse(store="states")` row (the hand-written VJP) and a
`Reverse(checkpoint_every=k, store="steps")` row (checkpointing's default store before "dots").

On a GPU the profile reads the kernels and copies on the device's streams (`benchmarks/gpu.sh`; tables
in `benchmarks/reverse_widths_gpu.md` and `benchmarks/gpu_profile.md`). Every section is written to
`--out` as it ends.

`--smoke`: T=10, width 16, N = 2, 2 repeats, its profile; its numbers mean nothing. `--only vmapped`
(or any of widths, vmapped, profile, separated by commas) runs those sections alone; `--widths 100,100-100`
and `--steps 200` narrow the widths and horizons. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg
from hypergrad.hypergradient import value_and_grad_fn
from _common import Config, copies_per_step, optimizer, segment_length, table, time_interleaved, write_report

FULL = dict(widths=[(50,), (100,), (200,), (400,), (100, 100)], steps=[200, 2000], sizes=[16, 64],
            repeats=5, profile_widths=[(100,), (400,)], profile_steps=200)
SMOKE = dict(widths=[(16,)], steps=[10], sizes=[2], repeats=2, profile_widths=[(16,)], profile_steps=10)
VMAP_WIDTH = (50,)
DOTS_AT = {200}  # horizons with a Reverse(store="dots") row (the default store until `store="steps"`)
DOTS = 'Reverse(store="dots")'
STATES = 'Reverse(store="states")'


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def width_name(hidden: tuple) -> str:
    return "-".join(str(h) for h in hidden)


def objective_of(hidden: tuple, num_steps: int):
    problem = hg.problems.mlp_classifier("digits", hidden=hidden, batch_size=100)
    objective = hg.Objective(problem, optimizer, num_steps=num_steps)
    hparams = {"lr": jnp.full((num_steps,), 0.1, jnp.float32), "momentum": jnp.asarray(0.9, jnp.float32),
               "weight_decay": jnp.asarray(1e-4, jnp.float32)}
    return objective, hparams, jax.random.key(0)


_CONFIGS: dict = {}


def configs_of(hidden: tuple, num_steps: int) -> list[Config]:
    """The three compiled rows of (width, T), compiled once per process (the profile reuses them)."""
    if (hidden, num_steps) not in _CONFIGS:
        _CONFIGS[hidden, num_steps] = _compile_configs(hidden, num_steps)
    return _CONFIGS[hidden, num_steps]


def _compile_configs(hidden: tuple, num_steps: int) -> list[Config]:
    objective, hparams, key = objective_of(hidden, num_steps)
    k = segment_length(num_steps)
    configs = [Config("train", objective, hparams, key),
               Config("Reverse()", objective, hparams, key, method=hg.Reverse()),
               Config(f"Reverse(checkpoint_every={k})", objective, hparams, key, method=hg.Reverse(checkpoint_every=k))]
    if num_steps in DOTS_AT:  # the default store before this benchmark, beside the new one, the
        # hand-written VJP (the fastest store on a GPU, `benchmarks/RESULTS_gpu.md`), and checkpointing
        # with "steps", its default store before "dots"
        configs.append(Config(DOTS, objective, hparams, key, method=hg.Reverse(store="dots")))
        configs.append(Config(STATES, objective, hparams, key, method=hg.Reverse(store="states")))
        configs.append(Config(f'Reverse(checkpoint_every={k}, store="steps")', objective, hparams, key,
                              method=hg.Reverse(checkpoint_every=k, store="steps")))
    return configs


def faults_per_call(config: Config, calls: int = 1) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(config.call())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


# -- 1. widths -------------------------------------------------------------------------------------
def widths(args, plan, on_progress=lambda rows: None) -> list[dict]:
    """Rows per (T, width); `on_progress(rows)` after each (T, width), so a stopped run keeps them."""
    rows = []
    for num_steps in plan["steps"]:
        for hidden in plan["widths"]:
            configs = configs_of(hidden, num_steps)
            times = time_interleaved(configs, plan["repeats"])
            train_flops = configs[0].flops({})
            base, base_min = statistics.median(times["train"]), min(times["train"])
            for config in configs:
                med, best = statistics.median(times[config.name]), min(times[config.name])
                flops = train_flops if config.name == "train" else config.flops({})
                rows.append({"T": num_steps, "width": width_name(hidden), "name": config.name, "median": med,
                             "min": best, "ratio": med / base, "ratio_min": best / base_min,
                             "flop_ratio": flops / train_flops, "faults": faults_per_call(config),
                             "copies": copies_per_step(config.executable.as_text(), num_steps),
                             "compile": config.compile_seconds})
            log(f"[1] T={num_steps} hidden={hidden}: timed")
            on_progress(rows)
    return rows


def render_widths(rows) -> tuple[str, list[str]]:
    out, verdicts = [], []
    for r in rows:
        target = {"Reverse()": 3.0, DOTS: 3.0, STATES: 3.0}.get(r["name"], "" if r["name"] == "train" else 4.0)
        met = "" if target == "" else ("met" if r["ratio"] <= target else "missed")
        out.append([str(r["T"]), r["width"], r["name"], f"{r['median'] * 1e3:.1f}", f"{r['min'] * 1e3:.1f}",
                    f"{r['ratio']:.2f}", f"{r['ratio_min']:.2f}", f"{r['flop_ratio']:.2f}", f"{r['faults']:.0f}",
                    f"{r['copies']:.1f}", f"{r['compile']:.1f}", "" if target == "" else f"<= {target}: {met}"])
        if target != "":
            verdicts.append(f"T={r['T']} hidden {r['width']} {r['name']}: {r['ratio']:.2f}x training "
                            f"(FLOP ratio {r['flop_ratio']:.2f}): {met}")
    header = ["T", "hidden", "program", "ms (median)", "ms (min)", "x train", "x train (min)", "FLOP x train",
              "faults/call", "copies/step", "compile (s)", "target"]
    return table(header, out), verdicts


# -- 2. vmapped ------------------------------------------------------------------------------------
def vmapped(args, plan) -> list[dict]:
    num_steps = plan["steps"][0]
    objective, hparams, key = objective_of(VMAP_WIDTH, num_steps)
    data = objective.problem.data
    run_flops = hg.run_flops(objective, hparams, key)
    grad_flops = hg.hypergradient_flops(objective, hg.Reverse(), hparams, key)
    train = jax.vmap(lambda h, k, d: objective.loss_and_scores(h, k, d)[1], in_axes=(0, None, None))
    grad = jax.vmap(value_and_grad_fn(objective, hg.Reverse()), in_axes=(0, None, None))
    dots = jax.vmap(value_and_grad_fn(objective, hg.Reverse(store="dots")), in_axes=(0, None, None))
    dots_flops = hg.hypergradient_flops(objective, hg.Reverse(store="dots"), hparams, key)
    rows = []
    for n in plan["sizes"]:
        rates = jnp.linspace(0.05, 0.2, n, dtype=jnp.float32)
        batch = dict(hparams, lr=rates[:, None] * jnp.ones((1, num_steps), jnp.float32),
                     momentum=jnp.full((n,), 0.9, jnp.float32), weight_decay=jnp.full((n,), 1e-4, jnp.float32))
        calls = [_Call(name, jax.jit(fn).lower(batch, key, data).compile(), (batch, key, data), n * flops)
                 for name, fn, flops in (("train (vmapped)", train, run_flops), ("Reverse() (vmapped)", grad, grad_flops),
                                         (f"{DOTS} (vmapped)", dots, dots_flops))]
        times = time_interleaved(calls, plan["repeats"])
        for c in calls:
            med, best = statistics.median(times[c.name]), min(times[c.name])
            rows.append({"n": n, "name": c.name, "median": med, "min": best, "rate": c.flops / med,
                         "rate_min": c.flops / best, "gflop": c.flops / 1e9})
        log(f"[2] N={n}: timed")
    return rows


class _Call:
    def __init__(self, name, executable, args, flops):
        self.name, self.executable, self.args, self.flops = name, executable, args, flops

    def call(self):
        return self.executable(*self.args)


def render_vmapped(rows) -> tuple[str, list[str]]:
    out, verdicts = [], []
    for i in range(0, len(rows), 3):
        train = rows[i]
        for r in rows[i:i + 3]:
            share, share_min = r["rate"] / train["rate"], r["rate_min"] / train["rate_min"]
            met = "met" if share >= 0.8 else "missed"
            out.append([str(r["n"]), r["name"], f"{r['gflop']:.2f}", f"{r['median'] * 1e3:.1f}",
                        f"{r['min'] * 1e3:.1f}", f"{r['rate'] / 1e9:.1f}", f"{share:.0%}", f"{share_min:.0%}",
                        "" if r is train else f">= 80%: {met}"])
            if r is not train:
                verdicts.append(f"vmapped N={r['n']}: {r['name'].replace(' (vmapped)', '')} at {share:.0%} of "
                                f"training's FLOP/s ({r['rate'] / 1e9:.1f} vs {train['rate'] / 1e9:.1f} GFLOP/s): {met}")
    header = ["N", "program", "GFLOP per call", "ms (median)", "ms (min)", "GFLOP/s (median)",
              "FLOP/s / training's", "same, fastest calls", "target"]
    return table(header, out), verdicts


# -- 3. profile ------------------------------------------------------------------------------------
CLASSES = [  # (class, pattern on the thunk's or GPU kernel's name), first match wins
    ("matrix products (dot, ynn_fusion; GPU: gemm)", r"^(ynn_fusion|dot|dot_general)\b|dot|gemm|cublas|cutlass|xmma"),
    ("store a step (dynamic-update-slice)", r"dynamic[-_]update[-_]slice"),
    ("load a step (dynamic-slice, slice)", r"dynamic[-_]slice|slice"),
    ("buffer initialisation (broadcast, memset)", r"broadcast|memset"),
    ("transposes and copies", r"transpose|copy|memcpy"),
    ("gathers and scatters (minibatch, labels)", r"gather|scatter"),
    ("concatenations", r"concatenate"),
    ("elementwise and reduction fusions", r""),
]
NOT_OPS = re.compile(r"^\$|Thunk|Pjit|Execute|^while|^end: ")


def op_class(name: str) -> str:
    base = re.sub(r"\.\d+$", "", name)
    return next(label for label, pattern in CLASSES if re.search(pattern, base))


def trace_ops(config: Config, calls: int) -> tuple[dict, dict]:
    """(microseconds, count) per XLA operation name, per call, from a perfetto trace: XLA:CPU's
    thunks, or on a GPU the kernels and copies on the device's streams (processes "/device:GPU:...";
    the host's launch events are left out)."""
    for _ in range(2):
        jax.block_until_ready(config.call())
    with tempfile.TemporaryDirectory(prefix="reverse_widths_trace_") as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(config.call())
        path = sorted(glob.glob(os.path.join(d, "**", "*perfetto*"), recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    devices = {pid for pid, name in processes.items() if name.startswith("/device:GPU")}
    micros, counts = collections.Counter(), collections.Counter()
    for e in events:
        if devices and e.get("pid") not in devices:
            continue
        if e.get("ph") == "X" and not NOT_OPS.search(e["name"]):
            micros[e["name"]] += e["dur"] / calls
            counts[e["name"]] += 1 / calls
    return micros, counts


def profile(args, plan) -> list[dict]:
    rows, num_steps = [], plan["profile_steps"]
    for hidden in plan["profile_widths"]:
        for config in configs_of(hidden, num_steps):
            micros, counts = trace_ops(config, calls=3)
            total = sum(micros.values())
            by_class = collections.defaultdict(lambda: [0.0, 0.0])
            for name, us in micros.items():
                by_class[op_class(name)][0] += us
                by_class[op_class(name)][1] += counts[name]
            top = [(name, us / total) for name, us in micros.most_common(3)]
            for label, _ in CLASSES:
                us, count = by_class.get(label, (0.0, 0.0))
                rows.append({"width": width_name(hidden), "name": config.name, "class": label, "total_ms": total / 1e3,
                             "per_step": count / num_steps, "share": us / total if total else 0.0,
                             "ms_per_step": us / num_steps / 1e3, "top": top})
            log(f"[3] hidden={hidden} {config.name}: traced")
    return rows


def render_profile(rows, plan) -> str:
    out = []
    for r in rows:
        out.append([r["width"], r["name"], r["class"], f"{r['per_step']:.1f}", f"{r['ms_per_step'] * 1e3:.1f}",
                    f"{r['share']:.0%}"])
    tops = {}
    for r in rows:
        tops[(r["width"], r["name"])] = (r["total_ms"], r["top"])
    notes = [f"- hidden {w} {n}: operations {t:.1f} ms per call (traced); largest: "
             + ", ".join(f"`{name}` {share:.0%}" for name, share in top) for (w, n), (t, top) in tops.items()]
    header = ["hidden", "program", "operation class", "count per step", "us per step", "share of op time"]
    return table(header, out) + "\n\n" + "\n".join(notes)


def bandwidth() -> str:
    """Memory copy bandwidth (GB/s) into warm pages and into fresh ones (numpy, 48 MB, best of 3)."""
    src = np.ones(12_000_000, np.float32)
    warm = np.zeros_like(src)
    fast, fresh = [], []
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(warm, src)
        fast.append(time.perf_counter() - start)
        dst = np.empty_like(src)
        start = time.perf_counter()
        np.copyto(dst, src)
        fresh.append(time.perf_counter() - start)
        del dst
    gb = src.nbytes / 1e9
    return f"{gb / min(fast):.1f} GB/s into warm pages, {gb / min(fresh):.1f} GB/s into fresh pages"


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the tables' structure in seconds")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--repeats", type=int, help="timed calls per row (default 5; 2 with --smoke)")
    parser.add_argument("--no-profile", action="store_true", help="skip section 3")
    parser.add_argument("--widths", help="hidden layers to measure, e.g. 100,400,100-100 (default 50,100,200,400,100-100; "
                        "the profile's are 100,400 among them)")
    parser.add_argument("--steps", help="horizons T, e.g. 200 (default 200,2000)")
    parser.add_argument("--only", default="widths,vmapped,profile",
                        help="sections to run, separated by commas (widths, vmapped, profile); e.g. --only vmapped")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not only or only - {"widths", "vmapped", "profile"}:
        raise SystemExit(f"--only {args.only!r}: name sections among widths, vmapped, profile")
    plan = dict(SMOKE if args.smoke else FULL)
    if args.repeats:
        plan["repeats"] = args.repeats
    if args.widths:
        plan["widths"] = [tuple(int(h) for h in w.split("-")) for w in args.widths.split(",")]
        plan["profile_widths"] = [w for w in plan["profile_widths"] if w in plan["widths"]] or plan["widths"][:1]
    if args.steps:
        plan["steps"] = [int(t) for t in args.steps.split(",")]
    DOTS_AT.add(plan["steps"][0])
    wall, load = time.perf_counter(), os.getloadavg()
    argv_text = " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)"

    def report(width_rows, vmap_rows=(), profile_rows=(), done=False) -> str:
        width_table, verdicts = render_widths(width_rows)
        vmap_table, vmap_verdicts = render_vmapped(vmap_rows)
        run = (f"{time.perf_counter() - wall:.0f} s" if done else
               "**partial: the run is still going and rewrites this file as each part ends**")
        # measured once, at the end: copying 48 MB between rows would cost time and disturb them
        copy_rate = bandwidth() if done else "measured when the run ends"
        parts = [
            "# Reverse() against training at every width, alone and vmapped (issues 17 and 14)", "",
            f"Machine: jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}; "
            f"host {platform.machine()}, {os.cpu_count()} cores); `benchmarks/reverse_widths.py {argv_text}`; {run}; "
            f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other processes inflate "
            f"and scatter times); memory copy bandwidth {copy_rate}.", "",
            "## Verdicts", "", *[f"- {v}" for v in verdicts + vmap_verdicts], "",
        ]
        if width_rows:
            parts += [f"## 1. Widths (digits, batch 100, SGD + momentum, per-step rates; median of {plan['repeats']} "
                      "interleaved calls after a warm-up call)", "", width_table, ""]
        if vmap_rows:
            parts += [f"## 2. Vmapped (hidden {width_name(VMAP_WIDTH)}, T={plan['steps'][0]}, one device)", "", vmap_table, ""]
        if profile_rows:
            parts += [f"## 3. Profile by XLA operation class (T={plan['profile_steps']}, 3 traced calls)", "",
                      render_profile(profile_rows, plan), ""]
        return "\n".join(parts)

    def keep(*rows) -> None:  # results written as they are produced
        if args.out:
            write_report(report(*rows), args.out, echo=False)

    width_rows = widths(args, plan, on_progress=keep) if "widths" in only else []
    vmap_rows = vmapped(args, plan) if "vmapped" in only else []
    keep(width_rows, vmap_rows)
    profile_rows = [] if args.no_profile or "profile" not in only else profile(args, plan)
    write_report(report(width_rows, vmap_rows, profile_rows, done=True), args.out)


if __name__ == "__main__":
    main()
