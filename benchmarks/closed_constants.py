"""Large arrays a problem closes over, embedded as constants or passed as arguments (`hypergrad._compile`'s
hoisting), side by side.

    .venv/bin/python benchmarks/closed_constants.py --out benchmarks/closed_constants.md   # about 1 min on 2 cores
    .venv/bin/python benchmarks/closed_constants.py --smoke                                 # structure only, seconds

A fine-tuning problem (`hg.problems.finetune`) whose pretrained tree is 40 MB of float32 weights (a 5000 x 2000 body
and a head; 4 MB with `--smoke`: 1000 x 1000): its init and its L2-SP penalty close over them. Each row is one fresh
process computing `hg.hypergradient(objective, h, key)` (Reverse, 5 steps) twice: "embedded" with hoisting turned off
(`_compile.HOISTED_BYTES` set past any array, the behaviour before hoisting), "hoisted" with the library's default.
Columns: the lowered program's text, the first call (trace, lowering, compilation and the run), the second call, the
growth of the process's peak RSS over the first call. The processes alternate
(`--repeats` each, medians shown); every figure is measured on the same machine in one run. The last column is the
largest relative difference of the value and hypergradient from the embedded run's: 0 under XLA's default options;
with the options that let it fold constants differently (the test suite's quick flags) rounding can differ. Speed is measured here, never asserted
in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _report  # the parent writes the table without importing jax (`_common` does, in the child)

FULL = dict(body=(5000, 2000), steps=5, repeats=3)
SMOKE = dict(body=(1000, 1000), steps=2, repeats=1)
SETTINGS = ("embedded", "hoisted")


def child(setting: str, body: tuple[int, int], steps: int) -> dict:
    """One process's measurements for `setting` (run with --child)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import _common as common
    import hypergrad as hg
    from hypergrad import _compile

    if setting == "embedded":
        _compile.HOISTED_BYTES = 1 << 62  # no array is large enough: every closed-over array stays a constant
    d, h, c = *body, 10
    rng = np.random.default_rng(0)
    pretrained = {"body": {"w": (rng.normal(size=(d, h)) / 70).astype(np.float32), "b": np.zeros(h, np.float32)},
                  "head": {"w": (rng.normal(size=(h, c)) * 0.05).astype(np.float32), "b": np.zeros(c, np.float32)}}

    def apply(p, x):
        return jnp.tanh(x @ p["body"]["w"] + p["body"]["b"]) @ p["head"]["w"] + p["head"]["b"]

    splits = []
    for n in (64, 32, 32):
        x = rng.normal(size=(n, d)).astype(np.float32)
        splits.append((x, (x[:, 0] > 0).astype(np.int32)))
    problem = hg.problems.finetune(pretrained, tuple(splits), apply)
    objective = hg.Objective(problem, lambda hp: optax.sgd(hp["lr"]), num_steps=steps)
    hparams = {"lr": jnp.asarray(0.1, jnp.float32), "l2sp": jnp.asarray(0.01, jnp.float32)}
    key = jax.random.key(0)
    texts, lower = [], _compile.lower

    def spy(fn, args):
        lowered = lower(fn, args)
        texts.append(len(lowered.as_text()))
        return lowered

    _compile.lower = spy
    jax.block_until_ready(jnp.ones(3) + 1)  # the backend started before the peak is read
    peak_before = common._peak_rss_kib()
    began = time.perf_counter()
    value, grads = hg.hypergradient(objective, hparams, key)
    jax.block_until_ready(grads)
    first = time.perf_counter() - began
    peak_growth = common._peak_rss_kib() - peak_before
    began = time.perf_counter()
    jax.block_until_ready(hg.hypergradient(objective, hparams, key))
    second = time.perf_counter() - began
    weights = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(pretrained))
    numbers = [float(np.asarray(value).ravel()[0])] + [float(g) for g in jax.tree.leaves(grads)]
    return {"weights_mb": weights / 1e6, "text_mb": texts[0] / 1e6, "first_s": first, "second_ms": second * 1e3,
            "peak_growth_mb": peak_growth / 1024, "numbers": numbers}


def run_child(setting: str, plan: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", setting, "--body", ",".join(map(str, plan["body"])),
           "--steps", str(plan["steps"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"the {setting} child failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(rows: dict[str, list[dict]]) -> str:
    def median(setting, field):
        values = [r[field] for r in rows[setting] if r[field] is not None]
        return statistics.median(values) if values else None

    header = ["setting", "weights (MB)", "program text (MB)", "first call (s)", "second call (ms)",
              "peak RSS growth, first call (MB)", "values: max rel. difference from embedded"]
    reference = rows["embedded"][0]["numbers"]

    def difference(setting):
        return max(abs(x - y) / max(abs(y), 1e-30) for r in rows[setting] for x, y in zip(r["numbers"], reference))

    body = [[setting, f"{median(setting, 'weights_mb'):.1f}", f"{median(setting, 'text_mb'):.2f}",
             f"{median(setting, 'first_s'):.2f}", f"{median(setting, 'second_ms'):.0f}",
             f"{median(setting, 'peak_growth_mb'):.0f}", f"{difference(setting):.2g}"] for setting in SETTINGS]
    ratios = [["hoisted / embedded", "", f"{median('hoisted', 'text_mb') / median('embedded', 'text_mb'):.3f}",
               f"{median('hoisted', 'first_s') / median('embedded', 'first_s'):.2f}",
               f"{median('hoisted', 'second_ms') / median('embedded', 'second_ms'):.2f}",
               f"{median('hoisted', 'peak_growth_mb') / max(median('embedded', 'peak_growth_mb'), 1e-9):.2f}", ""]]
    return _report.table(header, body + ratios)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--smoke", action="store_true", help="a 4 MB tree, 2 steps, one process each: structure only")
    parser.add_argument("--repeats", type=int, help="processes per setting, alternating (default 3; 1 with --smoke)")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, tuple(int(x) for x in args.body.split(",")), args.steps)))
        return
    plan = dict(SMOKE if args.smoke else FULL)
    plan["repeats"] = args.repeats or plan["repeats"]
    began, load = time.perf_counter(), os.getloadavg()
    rows = {setting: [] for setting in SETTINGS}
    for _ in range(plan["repeats"]):
        for setting in SETTINGS:
            rows[setting].append(run_child(setting, plan))
    head = (f"# Closed-over arrays: embedded as constants or passed as arguments\n\n"
            f"`benchmarks/closed_constants.py {' '.join(argv if argv is not None else sys.argv[1:]) or '(defaults)'}`; "
            f"body {plan['body'][0]} x {plan['body'][1]} float32, Reverse, {plan['steps']} steps, {plan['repeats']} "
            f"process(es) per setting, alternating (medians); whole run {time.perf_counter() - began:.0f} s; load "
            f"average {load[0]:.1f} at the start.\n")
    _report.write_report(head + "\n" + render(rows) + "\n", args.out)


if __name__ == "__main__":
    main()
