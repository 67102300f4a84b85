"""The scikit-learn iris study (experiments/seed_iris.py), scikit-learn against hypergrad.sklearn.

Runs the same user code (`RandomizedSearchCV(MLPClassifier(random_state=0), PARAM_DIST, n_iter=100,
cv=5, random_state=42)` on iris: 72 candidates x 5 folds) in a fresh Python process per row:

- scikit-learn with n_jobs=1 and n_jobs=2;
- hypergrad.sklearn with n_jobs=2 (the same user code: hypergrad splits the CPU into 2 JAX devices
  and shards the fits over them), cold: an empty persistent compilation cache (`HYPERGRAD_COMPILATION_CACHE` set
  to a new temporary directory), so every program is traced and compiled;
- hypergrad.sklearn warm: a second process on the same cache directory, so its programs load
  instead of compiling (tracing, planning and FLOP accounting still run).

Prints one table (search.fit seconds with the refit, process seconds with the imports, speed-ups
against scikit-learn n_jobs=2, whether the best mean CV accuracies agree within one standard
deviation) and where hypergrad's seconds go: the structure plan (with the one trace of the run: its
FLOP count, from which the search program is made), compilation of the search program(s), the
vmapped fits, the refit (one masked program for any candidate, compiled beside the search program), and
the rest (host work: candidates, folds, families, results). Targets on 2 CPU cores: at least 3x
faster cold and 5x warm than scikit-learn n_jobs=2, best CV accuracy within one std.

    python benchmarks/iris_study.py --out benchmarks/iris_study.md [--repeats 2]
    python benchmarks/iris_study.py --quick        # the smoke study, seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import write_report  # this directory's shared helpers

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "experiments", "seed_iris.py")


def fresh(library: str, *, quick: bool, n_jobs: int = 1, cache: str | None = None) -> dict:
    """One run of experiments/seed_iris.py in a new process; its row, plus the process's seconds."""
    env = dict(os.environ)
    if cache is not None:
        env["HYPERGRAD_COMPILATION_CACHE"] = cache
    command = [sys.executable, SCRIPT, "--library", library, "--n-jobs", str(n_jobs)] + (["--smoke"] if quick else [])
    began = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    row = json.loads(next(line[3:] for line in out.splitlines() if line.startswith("ROW")))
    row["process_s"] = time.perf_counter() - began
    return row


def repeat(quick: bool) -> dict[str, dict]:
    """One of each: scikit-learn n_jobs=1 and 2, hypergrad (n_jobs=2) cold then warm on a new cache
    directory."""
    rows = {"scikit-learn n_jobs=1": fresh("scikit-learn", quick=quick, n_jobs=1),
            "scikit-learn n_jobs=2": fresh("scikit-learn", quick=quick, n_jobs=2)}
    with tempfile.TemporaryDirectory() as cache:
        rows["hypergrad cold"] = fresh("hypergrad", quick=quick, n_jobs=2, cache=cache)
        rows["hypergrad warm"] = fresh("hypergrad", quick=quick, n_jobs=2, cache=cache)
    return rows


