"""Populations of gradient tuners (issue 14, "Measure"): throughput against the search, and the
quality of their picks against the baselines at equal compute and at equal wall time.

    .venv/bin/python benchmarks/populations.py --out benchmarks/populations.md   # `make bench-populations`
    .venv/bin/python benchmarks/populations.py --smoke --out /tmp/populations.md # structure only, seconds

Prints markdown tables and writes them to `--out`. The CPU is split into one JAX device per core
first (`hg.use_cpu_cores()`, as `hypergrad compare` does; `--cpu-devices 1` for one device), so
populations and searches both shard their rows over the cores through the one batching path.

1. Throughput (the `digits-mlp` preset, T=200): one outer step of a population of N = 16 and 64
   tuners (`Reverse()`, the driver's own compiled program from `hypergrad.outer.make_cohort`,
   chunk sized as `tune` sizes it) against one random-search chunk of N trials (the search's own
   compiled program), on the same objective and key. FLOPs per call come from
   `hypergrad.accounting`: N x `hypergradient_flops` for the population step (the outer update,
   the bijection's VJP and Adam are left out: a few thousand FLOPs against 10^9), N x
   `run_flops` for the chunk. Seconds: compiled calls only (compilation excluded), interleaved
   and rotated after one warm-up call each; median (and best) of 15 calls (2 with
   `--smoke`). Beside them a profile at the same batch: the vmapped `Reverse()` hypergradient alone (what the population
   step computes besides the outer update), so a shortfall can be split into the hypergradient's
   own rate and the driver's overhead; and the same sizes as the library records them (the
   trials' seconds of `hg.tune(population=N)` per step and of `hg.random_search(N trials)`,
   programs already compiled), which adds the host's per-call bookkeeping. Target: the population
   step reaches >= 80% of the search chunk's FLOP/s.
2. Quality (digits-mlp, digits-noisy, iris-mlp, breast-cancer-logistic; budget 300 training runs;
   seeds 0..4, training key `jax.random.key(seed)`, fixed before any result was seen): four
   strategies per (preset, seed), each on a fresh process state (`hg.clear_caches()` first, so
   each seed pays its own compilation, as a new `hypergrad compare` does; before the first, every
   strategy runs once on a tiny objective, `warm_up_process`, so none pays the process's one-time
   costs):
   - population: `hg.tune` with the plan `hypergrad compare` uses (`cli._budget_plan` with the
     measured `hg.tune_step_cost`: a random warm-up of a quarter of the budget, 8 tuners from its
     best, halving every quarter of the steps; Adam 0.1 and the method `hypergrad compare` picks by
     default for the preset, `cli._gradient_method`: `Reverse()`, or on digits-noisy `cli.IMPLICIT`
     with each tuner holding its rates and momentum);
   - single: one tuner from the centre of the space, as many steps as fill the budget (the final
     scoring counts as one more hypergradient), same method and outer optimiser;
   - random and grid search, sized and chunked as the CLI sizes them (300 trials; the largest
     grid with points^axes <= 300).
   The pick of a strategy is its lowest validation loss; its test loss and test accuracy are
   reported (median and min-max over the 5 seeds). Equal compute: each strategy's whole budget.
   Equal wall time, as `hg.compare` lines results up: random search's pick is its best trial
   within the population's seconds, both counted by the library (`Result.spent("seconds")`:
   compilation, set-up and the trials' execution, the warm-up's included; each call from empty
   caches, paying its own FLOP counting). When random search's budget-sized call ends sooner, it
   runs again, cold, with more trials and the same key (whose first settings are the same:
   sampling is prefix-consistent) until a call outlasts the population; the seconds of that call
   are shown beside. A second row does the same with the trials' execution seconds alone
   (`"execution"`: compilation and host work left out of both sides).
   Targets (issue 14), judged on test accuracy with the spread fixed in advance as the larger of
   the two strategies' ranges (max - min over the seeds): on digits-noisy the population's median
   beats random's at equal wall time by more than that spread; on digits-mlp it is no worse than
   random's median by more than that spread.

`--smoke` shrinks everything (T=10, N = 2, 2 repeats; digits-noisy only, budget 100 (the least
that buys Implicit's population a warm-up and halving at T=10),
seed 0) so the tables' structure appears in seconds; its numbers mean little, so it skips
`warm_up_process` (which only evens out the timings of the strategies timed first), the library
rows' compiling first calls, and the emptying of caches between strategies (a program one strategy
compiled is reused by the next, so the compile seconds shown are not each strategy's own), and gives
random search at the population's seconds at most twice the budget's trials (not 100 times): the
fewest programs and runs that reach every table, strategy and row kind. Speed is measured here,
never asserted in tests.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time


import jax  # noqa: E402
import optax  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad import _compile, accounting, cli  # noqa: E402
from hypergrad import outer as outer_driver  # noqa: E402
from hypergrad._batching import balanced_chunk, first_row, shardings  # noqa: E402
from hypergrad.hypergradient import value_and_grad_fn  # noqa: E402
from hypergrad.problems.presets import preset  # noqa: E402
from hypergrad.results import FAIL  # noqa: E402
from hypergrad.search import _search_program  # noqa: E402
from hypergrad.space import SAMPLE_STREAM  # noqa: E402

import _common as common  # noqa: E402  this directory's shared helpers

TARGET_THROUGHPUT = 0.80
PRESETS = ("digits-noisy", "digits-mlp", "iris-mlp", "breast-cancer-logistic")  # the targets' presets first
OUTER_LR = 0.1  # the CLI's default --outer-lr


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _place(tree, sharding):
    return tree if sharding is None else jax.device_put(tree, sharding)


# -- 1. throughput ---------------------------------------------------------------------------------
class Call:
    """A compiled program and its placed arguments: `call()` runs it once and waits."""

    def __init__(self, name: str, executable, args: tuple, flops: float):
        self.name, self.executable, self.args, self.flops = name, executable, args, flops

    def call(self):
        return self.executable(*self.args)


def throughput(args) -> tuple[list[dict], list[dict]]:
    """Section 1's rows (compiled calls) and the library-recorded rows, per N."""
    objective, space = preset("digits-mlp", args.steps)
    key = jax.random.key(0)
    method, outer = hg.Reverse(), optax.adam(OUTER_LR)
    rows, library = [], []
    for n in args.sizes:
        settings = space.sample(jax.random.key(1), n, stream=SAMPLE_STREAM)
        h0 = first_row(settings)
        grad_flops = accounting.hypergradient_flops(objective, method, h0, key)
        run_flops = accounting.run_flops(objective, h0, key)
        spread, replicated = shardings(n)
        data, placed_key = objective.problem.data, key
        if replicated is not None:
            data, placed_key = jax.device_put((data, key), replicated)
        batch = _place(settings, spread)
        # the search's own chunk program (as `random_search` compiles it for a chunk of n)
        search_exe, _, _, _ = _search_program(objective, n, (batch, placed_key, data), h0)
        # the driver's own population program for n tuners (as `tune` builds it)
        z = outer_driver.finite_z(space, settings)
        cohort = outer_driver.make_cohort(objective, space, method, outer, key, z, flops=grad_flops, unit=run_flops)
        assert cohort.chunk == n, (cohort.chunk, n)
        step_key = placed_key if cohort.replicated is None else jax.device_put(key, cohort.replicated)
        step_args = _place((*cohort.carry, cohort.fixed), cohort.spread) + (step_key, cohort.data)
        # profile: the vmapped hypergradient alone, at the same batch and placement
        vmapped = jax.vmap(value_and_grad_fn(objective, method), in_axes=(0, None, None))
        grad_exe = _compile.lower(vmapped, (batch, placed_key, data)).compile()
        calls = [Call("search", search_exe, (batch, placed_key, data), n * run_flops),
                 Call("population", cohort.executable, step_args, n * grad_flops),
                 Call("hypergradient", grad_exe, (batch, placed_key, data), n * grad_flops)]
        times = common.time_interleaved(calls, args.repeats)
        for c in calls:
            med, best = statistics.median(times[c.name]), min(times[c.name])
            rows.append({"n": n, "name": c.name, "flops": c.flops, "median": med, "best": best,
                         "rate": c.flops / med, "rate_best": c.flops / best})
        log(f"[1] N={n}: compiled calls timed")
        library.append(_library_rows(objective, space, key, method, outer, n, args, grad_flops, run_flops))
        log(f"[1] N={n}: library calls timed")
    return rows, library


