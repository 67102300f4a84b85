"""The classic study with one import changed: scikit-learn's RandomizedSearchCV(MLPClassifier) on iris.

The user's code is scikit-learn's, unchanged except for the import line:

    from sklearn.neural_network import MLPClassifier            # scikit-learn
    from sklearn.model_selection import RandomizedSearchCV
    # becomes
    from hypergrad.sklearn import MLPClassifier, RandomizedSearchCV

    search = RandomizedSearchCV(MLPClassifier(random_state=0), param_distributions=PARAM_DIST, n_iter=100, cv=5,
                                random_state=42)
    search.fit(X_train, y_train); print(search.best_params_)

PARAM_DIST has 3 x 2 x 2 x 3 x 2 = 72 settings (n_iter=100 exceeds them, so both libraries fit all
72 x 5 folds = 360 networks, with scikit-learn's warning). The data: iris, a stratified 20% test split
(the refit best model is scored on it), standardised on the training part. `random_state=0` on the
estimator fixes the initialisation (and minibatch order) of every fit, so reruns agree.

With `--library hypergrad` every candidate x fold runs in one vmapped hypergrad program per
structural group (hidden_layer_sizes, activation, solver and learning_rate are masked or grouped by
the planner's measured cost) and the best candidate is refit by `MLPClassifier.fit`; the random
numbers differ from scikit-learn's (JAX keys), so the fits agree in distribution, not digit for digit.
`--hybrid` adds `HypergradSearchCV` over the structural choices with alpha and learning_rate_init
descended by hypergradients of the 5-fold log-loss.

    python experiments/seed_iris.py                          # hypergrad, then scikit-learn (n_jobs=2)
    python experiments/seed_iris.py --library hypergrad      # one library (benchmarks/iris_study.py runs each in a fresh process)
    python experiments/seed_iris.py --smoke                  # seconds, for CI

With --out, each row (a library's study, the hybrid search) is kept in <out>/seed_iris.partial.json as it
finishes (`_progress`), so an interrupted run leaves what it measured, and a rerun into the same --out with the
same mode, --n-jobs and environment reads those rows back instead of fitting them again (a row is plain data,
the numbers an uninterrupted run gives; its seconds are the earlier run's, and report.md says which rows were
read back); report.md and results.json then replace the file. Without --out nothing is written, as before
(benchmarks/iris_study.py times such runs, so they import neither JAX nor hypergrad for scikit-learn alone).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

import _claims

PARAM_DIST = {"hidden_layer_sizes": [(50,), (100,), (200,)], "activation": ["tanh", "relu"],
              "solver": ["sgd", "adam"], "alpha": [1e-4, 1e-3, 1e-2], "learning_rate": ["constant", "adaptive"]}
SMOKE_DIST = {"activation": ["tanh", "relu"], "alpha": [1e-4, 1e-2]}
LIBRARIES = {"hypergrad": ("hypergrad.sklearn", "hypergrad.sklearn"),
             "scikit-learn": ("sklearn.neural_network", "sklearn.model_selection")}


def load(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Iris, a stratified 80/20 split (scikit-learn's train_test_split), standardised on the train part."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return (scaler.transform(x_train), y_train), (scaler.transform(x_test), y_test)


@contextlib.contextmanager
def expected_warnings_hidden() -> Iterator[None]:
    """Within, the warnings these searches are expected to give are hidden: a ConvergenceWarning for
    each fit (or search) that stops at max_iter (every smoke fit does, at max_iter=10), and
    scikit-learn's "The total space of parameters ... is smaller than n_iter" (n_iter=100 exceeds the
    grid). Any other warning, a DeprecationWarning or FutureWarning say, still shows."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message=r"The total space of parameters \d+ is smaller than n_iter",
                                category=UserWarning)
        yield


def study(library: str, *, smoke: bool, n_jobs: int | None = None) -> dict[str, Any]:
    """The user's code with `library`'s import, timed; its results as one JSON-ready row."""
    estimators, searches = (importlib.import_module(m) for m in LIBRARIES[library])
    MLPClassifier, RandomizedSearchCV = estimators.MLPClassifier, searches.RandomizedSearchCV  # noqa: N806
    (x, y), (x_test, y_test) = load()
    param_dist, n_iter, cv, max_iter = (SMOKE_DIST, 100, 2, 10) if smoke else (PARAM_DIST, 100, 5, 200)
    began = time.perf_counter()
    with expected_warnings_hidden():  # ConvergenceWarning per fit; "n_iter exceeds the grid"
        search = RandomizedSearchCV(MLPClassifier(random_state=0, max_iter=max_iter), param_distributions=param_dist,
                                    n_iter=n_iter, cv=cv, random_state=42, n_jobs=n_jobs)
        search.fit(x, y)
    seconds = time.perf_counter() - began
    results = search.cv_results_
    return {**stages(getattr(search, "hypergrad_info_", [])),
            "library": library, "n_jobs": n_jobs, "fit_s": seconds, "refit_s": search.refit_time_,
            "fits": len(results["params"]) * cv, "best_params": search.best_params_,
            "cv_accuracy": float(search.best_score_), "cv_std": float(results["std_test_score"][search.best_index_]),
            "test_accuracy": float(search.score(x_test, y_test)),
            "fit_time_sum_s": float(np.sum(results["mean_fit_time"]) * cv)}


def stages(records: list[dict]) -> dict[str, Any]:
    """hypergrad's seconds by stage, summed over its vmapped evaluations (`search.hypergrad_info_`)."""
    if not records:
        return {}
    return {"programs": sum(r["programs"] for r in records), "plan_s": sum(r["plan_s"] for r in records),
            "compile_s": sum(r["compile_s"] for r in records), "run_s": sum(r["run_s"] for r in records),
            "structure": records[0]["structure"],
            # equivalent candidates (adam ignores learning_rate) share one fit: the fits computed
            "fits_computed": sum(r["candidates"] * r["folds"] for r in records)}


