"""Costs that grow with the length of a run, this tree against a git revision: progress lines,
`hypergrad compare`'s planning, and the memory of many scikit-learn fits.

    .venv/bin/python benchmarks/longrun_costs.py [--baseline REV] [--quick] [--out FILE]

Three tables, measured side by side in one run: one fresh process per tree runs all three (the
baseline's first; the memory table first in each, in a process that has run nothing else). With
`--baseline REV` the revision's `hypergrad/` is extracted with `git archive REV hypergrad | tar -x`
into a temporary directory and imported from there (PYTHONPATH first; the child asserts which tree
it imported); without it only this tree's columns are shown. `--quick` runs tiny sizes (the smoke
test's mode). No target is asserted: these tables show how a cost grows as the work grows, and
whether the trees differ.

1. Progress lines (`progress=` on against off). A tune of `steps` outer steps, one line per step,
   and a random search in chunks of 2 trials, one line per chunk, on a tiny least-squares problem
   (16 examples, T=5: each step or chunk costs little, so what a line costs shows). At each size an
   untimed call with progress off compiles what depends on the size; then one call off and one on,
   timed, alternated `--repeats` times (the fastest of each kept). `on / off` is the progress
   lines' cost as a factor of the call; a line that re-reads every trial so far makes it grow with
   the size (quadratic work in all), a running total keeps it near 1 at every size. The last
   column divides the baseline's `on / off` by this tree's: each tree's two numbers come from the
   same process, so the load's drift between the two processes cancels (their seconds alone do not
   compare as well).
2. Planning `hypergrad compare --budget B`: the seconds of `hypergrad.cli._budget_plan`, the plan
   the command makes before anything runs (gradient strategy's population, warm-up, halving and
   outer steps; random trials; grid points), for one CPU device, the command's default chunk size,
   and a hypergradient costing 3.14 training runs (digits-mlp's Reverse() at T=200, as
   `hypergrad.tune.tune_step_cost` counts it; fixed so both trees plan the same problem, and no
   tracing is timed). Private: the command has no path that plans without running the strategies,
   so the benchmark calls the planner the command calls. Budgets above `--baseline-max-budget` are
   planned by this tree only (the baseline's planning is quadratic in the outer steps: seconds at
   1e5, minutes beyond). `outer steps` is this tree's plan; `same plan` says whether both trees
   planned the same (population, warm-up, halving, steps, random trials and grid points).
3. Memory of scikit-learn fits on data of many lengths: `hypergrad.sklearn.MLPClassifier`
   (hidden (16,), max_iter=1, 20 features) fitted on 201, 202, ... rows in turn (minibatches of
   200, so one program per length), in one process per tree. First one fit on the longest data
   then `hg.clear_caches()` (the programs that do not depend on the length), then rows after k
   fits, then after `hg.clear_caches()` at the last k. RSS is the process's resident set (MB,
   /proc/self/status) after `gc.collect()` and glibc's `malloc_trim(0)`, so that memory freed but
   kept by the allocator is not counted (without the trim a freed program's pages mostly stay
   resident and a clear barely shows); `live executables` counts XLA executables alive (JAX's
   compilation cache keys each weakly on its program: JAX-private, as tests/test_sklearn_memory.py
   counts them).
   hypergrad.sklearn keeps at most 32 fit programs (its cache's cap): past 32 fits a bounded tree
   stays flat, and `hg.clear_caches()` returns to near the first row; a tree that leaks a program
   per fit into JAX's own caches grows past the cap and keeps what it leaked after the clear.
   `growth` is RSS minus the first row's.

Times are wall seconds of one call each on a shared machine: read the ratios, and the growth down a
column, not the single numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

STEP_RUNS = 3.14
"""The hypergradient's cost in training runs that the planning table plans with (digits-mlp, T=200)."""

SIZES = {  # (full, quick)
    "tune_steps": ((1000, 2000, 4000), (50, 100)),
    "search_trials": ((1000, 2000, 4000), (100, 200)),
    "budgets": ((1e3, 1e4, 3e4, 1e5, 1e7, 1e12), (1e2, 1e3, 1e6)),
    "fits": ((16, 32, 48), (1, 2)),
}
BASELINE_MAX_BUDGET = (1e5, 1e3)  # (full, quick): above it only this tree plans


# -- the children: each runs in a fresh process with one tree first on PYTHONPATH --------------------
def _hypergrad(tree: str):
    import hypergrad as hg

    assert os.path.abspath(hg.__file__).startswith(os.path.abspath(tree)), (hg.__file__, tree)
    return hg