def _library_rows(objective, space, key, method, outer, n, args, grad_flops, run_flops) -> dict:
    """Seconds per population step and per search chunk as the library records them (the trials'
    seconds), after a first call of each that compiles; medians over calls with new keys."""
    steps = args.library_steps
    if not args.smoke:  # the smoke's timings mean nothing: its first calls are the timed ones
        hg.tune(objective, space, key, method=method, outer=outer, population=n, steps=1)  # compiles
        hg.random_search(objective, space, key, n)
    pop, search = [], []
    for r in range(args.library_repeats):
        k = jax.random.key(100 + r)
        res = hg.tune(objective, space, k, method=method, outer=outer, population=n, steps=steps)
        pop.append(res.seconds / (steps + 1))  # steps outer steps plus the final scoring, one call each
        search.append(hg.random_search(objective, space, k, n).seconds)
    pop_s, search_s = statistics.median(pop), statistics.median(search)
    return {"n": n, "pop": pop_s, "search": search_s, "pop_rate": n * grad_flops / pop_s,
            "search_rate": n * run_flops / search_s}


def render_throughput(rows, library) -> tuple[str, list[str]]:
    by = {(r["n"], r["name"]): r for r in rows}
    out, verdicts = [], []
    label = {"search": "random-search chunk (training + scores)", "population": "population outer step (Reverse)",
             "hypergradient": "profile: vmapped Reverse hypergradient alone"}
    for r in rows:
        search = by[(r["n"], "search")]
        ratio, ratio_best = r["rate"] / search["rate"], r["rate_best"] / search["rate_best"]
        target = ""
        if r["name"] == "population":
            target = "met" if ratio >= TARGET_THROUGHPUT else "missed"
            verdicts.append(f"N={r['n']}: population {r['rate'] / 1e9:.1f} GFLOP/s vs search "
                            f"{search['rate'] / 1e9:.1f} GFLOP/s = {ratio:.0%} (best calls {ratio_best:.0%}): {target}")
        out.append([str(r["n"]), label[r["name"]], f"{r['flops'] / 1e9:.2f}", f"{r['median'] * 1e3:.1f}",
                    f"{r['best'] * 1e3:.1f}", f"{r['rate'] / 1e9:.1f}", f"{ratio:.0%}", f"{ratio_best:.0%}",
                    (">= 80%: " + target) if target else ""])
    text = table(["N", "program", "GFLOP per call", "ms per call (median)", "ms (best)", "GFLOP/s (median)",
                  "FLOP/s / search's", "same, best calls", "target"], out)
    lib = table(["N", "population s per step", "search s per chunk", "population GFLOP/s", "search GFLOP/s",
                 "population / search"],
                [[str(r["n"]), f"{r['pop']:.3f}", f"{r['search']:.3f}", f"{r['pop_rate'] / 1e9:.1f}",
                  f"{r['search_rate'] / 1e9:.1f}", f"{r['pop_rate'] / r['search_rate']:.0%}"] for r in library])
    return text + "\n\nAs the library records them (trials' seconds, compiled programs, host bookkeeping included):\n\n" \
        + lib, verdicts