def hybrid(*, smoke: bool) -> dict[str, Any]:
    """HypergradSearchCV on the same structural choices, alpha and learning_rate_init descended."""
    import scipy.stats

    from hypergrad.sklearn import HypergradSearchCV, MLPClassifier

    (x, y), (x_test, y_test) = load()
    structural = {k: v for k, v in (SMOKE_DIST if smoke else PARAM_DIST).items() if k not in ("alpha", "learning_rate")}
    dist = {**structural, "alpha": scipy.stats.loguniform(1e-5, 1e-1),
            "learning_rate_init": scipy.stats.loguniform(1e-4, 1e-1)}
    began = time.perf_counter()
    with expected_warnings_hidden():
        search = HypergradSearchCV(MLPClassifier(random_state=0, max_iter=10 if smoke else 200), dist,
                                   n_iter=4 if smoke else 12, cv=2 if smoke else 5, budget=40 if smoke else 400,
                                   scoring="accuracy").fit(x, y)
    return {**stages(search.hypergrad_info_),
            "library": "hypergrad HypergradSearchCV", "n_jobs": None, "fit_s": time.perf_counter() - began,
            "refit_s": search.refit_time_, "fits": len(search.cv_results_["params"]) * search.n_splits_,
            "best_params": search.best_params_, "cv_accuracy": float(search.best_score_),
            "cv_std": float(search.cv_results_["std_test_score"][search.best_index_]),
            "test_accuracy": float(search.score(x_test, y_test)), "fit_time_sum_s": float("nan")}


def progress_in(args, n_jobs: int, libraries: list[str]):
    """The run's `_progress.Progress` in `args.out` (resuming: rows are plain data), its `unit` and `note`.
    Building it starts JAX (its record names the devices), so first the CPU is split into `n_jobs` devices
    where hypergrad's search would split it (`hg.use_cpu_cores`, as `n_jobs` > 1 or -1 asks, JAX unstarted and
    no count chosen): hypergrad's fits are then sharded as in a run without --out."""
    import jax

    import hypergrad as hg

    count = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs
    if "hypergrad" in libraries and count > 1 and jax.config.jax_num_cpu_devices == -1:
        try:
            hg.use_cpu_cores(count)
        except RuntimeError:  # JAX has started (an in-process caller): its devices stay as they are
            pass
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)  # imported here, not at the top: scikit-learn alone needs neither JAX nor hypergrad
    try:
        import _progress
    finally:
        sys.path.remove(here)
    return _progress.Progress(args, "seed_iris", {"n_jobs": n_jobs}, resume=True)


def table(rows: list[dict]) -> str:
    lines = ["| strategy | n_jobs | search.fit s (refit incl.) | refit s | fits | best mean CV accuracy | CV std | "
             "test accuracy (refit) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['library']} | {r['n_jobs']} | {r['fit_s']:.2f} | {r['refit_s']:.2f} | {r['fits']} | "
                     f"{r['cv_accuracy']:.4f} | {r['cv_std']:.4f} | {r['test_accuracy']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run for CI")
    parser.add_argument("--library", choices=[*LIBRARIES, "both"], default="both")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="the searches' n_jobs, both libraries (default 2, 1 with --smoke): scikit-learn's "
                             "processes, hypergrad's JAX CPU devices")
    parser.add_argument("--hybrid", action="store_true", help="also run HypergradSearchCV")
    parser.add_argument("--out", default=None, help="directory for report.md and results.json")
    args = parser.parse_args(argv)
    # Checked before the study (minutes, both libraries): a bad --out or --n-jobs used to fail after it.
    if args.n_jobs == 0:
        parser.error("--n-jobs 0: give a positive count of jobs, or -1 for every core (joblib's meaning)")
    if args.out and (why := _claims.unwritable(args.out)) is not None:
        parser.error(f"--out {args.out}: {why}")
    if args.library != "scikit-learn":
        import hypergrad as hg

        hg.use_compilation_cache()
    began = time.perf_counter()
    libraries = list(LIBRARIES) if args.library == "both" else [args.library]
    n_jobs = args.n_jobs if args.n_jobs is not None else (1 if args.smoke else 2)
    progress = progress_in(args, n_jobs, libraries) if args.out else None
    unit = progress.unit if progress else (lambda key, measure: measure())
    rows = [unit(lib, lambda lib=lib: study(lib, smoke=args.smoke, n_jobs=n_jobs)) for lib in libraries]
    if args.hybrid:
        rows.append(unit("hypergrad HypergradSearchCV", lambda: hybrid(smoke=args.smoke)))
    print(table(rows))
    for r in rows:
        print(f"{r['library']}: best {r['best_params']}")
        print("ROW" + json.dumps(r, default=str))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        env = _claims.environment(time.perf_counter() - began)
        resumed = progress.resumed
        note = (f"\n\nRead back from seed_iris.partial.json, measured by an earlier, interrupted run with the same "
                f"mode, --n-jobs and environment (seconds included): {', '.join(resumed)}." if resumed else "")
        report = f"{table(rows)}{note}\n\nProduced by: {_claims.environment_line(env)}.\n"
        results = json.dumps(rows, indent=1, default=str)
        _claims.write_atomically(os.path.join(args.out, "report.md"), report)  # each whole or not at all
        _claims.write_atomically(os.path.join(args.out, "results.json"), results)
        if os.path.exists(_claims.partial_path(args.out, "seed_iris")):
            os.remove(_claims.partial_path(args.out, "seed_iris"))  # both written: the kept rows are in them
    return rows


if __name__ == "__main__":
    main()
