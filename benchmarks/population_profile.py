"""Where a population step's time goes (issue 14): the vmapped `Reverse()` hypergradient against a
random-search chunk of as many trials, profiled by operation class, on ONE JAX device.

    .venv/bin/python benchmarks/population_profile.py --out benchmarks/population_profile.md
    .venv/bin/python benchmarks/population_profile.py --smoke          # structure only, seconds

The population throughput of `benchmarks/populations.py` shards a chunk of N trials over the two
cores (N/2 per device); here one device runs N = 8 (the per-device shapes of N = 16), so the
operations' times add up to the call's wall time (on one device XLA:CPU runs one operation at a
time) and the classes can be compared with the FLOPs. Both programs are compiled as the library
compiles them (the search's own chunk program; `jax.vmap` of `value_and_grad_fn(objective,
Reverse())`, what the population step computes besides its outer update) on the `digits-mlp`
preset (T=200). Each is timed (median of `--repeats` interleaved calls) and traced (`jax.profiler`,
perfetto, `--calls` calls); every traced XLA operation is put in one class by its compiled HLO (its
loop: the training loop, Reverse's forward and backward loops, or outside them; its fused root
operation; its output shape):

- matrix products: fusions whose root is a `dot`;
- sums to hyperparameters: reductions whose output is one value per trial (N, or partial sums of
  it), the hyperparameters' cotangents (`sum(ct * state)` over every parameter, every step);
- other reductions (the softmax's);
- store a state (dynamic-update-slice), load a state (dynamic-slice), buffer initialisation
  (broadcasts outside the loops: zero-filled stacked buffers);
- transposes and copies (layout changes, loop-carried copies);
- elementwise: every other fusion.

FLOPs per class are not modelled (hypergrad's count is per program: `hypergrad.accounting`). The
profiler adds a little to each operation; the traced total is printed beside the untraced wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax

import hypergrad as hg
from hypergrad import _compile, accounting
from hypergrad._batching import first_row
from hypergrad.hypergradient import value_and_grad_fn
from hypergrad.problems.presets import preset
from hypergrad.search import _search_program
from hypergrad.space import SAMPLE_STREAM

import _common as common  # noqa: E402  this directory's shared helpers

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--smoke", action="store_true",
                        help="T=10, N=2, 2 repeats, 1 traced call: the tables' structure")
    parser.add_argument("--trials", type=int, default=8, help="N, the trials (tuners) of the one device")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=None, help="traced calls (default 3; 1 with --smoke)")
    args = parser.parse_args(argv)
    steps, n = (10, 2) if args.smoke else (200, args.trials)
    repeats = 2 if args.smoke else args.repeats
    args.calls = args.calls or (1 if args.smoke else 3)
    load_start = os.getloadavg()
    wall = time.perf_counter()
    objective, space = preset("digits-mlp", steps)
    key, data = jax.random.key(0), objective.problem.data
    settings = space.sample(jax.random.key(1), n, stream=SAMPLE_STREAM)
    h0 = first_row(settings)
    search_exe, _, _, _ = _search_program(objective, n, (settings, key, data), h0)
    vmapped = jax.vmap(value_and_grad_fn(objective, hg.Reverse()), in_axes=(0, None, None))
    grad_exe = _compile.lower(vmapped, (settings, key, data)).compile()
    flops = {"search": n * accounting.run_flops(objective, h0, key),
             "Reverse()": n * accounting.hypergradient_flops(objective, hg.Reverse(), h0, key)}
    args_of = (settings, key, data)
    calls = [Call("search", search_exe, args_of), Call("Reverse()", grad_exe, args_of)]
    times = common.time_interleaved(calls, repeats)
    log("timed")
    profiles = {c.name: common.profile_by_class(c.name, c.executable, args_of, n, args.calls) for c in calls}
    log("traced")
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: flops[k] / med[k] for k in med}
    rows, digits = [], 2 if args.smoke else 1  # ms: the smoke's are hundredths
    for label in common.CLASSES:
        row = [label]
        for name, loops in (("search", ["training loop", "outside loops"]),
                            ("Reverse()", ["forward", "backward", "outside loops"])):
            for loop in loops:
                row.append(f"{profiles[name]['by'].get((loop, label), 0.0) / 1e3:.{digits}f}")
        rows.append(row)
    rows.append(["**all operations (traced)**"] + [
        f"**{sum(us for (lp, _), us in profiles[name]['by'].items() if lp == loop) / 1e3:.{digits}f}**"
        for name, loops in (("search", ["training loop", "outside loops"]),
                            ("Reverse()", ["forward", "backward", "outside loops"])) for loop in loops])
    header = ["operation class (ms per call)", "search: training loop", "search: outside", "Reverse(): forward loop",
              "Reverse(): backward loop", "Reverse(): outside"]
    summary = common.table(["program", "GFLOP per call", "ms per call (median, untraced)", "ms traced (all operations)",
                     "GFLOP/s", "FLOP/s / search's"],
                    [[k, f"{flops[k] / 1e9:.2f}", f"{med[k] * 1e3:.1f}", f"{profiles[k]['total'] / 1e3:.1f}",
                      f"{rate[k] / 1e9:.1f}", f"{rate[k] / rate['search']:.0%}"] for k in ("search", "Reverse()")])
    target_ms = flops["Reverse()"] / (0.8 * rate["search"]) * 1e3
    load_now = os.getloadavg()
    text = "\n\n".join([
        "# Where a population step's time goes (issue 14): vmapped Reverse() against the search, by operation class",
        f"Machine: jax {jax.__version__} on {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.local_device_count()} JAX device); `benchmarks/population_profile.py {' '.join(argv) or '(defaults)'}`; "
        f"digits-mlp, T={steps}, N={n} trials on one device; {repeats} interleaved calls each, {args.calls} traced; "
        f"whole run {time.perf_counter() - wall:.0f} s; load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in load_start)} at the start, {', '.join(f'{x:.1f}' for x in load_now)} at the end.",
        summary,
        f"At 80% of the search's FLOP/s, Reverse()'s call would take {target_ms:.1f} ms.",
        common.table(header, rows),
    ]) + "\n"
    common.write_report(text, args.out)


class Call:
    def __init__(self, name, executable, args):
        self.name, self.executable, self.args = name, executable, args

    def call(self):
        return self.executable(*self.args)


if __name__ == "__main__":
    main()