def child_progress(tree: str, tune_steps: list[int], search_trials: list[int], repeats: int) -> dict:
    hg = _hypergrad(tree)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x @ np.ones(3)).astype(np.float32)
    sq = lambda p, b: jnp.mean((b[0] @ p["w"] - b[1]) ** 2)  # noqa: E731
    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(3)},
                         train_loss=lambda p, h, b: sq(p, b) + h["wd"] * jnp.sum(p["w"] ** 2),
                         val_loss=sq, train_data=(x, y), val_data=(x, y), batch_size=None)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "wd": hg.LogUniform(1e-6, 1e-1)})
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=5)
    key = jax.random.key(0)
    calls = {"tune": lambda n, progress: hg.tune(objective, space, key, steps=n, progress=progress),
             "random_search": lambda n, progress: hg.random_search(objective, space, key, n, chunk_size=2,
                                                                   progress=progress)}
    rows = []
    for workload, sizes in (("tune", tune_steps), ("random_search", search_trials)):
        for n in sizes:
            calls[workload](n, False)  # compiles what depends on n
            row = {"workload": workload, "size": n, "off": float("inf"), "on": float("inf")}
            for _ in range(repeats):  # alternated; the fastest of each
                for name, progress in (("off", False), ("on", [].append)):
                    began = time.perf_counter()
                    result = calls[workload](n, progress)
                    row[name] = min(row[name], time.perf_counter() - began)
            row["trials"] = len(result.trials)
            rows.append(row)
    return {"rows": rows}


def child_planning(tree: str, budgets: list[float]) -> dict:
    _hypergrad(tree)
    from hypergrad import cli

    def plan(budget):
        return cli._budget_plan(budget, STEP_RUNS, 1.0, 3, rows=lambda n: cli._rows_run(n, 64, 1),
                                warmup_rows=lambda n: cli._rows_run(n, cli.DEFAULT_CHUNK, 1))

    plan(10.0)  # first call: anything lazy
    rows = []
    for budget in budgets:
        began = time.perf_counter()
        made = plan(budget)
        rows.append({"budget": budget, "seconds": time.perf_counter() - began, "plan": made})
    return {"rows": rows}


def child_memory(tree: str, fits: list[int]) -> dict:
    hg = _hypergrad(tree)
    import ctypes
    import ctypes.util
    import gc
    import warnings

    import numpy as np
    from jax._src.interpreters import pxla

    from hypergrad.sklearn import MLPClassifier

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim  # glibc
    except (OSError, AttributeError, TypeError):
        trim = lambda pad: 0  # noqa: E731  (another C library: RSS as it is)

    def state(label):
        gc.collect()
        trim(0)
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        return {"label": label, "rss_mb": rss, "live": pxla._cached_compilation.cache_info().currsize,
                "seconds": time.perf_counter() - began}

    most = max(fits)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200 + most + 1, 20))
    y = (x[:, 0] > 0).astype(int)

    def fit(n):
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=1, shuffle=False, random_state=0).fit(x[:n], y[:n])

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=1 does not converge
        began = time.perf_counter()
        fit(len(x))  # a length never fitted again: the programs every length shares
        hg.clear_caches()
        rows.append(state("start"))
        for k in range(1, most + 1):
            fit(200 + k)
            if k in fits:
                rows.append(state(f"{k} fit" + ("" if k == 1 else "s")))
    hg.clear_caches()
    rows.append(state(f"{most} fit" + ("" if most == 1 else "s") + ", then hg.clear_caches()"))
    return {"rows": rows}


CHILDREN = {"memory": child_memory, "planning": child_planning, "progress": child_progress}
"""In the order a child runs them: memory first, in a process that has run nothing else."""


def child(tree: str, tables: dict[str, dict]) -> dict:
    """Every table of `tables` (name -> its child's arguments) in one process, in `CHILDREN`'s order,
    and the machine's words."""
    out = {name: CHILDREN[name](tree, **tables[name]) for name in CHILDREN if name in tables}
    import jax

    out["machine"] = f"jax {jax.__version__} on {jax.devices()[0].platform}"
    return out


def run_child(tree: str, tables: dict[str, dict]) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps({"tree": tree, "tables": tables})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the child in {tree} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent: run, then the tables ---------------------------------------------------------------
def _s(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:.2f}"