# -- 2. quality ------------------------------------------------------------------------------------
def _chunk(num: int, chunk_size: int = 64) -> int:
    """The chunk the CLI gives a search of `num` trials (`cli._run_strategies`)."""
    devices = jax.local_device_count()
    return math.ceil(balanced_chunk(num, chunk_size) / devices) * devices


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _scores(trial) -> dict:
    if trial is None:  # no finished trial within the seconds given
        return {"test_loss": math.nan, "test_accuracy": math.nan, "val_loss": math.nan}
    return {"test_loss": trial.scores["test_loss"], "test_accuracy": trial.scores["test_accuracy"],
            "val_loss": trial.value}


def warm_up_process() -> None:
    """Every strategy once on a tiny objective (iris, T=4), then empty caches: the process's
    one-time costs (imports, backends, thread pools) are paid here, not by whichever strategy is
    timed first (added after a run where the first timed seed's population took 9.3 s against
    7.4-7.9 s for the others)."""
    objective, space = preset("iris-mlp", 4)
    key = jax.random.key(0)
    hg.tune(objective, space, key, outer=optax.adam(OUTER_LR), steps=2, population=2, warmup=4, halving=1)
    hg.tune(objective, space, key, outer=optax.adam(OUTER_LR), steps=2)
    hg.random_search(objective, space, key, 4)
    hg.grid_search(objective, space, key, 2)
    hg.clear_caches()


