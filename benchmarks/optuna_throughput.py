"""Trial throughput: Optuna's own loop against Optuna with vmapped batches and random search.

Problem: the digits-MLP preset (`hg.problems.preset("digits-mlp")`: MLP 64-50-10 on minibatches of
100, SGD with momentum and a per-step learning-rate schedule, weight decay in the loss, T=200 steps,
float32), searched over its preset space (lr log-uniform in [1e-3, 3] as one constant schedule,
momentum uniform in [0, 0.99], weight decay log-uniform in [1e-6, 1e-1]). Rows, at each trial count
of `--trials` (default 64 and 256):

- `optuna loop (TPE)`: Optuna's own sequential loop, `study.optimize(fn, n_trials)` with a seeded
  `TPESampler`, where `fn` suggests the three hyperparameters and calls one jitted single-trial
  program (`jax.jit(lambda h, k, d: objective.loss_and_scores(h, k, d)[1])`, the program a search
  trial runs) one trial at a time;
- `hg.optuna_search (TPE, batch B)`: the same sampler asked `B` trials at a time, each batch
  evaluated by one vmapped program (`--batch-sizes`, default 16 and 64);
- `hg.random_search`: all trials sampled at once, vmapped in chunks of `--chunk` (default 64).

Columns:

- run s: wall seconds of a second, warm call (every program compiled, including the small ones
  jax compiles for eager operations such as `Space.sample`), Optuna's host-side ask/tell time
  included: it is part of what each loop costs. Each row's call is made twice with the same seed,
  so both calls do the same work.
- first call s: wall seconds of the first call in the process at that trial count (cold: it
  compiles whatever it needs); compile s: the part of it spent compiling the trial program by XLA
  (`Result.compile_seconds`; for the Optuna loop, `jit(...).lower().compile()`). Programs are
  cached by shape, so a row whose shapes an earlier row compiled shows 0.
  `hypergrad.search.run_flops` counts a trial's program (a trace, nothing compiled) before anything
  is timed.
- s/trial and trials/s: from run s.
- GFLOP/s and % peak: useful FLOPs (trials x FLOPs of one trial counted by hypergrad.accounting,
  `hypergrad.search.run_flops`; padding not counted) per run second, and that as a share of the
  machine's peak matrix-multiply rate, measured in the same run as the best of several calls of a
  jitted float32 `N x N @ N x N` (N = `--matmul`, 2 N^3 FLOPs).

Run (a few minutes on 2 CPU cores; `--quick`, about half a minute, mostly compilation: T=20, 16 and 32
trials, batch and chunk 16, so that two programs are compiled in all):

    .venv/bin/python benchmarks/optuna_throughput.py --out benchmarks/optuna_throughput.md
    .venv/bin/python benchmarks/optuna_throughput.py --quick

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg
from hypergrad.accounting import matmul_flops_per_second
from hypergrad.search import run_flops

from _common import write_report  # this directory's shared helpers


def peak_matmul_flops(n: int, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` calls of a jitted float32 n x n matmul."""
    return matmul_flops_per_second(n, n, n, repeats=repeats)


def hparams_of(space: hg.Space, lr: float, momentum: float, weight_decay: float) -> dict:
    """One setting of the preset space as the search hands it to the program (float32 arrays)."""
    dtype = jnp.zeros(()).dtype
    return {"lr": jnp.full(space["lr"].shape, lr, dtype), "momentum": jnp.asarray(momentum, dtype),
            "weight_decay": jnp.asarray(weight_decay, dtype)}


