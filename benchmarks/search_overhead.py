"""A search's overhead (everything but running its trials), this tree against a git revision.

    .venv/bin/python benchmarks/search_overhead.py --baseline REV [--repeats 3] [--out FILE]

For each workload and repeat, four fresh processes in turn: the baseline cold (an empty persistent
compilation cache) and warm (the cache it filled), then this tree cold and warm (its own cache).
Workloads:

- `digits`: `hg.random_search` on the `digits-mlp` preset (T=200, 64 trials, one chunk);
- `iris`: the iris study's hypergrad search.fit (experiments/seed_iris.py: RandomizedSearchCV of
  hypergrad.sklearn's MLPClassifier, 72 candidates x 5 folds, the structure plan, the refit), on
  one CPU device per core as the study runs it.

Each process reports the call's wall seconds, the seconds the vmapped trials ran, the overhead
(wall minus run: sampling, planning, FLOP accounting, tracing, lowering, compiling or loading,
host work, and for iris the refit), the seconds the search attributes to compiling its program(s)
(`compile_seconds`) and the accounting's seconds (`hypergrad.accounting.stats`: tracing and
counting). The baseline is `git archive REV hypergrad`, imported from a temporary directory. The
table shows medians over repeats and the ratio of overheads baseline / this tree, measured side
by side on the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from _common import write_report  # this directory's shared helpers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, sys, time
tree, workload = sys.argv[1], sys.argv[2]
import hypergrad as hg  # the tree's own: PYTHONPATH puts it first
assert hg.__file__.startswith(tree), hg.__file__
if workload == "iris":
    hg.use_cpu_cores()
hg.use_compilation_cache()
import jax
from hypergrad import accounting
if workload == "digits":
    from hypergrad.problems.presets import preset
    objective, space = preset("digits-mlp", num_steps=200)
    began = time.perf_counter()
    result = hg.random_search(objective, space, jax.random.key(0), num_trials=64)
    wall = time.perf_counter() - began
    row = {"wall": wall, "run": sum(t.seconds for t in result.trials), "compile": result.compile_seconds,
           "best": result.best_value, "run_flops": result.run_flops}
else:
    import seed_iris  # experiments/, second on PYTHONPATH
    r = seed_iris.study("hypergrad", smoke=False)
    row = {"wall": r["fit_s"], "run": r["run_s"], "compile": r["compile_s"], "best": r["cv_accuracy"],
           "run_flops": str(r["best_params"])}
row.update(overhead=row["wall"] - row["run"], accounting=accounting.stats["seconds"])
print(json.dumps(row))
"""

FIELDS = ("wall", "run", "overhead", "compile", "accounting")


WORKLOADS = {"digits": "hg.random_search, digits-mlp (T=200, 64 trials)",
             "iris": "iris study search.fit (72 candidates x 5 folds, plan and refit included)"}


def child(tree: str, workload: str, cache: str) -> dict:
    env = {**os.environ, "HYPERGRAD_COMPILATION_CACHE": cache,
           "PYTHONPATH": os.pathsep.join([tree, os.path.join(ROOT, "experiments")])}
    out = subprocess.run([sys.executable, "-c", CHILD, tree, workload],
                         capture_output=True, text=True, check=True, env=env, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against, e.g. HEAD~2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load = [os.getloadavg()[0]]
    rows: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = os.path.join(scratch, "baseline")
        os.makedirs(base)
        archive = subprocess.run(["git", "archive", args.baseline, "hypergrad"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        for workload in args.workloads:
            for i in range(args.repeats):
                for name, tree in (("baseline", base), ("this tree", ROOT)):
                    cache = os.path.join(scratch, f"cache-{workload}-{name}-{i}")
                    for state in ("cold", "warm"):
                        rows.setdefault((workload, name, state), []).append(child(tree, workload, cache))
    load.append(os.getloadavg()[0])
    med = {key: {f: float(np.median([r[f] for r in runs])) for f in FIELDS} for key, runs in rows.items()}
    lines = [f"Search overhead, baseline `{args.baseline}` against this tree: median of {args.repeats} fresh "
             f"process(es) per row, interleaved (baseline cold, warm, this tree cold, warm); load average "
             f"{load[0]:.1f} before, {load[1]:.1f} after (2 CPU cores shared).", "",
             "| workload | cache | tree | call s | trials ran s | overhead s | compile s | accounting s |",
             "|---|---|---|---|---|---|---|---|"]
    for workload in args.workloads:
        for state in ("cold", "warm"):
            for name in ("baseline", "this tree"):
                m = med[(workload, name, state)]
                lines.append(f"| {workload} | {state} | {name} | {m['wall']:.2f} | {m['run']:.2f} | "
                             f"{m['overhead']:.2f} | {m['compile']:.2f} | {m['accounting']:.2f} |")
            ratio = med[(workload, "baseline", state)]["overhead"] / med[(workload, "this tree", state)]["overhead"]
            lines.append(f"| {workload} | {state} | overhead baseline / this tree | | | {ratio:.2f}x | | |")
    same = all(len({(r["best"], r["run_flops"]) for key, runs in rows.items() if key[0] == w for r in runs}) == 1
               for w in args.workloads)
    lines += ["", "Workloads: " + "; ".join(f"{w}: {WORKLOADS[w]}" for w in args.workloads) + ".",
              f"Best value (digits) or best CV accuracy and parameters (iris), and run FLOPs (digits), identical in "
              f"every process of a workload: {'yes' if same else 'NO'}."]
    text = "\n".join(lines)
    write_report(text, args.out)
    return text


if __name__ == "__main__":
    main()