def one_seed(name: str, objective, space, seed: int, budget: float, smoke: bool = False) -> dict:
    """Every strategy on one preset and training key, each from empty caches (with `smoke`: caches
    kept, so a program another strategy compiled is not compiled again, and random search given the
    population's seconds runs at most twice the budget's trials)."""
    key = jax.random.key(seed)
    clear, most = (lambda: None, 2) if smoke else (hg.clear_caches, 100)
    (method, hold), outer = cli._gradient_method(argparse.Namespace(checkpoint_every=None), name), optax.adam(OUTER_LR)
    clear()
    step_runs = hg.tune_step_cost(objective, space, key, method, hold=hold)
    padded = lambda n: cli._rows_run(n, cli.DEFAULT_CHUNK, jax.local_device_count())  # noqa: E731, as charged
    plan = cli._budget_plan(budget, step_runs, 1.0, len(space), rows=padded, warmup_rows=padded)
    clear()  # tune_step_cost counted the population's FLOPs: its own call must pay for that
    pop, pop_wall = _timed(lambda: hg.tune(objective, space, key, method=method, outer=outer, hold=hold,
                                           steps=plan["tune_steps"], population=plan["population"],
                                           warmup=plan["warmup"], halving=plan["halving"]))
    clear()
    single_steps = max(1, math.floor(budget / step_runs) - 1)  # + the final scoring
    single, single_wall = _timed(lambda: hg.tune(objective, space, key, method=method, outer=outer, hold=hold,
                                                 steps=single_steps))
    clear()
    trials = plan["random_trials"]
    rand, rand_wall = _timed(lambda: hg.random_search(objective, space, key, trials, chunk_size=_chunk(trials)))
    points = plan["grid_points_per_axis"]
    clear()
    grid, grid_wall = _timed(lambda: hg.grid_search(objective, space, key, points,
                                                    chunk_size=_chunk(points ** len(space))))
    # Equal wall time as `hg.compare` lines results up: by the library's own seconds (`Result.spent`:
    # compilation, set-up and the trials' execution; "execution": the trials' alone), each call from
    # empty caches. Random search's pick is its best trial within the population's seconds; when its
    # budget-sized call ends sooner, it is called again, cold, with more trials until it outlasts them.
    per_trial = rand.seconds / trials
    fixed = rand_wall - rand.seconds
    pop_seconds, pop_exec = _total(pop, "seconds"), _total(pop, "execution")
    n_wall, rand_wall_pick, rand_wall_actual = _random_within(objective, space, key, rand, pop_seconds, "seconds",
                                                              clear, most=most)
    n_exec, rand_exec_pick, _ = _random_within(objective, space, key, rand, pop_exec, "execution", clear,
                                               most=most)
    return {
        "preset": name, "seed": seed, "plan": plan, "axes": len(space), "step_runs": step_runs, "single_steps": single_steps,
        "method": cli._method_words(method, hold),
        "compute": {"population": _scores(pop.best_trial), "single": _scores(single.best_trial),
                    "random": _scores(rand.best_trial), "grid": _scores(grid.best_trial)},
        "runs": {"population": pop.runs, "single": single.runs, "random": rand.runs, "grid": grid.runs},
        "wall": {"population": pop_wall, "single": single_wall, "random": rand_wall, "grid": grid_wall},
        "compile": {"population": pop.compile_seconds, "single": single.compile_seconds,
                    "random": rand.compile_seconds, "grid": grid.compile_seconds},
        "per_trial": per_trial, "fixed": fixed, "pop_seconds": pop_seconds, "pop_exec": pop_exec,
        "random_wall_actual": rand_wall_actual,
        "n_wall": n_wall, "random_wall": _scores(rand_wall_pick),
        "n_exec": n_exec, "random_exec": _scores(rand_exec_pick),
    }