class OptunaLoop:
    """Optuna's sequential `study.optimize` calling one jitted single-trial program per trial."""

    def __init__(self, objective: hg.Objective, space: hg.Space, key):
        self.objective, self.space, self.key, self.data = objective, space, key, objective.problem.data
        self.executable = None

    def __call__(self, num_trials: int, seed: int) -> tuple[float, float]:
        """(best validation loss, seconds spent compiling in this call: the first call compiles)."""
        import optuna

        compile_seconds = 0.0
        if self.executable is None:
            start = time.perf_counter()
            program = jax.jit(lambda h, k, d: self.objective.loss_and_scores(h, k, d)[1])
            example = hparams_of(self.space, 0.1, 0.9, 1e-4)
            self.executable = program.lower(example, self.key, self.data).compile()
            compile_seconds = time.perf_counter() - start

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        lr, momentum, decay = self.space["lr"], self.space["momentum"], self.space["weight_decay"]

        def fn(trial):
            h = hparams_of(self.space, trial.suggest_float("lr", lr.lo, lr.hi, log=True),
                           trial.suggest_float("momentum", momentum.lo, momentum.hi),
                           trial.suggest_float("weight_decay", decay.lo, decay.hi, log=True))
            value = float(self.executable(h, self.key, self.data)["val_loss"])
            return value if np.isfinite(value) else float("nan")  # NaN: Optuna records a failed trial

        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(fn, n_trials=num_trials)
        finite = [t.value for t in study.trials if t.value is not None and np.isfinite(t.value)]
        return (min(finite) if finite else float("nan")), compile_seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[64, 256], help="trial counts")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64],
                        help="optuna_search batch sizes")
    parser.add_argument("--chunk", type=int, default=64, help="random_search chunk size")
    parser.add_argument("--steps", type=int, default=200, help="training steps T")
    parser.add_argument("--matmul", type=int, default=2048, help="N of the peak-FLOP/s matmul")
    parser.add_argument("--quick", action="store_true",
                        help="T=20, 16 and 32 trials, batch and chunk 16, N=1024")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.steps, args.matmul, args.batch_sizes, args.chunk = [16, 32], 20, 1024, [16], 16
    began = time.perf_counter()

    peak = peak_matmul_flops(args.matmul)
    objective, space = hg.problems.preset("digits-mlp", num_steps=args.steps)
    key = jax.random.key(0)
    unit = run_flops(objective, hparams_of(space, 0.1, 0.9, 1e-4), key)  # compiles its references now
    loop = OptunaLoop(objective, space, key)

    rows = []

    def measure(name, n, call):
        """Calls twice: the first (cold) compiles what it needs; the second (warm) is the run time.
        `call` returns (best validation loss, seconds it spent compiling)."""
        start = time.perf_counter()
        first = call()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        best = call()[0]
        warm = time.perf_counter() - start
        rows.append({"strategy": name, "trials": n, "run": warm, "cold": cold,
                     "compile": first[1], "best": best, "flops": unit * n})
        print(f"{name:34s} {n:4d} trials  run {warm:7.2f}s  first call {cold:6.2f}s  "
              f"(compile {rows[-1]['compile']:5.2f}s)  best val {best:.4f}", file=sys.stderr, flush=True)

    for n in args.trials:
        measure("optuna loop (TPE)", n, lambda: loop(n, seed=0))
        for batch in args.batch_sizes:
            def search(batch=batch):
                result = hg.optuna_search(objective, space, key, n, batch_size=batch, seed=0)
                return result.best_value, result.compile_seconds
            measure(f"hg.optuna_search (TPE, batch {batch})", n, search)

        def random():
            result = hg.random_search(objective, space, key, n, chunk_size=args.chunk)
            return result.best_value, result.compile_seconds
        measure(f"hg.random_search (chunk {args.chunk})", n, random)

    header = ["strategy", "trials", "run s", "s/trial", "trials/s", "GFLOP/s", "% peak", "first call s",
              "compile s", "best val loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        rate = r["flops"] / r["run"]
        lines.append(f"| {r['strategy']} | {r['trials']} | {r['run']:.2f} | "
                     f"{r['run'] / r['trials'] * 1e3:.1f} ms | "
                     f"{r['trials'] / r['run']:.1f} | {rate / 1e9:.2f} | {100 * rate / peak:.2f} | "
                     f"{r['cold']:.2f} | "
                     f"{r['compile']:.2f} | {r['best']:.4f} |")
    device = jax.devices()[0]
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import optuna

    lines += ["", (
        f"digits-mlp preset (MLP 64-50-10, batch 100, SGD + momentum, weight decay, T={args.steps}, "
        "float32); "
        f"one trial = {unit / 1e9:.3f} GFLOP (hypergrad.accounting); peak float32 matmul "
        f"({args.matmul}x{args.matmul}) {peak / 1e9:.1f} GFLOP/s; jax {jax.__version__}, "
        f"optuna {optuna.__version__} "
        f"on {device.platform} ({device.device_kind}, {platform.machine()}, {cores} cores); arguments "
        f"`{' '.join(sys.argv[1:] if argv is None else argv)}`; each row called twice (run s from the second call); whole benchmark "
        f"{time.perf_counter() - began:.0f} s; load average {load:.1f} at the end (other processes on the "
        "machine inflate times)."
    )]
    table = "\n".join(lines)
    write_report(table, args.out)


if __name__ == "__main__":
    main()