def progress_table(results: dict[str, dict]) -> list[str]:
    trees = list(results)
    base = "baseline" in results
    head = "| workload | size |" + "".join(f" {t} off s | {t} on s | {t} on / off |" for t in trees)
    head += " on / off, baseline / this tree |" if base else ""
    lines = [head, "|" + "---|" * (2 + 3 * len(trees) + base)]
    for i, mine in enumerate(results["this tree"]["rows"]):
        unit = "steps" if mine["workload"] == "tune" else "trials, chunks of 2"
        cells = [mine["workload"], f"{mine['size']} {unit}"]
        for t in trees:
            row = results[t]["rows"][i]
            cells += [_s(row["off"]), _s(row["on"]), f"{row['on'] / row['off']:.2f}x"]
        if base:
            theirs = results["baseline"]["rows"][i]
            cells.append(f"{(theirs['on'] / theirs['off']) / (mine['on'] / mine['off']):.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def planning_table(results: dict[str, dict]) -> list[str]:
    base = "baseline" in results
    lines = ["| budget (runs) |" + (" baseline s |" if base else "") + " this tree s |"
             + (" baseline / this tree |" if base else "") + " outer steps | random trials |"
             + (" same plan |" if base else ""),
             "|" + "---|" * (4 + 3 * base)]
    planned = {row["budget"]: row for row in results["baseline"]["rows"]} if base else {}
    for mine in results["this tree"]["rows"]:
        theirs = planned.get(mine["budget"])
        cells = [f"{mine['budget']:g}"]
        if base:
            cells.append(_s(theirs["seconds"]) if theirs else "not run")
        cells.append(_s(mine["seconds"]))
        if base:
            cells.append(f"{theirs['seconds'] / mine['seconds']:.0f}x" if theirs else "")
        cells += [str(mine["plan"]["tune_steps"]), str(mine["plan"]["random_trials"])]
        if base:
            cells.append(("yes" if theirs["plan"] == mine["plan"] else "NO") if theirs else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_table(results: dict[str, dict]) -> list[str]:
    trees = list(results)
    lines = ["| after |" + "".join(f" {t} RSS MB | {t} growth MB | {t} live executables |" for t in trees)
             + (" growth, baseline / this tree |" if "baseline" in results else ""),
             "|" + "---|" * (1 + 3 * len(trees) + ("baseline" in results))]
    for i, mine in enumerate(results["this tree"]["rows"]):
        cells = [mine["label"]]
        growth = {}
        for t in trees:
            row, first = results[t]["rows"][i], results[t]["rows"][0]
            growth[t] = row["rss_mb"] - first["rss_mb"]
            cells += [f"{row['rss_mb']:.0f}", f"{growth[t]:+.0f}", str(row["live"])]
        if "baseline" in results:
            cells.append(f"{growth['baseline'] / growth['this tree']:.1f}x"
                         if i and growth["this tree"] >= 1 else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare against, e.g. 56817dc")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (well under a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="progress table: alternated calls off and on per size, the fastest kept (default 2; "
                             "1 with --quick)")
    parser.add_argument("--baseline-max-budget", type=float, default=None,
                        help="the largest budget the baseline plans (default 1e5; 1e3 with --quick)")
    parser.add_argument("--tables", nargs="+", choices=list(CHILDREN), default=list(CHILDREN))
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return ""
    from _report import write_report  # this directory's report writing (without jax: the children import it)

    pick = 1 if args.quick else 0
    sizes = {name: list(values[pick]) for name, values in SIZES.items()}
    cap = args.baseline_max_budget if args.baseline_max_budget is not None else BASELINE_MAX_BUDGET[pick]
    repeats = args.repeats or (1 if args.quick else 2)
    load, began = [os.getloadavg()[0]], time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this tree": ROOT}
        if args.baseline:
            base = os.path.join(scratch, "baseline")
            os.makedirs(base)
            archive = subprocess.run(["git", "archive", args.baseline, "hypergrad"], cwd=ROOT, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
            trees = {"baseline": base, **trees}
        for name, tree in trees.items():
            tables = {"memory": {"fits": sizes["fits"]},
                      "planning": {"budgets": [b for b in sizes["budgets"] if name == "this tree" or b <= cap]},
                      "progress": {"tune_steps": sizes["tune_steps"], "search_trials": sizes["search_trials"],
                                   "repeats": repeats}}
            results[name] = run_child(tree, {table: tables[table] for table in args.tables})
    load.append(os.getloadavg()[0])
    command = " ".join(["benchmarks/longrun_costs.py", *(argv if argv is not None else sys.argv[1:])])
    lines = ["# Long-run costs: progress lines, planning, memory of many fits", "",
             f"Machine: {results['this tree']['machine']} ({platform.machine()}, {os.cpu_count()} cores); "
             f"`{command}`; whole run {time.perf_counter() - began:.0f} s; load average {load[0]:.1f} before, "
             f"{load[1]:.1f} after (other processes on the machine inflate times). "
             + (f"Baseline: `{args.baseline}` (`git archive`), its process run before this tree's; one fresh "
                "process per tree runs every table." if args.baseline
                else "This tree only (no --baseline); one fresh process runs every table."), ""]
    sections = {
        "progress": ("## 1. Progress lines: seconds with `progress=` off and on",
                     f"A tiny problem (16 examples, T=5); one line per tune step, one per chunk of 2 trials; the "
                     f"fastest of {repeats} alternated call(s) each, after an untimed one.", progress_table),
        "planning": ("## 2. Planning `hypergrad compare --budget B`",
                     f"Seconds of the command's planner (`hypergrad.cli._budget_plan`; a hypergradient of "
                     f"{STEP_RUNS} runs, one device)" + (f"; the baseline plans budgets up to {cap:g}."
                                                        if args.baseline else "."), planning_table),
        "memory": ("## 3. Memory of MLPClassifier fits on data of many lengths",
                   "Fits on 201, 202, ... rows, one program per length, in a process that has run nothing else; "
                   "the fit-program cache's cap is 32.", memory_table),
    }
    for table in sorted(args.tables, key=list(sections).index):
        title, note, make = sections[table]
        lines += [title, "", note, "", *make({name: results[name][table] for name in trees}), ""]
    text = "\n".join(lines).rstrip("\n") + "\n"
    write_report(text, args.out)
    return text


if __name__ == "__main__":
    main()