def _total(result, by: str) -> float:
    """What `result` spent in all, in `by`'s unit (`Result.spent`)."""
    spent = result.spent(by)
    return float(spent[-1]) if len(spent) else 0.0


def _random_within(objective, space, key, rand, seconds: float, by: str, clear=hg.clear_caches, tries: int = 8,
                   most: int = 100):
    """(trials random search finished within `seconds` of `by`, its best among them, and the seconds
    of the longer call made for it or None): from `rand` when it outlasts `seconds`, else from a
    new cold call with as many more trials as the shortfall buys at the last call's execution seconds
    per trial, and at least twice as many (same key: its first trials are `rand`'s settings),
    repeated until one outlasts `seconds`;
    at most `most` times `rand`'s trials (then its pick over all of them: the seconds shown say so)."""
    result, made, cap = rand, None, most * len(rand.trials)
    for _ in range(tries):
        total = _total(result, by)
        if total >= seconds or (made is not None and len(result.trials) >= cap):
            within = sum(1 for spent in result.spent(by) if spent <= seconds * (1 + 1e-9))
            return within, result.best_within(seconds, by=by), made
        per_trial = max(result.seconds / len(result.trials), 1e-9)
        n = min(cap, max(2 * len(result.trials), len(result.trials) + math.ceil(1.25 * (seconds - total) / per_trial)))
        clear()
        result = hg.random_search(objective, space, key, n, chunk_size=_chunk(n))
        made = _total(result, "seconds")
    raise RuntimeError(f"random search never outlasted the population's {seconds:.1f} s ({by}) in {tries} calls")

def _range(values) -> float:
    return max(values) - min(values)


