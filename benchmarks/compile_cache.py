"""Compile seconds cold and warm: JAX's persistent compilation cache (`hg.use_compilation_cache`).

    .venv/bin/python benchmarks/compile_cache.py --out benchmarks/compile_cache.md    # 1-2 min on 2 CPU cores

Three fresh processes each run `hg.random_search` (256 trials) and `hg.tune` (Reverse(), 5 outer
steps; its compilation does not depend on the steps) on the `digits-mlp` preset (T=200) and report
each result's `compile_seconds` (the seconds its first call spent lowering and compiling) and the
wall seconds of the whole call:

- "off": HYPERGRAD_COMPILATION_CACHE=0, as a library user who never calls `use_compilation_cache`;
- "cold": the cache on in an empty directory (compiles and writes every program);
- "warm": the cache on in the directory the cold process filled (a second process on this machine:
  loads every program).

JAX's count of cache hits (its `/jax/compilation_cache/cache_hits` monitoring event) is shown
beside. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import _common as common

STRATEGIES = ("random_search, 256 trials", "tune, 5 steps")


def child() -> None:
    """One process: the cache as the environment says, both strategies, JSON on stdout."""
    import jax

    import hypergrad as hg
    from hypergrad.problems.presets import preset

    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
    hg.use_compilation_cache()
    objective, space = preset("digits-mlp", num_steps=200)
    key = jax.random.key(0)
    out = {}
    for name, run in zip(STRATEGIES, (lambda: hg.random_search(objective, space, key, num_trials=256),
                                      lambda: hg.tune(objective, space, key, method=hg.Reverse(), steps=5))):
        before, start = len(hits), time.perf_counter()
        result = run()
        out[name] = {"compile": result.compile_seconds, "wall": time.perf_counter() - start,
                     "hits": len(hits) - before}
    print(json.dumps(out))


def run_child(setting: str) -> dict:
    env = {**os.environ, "HYPERGRAD_COMPILATION_CACHE": setting}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(runs: dict) -> str:
    header = ["strategy (digits-mlp, T=200)", *[f"compile (s), {label}" for label in runs],
              *[f"call (s), {label}" for label in runs], "cache hits, warm"]
    rows = [[name, *[common.fmt(runs[label][name]["compile"], ".2f") for label in runs],
             *[common.fmt(runs[label][name]["wall"], ".2f") for label in runs], str(runs["warm"][name]["hits"])]
            for name in STRATEGIES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return ("# Compilation: cold and warm persistent cache\n\nEach column a fresh process, in this order: off "
            "(no persistent cache), cold (an empty cache directory), warm (the directory the cold process "
            "filled). `compile` is `Result.compile_seconds`; `call` the wall seconds of the whole first call "
            "(tracing, FLOP accounting, compiling or loading, running).\n\n" + "\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child()
        return
    with tempfile.TemporaryDirectory() as cache:
        runs = {"off": run_child("0"), "cold": run_child(cache), "warm": run_child(cache)}
    common.write_report(render(runs), args.out)


if __name__ == "__main__":
    main()