def report(runs: list[dict[str, dict]], load: list[float]) -> str:
    lines = ["| run | row | search.fit s | process s | vs sklearn n_jobs=2 (fit) | best CV accuracy (std) | "
             "within 1 std of sklearn | test accuracy | best params |", "|---|---|---|---|---|---|---|---|---|"]
    stages = ["| run | row | search.fit s | plan s | compile s | vmapped fits s | refit s | rest s | programs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, rows in enumerate(runs):
        reference = rows["scikit-learn n_jobs=2"]
        for name, r in rows.items():
            within = abs(r["cv_accuracy"] - reference["cv_accuracy"]) <= reference["cv_std"]
            lines.append(f"| {i + 1} | {name} | {r['fit_s']:.2f} | {r['process_s']:.2f} | "
                         f"{reference['fit_s'] / r['fit_s']:.2f}x | {r['cv_accuracy']:.4f} ({r['cv_std']:.3f}) | "
                         f"{'yes' if within else 'no'} | {r['test_accuracy']:.4f} | {r['best_params']} |")
            if "compile_s" in r:
                rest = r["fit_s"] - r["plan_s"] - r["compile_s"] - r["run_s"] - r["refit_s"]
                stages.append(f"| {i + 1} | {name} | {r['fit_s']:.2f} | {r['plan_s']:.2f} | {r['compile_s']:.2f} | "
                              f"{r['run_s']:.2f} | {r['refit_s']:.2f} | {rest:.2f} | {r['programs']} |")
    last = runs[-1]["hypergrad cold"]
    text = "\n".join(lines) + "\n\n" + verdicts(runs)
    text += ("\n\nWhere hypergrad's seconds go (inside search.fit): the structure plan (its FLOP count traces "
             "the run once, and the search program is made from that trace); batching, lowering and compiling "
             "the search program(s) (warm: loaded from hypergrad's program store, neither batched nor lowered); "
             "running every candidate x fold vmapped; the refit (one masked program for whichever candidate wins, "
             "compiled on a thread beside the search program, then one fit); the rest "
             "(host: candidates, validation, folds, families, cv_results_):\n\n" + "\n".join(stages))
    text += "\n\nStructure plan (hypergrad's decision per structural choice, cold run): " + ", ".join(
        f"{name}: {decision}" for name, decision in last.get("structure", {}).items())
    text += (f"\n\nEach row is a fresh Python process (process s includes importing jax or scikit-learn); "
             f"{last['fits']} fits per search (candidates x folds; hypergrad computes "
             f"{last.get('fits_computed', last['fits'])} of them: candidates that differ only in a parameter their "
             "solver ignores, such as adam's learning_rate, share one fit, as they would give the same model); load average before the runs {load[0]:.1f}, after {load[1]:.1f} "
             f"(2 CPU cores shared with other work: seconds are noisy).")
    return text


def verdicts(runs: list[dict[str, dict]]) -> str:
    """The targets against scikit-learn n_jobs=2 (and, beside them, against the faster of n_jobs=1
    and 2 in each run), on the median speed-up over the runs."""
    def speedup(name, reference):
        return float(np.median([reference(r) / r[name]["fit_s"] for r in runs]))

    def with_two(r):
        return r["scikit-learn n_jobs=2"]["fit_s"]

    def fastest(r):
        return min(r["scikit-learn n_jobs=1"]["fit_s"], r["scikit-learn n_jobs=2"]["fit_s"])

    cold, warm = speedup("hypergrad cold", with_two), speedup("hypergrad warm", with_two)
    within = all(abs(r[name]["cv_accuracy"] - r["scikit-learn n_jobs=2"]["cv_accuracy"])
                 <= r["scikit-learn n_jobs=2"]["cv_std"] for r in runs for name in ("hypergrad cold", "hypergrad warm"))
    met = {True: "met", False: "missed"}
    return (f"Targets (search.fit, against scikit-learn n_jobs=2, median over {len(runs)} run(s)): cold >= 3x: "
            f"{cold:.2f}x, {met[cold >= 3]}; warm >= 5x: {warm:.2f}x, {met[warm >= 5]}; best CV accuracy within one "
            f"std of scikit-learn's: {met[within]}. Against the faster of scikit-learn's n_jobs=1 and 2: cold "
            f"{speedup('hypergrad cold', fastest):.2f}x, warm {speedup('hypergrad warm', fastest):.2f}x.")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the smoke study (2 folds, 4 candidates): seconds, for CI")
    args = parser.parse_args(argv)
    before = os.getloadavg()[0]
    runs = [repeat(args.quick) for _ in range(args.repeats)]
    text = report(runs, [before, os.getloadavg()[0]])
    write_report(text, args.out)
    return text


if __name__ == "__main__":
    main()