def render_quality(records, args) -> tuple[list[str], list[str]]:
    presets = list(dict.fromkeys(r["preset"] for r in records))
    strategies = ("population", "single", "random", "grid")
    compute_rows, wall_rows, seed_rows, verdicts = [], [], [], []
    for p in presets:
        rs = [r for r in records if r["preset"] == p]
        for s in strategies:
            compute_rows.append([
                p, s, f"{statistics.median(r['runs'][s] for r in rs):.1f}",
                f"{statistics.median(r['wall'][s] for r in rs):.1f}",
                f"{statistics.median(r['compile'][s] for r in rs):.1f}",
                common.median_range(r["compute"][s]["val_loss"] for r in rs),
                common.median_range([r["compute"][s]["test_loss"] for r in rs]),
                common.median_range([r["compute"][s]["test_accuracy"] for r in rs])])
        pop_acc = [r["compute"]["population"]["test_accuracy"] for r in rs]
        for label, n_key, pick_key, wall in (("compilation included", "n_wall", "random_wall", lambda r: r["pop_seconds"]),
                                             ("execution only", "n_exec", "random_exec", lambda r: r["pop_exec"])):
            rand_acc = [r[pick_key]["test_accuracy"] for r in rs]
            diff = statistics.median(pop_acc) - statistics.median(rand_acc)
            spread = max(_range(pop_acc), _range(rand_acc))
            wins = sum(a > b for a, b in zip(pop_acc, rand_acc))
            ties = sum(a == b for a, b in zip(pop_acc, rand_acc))
            fixed = "n/a" if label == "execution only" else f"{statistics.median(r['fixed'] for r in rs):.1f}"
            wall_rows.append([p, label, common.median_range([wall(r) for r in rs], ".1f"), fixed,
                              f"{statistics.median(r['per_trial'] for r in rs) * 1e3:.2f}",
                              f"{statistics.median(r[n_key] for r in rs):.0f} [{min(r[n_key] for r in rs)}-{max(r[n_key] for r in rs)}]",
                              common.median_range([r["compute"]["population"]["test_loss"] for r in rs]),
                              common.median_range([r[pick_key]["test_loss"] for r in rs]),
                              common.median_range(pop_acc), common.median_range(rand_acc), f"{diff:+.4f}", f"{spread:.4f}",
                              f"{wins} / {ties} / {len(rs) - wins - ties}"])
            if label == "compilation included" and p in ("digits-noisy", "digits-mlp"):
                if p == "digits-noisy":
                    met = diff > spread
                    verdicts.append(f"digits-noisy, equal wall time: population's median test accuracy minus random's = "
                                    f"{diff:+.4f}, spread {spread:.4f}; target 'beats by more than the spread': "
                                    f"**{'met' if met else 'missed'}**")
                else:
                    met = diff >= -spread
                    verdicts.append(f"digits-mlp, equal wall time: population's median test accuracy minus random's = "
                                    f"{diff:+.4f}, spread {spread:.4f}; target 'at least as good within the spread': "
                                    f"**{'met' if met else 'missed'}**")
        for r in rs:
            seed_rows.append([p, str(r["seed"]), *[f"{r['compute'][s]['test_accuracy']:.4f}" for s in strategies],
                              f"{r['random_wall']['test_accuracy']:.4f} ({r['n_wall']})",
                              f"{r['random_exec']['test_accuracy']:.4f} ({r['n_exec']})",
                              f"{r['pop_seconds']:.1f}", f"{r['compile']['population']:.1f}",
                              "" if r["random_wall_actual"] is None else f"{r['random_wall_actual']:.1f}"])
    plans = "; ".join(
        f"{p}: {r['plan']['warmup'] or 0} warm-up trials, then {r['plan']['population']} tuners x "
        f"{r['plan']['tune_steps']} steps halving every {r['plan']['halving']} ({r['method']}); "
        f"single {r['single_steps']} steps; "
        f"{r['plan']['random_trials']} random trials; grid {r['plan']['grid_points_per_axis']}^{r['axes']} "
        f"(one outer step = {r['step_runs']:.2f} runs)"
        for p, r in ((p, next(r for r in records if r["preset"] == p)) for p in presets))
    sections = [
        f"Plans (budget {args.budget:g} runs, as `hypergrad compare` sizes them): {plans}.",
        "### At equal compute (each strategy's whole budget); median [min-max] over seeds " + _seeds(args),
        table(["preset", "strategy", "runs used", "wall s", "compile s", "val loss of pick", "test loss of pick",
               "test accuracy of pick"], compute_rows),
        "### At equal wall time: random search given the population's seconds",
        "`pop s`: the population's seconds as the library counts them (`Result.spent(\"seconds\")`: "
        "compilation, set-up and its trials' execution, warm-up included; about the call's wall), or in the "
        "execution-only row its trials' execution seconds (`\"execution\"`). Each strategy's call starts from "
        "empty caches and pays its own FLOP counting. Random search's pick is its best trial within those "
        "seconds, counted the same way (`best_within(by=...)`, as `hg.compare` lines results up); when its "
        "budget-sized call ends sooner, it is called again, cold, with more trials (same key: its first trials "
        f"are the same settings) until one outlasts them (at most {2 if args.smoke else 100} times the budget's "
        "trials: then its pick over "
        "all of them, and the longer call's seconds, below `pop s`, say so). `random trials`: the trials finished within the "
        "seconds. `random fixed s`, `random ms/trial`: its budget-sized call's wall minus its trials' execution, "
        "and execution per trial (context). `spread`: the larger of the two strategies' test-accuracy ranges "
        "(max - min) over seeds. `pop wins / ties / losses`: per seed, on test accuracy (the same training key "
        "on both sides).",
        table(["preset", "seconds", "pop s", "random fixed s", "random ms/trial", "random trials", "pop test loss",
               "random test loss",
               "pop test accuracy", "random test accuracy", "median difference", "spread",
               "pop wins / ties / losses"], wall_rows),
        "### Per seed: test accuracy of each pick",
        table(["preset", "seed", "population", "single", f"random ({args.budget:g})", "grid", "random at pop's seconds (trials)",
               "random at pop's execution s (trials)", "pop s", "pop compile s",
               "seconds of the longer random call"], seed_rows),
    ]
    return sections, verdicts


def _seeds(args) -> str:
    return f"{list(args.seeds)} (key `jax.random.key(seed)`)"


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = common.report_parser(__doc__)
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="JAX CPU devices (0: one per core, as `hypergrad compare`; 1: one device)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="presets of section 2, separated by commas")
    parser.add_argument("--skip-throughput", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-quality", action="store_true",
                        help="section 1 (throughput) only, as benchmarks/gpu.sh runs it")
    args = parser.parse_args(argv)
    if args.cpu_devices != 1:
        hg.use_cpu_cores(None if args.cpu_devices == 0 else args.cpu_devices)
    if args.smoke:
        args.steps, args.sizes, args.repeats, args.library_steps, args.library_repeats = 10, [2], 2, 1, 1
        args.presets, args.budget, args.seeds = "digits-noisy", 100.0, (0,)
    else:
        args.steps, args.sizes, args.repeats, args.library_steps, args.library_repeats = 200, [16, 64], 15, 4, 3
        args.budget, args.seeds = 300.0, (0, 1, 2, 3, 4)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    wall = time.perf_counter()
    load_start = os.getloadavg()
    sections, verdicts = [], []
    if not args.skip_throughput:
        rows, library = throughput(args)
        text, thr_verdicts = render_throughput(rows, library)
        verdicts += thr_verdicts
        sections += [f"## 1. Throughput (digits-mlp, T={args.steps}; {args.repeats} interleaved calls each after a "
                     "warm-up call; compilation excluded)", text,
                     "FLOPs: `accounting.hypergradient_flops` x N (population and profile rows), "
                     "`accounting.run_flops` x N (search). Ratios are against the search chunk of the same N, "
                     "timed in the same rotation."]
    loads = [os.getloadavg()]

    def report(records: list, done: bool) -> None:
        """The tables so far; written to `--out` after every (preset, seed) marked partial, and
        printed once at the end (a run stopped early keeps what it measured)."""
        parts, q_verdicts = list(sections), []
        if records:
            quality, q_verdicts = render_quality(records, args)
            parts += [f"## 2. Quality of the picks (budget {args.budget:g} training runs, T={args.steps})", *quality]
        load_now = os.getloadavg()
        state = (f"whole run {time.perf_counter() - wall:.0f} s" if done else
                 f"**partial: {len(records)} of {len(presets) * len(args.seeds)} (preset, seed) runs so far, "
                 f"{time.perf_counter() - wall:.0f} s; the run rewrites this file when it ends**")
        header = [
            "# Populations of tuners: throughput and quality (issue 14)",
            f"Machine: jax {jax.__version__} on {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} "
            f"cores, {jax.local_device_count()} JAX devices); `benchmarks/populations.py "
            f"{' '.join(argv) or '(defaults)'}`; {state}; load average (1, 5, 15 min) "
            f"{', '.join(f'{x:.1f}' for x in load_start)} at the start, "
            f"{', '.join(f'{x:.1f}' for x in load_now)} now; 1-min load sampled after each part: "
            f"{', '.join(f'{x[0]:.1f}' for x in loads)} (other processes on the machine inflate times).",
            "## Verdicts\n\n" + "\n".join(f"- {v}" for v in verdicts + q_verdicts),
        ]
        common.write_report("\n\n".join(header + parts) + "\n", args.out, echo=done)

    records: list = []
    if not args.smoke:
        report(records, done=False)
    if not args.skip_quality:
        if not args.smoke:  # the smoke's timings mean nothing: no one-time costs to even out
            warm_up_process()
        for name in presets:
            objective, space = preset(name, args.steps)
            for seed in args.seeds:
                records.append(one_seed(name, objective, space, seed, args.budget, smoke=args.smoke))
                loads.append(os.getloadavg())
                r = records[-1]
                log(f"[2] {name} seed {seed}: pop acc {r['compute']['population']['test_accuracy']:.4f} "
                    f"(wall {r['wall']['population']:.1f}s) random {r['compute']['random']['test_accuracy']:.4f}, "
                    f"at wall ({r['n_wall']} trials) {r['random_wall']['test_accuracy']:.4f}")
                if not args.smoke:
                    report(records, done=False)
    report(records, done=True)

if __name__ == "__main__":
    main()
