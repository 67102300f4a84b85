"""The `hypergrad` command.

    hypergrad compare --problem digits-mlp --budget 300 --out results/digits-mlp
    hypergrad compare --problem digits-mlp,digits-noisy --budget 300 --out results/demo

runs gradient tuning, random search and grid search on a preset problem at the same compute
budget (in training-run equivalents), shows progress on stderr, prints the comparison tables and
writes into DIR (with several problems, into DIR/<problem>/ each, plus DIR/summary.md):

- `trials.jsonl`: every trial of every strategy, appended as it is produced;
- `results.json`: each strategy's full result and the comparisons (compact JSON: it holds every
  trial's hyperparameters);
- `report.md`: the set-up, the tables at equal compute, at equal wall time (with each strategy's
  compile seconds and whether its programs came from a warm cache) and at equal execution time,
  and the picks (on a preset with flipped training labels, also what each pick's example weights
  learned);
- PNG plots: best validation loss against compute; every trial's validation loss against compute
  (trials.png); the learned schedule beside the best constant (the picks at equal compute); on a
  preset with flipped training labels, the picked weights of clean and corrupted examples.

DIR's files always describe one run: before anything runs, a previous run's outputs there (the files
above, summary.md, and the per-problem folders that its marker DIR/.hypergrad-compare.json names)
are moved together into DIR/previous/, replacing an older one (`set_aside`); an interrupted run leaves its
partial outputs at the top (its trials.jsonl; interrupted while writing its outputs, also those written
by then: results.json comes before the plots and report.md), the previous run whole in DIR/previous/,
and the next run moves those partial outputs into
DIR/previous-interrupted/ (replacing an older interrupted run's), never into DIR/previous/: the last
complete run is kept whole. Other files in DIR are left where they are, and so is a folder named
after a preset that no marker names (say a single-problem run written with --out DIR/digits-mlp); a
run on several problems that would write into such a folder refuses before anything runs. Ctrl-C stops the command
with exit status 130 and says where the partial trials are (`_ctrl_c_honoured`).

The gradient strategy is a population of tuners started from the best trials of a random-search
warm-up, with successive halving (`_gradient_plan`): a quarter of the budget explores, and so does
whatever the most outer steps that fit leave over (`_filled_warmup`); the rest descends
(`--resample-key`: each outer step on a fresh training key). Its hypergradients are
`hg.Reverse()`'s, except on a preset with one weight per training example (`--method auto`, the
default): there `IMPLICIT`'s, each tuner holding the rates and momentum its warm-up trial had
(`_gradient_method`; Reverse's where the budget cannot pay for Implicit's step,
`_affordable_method`). At equal wall time every strategy gets the seconds the slowest one took
(compilation included); at equal execution time, the most seconds any one's trials took executing
(compilation left out, so a warm or cold persistent cache changes nothing there). Random search, the
quickest per trial, is continued with the same key past its budget until it has spent both (at most
`EQUAL_TIME_CAP` times its budget's trials); grid search stops at its grid, and has a pick only at
budgets its whole grid fits in (below them its first trials are one corner of the grid, all at the
lowest learning rate in every preset: its rows read "n/a (grid incomplete: k of n points)",
`line_up_pick`). The report says how many seconds each strategy spent compiling and whether its
programs came from a warm cache (`_provenance`). The summary says, from the run's own numbers, which
strategy's pick did best on test at equal compute, at equal wall time and at equal execution time,
and whether the two equal-time verdicts agree: two strategies that picked the same trial, or picks
of equal test loss, tie; the lowest test loss wins only by more than `NOISE_SE` paired standard
errors of the per-example test-loss difference from every other pick (each pick retrained once for
its per-example losses, `_test_losses_per_example`), and is otherwise reported as within noise of
the closest. A pick whose test loss is not finite ranks last and is not weighed (none finite: no
winner), and a strategy whose finished trials all diverged (or, in a `resample_key` tune, were
scored on their own keys), or a grid cut before its last point, is named as having no pick. """

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import hypergrad as hg
from hypergrad import _program_store as program_store
from hypergrad._caches import ENV_VAR
from hypergrad.problems.presets import EXAMPLE_WEIGHTS, PRESETS, optimizer_hparams, preset, preset_corrupted_examples
from hypergrad._batching import DEFAULT_CHUNK, even_chunk
from hypergrad._checks import MAX_COUNT
from hypergrad._files import replaced_atomically
from hypergrad.objective import as_hparams
from hypergrad.outer import cohort_chunk, rows_computed
from hypergrad.plots import plot_example_weights
from hypergrad.results import FAIL, line_up_pick, pickable
from hypergrad.tune import tune_step_cost

__all__ = ["main", "set_aside"]


POPULATION = 8
"""Tuners of the gradient strategy (halved down to one as it goes)."""
WARMUP_SHARE = 0.25
"""The least share of the gradient strategy's budget spent on its random-search warm-up (which also
takes what the most outer steps that fit leave over, `_filled_warmup`)."""
RESAMPLE_WORDS = ", a fresh training key per outer step"
"""What the plan's description adds under `--resample-key`."""
IMPLICIT = hg.Implicit(solver="cg", maxiter=20, damping=0.1)
"""The gradient strategy's method under `--method implicit` (and `auto` on a preset with one weight per
training example): the settings of `experiments/hyper_cleaning.py`, where Implicit's example weights
separated the flipped labels far better than Reverse's (ROC AUC 0.98 against 0.94,
`experiments/results/hyper_cleaning.md`); chosen there, before this command used it."""
METHODS = ("auto", "reverse", "implicit")
"""`--method`'s choices (`_gradient_method`)."""
EQUAL_TIME_CAP = 10
"""At equal wall time random search continues to at most this many times its budget's trials."""
MARKER = ".hypergrad-compare.json"
"""The file a run on several problems writes into its folder before anything else, naming the
per-problem folders it writes there (`_mark`): `set_aside` moves a folder named after a preset only
when a marker names it, or, for a run written before markers, its summary.md does."""
SUMMARY_TITLE = "# hypergrad compare: who wins where"  # summary.md's first line
OUTPUTS = ("report.md", "results.json", "trials.jsonl", "summary.md", "best_value_vs_compute.png",
           "learned_schedules.png", "picked_hparams.png", "trials.png", "example_weights.png",
           "trials.jsonl.previous", MARKER)
"""Every file a run writes at the top of its folder (`hypergrad.plots` names the plots; the last but
one is where earlier versions kept the previous run's log), which `set_aside` moves aside."""
LOCK = ".hypergrad-compare.lock"
"""The file in --out that a run holds an exclusive `flock` on from before it sets anything aside to
its end (`_run_alone_in`), holding the run's pid; removed when the run ends (a killed run's stays,
unlocked, and blocks nothing)."""
MAX_CPU_DEVICES = 1024
"""The most --cpu-devices accepts: a device runs its share of the trials on about one core
(`hg.use_cpu_cores`), so devices beyond the cores gain nothing; far more than any machine's cores,
it catches a typo before JAX creates that many devices (memory and seconds for each)."""
NOISE_SE = 2.0
"""The verdict names a winner on test only when its pick's mean per-example test loss beats every
other pick's by more than this many paired standard errors (`_standing`); within them of any, it
says the lowest test loss is within noise of the closest. About a 5% two-sided test of each
comparison (no correction for the two or three made), from one seed: the test set's noise, not the
training seed's."""
REPRODUCED = 1e-3
"""How close (relative, at least absolute 1e-3) the mean of a pick's retrained per-example test
losses must come to its recorded test loss to be used (`_test_losses_per_example`): a float32
retraining outside the search's vmapped program may differ in its last bits, not more."""
PREVIOUS = "previous"
"""The folder in --out that holds the last complete run's outputs."""
INTERRUPTED = "previous-interrupted"
"""The folder in --out that holds the last interrupted run's partial outputs."""


def _evaluations(population: int, steps: int, halving: int | None) -> int:
    """Hypergradients a population computes on `steps` outer steps and the final scoring, halving
    (as `hypergrad.outer.drive` does: ceil(n/2) go on) after every `halving` steps; padding rows
    included (`hypergrad.outer.rows_computed`). Summed per halving round, whose live tuners are
    constant: cost O(log2(population)), whatever `steps`."""
    chunk = cohort_chunk(None, halving, population)
    if not halving:
        return (steps + 1) * rows_computed(population, chunk)
    live, total, start = population, 0, 0  # `start`: the round's first step
    while live > 1 and start <= steps:
        total += min(halving, steps + 1 - start) * rows_computed(live, chunk)
        live, start = -(-live // 2), start + halving
    return total + max(0, steps + 1 - start) * rows_computed(1, chunk)


def _most_steps(fits: Callable[[int], bool], most: int) -> int:
    """The largest steps (or other count) in [1, most] for which `fits(steps)`, given that `fits`
    holds for every steps below one for which it holds; 0 when not even one step fits. A doubling
    then a bisection: O(log(steps)) calls."""
    if most < 1 or not fits(1):
        return 0
    low, high = 1, 2  # fits(low); `high` is tried next
    while high <= most and fits(high):
        low, high = high, 2 * high
    high = min(high, most + 1)  # the least steps known not to fit (or past `most`)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _gradient_plan(budget: float, step_runs: float, warmup_rows: Callable[[int], int] = lambda n: n
                   ) -> dict[str, Any] | None:
    """The population, warm-up, halving period and outer steps that fit in `budget` runs: the
    largest population (8, 4, 2, 1) that affords at least one step after its warm-up (`WARMUP_SHARE`
    of the budget, at least one trial per tuner), then as many steps as fit, halving every quarter of
    them; None when not even one tuner's step and its final scoring fit (`_minimum_budget`).
    `warmup_rows(n)`: what a warm-up search of n trials is charged, its padding to the devices
    included (`_rows_run`). The warm-up is the least the plan gives it: `_filled_warmup` hands it
    what the steps leave, as `_budget_plan` (the command's plan) does.

    The cost grows with the steps (each step adds a row of live tuners, and more steps halve later,
    which keeps as many tuners live or more: `_evaluations`), so the most steps that fit are found
    by bisection (`_most_steps`): O(log(budget) * log2(population)) work, whatever the budget. A
    step costs at least `step_runs`, so no more than budget / step_runs steps are tried."""
    most = math.floor(budget / step_runs)
    for population in (POPULATION, 4, 2, 1):
        warmup = max(population, round(WARMUP_SHARE * budget)) if population > 1 else 0
        warmup_cost = warmup_rows(warmup) if warmup else 0
        steps = _most_steps(lambda steps: _spent(population, steps, warmup_cost, step_runs) <= budget, most)
        if steps:
            return {"population": population, "warmup": warmup or None, "tune_steps": steps,
                    "halving": _halving(population, steps)}
    return None


def _filled_warmup(plan: dict[str, Any] | None, budget: float, step_runs: float,
                   warmup_rows: Callable[[int], int] = lambda n: n) -> dict[str, Any] | None:
    """`plan` (`_gradient_plan`) with as many more warm-up trials as what its steps and warm-up leave
    of `budget` pays for, so the gradient strategy spends its budget up to less than one more
    trial's rows (`warmup_rows`, padding to the devices included), never past it: outer steps are
    coarse (on digits-noisy at --budget 300 on 2 devices, 8 tuners' next step would cost 28 runs, and
    20 were left unspent). The steps, population and halving are kept, and the tuners still start
    from the best of the (larger) warm-up. A plan of one tuner has no warm-up and is returned as it
    is, as is None.

    `warmup_rows` must not decrease as trials are added and must charge n trials at least n rows
    (`_rows_run` does both), so the most trials that fit are found by doubling then bisection
    (`_most_steps`): O(log(leftover)) charges."""
    if plan is None or not plan["warmup"]:
        return plan
    population, steps, warmup = plan["population"], plan["tune_steps"], plan["warmup"]
    more = _most_steps(lambda extra: _spent(population, steps, warmup_rows(warmup + extra), step_runs) <= budget,
                       max(0, math.floor(budget) - warmup))
    return {**plan, "warmup": warmup + more}


def _halving(population: int, steps: int) -> int | None:
    """The gradient strategy's halving period: every quarter of its `steps`, none for one tuner."""
    return max(1, steps // 4) if population > 1 else None


def _spent(population: int, steps: int, warmup_cost: float, step_runs: float) -> float:
    """Runs the gradient strategy spends: its warm-up's `warmup_cost`, then `steps` outer steps of
    `population` tuners halved every `_halving` steps and the final scoring, `step_runs` each
    (inf past the largest float, which no finite budget pays)."""
    try:
        return warmup_cost + _evaluations(population, steps, _halving(population, steps)) * step_runs
    except OverflowError:  # an int count beyond floats
        return math.inf


def _steps(count: int, what: str = "step") -> str:
    """`count` steps in words: '1 outer step', '12 outer steps'."""
    return f"{count} {what}" + ("" if count == 1 else "s")


def _gradient_words(plan: dict[str, Any]) -> str:
    """The gradient strategy's plan in words."""
    if plan["population"] == 1:
        return f"one tuner started from the space's centre for {_steps(plan['tune_steps'], 'outer step')}"
    every = "step" if plan["halving"] == 1 else _steps(plan["halving"])
    return (f"{plan['warmup']} random warm-up trials, then {plan['population']} tuners started from the best of "
            f"them for {_steps(plan['tune_steps'], 'outer step')} (halving every {every})")


def _minimum_budget(step_runs: float) -> float:
    """The least budget the gradient strategy fits in: one tuner's one outer step and the scoring of
    its last iterate, each a hypergradient of `step_runs` training runs."""
    return _evaluations(1, 1, None) * step_runs


def _budget_plan(budget: float, step_runs: float, trial_runs: float, num_grid_axes: int,
                 rows: Callable[[int], int] = lambda n: n,
                 warmup_rows: Callable[[int], int] = lambda n: n) -> dict[str, Any] | None:
    """The gradient strategy's plan, random trials and grid points that fit in `budget` runs; None
    when the gradient strategy does not fit (`_minimum_budget`). `rows(n)`: the rows a search of n
    trials computes, padding included (`_rows_run`), which is what it is charged: the counts are
    lowered until that fits too (31 random trials on 2 devices run, and cost, 32);
    `warmup_rows` the same for the gradient strategy's warm-up search (`_gradient_plan`), which
    takes what the outer steps leave (`_filled_warmup`)."""
    gradient = _filled_warmup(_gradient_plan(budget, step_runs, warmup_rows), budget, step_runs, warmup_rows)
    if gradient is None:
        return None
    trials = max(1, math.floor(budget / trial_runs))
    while trials > 1 and rows(trials) * trial_runs > budget * (1 + 1e-9):
        trials -= 1
    points = max(1, math.floor((budget / trial_runs) ** (1.0 / num_grid_axes) + 1e-9))
    while points > 1 and rows(points ** num_grid_axes) * trial_runs > budget * (1 + 1e-9):
        points -= 1
    return {**gradient, "random_trials": trials, "grid_points_per_axis": points}


def _chunk(num_trials: int, chunk_size: int, devices: int) -> int:
    """The CLI's chunk for a search of `num_trials`: the library's default chunk with the memory
    bound `chunk_size` in place of `DEFAULT_CHUNK` (`hypergrad._batching.even_chunk`, the one
    formula, so the two cannot drift): as equal as the bound allows, so padding wastes (almost)
    none of the budget, a multiple of the devices, so each chunk shards evenly across them, and
    never over the bound (the devices' count when there are more devices than that)."""
    return even_chunk(num_trials, chunk_size, devices)


def _rows_run(num_trials: int, chunk_size: int, devices: int) -> int:
    """Rows a search of `num_trials` in `_chunk`s computes, the last call's padding included (what
    random and grid search and tune's warm-up, `warmup_chunk_size`, are charged); with `chunk_size` =
    `DEFAULT_CHUNK`, exactly what a search given no chunk computes."""
    chunk = _chunk(num_trials, chunk_size, devices)
    return math.ceil(num_trials / chunk) * chunk


def _use_devices(cpu_devices: int) -> None:
    """One JAX device per core (or `cpu_devices`), before anything computes, so searches shard."""
    if cpu_devices == 1:
        return
    try:
        hg.use_cpu_cores(None if cpu_devices == 0 else cpu_devices)
    except RuntimeError:  # main() called from a Python process where JAX is already running
        print("[devices] JAX had already started: searches use its devices as they are", file=sys.stderr)


def set_aside(out: str, outputs: tuple[str, ...] | None = None) -> str | None:
    """Creates `out` if missing and moves a previous run's outputs in it (`outputs`; by default
    `OUTPUTS` and the per-problem folders its marker names, `_marked_folders`) together into a
    folder of `out`, so that the folder's files describe one run. Other files stay, and so does a
    folder named after a preset that no marker names (a run of its own, or the user's).

    A complete run (`_complete`: it wrote report.md, or summary.md on several problems, its last
    output) goes to `out/previous/`, replacing the older complete one; an interrupted run's partial
    outputs go to `out/previous-interrupted/`, replacing an older interrupted one, and never
    displace the complete run in previous/. An older previous-interrupted/ that holds a complete
    run (`_holds_complete_run`, as earlier versions could leave it) is renamed with the time rather
    than removed. Returns the folder they went to, or None when there was nothing to move (the
    older folders are then kept). The moves go through `out/.<folder>-partial/` first, the marker
    last: a set-aside interrupted half way is completed by the next one into the same folder, and
    the older folder is replaced only once the whole run is aside. (experiments/ that write a
    folder of their own call it with their outputs.)"""
    os.makedirs(out, exist_ok=True)
    names = _outputs_in(out, outputs)
    started = [folder for folder in (PREVIOUS, INTERRUPTED) if os.path.isdir(_staging(out, folder))]
    if not names and not started:
        return None
    # a set-aside begun earlier decides where the rest of its run goes
    folder = started[0] if started else (PREVIOUS if _complete(out, names) else INTERRUPTED)
    partial = _staging(out, folder)
    os.makedirs(partial, exist_ok=True)
    for name in sorted(names, key=lambda name: name == MARKER):  # the marker last: it names what is left to move
        os.replace(os.path.join(out, name), os.path.join(partial, name))
    aside = os.path.join(out, folder)
    if os.path.isdir(aside) and not os.path.islink(aside):
        if folder == INTERRUPTED and _holds_complete_run(aside):
            os.replace(aside, _unused(f"{aside}-{time.strftime('%Y%m%d-%H%M%S')}"))
        else:
            shutil.rmtree(aside)
    elif os.path.lexists(aside):
        os.remove(aside)
    os.replace(partial, aside)
    return aside


def _outputs_in(out: str, outputs: tuple[str, ...] | None = None) -> list[str]:
    """Which of a run's outputs (`outputs`; by default `OUTPUTS` and the per-problem folders the
    marker names, `_marked_folders`) are at the top of `out`."""
    outputs = (*OUTPUTS, *_marked_folders(out)) if outputs is None else outputs
    return [name for name in outputs if os.path.lexists(os.path.join(out, name))]


def _marked_folders(folder: str) -> list[str]:
    """The per-problem folders that the marker of the run in `folder` names (`_mark`): the one at
    its top, or, while a set-aside is under way, the one it staged; empty without a marker (a
    folder no run of this command wrote, or one an earlier version wrote) or with an unreadable one."""
    for where in (folder, _staging(folder, PREVIOUS), _staging(folder, INTERRUPTED)):
        path = os.path.join(where, MARKER)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    named = json.load(f).get("folders", [])
            except (OSError, ValueError, AttributeError):
                return []
            # only plain preset names: a marker never moves anything outside `folder`
            return sorted(name for name in named if isinstance(name, str) and name in PRESETS)
    return _unmarked_run_folders(folder)


def _unmarked_run_folders(folder: str) -> list[str]:
    """The per-problem folders of a run that a version before the marker wrote into `folder`: the
    presets its summary.md (the command's own title on its first line) reports on ("- <preset>, ...")
    that are folders there. Such a run is this command's, set aside as any other (never deleted),
    so that `make demo` goes on after an upgrade; without that summary, nothing (a folder the
    command did not write is never moved)."""
    try:
        with open(os.path.join(folder, "summary.md")) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    if not lines or lines[0] != SUMMARY_TITLE:
        return []
    reported = {line[2:].split(",", 1)[0] for line in lines if line.startswith("- ")}
    return sorted(name for name in reported if name in PRESETS and os.path.isdir(os.path.join(folder, name)))


def _mark(out: str, folders: list[str]) -> None:
    """Writes the marker of a run into `out` (whole or not at all): the per-problem `folders` it
    is about to write there, which the next run's `set_aside` moves with its other outputs."""
    with replaced_atomically(os.path.join(out, MARKER)) as f:
        json.dump({"command": "hypergrad compare", "folders": sorted(folders)}, f)


def _foreign_folders(out: str, problems: list[str]) -> list[str]:
    """The per-problem folders a run on `problems` (several) would write into `out` that are there
    already and that no marker names (another program's, or an interrupted run's of a version before
    markers): not known as this command's outputs, so neither set aside nor written into."""
    if len(problems) == 1:
        return []
    marked = set(_marked_folders(out))
    return [name for name in problems if os.path.lexists(os.path.join(out, name)) and name not in marked]


def _staging(out: str, folder: str) -> str:
    """Where `set_aside` gathers a run's outputs before they replace `out/folder`."""
    return os.path.join(out, f".{folder}-partial")


def _unused(path: str) -> str:
    """`path`, or `path-2`, `path-3`, ...: the first that does not exist."""
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def _complete(out: str, names: list[str]) -> bool:
    """Whether the outputs `names` at the top of `out` are a whole run: one that wrote its last
    output, summary.md on several problems (it holds per-problem folders), report.md on one."""
    several = any(os.path.isdir(os.path.join(out, name)) for name in names if name not in OUTPUTS)
    return ("summary.md" if several else "report.md") in names


def _holds_complete_run(folder: str) -> bool:
    """Whether `folder` holds a complete run: report.md or summary.md at its top, or report.md in a
    subfolder that its marker does not name as one of its run's problems (a complete single-problem
    run that an earlier version set aside as if it were part of an interrupted one)."""
    if any(os.path.isfile(os.path.join(folder, name)) for name in ("report.md", "summary.md")):
        return True
    marked = set(_marked_folders(folder))
    return any(os.path.isfile(os.path.join(folder, name, "report.md"))
               for name in os.listdir(folder) if name not in marked)


def _carry_on() -> None:
    """The `stop` of a run that no Ctrl-C handler watches (`_ctrl_c_honoured`): it never stops."""


def _progress(say: Callable[[str], None] | None, stop: Callable[[], None]) -> Callable[[str], None]:
    """A strategy's progress callback: `stop()` first (a safe point: raises KeyboardInterrupt once
    Ctrl-C was pressed, `_ctrl_c_honoured`), then the line to `say` (None: quiet)."""
    def report(line: str) -> None:
        stop()
        if say:
            say(line)
    return report


def _resamples(args: argparse.Namespace) -> bool:
    """Whether `--resample-key` asks the gradient strategy for a fresh training key per outer step (a
    namespace built without the option, as a caller of `_run_strategies` may build one: no)."""
    return bool(vars(args).get("resample_key", False))


def _run_strategies(args, objective, space, key, method, plan, log, say, stop=_carry_on) -> dict[str, hg.Result]:
    """Tune (by `method`, holding the plan's `hold` names at each tuner's start, if any), random
    search and grid search, each within the plan's share of the budget, one after the other, each
    with where its programs came from (`_measured`).

    Each starts with the engine's in-memory caches emptied (`hg.clear_caches()`), so its wall time
    includes compiling (or, with the persistent cache on, loading what an earlier process stored)
    every program it runs, whatever ran before it: a program another strategy left in memory (tune's
    warm-up is a random search) would otherwise cost it nothing, and so would one another strategy of
    this run wrote to the persistent cache, which is held out of the later ones' reach
    (`_held_between_strategies`). Random search runs last, so that its continuation toward equal
    wall time (`_at_equal_wall_time`) finds its program as one longer search would. `stop`: called at
    each safe point (before each strategy, at each progress line), see `_ctrl_c_honoured`."""
    devices = jax.local_device_count()

    def chunk_for(num_trials):
        return _chunk(num_trials, args.chunk_size, devices)

    progress = _progress(say, stop)
    runs = {
        "hypergradient": lambda: hg.tune(objective, space, key, method=method, outer=optax.adam(args.outer_lr),
                                         resample_key=_resamples(args), hold=tuple(plan.get("hold", ())),
                                         steps=plan["tune_steps"], population=plan["population"],
                                         warmup=plan["warmup"], halving=plan["halving"], log=log, progress=progress,
                                         warmup_chunk_size=chunk_for(plan["warmup"]) if plan["warmup"] else None),
        "random": lambda: hg.random_search(objective, space, key, plan["random_trials"],
                                           chunk_size=chunk_for(plan["random_trials"]), log=log, progress=progress),
        "grid": lambda: hg.grid_search(objective, space, key, plan["grid_points_per_axis"],
                                       chunk_size=chunk_for(plan["grid_points_per_axis"] ** len(space)),
                                       log=log, progress=progress),
    }
    done = {}
    with _held_between_strategies() as hold_new_entries:
        for name in ("hypergradient", "grid", "random"):
            hg.clear_caches()
            stop()
            done[name] = _measured(runs[name])
            hold_new_entries()
    return {name: done[name] for name in runs}


HELD = ".hypergrad-compare-held-{pid}"
"""The folder in the persistent cache's folder where `_held_between_strategies` keeps the entries the
strategies of a run wrote while the later ones run (`{pid}`: this process's id)."""


def _cache_entries() -> dict[str, set[str]]:
    """The entries of the persistent caches now, by folder: JAX's (its folder's `*-cache` and
    `*-atime` files) and hypergrad's program store's (`hypergrad._program_store`, its folder's files
    but the `.partial-*` ones being written); {} with the cache off."""
    if not _cache_on():
        return {}
    jax_folder, store = jax.config.jax_compilation_cache_dir, program_store.directory()
    entries = {jax_folder: {name for name in _files_in(jax_folder) if name.endswith(("-cache", "-atime"))}}
    if store is not None:
        entries[store] = {name for name in _files_in(store) if not name.startswith(".")}
    return entries


def _files_in(folder: str) -> list[str]:
    """The names of the plain files in `folder` ([] when it is missing or cannot be read)."""
    try:
        return [entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)]
    except OSError:
        return []


@contextlib.contextmanager
def _held_between_strategies():
    """Yields `hold()`, which moves the persistent caches' entries written since the block began or
    since the last `hold()` (the strategy that just ran: its programs, in JAX's cache and hypergrad's
    program store) into the folder `HELD`, out of every later strategy's reach; the block's end (an
    exception or Ctrl-C too) moves them back, where a later run finds them (one that a later strategy
    wrote again stays as it is). So in a run on an empty cache each strategy compiles every program
    it runs (the README's promise that none runs on programs another compiled: random search and grid
    search at the same chunk size run the same program, which random, running after grid, loaded in
    about a second where grid had spent seconds compiling it), while a second run loads them all.
    Nothing with the cache off. Another process using the folder meanwhile misses the held entries
    (and compiles them) until the block ends; a process killed meanwhile leaves them in `HELD`."""
    seen = _cache_entries()
    held = os.path.join(jax.config.jax_compilation_cache_dir, HELD.format(pid=os.getpid())) if seen else None
    moved: list[tuple[str, str]] = []

    def hold() -> None:
        nonlocal seen
        now = _cache_entries()
        for folder, names in now.items():
            for name in sorted(names - seen.get(folder, set())):
                aside = os.path.join(held, os.path.relpath(folder, os.path.dirname(held)), name)
                with contextlib.suppress(OSError):  # an entry that cannot be moved stays readable
                    os.makedirs(os.path.dirname(aside), exist_ok=True)
                    os.replace(os.path.join(folder, name), aside)
                    moved.append((aside, os.path.join(folder, name)))
        seen = _cache_entries()

    try:
        yield hold
    finally:
        _put_back(moved, held)


def _put_back(moved: list[tuple[str, str]], held: str | None) -> None:
    """Moves each (held, original) entry back to its place, unless that place holds one again (the
    held copy is then dropped), and removes the emptied `held` folder."""
    for aside, original in moved:
        with contextlib.suppress(OSError):
            if os.path.exists(original):
                os.remove(aside)
            else:
                os.replace(aside, original)
    if held is not None:
        for folder, _, _ in sorted(os.walk(held), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _measured(run: Callable[[], hg.Result], earlier: dict[str, Any] | None = None) -> hg.Result:
    """`run()`'s Result with `info["compilation"]`: where the programs it made came from
    (`_provenance`), added to `earlier`'s counts (a search continued from an earlier one)."""
    before = program_store.counts()
    result = run()
    after = program_store.counts()
    counts = {name: after[name] - before[name] + (earlier or {}).get(name, 0) for name in after}
    return dataclasses.replace(result, info={**result.info, "compilation": _provenance(counts)})


def _cache_on() -> bool:
    """Whether JAX's persistent compilation cache is in use (`hg.use_compilation_cache`)."""
    return bool(jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir)


def _provenance(counts: dict[str, int]) -> dict[str, Any]:
    """Where a strategy's programs came from, from the differences of `program_store.counts()`
    around its call: `cache` "off" (the persistent cache is off: every program was compiled in this
    process), "cold" (XLA compiled them all), "warm" (all loaded from the persistent cache: JAX's or
    hypergrad's program store), "partly warm", or "in memory" (none made: every program was
    already in this process, compiled or loaded by an earlier strategy); `compiled` (XLA
    compilations; None with the cache off, when JAX does not count them) and `loaded`, with the
    counts they come from."""
    compiled = counts["jax_requests"] - counts["jax_hits"]
    loaded = counts["jax_hits"] + counts["store_loads"]
    if not _cache_on():
        cache, compiled = "off", None
    else:
        cache = {(True, True): "partly warm", (True, False): "cold", (False, True): "warm",
                 (False, False): "in memory"}[(compiled > 0, loaded > 0)]
    return {"cache": cache, "compiled": compiled, "loaded": loaded, **counts}


def _wall(result: hg.Result) -> float:
    """A result's seconds: its compilation, then its trials' execution (`Result.spent`)."""
    return float(result.spent("seconds")[-1]) if result.trials else result.compile_seconds + result.setup_seconds


def _slowest(results: dict[str, hg.Result]) -> float:
    """The seconds the slowest strategy took: the equal-wall-time budget."""
    return max(_wall(r) for r in results.values())


def _seconds(x: float) -> str:
    """Seconds in words: one decimal from 1 s up (7.4), two significant digits below (0.03)."""
    return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"


def _slowest_execution(results: dict[str, hg.Result]) -> float:
    """The most execution seconds any strategy's trials took (compilation left out): the
    equal-execution-time budget."""
    return max(r.seconds for r in results.values())


def _at_equal_wall_time(objective, space, key, results, log, say, stop=_carry_on) -> dict[str, hg.Result]:
    """The results the equal-time comparisons line up: random search continued, with the same key
    and so the same first draws (`random_search(extends=...)`), until it has spent the seconds of
    the slowest strategy, compilation included, and the most execution seconds of any (10% more
    trials than its own rate says, so the cuts at those seconds fall inside them; at most
    `EQUAL_TIME_CAP` times its budget's trials); the others as they ran. `stop`: as in
    `_run_strategies`."""
    stop()
    random = results["random"]
    slowest, executing = _slowest(results), _slowest_execution(results)
    wanted = max(_trials_for(random, slowest), _trials_for(random, executing, by="execution"))
    if wanted == len(random.trials):
        return results
    if say:
        say(f"[equal wall time] random search continues to {wanted} trials, toward the slowest strategy's "
            f"{slowest:.1f}s (compilation included) and {executing:.1f}s of execution")
    more = _measured(lambda: hg.random_search(objective, space, key, wanted, chunk_size=random.info.get("chunk_size"),
                                              log=log, progress=_more(_progress(say, stop), len(random.trials)),
                                              extends=random),
                     earlier=random.info.get("compilation"))
    return dict(results, random=more)


def _more(report: Callable[[str], None], done: int) -> Callable[[str], None]:
    """`report` for a search continued past its `done` trials: a progress line's "[random] 40/360"
    (the continuation's own count) becomes "[random] 40/360 more (80/400 in all)"."""
    def more(line: str) -> None:
        match = re.match(r"(\[[^\]]*\] )(\d+)/(\d+)", line)
        if match:
            count, total = int(match[2]), int(match[3])
            line = f"{match[1]}{count}/{total} more ({done + count}/{done + total} in all){line[match.end():]}"
        report(line)
    return more


def _trials_for(random: hg.Result, seconds: float, by: str = "seconds") -> int:
    """Trials of the random search `random` continued to fill `seconds` (compilation, then trials at
    its own mean execution seconds per trial, 10% more so the cut at `seconds` falls inside them;
    with `by="execution"` the trials alone), between its own trials and `EQUAL_TIME_CAP` times them."""
    done = len(random.trials)
    executed = sum(t.seconds for t in random.trials)
    fixed = random.compile_seconds + random.setup_seconds if by == "seconds" else 0.0
    if not done or executed <= 0 or fixed + executed >= seconds:
        return done
    # rounded before the ceiling, so float noise cannot add a trial: Python 3.12+ sums floats with
    # compensation (sum([0.01] * 20) is 0.2, not 0.19999999999999998), which made 66.0 66.00000000000001
    wanted = math.ceil(round(1.1 * (seconds - fixed) * done / executed, 6))
    return min(max(wanted, done), EQUAL_TIME_CAP * done)


def _write_outputs(args, out, problem, objective, space, plan, results, by_seconds, verdict, elapsed,
                   corrupted) -> int:
    """Prints the comparison tables (equal compute, equal wall time with compilation, equal execution
    time without); writes results.json (with, under "results_at_equal_wall_time", each result the
    equal-time tables rank that is not the budget's in "results": random search continued, whole, its
    set-up seconds and where they are charged included, so `Result.from_dict` and `hg.compare` give
    those tables back from the file alone), the plots (when matplotlib is there) and report.md into
    `out`. `by_seconds`: the results at equal wall time and execution time (`_at_equal_wall_time`);
    `verdict`: `_verdict`'s lines; `corrupted`: the preset's mask of flipped training labels, or
    None. Returns the number of plots written."""
    slowest, executing = _slowest(results), _slowest_execution(results)
    by_compute = hg.compare(results)
    by_time = hg.compare(by_seconds, [slowest / 8, slowest / 4, slowest / 2, slowest], by="seconds")
    by_execution = hg.compare(by_seconds, [executing / 8, executing / 4, executing / 2, executing], by="execution")
    tables = by_compute.to_markdown(), by_time.to_markdown(), by_execution.to_markdown()
    print(f"\n{problem}: equal compute\n{tables[0]}\n\n{problem}: equal wall time (compilation included)\n"
          f"{tables[1]}\n\n{problem}: equal execution time (compilation left out)\n{tables[2]}")
    weights_section = [] if corrupted is None else _example_weights(results, corrupted)
    if weights_section:
        print("\n" + "\n".join(weights_section))
    with replaced_atomically(os.path.join(out, "results.json")) as f:
        json.dump({"problem": problem, "budget": args.budget, "plan": plan,
                   "comparison": by_compute.to_dict(), "comparison_by_seconds": by_time.to_dict(),
                   "comparison_by_execution_seconds": by_execution.to_dict(),
                   "compilation": {name: {"compile_seconds": r.compile_seconds, "setup_seconds": r.setup_seconds,
                                          **r.info.get("compilation", {})}
                                   for name, r in by_seconds.items()},
                   "results": {name: r.to_dict() for name, r in results.items()},
                   "random_at_equal_wall_time": _continued(results["random"], by_seconds["random"]),
                   "results_at_equal_wall_time": {name: r.to_dict() for name, r in by_seconds.items()
                                                  if r is not results[name]}}, f)
    plots = []
    try:
        plots = by_compute.plot(out)
        weights_plot = None if corrupted is None else plot_example_weights(results, corrupted, out)
        if weights_plot is not None:
            plots.append(weights_plot)
    except ImportError as err:
        print(f"[plots skipped] {err}", file=sys.stderr)
    with replaced_atomically(os.path.join(out, "report.md")) as f:
        f.write(_report_markdown(args, problem, objective, space, plan, results, by_seconds, tables, plots, elapsed,
                                 weights_section))
        f.write("\n## Verdict\n\n" + verdict + "\n")
    return len(plots)


def _continued(budget: hg.Result, continued: hg.Result) -> dict[str, Any]:
    """What the equal-wall-time comparison gave random search beyond its budget (its trials are
    in trials.jsonl, numbered on from the budget's)."""
    return {"budget_trials": len(budget.trials), "trials": len(continued.trials), "seconds": _wall(continued),
            "capped": len(continued.trials) >= EQUAL_TIME_CAP * len(budget.trials)}


def _pick_line(name: str, pick) -> str:
    scores = pick.scores
    accuracy = f", test accuracy {scores['test_accuracy']:.3f}" if "test_accuracy" in scores else ""
    return f"{name} (val {pick.value:.4g}, test loss {scores.get('test_loss', float('nan')):.4g}{accuracy})"


def _verdict(problem: str, results: dict[str, hg.Result], by_seconds: dict[str, hg.Result],
             corrupted: np.ndarray | None = None, per_example: Callable[[Any], np.ndarray | None] | None = None
             ) -> str:
    """Which strategy's pick did best on test, at equal compute (each one's whole budget), at equal
    wall time (the seconds the slowest strategy took, compilation included) and at equal execution
    time (the most execution seconds any strategy's trials took, compilation left out), with random
    search continued toward both (`by_seconds`, from `_at_equal_wall_time`), from the run's own
    numbers, each strategy's pick as the tables pick it (`line_up_pick`: a grid cut before its last
    trial has none, and is listed with its reason); then each strategy's compile seconds and where
    its programs came from, and whether the two equal-time verdicts agree; with `corrupted` (the
    mask of flipped training labels), how well each pick's example weights single them out. Identical
    picks or equal test losses are a tie; a lower test loss is a win only beyond `NOISE_SE` paired
    standard errors of the per-example difference from every other pick, from `per_example(pick)`
    (`_test_losses_per_example`; None: no noise level, so no win is called between picks)."""
    slowest, executing = _slowest(results), _slowest_execution(results)
    continued = _continued(results["random"], by_seconds["random"])
    extra = (f"; random search continued to {continued['trials']} trials"
             + (f", its cap, in {_seconds(continued['seconds'])} s" if continued["capped"] else "")
             if continued["trials"] > continued["budget_trials"] else "")
    lines, winners = [], {}
    for label, chosen, by, budget in (
            ("equal compute", results, "runs", math.inf),
            (f"equal wall time ({_seconds(slowest)} s, compilation included{extra})", by_seconds, "seconds", slowest),
            (f"equal execution time ({_seconds(executing)} s, compilation left out)", by_seconds, "execution",
             executing)):
        lined_up = {name: line_up_pick(r, budget, by) for name, r in chosen.items()}  # as the tables pick
        picks = {name: pick for name, (pick, _) in lined_up.items()}
        unpicked = {name: why for name, r in chosen.items() if picks[name] is None
                    and (why := lined_up[name][1] or _why_no_pick(r, budget, by)) is not None}
        line, winners[by] = _winner_line(problem, label, picks, per_example, unpicked)
        lines.append(line)
    lines += _compilation_lines(problem, by_seconds, winners["seconds"], winners["execution"])
    weighed = {} if corrupted is None else _weights_against_corruption(results, corrupted)
    if weighed:
        lines.append(f"- {problem}, example weights of the picks (clean / corrupted mean, AUC of a lower weight "
                     "marking a flipped label): " + "; ".join(f"{name} {clean:.3g} / {dirty:.3g}, AUC {auc:.2f}"
                                                              for name, (clean, dirty, auc) in weighed.items()) + ".")
    return "\n".join(lines)


def _same_trial(a, b) -> bool:
    """Whether two picks are one training run: the same hyperparameters (every strategy trains with
    the same key; the hypergradient's warm-up draws random search's first trials, so both often
    pick the very same one, whose recorded numbers may still differ in their last bits)."""
    return a.hparams.keys() == b.hparams.keys() and all(
        np.array_equal(np.asarray(a.hparams[name]), np.asarray(b.hparams[name])) for name in a.hparams)


def _paired_margin(leader: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean per-example test-loss difference `leader - other`, its paired standard error)."""
    difference = leader - other
    return float(difference.mean()), float(difference.std(ddof=1) / math.sqrt(difference.size))


def _closest(margins: dict[str, tuple[float, float]]) -> str:
    """The name whose margin is the least beyond the noise: the largest z = mean / standard error
    (a zero standard error counts as infinitely far, on the side of its mean)."""
    def z(margin):
        mean, se = margin
        return mean / se if se > 0 else math.copysign(math.inf, mean)
    return max(margins, key=lambda name: z(margins[name]))


def _test_loss(pick) -> float:
    """A pick's recorded test loss; inf when it has none."""
    loss = pick.scores.get("test_loss")
    return math.inf if loss is None else loss


def _test_rank(pick, name: str) -> tuple:
    """The sort key of `_standing`'s ranking: finite test losses first, lowest first; then the
    non-finite ones (NaN has no order, so they rank by name alone); ties in name order."""
    loss = _test_loss(pick)
    return (0, loss, name) if math.isfinite(loss) else (1, 0.0, name)


def _standing(picks: dict[str, Any], per_example: Callable[[Any], np.ndarray | None] | None) -> tuple:
    """(kind, ranked, leaders, margin, against) of one comparison's picks (a Trial or None per strategy).

    `ranked`: the names with a pick by test loss (`_test_rank`: ties in name order, so dict order
    never decides; a pick whose test loss is not finite, diverged on test or missing, last);
    `leaders`: the first and every name tied with it (the same trial, `_same_trial`, an equal test
    loss, or the same loss on every test example); `margin`: (mean per-example test-loss
    difference of the leader minus `against`'s, its paired standard error) or None. The leader is
    weighed against EVERY other pick with a finite test loss, since paired standard errors are not
    transitive (a neighbour of the leader's pick may be far beyond the noise while a worse but
    noisier pick is within it); a finite test loss beats a non-finite one outright. `against` is the
    closest of them by z (`_closest`), or one not measured. `kind`: "none" (no pick), "unscored"
    (picks, none with a finite test loss: no leader), "tie" (more than one leader), "win" (the sole
    pick with a finite test loss, or beyond `NOISE_SE` standard errors of every other such pick),
    "noise" (within them of at least one), "unmeasured" (`per_example` gave no losses for the
    leader or another pick). Cost: one `per_example` call per pick (memoised there)."""
    ranked = sorted((name for name, p in picks.items() if p), key=lambda name: _test_rank(picks[name], name))
    if not ranked:
        return "none", [], [], None, None
    first = picks[ranked[0]]
    if not math.isfinite(_test_loss(first)):
        return "unscored", ranked, [], None, None
    leaders = [name for name in ranked if _same_trial(picks[name], first)
               or _test_loss(picks[name]) == _test_loss(first)]
    rest = [name for name in ranked if name not in leaders and math.isfinite(_test_loss(picks[name]))]
    if len(leaders) > 1 or not rest:
        return ("tie" if len(leaders) > 1 else "win"), ranked, leaders, None, None
    losses = {name: None if per_example is None else per_example(picks[name]) for name in (leaders[0], *rest)}
    missing = [name for name in rest if losses[name] is None]
    if losses[leaders[0]] is None or missing:
        return "unmeasured", ranked, leaders, None, (missing or rest)[0]
    margins = {name: _paired_margin(losses[leaders[0]], losses[name]) for name in rest}
    same = [name for name in rest if margins[name] == (0.0, 0.0)]  # the same loss on every test example
    if same:
        return "tie", ranked, [*leaders, *same], None, None
    against = _closest(margins)
    margin = margins[against]
    return ("win" if margin[0] < -NOISE_SE * margin[1] else "noise"), ranked, leaders, margin, against


def _why_no_pick(result: hg.Result, budget: float, by: str) -> str | None:
    """Why `result` has no pick within `budget` (`best_within`'s cut) though trials finished within
    it: how many diverged (state "fail": a non-finite validation loss) and how many a
    `tune(resample_key=True)` step scored on its own key (`pickable`: never the pick); None when no
    trial finished within it. Cost: O(trials)."""
    limit, can_pick = budget * (1 + 1e-9), pickable(result.info)
    spent = result.spent(by)
    trials = result.trials[:next((i for i, cost in enumerate(spent) if cost > limit), len(spent))]
    if not trials:
        return None
    diverged = sum(t.state == FAIL or not math.isfinite(t.value) for t in trials)
    own_key = sum(not can_pick(t) for t in trials) - diverged
    if not own_key:
        return "its one finished trial diverged" if diverged == 1 else f"all {diverged} of its finished trials diverged"
    steps = "1 step scored on its own key" if own_key == 1 else f"{own_key} steps scored on their own keys"
    return (f"{_steps(len(trials), 'finished trial')}: " + (f"{diverged} diverged, " if diverged else "")
            + f"{steps} (resample_key), never the pick")


def _winner_line(problem: str, label: str, picks: dict[str, Any],
                 per_example: Callable[[Any], np.ndarray | None] | None = None,
                 unpicked: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(the verdict's line for one comparison, its outcome: the winner's name, a phrase for a tie
    or no clear winner, or None when no strategy has a pick or no pick a finite test loss): the
    pick (a Trial or None per strategy) with the lowest finite test loss wins only beyond the test
    set's noise (`_standing`), from
    `per_example(pick)`: that pick's loss on every test example (None where unknown; see
    `_test_losses_per_example`; a lead it could not weigh says which picks had none and why,
    `_unmeasured_why`). `unpicked`: why each strategy with no pick but finished trials has
    none (`_why_no_pick`); a strategy with no pick and not there had no trial yet. None (not
    told): beside a pick, every strategy without one is listed under "no trial yet"; with no pick
    at all, the line says only that no strategy has one."""
    kind, ranked, leaders, margin, against = _standing(picks, per_example)
    if kind == "none" and unpicked is None:  # not told whether any trial finished
        return f"- {problem}, {label}: no strategy has a pick.", None
    unpicked = {name: why for name, why in (unpicked or {}).items() if picks.get(name) is None}
    idle = [name for name, p in picks.items() if p is None and name not in unpicked]
    idle_words = ("".join(f"; no pick: {name} ({why})" for name, why in unpicked.items())
                  + (f"; no trial yet: {', '.join(idle)}" if idle else ""))
    if kind == "none":
        if not unpicked:
            return f"- {problem}, {label}: no strategy finished a trial.", None
        return (f"- {problem}, {label}: no strategy has a pick: "
                + "; ".join(f"{name} ({why})" for name, why in unpicked.items())
                + (f"; no trial yet: {', '.join(idle)}" if idle else "") + "."), None
    others = "; ".join(_pick_line(name, picks[name]) for name in ranked if name not in leaders)
    if kind == "unscored":
        return (f"- {problem}, {label}: no pick has a finite test loss, so no winner on test: {others}{idle_words}."
                ), None
    tail = f"; then {others or 'no other'}{idle_words}."
    leader = leaders[0]
    if kind == "tie":
        same = all(_same_trial(picks[n], picks[leader]) for n in leaders)
        reason = "the same trial" if same else "equal test losses"
        return (f"- {problem}, {label}: {' and '.join(f'**{n}**' for n in leaders)} tie on test ({reason}): "
                + "; ".join(_pick_line(n, picks[n]) for n in leaders) + tail), f"a tie of {' and '.join(leaders)}"
    if kind == "win":
        every = "; every other pick's is further beyond the noise" if len(ranked) > 2 else ""
        by = (f" {leader}'s test loss is {-margin[0]:.2g} below {against}'s, more than {NOISE_SE:g} standard "
              f"errors ({margin[1]:.2g}) of the paired per-example difference{every}." if margin
              else " No other pick has a finite test loss." if len(ranked) > 1 else "")
        return (f"- {problem}, {label}: **{leader}** wins on test: {_pick_line(leader, picks[leader])}{tail}{by}"
                ), leader
    noise = (f"within noise of {against} (difference {margin[0]:.2g}, standard error {margin[1]:.2g}; a win "
             f"needs more than {NOISE_SE:g} standard errors)" if kind == "noise"
             else f"its lead over {against} not weighed against the test set's noise (no per-example test losses"
             f"{_unmeasured_why(picks, ranked, leaders, per_example)})")
    return (f"- {problem}, {label}: **{leader}** has the lowest test loss, {noise}, so no clear winner on test: "
            f"{_pick_line(leader, picks[leader])}{tail}"), f"no clear winner ({leader} lowest)"


def _unmeasured_why(picks: dict[str, Any], ranked: list[str], leaders: list[str],
                    per_example: Callable[[Any], np.ndarray | None] | None) -> str:
    """Why `_standing` found no per-example test losses to weigh the leader's lead with, as words
    that follow "no per-example test losses" (empty when `per_example` was not given): the picks
    it weighs that `per_example` gave none, which from `_test_losses_per_example` means that the
    pick, trained again alone, did not reproduce its recorded test loss, as happens near divergence
    (chaotic training: its numbers move with how the trials were batched; README, Determinism).
    Cost: `per_example` calls (memoised there)."""
    if per_example is None:
        return ""
    rest = [name for name in ranked if name not in leaders and math.isfinite(_test_loss(picks[name]))]
    unread = [name for name in (leaders[0], *rest) if per_example(picks[name]) is None]
    if not unread:
        return ""
    if len(unread) == 1:
        whose, loss = f"{unread[0]}'s pick, trained again alone", "the test loss its trial recorded"
    else:
        whose = f"the picks of {', '.join(unread[:-1])} and {unread[-1]}, each trained again alone"
        loss = "the test losses their trials recorded"
    return (f": {whose} to score every test example, did not reproduce {loss}, as happens near divergence, "
            "where training is chaotic and a trial's numbers change with how the trials were batched together, "
            "see Determinism in the README; the recorded losses stand, but the test set's noise could not be "
            "measured")


def _test_losses_per_example(objective: hg.Objective, key) -> Callable[[Any], np.ndarray | None]:
    """`pick -> its loss on every test example` (float64, None where it cannot be had): the pick's
    hyperparameters trained again on `key` (as every strategy trained them), then `val_loss` on each
    test example alone (under cv, the mean over the fold models, as `test_loss` is). Trusted only
    where the losses' mean reproduces the pick's recorded test loss (within `REPRODUCED` of it,
    relative): a `val_loss` that is not a mean over examples, or a pick trained on another key,
    gives None. Cost: one training run and one pass over the test set per distinct pick asked for
    (memoised on the hyperparameters; the verdict asks for every strategy's pick in each of its three
    comparisons, at most three per strategy, usually fewer as picks repeat), after the comparisons' seconds
    are measured, so they change no table; plus compiling the training program and the per-example
    scoring once. Memory: the trained parameters, and one loss per test example and distinct pick.
    No bias: the same training run as the pick's trial, scored on the same test examples."""
    problem, memo = objective.problem, {}
    if "test" not in problem.data:
        return lambda pick: None

    def example_losses(params, hparams):
        def alone(example):  # a batch of one: val_loss is a mean over its batch
            return problem.validation_loss(params, hparams, jax.tree.map(lambda x: x[None], example))
        return jax.vmap(alone)(problem.data["test"])

    per_fold = jax.jit(jax.vmap(example_losses, (0, None)) if problem.num_folds > 1 else example_losses)

    def losses(pick) -> np.ndarray | None:
        where = tuple((name, np.asarray(v).tobytes(), np.shape(v)) for name, v in sorted(pick.hparams.items()))
        if where not in memo:
            hparams = as_hparams(pick.hparams, "pick.hparams")
            out = np.asarray(per_fold(objective.train(hparams, key), hparams), dtype=np.float64)
            memo[where] = out.mean(axis=0) if problem.num_folds > 1 else out
        out, recorded = memo[where], pick.scores.get("test_loss")
        reproduced = recorded is not None and abs(out.mean() - recorded) <= REPRODUCED * max(1.0, abs(recorded))
        return out if reproduced else None

    return losses


def _compilation_lines(problem: str, by_seconds: dict[str, hg.Result], with_compilation: str | None,
                       without: str | None) -> list[str]:
    """The verdict's lines on compilation: each strategy's compile seconds within its wall seconds
    and where its programs came from (`_cache_words`); whether the outcomes at equal wall time
    (`with_compilation`) and at equal execution time (`without`) agree (`_winner_line`'s: a
    strategy's name for a clear win, a phrase for a tie or no clear winner)."""
    spent = "; ".join(f"{name} {_seconds(r.compile_seconds)} s"
                      + (f" (and {_seconds(r.setup_seconds)} s of other set-up)" if r.setup_seconds > 0 else "")
                      + f" of its {_seconds(_wall(r))} s"
                      + (f" ({words})" if (words := _cache_words(r)) else "") for name, r in by_seconds.items())
    lines = [f"- {problem}, compilation in the equal-wall-time seconds: {spent}."]
    if with_compilation is None or without is None:
        return lines
    if with_compilation == without:
        lines.append(f"- {problem}, equal wall time with and without compilation: the verdicts agree "
                     f"(**{with_compilation}**).")
    elif with_compilation not in by_seconds or without not in by_seconds:  # not two clear winners
        lines.append(f"- {problem}, equal wall time with and without compilation: the verdicts differ "
                     f"({with_compilation} with compilation, {without} without), and not between two clear "
                     "winners: a tie, or a difference within the test set's noise, is on at least one side.")
    else:
        lines.append(f"- {problem}, equal wall time with and without compilation: the verdicts **disagree** "
                     f"(**{with_compilation}** with compilation, **{without}** without): the winner at equal wall "
                     "time turns on the seconds spent outside the trials (compiling, and setting up: tracing, FLOP "
                     "counting, checks), which set how long every strategy runs; a warm persistent cache shrinks "
                     "the compiling.")
    return lines


def _cache_words(result: hg.Result) -> str:
    """Where a strategy's programs came from, in words (`_provenance`, kept in
    `info["compilation"]`); empty for a Result without that record."""
    record = result.info.get("compilation")
    if not record:
        return ""
    cache, compiled, loaded = record["cache"], record["compiled"], record["loaded"]
    if cache == "off":
        return "persistent cache off: every program compiled in this process"
    if cache == "cold":
        return f"cold cache: {_steps(compiled, 'program')} compiled"
    if cache == "warm":
        return f"warm cache: {_steps(loaded, 'program')} loaded, none compiled"
    if cache == "partly warm":
        return f"partly warm cache: {_steps(loaded, 'program')} loaded, {compiled} compiled"
    return "no program compiled or loaded: all were in this process already"


def _gradient_method(args: argparse.Namespace, problem: str) -> tuple[hg.Method, tuple[str, ...]]:
    """(method, held names) of the gradient strategy on `problem` under `--method`: "reverse",
    `hg.Reverse(checkpoint_every=--checkpoint-every)`, holding nothing; "implicit", `IMPLICIT`
    holding what only the preset's optimiser reads (`optimizer_hparams`: Implicit cannot
    differentiate it); "auto" (the default, also for a namespace built without the option),
    "implicit" on a preset with one weight per training example (`EXAMPLE_WEIGHTS`) unless
    `--checkpoint-every` asks for Reverse's checkpointing, else "reverse". `--method implicit`
    with `--checkpoint-every` is a usage error (exit status 2): the option is Reverse's."""
    choice = vars(args).get("method", "auto")
    if choice == "implicit" and args.checkpoint_every is not None:
        print("hypergrad compare: error: argument --checkpoint-every: it sets Reverse's checkpointing, and "
              "--method implicit computes no reverse pass; drop one of the two", file=sys.stderr)
        raise SystemExit(2)
    if choice == "auto":
        choice = "implicit" if problem in EXAMPLE_WEIGHTS and args.checkpoint_every is None else "reverse"
    if choice == "implicit":
        return IMPLICIT, optimizer_hparams(problem)
    return hg.Reverse(checkpoint_every=args.checkpoint_every), ()


def _method_words(method: hg.Method, hold: tuple[str, ...]) -> str:
    """How the report and the plan line name the gradient strategy's method."""
    if isinstance(method, hg.Implicit):
        return (f"Implicit, CG of {method.maxiter} iterations, damping {method.damping:g}, each tuner holding "
                f"{', '.join(hold)} where it starts")
    every = getattr(method, "checkpoint_every", None)
    return "Reverse" if every is None else f"Reverse, checkpointed every {every} steps"


def _priced(args: argparse.Namespace, objective: Any, space: hg.Space, key: Any, method: hg.Method,
            hold: tuple[str, ...]) -> tuple[float, Callable[[float], dict[str, Any] | None]]:
    """(training runs per outer step of the gradient strategy by `method` holding `hold`, budget -> its
    plan or None), the searches' padded rows charged as the command runs them (`_rows_run`)."""
    step_runs = tune_step_cost(objective, space, key, method, hold=hold)
    devices = jax.local_device_count()

    def plan_at(budget: float) -> dict[str, Any] | None:
        return _budget_plan(budget, step_runs, 1.0, len(space), rows=lambda n: _rows_run(n, args.chunk_size, devices),
                            warmup_rows=lambda n: _rows_run(n, args.chunk_size, devices))  # tune's warm-up too
    return step_runs, plan_at


def _affordable_method(args: argparse.Namespace, problem: str, objective: Any, space: hg.Space, key: Any) -> tuple:
    """(method, held names, step runs, plan_at) of the gradient strategy (`_gradient_method`, `_priced`),
    except that `--method auto` falls back to Reverse where `args.budget` cannot pay for Implicit's
    step: Implicit's CG runs on the full training set, so at a short T a step costs many runs (about
    27 at T=8 on digits-noisy, against Reverse's 2.3), and `auto` should not refuse a budget that
    Reverse fits. The plan line and the report name the method used."""
    method, hold = _gradient_method(args, problem)
    step_runs, plan_at = _priced(args, objective, space, key, method, hold)
    if hold and vars(args).get("method", "auto") == "auto" and plan_at(args.budget) is None:
        method, hold = hg.Reverse(checkpoint_every=args.checkpoint_every), ()
        step_runs, plan_at = _priced(args, objective, space, key, method, hold)
    return method, hold, step_runs, plan_at


def _planned(args: argparse.Namespace, problem: str) -> tuple:
    """(objective, space, key, method, plan) of one preset at `args.budget` (the plan's "hold": the names
    each tuner holds, and "method": how the report names the method, `_affordable_method`); a usage error (exit
    status 2, as argparse's) when the budget cannot pay for one outer step of the gradient
    strategy, which would otherwise overspend it and still be reported at "equal compute", or when
    it plans a count beyond `MAX_COUNT` (`_count_beyond_the_device`), which the library would refuse
    only once the run had begun and set the previous run aside."""
    objective, space = preset(problem, args.steps)
    key = jax.random.key(args.seed)
    method, hold, step_runs, plan_at = _affordable_method(args, problem, objective, space, key)
    plan = plan_at(args.budget)
    if plan is None:
        least = _minimum_budget(step_runs)
        other = ""
        if isinstance(method, hg.Implicit):  # only where --method implicit was asked for (auto falls back)
            reverse_runs = _priced(args, objective, space, key, hg.Reverse(), ())[0]
            other = (f", or --method reverse (a Reverse step costs {reverse_runs:.3g} runs here: "
                     f"--budget {math.ceil(_minimum_budget(reverse_runs))} or more)")
        print(f"hypergrad compare: error: argument --budget: {args.budget:g} training runs cannot pay for one outer "
              f"step of the gradient strategy on {problem} (T={objective.num_steps}): a hypergradient of "
              f"{type(method).__name__} costs {step_runs:.3g} runs, and a tuner's step and the scoring of its last "
              f"iterate take {least:.3g}; give --budget {math.ceil(least)} or more{other}", file=sys.stderr)
        raise SystemExit(2)
    beyond = _count_beyond_the_device(plan, len(space))
    if beyond is not None:
        most = _largest_budget(plan_at, len(space), math.ceil(_minimum_budget(step_runs)), args.budget)
        print(f"hypergrad compare: error: argument --budget: {args.budget:g} training runs on {problem} plan "
              f"{_big(beyond[1])} {beyond[0]}, more than {MAX_COUNT} (2**31 - 1), the most that int32 trial numbers and "
              f"steps hold on the device; give --budget {most} or less", file=sys.stderr)
        raise SystemExit(2)
    return objective, space, key, method, {**plan, "hold": list(hold), "method": _method_words(method, hold)}


def _count_beyond_the_device(plan: dict[str, Any], num_grid_axes: int) -> tuple[str, int] | None:
    """(what, count) of the first count `plan` hands the library that exceeds `MAX_COUNT` (the
    library's int32 limit, `check_count`): the warm-up trials, the outer steps, the grid's points and
    the random trials at equal wall time (up to `EQUAL_TIME_CAP` times its budget's); None when all fit."""
    counts = {f"random-search trials at equal wall time ({EQUAL_TIME_CAP} times its budget's "
              f"{_big(plan['random_trials'])})": EQUAL_TIME_CAP * plan["random_trials"],
              "grid points": plan["grid_points_per_axis"] ** num_grid_axes,
              "warm-up trials of the gradient strategy": plan["warmup"] or 0,
              "outer steps of the gradient strategy": plan["tune_steps"]}
    return next(((what, count) for what, count in counts.items() if count > MAX_COUNT), None)


def _big(count: int) -> str:
    """`count` in digits, or as 1.23e+45 past 12 digits (exact, whatever its size: no float)."""
    digits = str(count)
    return digits if len(digits) <= 12 else f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def _largest_budget(plan_at: Callable[[float], dict[str, Any] | None], num_grid_axes: int, low: int,
                    high: float) -> int:
    """The largest whole budget from `low` (whose plan fits) below `high` (whose plan does not) whose
    plan `plan_at(budget)` has no count beyond `MAX_COUNT` (`_count_beyond_the_device`). A bisection:
    O(log(min(high, 2**32))) plans, each O(log(budget)) work; `high` is capped at 2**32, since a
    budget of more than `MAX_COUNT` runs plans that many random trials."""
    high = min(math.floor(high), 2**32)
    while high - low > 1:
        middle = (low + high) // 2
        plan = plan_at(middle)
        fits = plan is not None and _count_beyond_the_device(plan, num_grid_axes) is None
        low, high = (middle, high) if fits else (low, middle)
    return low


def _compare_one(args: argparse.Namespace, problem: str, planned: tuple, out: str, say, stop=_carry_on) -> str:
    """Every strategy on one preset at the same budget, as `_planned` planned them; its report
    written into `out`. Returns the verdict (`_verdict`). `stop`: as in `_run_strategies`, called
    once more before any output but trials.jsonl is written."""
    objective, space, key, method, plan = planned
    plan = {**plan, "method": plan.get("method") or _method_words(method, tuple(plan.get("hold", ())))}
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "trials.jsonl")  # a new file: `_compare` set the previous run's aside
    if say:
        say(f"[plan] budget {args.budget:g} training runs of {objective.problem.name} (T={objective.num_steps}): "
            f"{_gradient_words(plan)} ({plan['method']}"
            f"{RESAMPLE_WORDS if _resamples(args) else ''}); "
            f"{plan['random_trials']} random trials; "
            f"{plan['grid_points_per_axis']}^{len(space)} grid points")
    started = time.perf_counter()
    results = _run_strategies(args, objective, space, key, method, plan, log, say, stop)
    by_seconds = _at_equal_wall_time(objective, space, key, results, log, say, stop)
    elapsed = time.perf_counter() - started
    corrupted = preset_corrupted_examples(problem)  # None unless the preset flips training labels
    verdict = _verdict(problem, results, by_seconds, corrupted, _test_losses_per_example(objective, key))
    stop()
    num_plots = _write_outputs(args, out, problem, objective, space, plan, results, by_seconds, verdict, elapsed,
                               corrupted)
    print(f"\nwrote {out}/report.md, trials.jsonl, results.json and {num_plots} plots in {elapsed:.0f}s",
          file=sys.stderr)
    return verdict


def _check_checkpointing(args: argparse.Namespace) -> None:
    """A usage error (exit status 2, before anything is planned or compiled) for a --checkpoint-every K
    of at least some problem's T training steps (--steps, or the preset's): Reverse then trains in one
    segment of T steps, checkpointing nothing, which the plan would have named "checkpointed every K
    steps"."""
    every = vars(args).get("checkpoint_every")
    if every is None:
        return
    steps = {problem: args.steps or PRESETS[problem][1] for problem in args.problem}
    problem = min((p for p in steps if every >= steps[p]), key=steps.get, default=None)
    if problem is None:
        return
    steps = steps[problem]
    advice = (f"give --checkpoint-every about sqrt(T) = {max(1, round(math.sqrt(steps)))} (less than {steps})"
              if steps > 1 else "there is nothing to checkpoint")
    print(f"hypergrad compare: error: argument --checkpoint-every: {every} is not less than --steps T={steps}"
          f"{'' if args.steps else ' (the preset default)'} on {problem}: Reverse would train in one segment of "
          f"{steps} steps and checkpoint nothing; {advice}, or leave --checkpoint-every out", file=sys.stderr)
    raise SystemExit(2)


def _compare(args: argparse.Namespace, stop: Callable[[], None] = _carry_on) -> int:
    _check_checkpointing(args)
    _check_scikit_learn()
    problems = args.problem
    foreign = _foreign_folders(args.out, problems)
    if foreign:  # before anything runs: never mix this run's outputs into a folder it did not write
        it = "it" if len(foreign) == 1 else "them"
        print(f"hypergrad compare: error: argument --out: {', '.join(os.path.join(args.out, name) for name in foreign)} "
              f"already exist{'s' if len(foreign) == 1 else ''} and no run marker of this command in {args.out} names "
              f"{it} (an interrupted run of an older hypergrad, which wrote no marker, or another program wrote {it}), "
              f"so this run neither sets {it} aside nor writes into {it}: give another --out, or move {it} away "
              f"(out of {args.out}, or into a subfolder of it)", file=sys.stderr)
        raise SystemExit(2)
    _use_compilation_cache()
    _use_devices(args.cpu_devices)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.quiet else None
    plans = {problem: _planned(args, problem) for problem in problems}  # every budget checked before any runs
    stop()  # Ctrl-C while planning: the folder is left as it was
    with _run_alone_in(args.out):  # before anything is moved: another run's live outputs stay where they are
        return _run_planned(args, plans, say, stop)


def _use_compilation_cache() -> None:
    """Turns JAX's persistent compilation cache on before anything compiles, so that a second run on
    this machine loads its programs instead (HYPERGRAD_COMPILATION_CACHE moves the cache or, set to
    0, turns it off); a usage error (exit status 2) naming the variable and the folder when the folder
    it names is a file, lies under one, cannot be created or cannot be written
    (`hg.use_compilation_cache`'s `ValueError`). With the variable unset, a default folder that
    cannot be used (no home folder, a read-only one) leaves the cache off and the run goes on, with
    one warning line naming the folder and the variable."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hg.use_compilation_cache()
    except ValueError as err:
        advice = "" if f"{ENV_VAR}=0" in str(err) else (f" (set {ENV_VAR} to such a folder, or to 0 to turn the "
                                                        "persistent compilation cache off)")
        print(f"hypergrad compare: error: {err}{advice}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in caught:
        print(f"hypergrad compare: warning: {warning.message}", file=sys.stderr)


@contextlib.contextmanager
def _run_alone_in(out: str):
    """Holds an exclusive lock on `out` (an `fcntl.flock` on its `LOCK` file, which this creates with
    `out` if missing and writes this process's pid into) for the block, and removes the file at its
    end; a usage error (exit status 2) naming --out and the other run's pid when another process holds
    it. The kernel releases the lock when the file is closed: on an exception or Ctrl-C too, and when
    the process dies, so a killed run never blocks the next (its file stays, unlocked). A lock taken on
    a file that an ending run removed meanwhile is let go and taken again on a new one (`os.path.samestat`).
    Cost: a few system calls."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK)
    fd = _locked_file(path)
    while fd is None:  # locked a file an ending run had just removed: try again on a fresh one
        fd = _locked_file(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # while the lock is held: no other run holds this file
        os.close(fd)  # releases the lock


def _locked_file(path: str) -> int | None:
    """A descriptor of `path` under this process's exclusive `flock`, or None when the file locked is
    no longer at `path` (removed by the run that held it); a usage error when another run holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        print(f"hypergrad compare: error: argument --out: {os.path.dirname(path)} is in use by another hypergrad "
              f"compare{f' (pid {pid})' if pid else ''}; wait for it to end, or give another --out", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            return fd
    except FileNotFoundError:
        pass
    os.close(fd)
    return None


def _run_planned(args: argparse.Namespace, plans: dict[str, tuple], say, stop: Callable[[], None]) -> int:
    """Every preset of `args.problem` compared as `plans` (`_planned`) planned it, into `args.out`,
    whose previous run is set aside first; a summary when there are several. Returns 0."""
    problems = args.problem
    aside = set_aside(args.out)
    if aside is not None:
        what = "[previous run] its" if os.path.basename(aside) == PREVIOUS else "[interrupted run] its partial"
        print(f"{what} outputs in {args.out} moved to {aside}", file=sys.stderr)
    if len(problems) > 1:  # one problem writes no folder of its own
        _mark(args.out, problems)
    verdicts = []
    for problem in problems:
        out = args.out if len(problems) == 1 else os.path.join(args.out, problem)
        verdicts.append(_compare_one(args, problem, plans[problem], out, say, stop))
    if len(problems) > 1:
        summary = [SUMMARY_TITLE, "",
                   f"Budget {args.budget:g} training runs per strategy and problem; seed {args.seed}. "
                   "Each line is read off that problem's report (the pick is the lowest validation loss "
                   "within the budget; its test loss decides: picks of the same trial or of equal test loss tie, "
                   f"and the lowest wins only by more than {NOISE_SE:g} paired standard errors of the per-example "
                   "test-loss difference from every other pick, else it is within noise of the closest). At equal wall time the "
                   "budget is the seconds the slowest strategy took, compilation included (fewer when the "
                   "persistent compilation cache is warm: each problem's compilation line says how many and where "
                   "its programs came "
                   "from); at equal execution time, the most seconds any strategy's trials took executing, "
                   "compilation left out. Random search is continued (same key, same first draws) toward both.",
                   "", *verdicts, ""]
        with replaced_atomically(os.path.join(args.out, "summary.md")) as f:
            f.write("\n".join(summary))
        print("\n" + "\n".join(verdicts))
    return 0


def _describe(hparams, num_steps: int) -> str:
    """One line per pick: scalars as they are; a vector of `num_steps` entries as a schedule
    (first -> last, min, max); any other vector (per example, per layer) by its values (up to 8)
    or their mean, min and max; a vector of equal entries as a constant."""
    parts = []
    for name, value in (hparams or {}).items():
        value = np.asarray(value)
        if value.ndim == 0:
            parts.append(f"{name}={value.item():.4g}")
        elif np.allclose(value, value.flat[0]):
            parts.append(f"{name}=constant {value.flat[0]:.4g}")
        elif value.shape == (num_steps,):
            parts.append(f"{name}=schedule {value.flat[0]:.3g} -> {value.flat[-1]:.3g} "
                         f"(min {value.min():.3g}, max {value.max():.3g})")
        elif value.size <= 8:
            parts.append(f"{name}=[{', '.join(f'{v:.3g}' for v in value.flat)}]")
        else:
            parts.append(f"{name}={value.size} values, mean {value.mean():.3g} (min {value.min():.3g}, "
                         f"max {value.max():.3g})")
    return ", ".join(parts)


def _weights_against_corruption(results: dict[str, hg.Result], corrupted: np.ndarray) -> dict[str, tuple]:
    """Per strategy whose pick has example weights: (mean weight of the clean examples, of the
    corrupted ones, ROC AUC of "a lower weight marks a corrupted label"). The AUC is the
    probability that a corrupted example weighs less than a clean one, ties counting half: 0.5 for
    one weight shared by every example, as the baselines search. `corrupted`: a mask in the order
    of `example_weight`; empty unless it marks some examples and not all (no AUC otherwise)."""
    out = {}
    if corrupted.all() or not corrupted.any():
        return out
    for name, result in results.items():
        best = result.best_trial
        if best is None or "example_weight" not in best.hparams:
            continue
        weights = np.broadcast_to(np.asarray(best.hparams["example_weight"], dtype=np.float64), corrupted.shape)
        out[name] = (weights[~corrupted].mean(), weights[corrupted].mean(),
                     _roc_auc(corrupted, -weights))
    return out


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's ROC AUC of `scores` for the boolean `labels` (imported here: scikit-learn is the
    `cli` extra's, and `hypergrad --help` works without it; `_compare` checks it is there first)."""
    import sklearn.metrics
    return float(sklearn.metrics.roc_auc_score(labels, scores))


def _check_scikit_learn() -> None:
    """Exit status 1 with one line naming the extra to install when scikit-learn is missing: every
    preset's data set and the report's ROC AUC come from it. Before anything runs or is written."""
    try:
        import sklearn.metrics  # noqa: F401 - only whether it imports
    except ImportError as err:
        print(f"hypergrad compare: error: this command needs scikit-learn (the presets' data sets come from it; "
              f"{err}): pip install 'hypergrad[cli]'", file=sys.stderr)
        raise SystemExit(1) from None


def _example_weights(results: dict[str, hg.Result], corrupted: np.ndarray) -> list[str]:
    """The report's section on what each strategy's pick weights, for a problem whose training
    labels were partly flipped (`_weights_against_corruption`); empty when no pick has weights."""
    rows = [f"| {name} | {clean:.3g} | {dirty:.3g} | {auc:.3f} |"
            for name, (clean, dirty, auc) in _weights_against_corruption(results, corrupted).items()]
    if not rows:
        return []
    return ["## What the example weights learned", "",
            f"{int(corrupted.sum())} of the {corrupted.size} training labels were flipped (validation and test labels "
            "are clean). Each pick's weights: the mean over the clean and over the corrupted examples, and the ROC "
            "AUC of \"a lower weight marks a corrupted label\" (0.5: no better than chance, as one weight shared "
            "by every example is; 1: every corrupted example weighs less than every clean one).", "",
            "| strategy | mean weight, clean | mean weight, corrupted | AUC |", "|---|---|---|---|", *rows, ""]


def _report_markdown(args, problem, objective, space, plan, results, by_seconds, tables, plots, elapsed,
                     weights_section) -> str:
    lines = [
        f"# hypergrad compare: {problem}",
        "",
        f"Budget: {args.budget:g} training runs (T={objective.num_steps} steps each) per strategy; seed {args.seed}; "
        f"{elapsed:.0f}s wall in all.",
        f"Plan: `hypergradient` is `tune` with {_gradient_words(plan)} "
        f"({plan['method']}, Adam {args.outer_lr} in "
        "unconstrained coordinates" + (RESAMPLE_WORDS if _resamples(args) else "") + "); "
        f"{plan['random_trials']} random trials; a {plan['grid_points_per_axis']}-point grid per axis.",
        "",
        "Space: " + ", ".join(f"`{name}`: {dist}" for name, dist in space.items),
        "",
        "Compute is counted in training-run equivalents: the FLOPs of each program (counted from its",
        "traced program, `hypergrad.accounting`) divided by the FLOPs of one training run (training plus",
        "scoring the trained parameters, which is one search trial). Every strategy trains with the same",
        "key, so all tune one deterministic function; the pick is the lowest validation loss within the",
        "budget, and its test scores are reported beside it: validation is what is tuned, test is what",
        "generalises. Grid search runs its points in the grid's order (the first hyperparameter slowest), so",
        "below its whole grid's cost it has no pick (\"grid incomplete\"): its first points are one corner",
        "of the grid, not the coarser grid that budget would buy.",
        "",
        "## At equal compute",
        "",
        tables[0],
        "",
        *_equal_time_sections(results, by_seconds, tables[1:]),
        "## Picks",
        "",
    ]
    for name, result in results.items():
        best = result.best_trial
        lines.append(f"- **{name}**: {result.summary()}")
        if best is not None:
            lines.append(f"  - {_describe(best.hparams, objective.num_steps)}")
    if weights_section:  # `_example_weights`' lines
        lines += ["", *weights_section]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def _equal_time_sections(results: dict[str, hg.Result], by_seconds: dict[str, hg.Result], tables: tuple[str, str]
                         ) -> list[str]:
    """The report's sections at equal wall time (compilation included, then where each strategy's
    compile seconds came from: `_compilation_table`) and at equal execution time (compilation left
    out); `tables`: the two comparisons' markdown."""
    continued = _continued(results["random"], by_seconds["random"])
    more = continued["trials"] > continued["budget_trials"]
    executed = by_seconds["random"].seconds
    return [
        "## At equal wall time",
        "",
        "Each strategy's pick after the same seconds: its set-up (compilation, and the call's other one-time",
        "costs: tracing, FLOP counting, checks), then its trials' execution. Every",
        f"strategy gets the slowest one's {_slowest(results):.1f} s: "
        + (f"random search, beyond its budget's {continued['budget_trials']} trials, is continued with the same "
           f"key (the same first draws) to {continued['trials']} trials in {continued['seconds']:.1f} s"
           + (f" (its cap, {EQUAL_TIME_CAP} times its budget)" if continued["capped"] else "")
           if more else "random search needed no more trials")
        + "; grid search stops at its grid; a strategy that stopped short keeps the best it found.",
        "",
        tables[0],
        "",
        *_compilation_table(by_seconds),
        "## At equal execution time",
        "",
        "Each strategy's pick after the same seconds of its trials' execution alone: compilation and the",
        "other one-time costs of a call (tracing, FLOP counting) are left out of every side, so this table does",
        "not depend on whether programs were compiled or loaded from a warm cache. Every strategy gets the",
        f"most any one's trials took, {_seconds(_slowest_execution(results))} s: "
        + (f"random search, continued as above, executed its {continued['trials']} trials in {_seconds(executed)} s"
           if more else "random search needed no more trials")
        + "; grid search stops at its grid; a strategy that stopped short keeps the best it found.",
        "",
        tables[1],
        "",
    ]


def _compilation_table(by_seconds: dict[str, hg.Result]) -> list[str]:
    """The lines saying how many of each strategy's seconds at equal wall time went to compiling
    and where its programs came from (`info["compilation"]`, `_provenance`)."""
    on = _cache_on()
    lines = [
        "Compilation in these seconds. JAX's persistent compilation cache was "
        + ("on (`hg.use_compilation_cache`, which this command turns on): a program an earlier process on this "
           "machine compiled is loaded instead of compiled, so a second run of the same command spends fewer "
           "seconds compiling, the slowest strategy's seconds shrink, and the pick at equal wall time can change "
           "with them." if on else "off (`HYPERGRAD_COMPILATION_CACHE=0`): every program was compiled in this "
           "process.")
        + " Programs counted: those made during the strategy's call, small eager ones included; loaded: from "
        "JAX's cache or hypergrad's program store. Each strategy starts with hypergrad's in-memory caches "
        "emptied, so it compiles or loads every program it runs, whichever strategy ran before it.",
        "",
        "| strategy | compile s | wall s | share compiling | programs compiled | programs loaded | cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in by_seconds.items():
        record = r.info.get("compilation") or {}
        wall = _wall(r)
        share = f"{r.compile_seconds / wall:.0%}" if wall > 0 else "-"
        compiled = "-" if record.get("compiled") is None else str(record["compiled"])
        lines.append(f"| {name} | {_seconds(r.compile_seconds)} | {_seconds(wall)} | {share} | {compiled} | "
                     f"{record.get('loaded', '-')} | {record.get('cache', '-')} |")
    return [*lines, ""]


def _number(kind: type, minimum: float, what: str, below: float = math.inf):
    """An argparse type: a finite `kind` (int or float) in [minimum, below); a usage error naming
    `what` is wanted otherwise (argparse names the option)."""
    def read(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (kind is float and not math.isfinite(value)) or not minimum <= value < below:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what}")
        return value
    return read


_POSITIVE = _number(float, math.ulp(0.0), "a positive finite number")
_COUNT = _number(int, 1, "an integer >= 1")


def _folder(text: str) -> str:
    """An argparse type: `text` if it names a folder this process can write, or one it can create
    (its first existing ancestor is a folder it can write into); a usage error otherwise, before
    anything is built (`set_aside` creates it only after every preset is planned). Nothing is
    created here. Cost: a few `stat` and `access` calls."""
    if not text:
        raise argparse.ArgumentTypeError("'': give a folder (created if missing)")
    path = os.path.abspath(text)
    existing = path
    while not os.path.exists(existing):  # the root exists, so this ends
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"cannot be created ({existing} is a file)"
        raise argparse.ArgumentTypeError(f"{text!r} {where}; give a folder you can write (created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "cannot be written" if existing == path else f"cannot be created ({existing} cannot be written)"
        raise argparse.ArgumentTypeError(f"{text!r} {where}: no permission; give a folder you can write (created "
                                         "if missing)")
    return text


def _problems(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PRESETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: choose presets from {sorted(PRESETS)}, separated by commas")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # each would run again into the same DIR/<problem>/
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(twice)} given twice; give each preset once")
    return names


def _version() -> str:
    """hypergrad's installed version (its distribution's metadata), or words saying it is unknown."""
    try:
        return importlib.metadata.version("hypergrad")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown: run from a source tree that is not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypergrad", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    cmp = commands.add_parser("compare", help="gradient tuning vs random vs grid search at equal compute")
    cmp.add_argument("--problem", default="digits-mlp", type=_problems,
                     help=f"a preset, or several separated by commas ({', '.join(sorted(PRESETS))}; "
                          "default: %(default)s)")
    cmp.add_argument("--budget", type=_POSITIVE, default=300,
                     help="training-run equivalents per strategy (default: %(default)s)")
    cmp.add_argument("--out", default="results", type=_folder,
                     help="output folder (created if missing; default: %(default)s)")
    cmp.add_argument("--steps", type=_COUNT, default=None, help="training steps T (default: the preset's)")
    cmp.add_argument("--seed", type=_number(int, 0, "an integer in [0, 2**32)", 2**32), default=0,
                     help="jax.random.key(SEED) of every strategy (default: %(default)s)")
    cmp.add_argument("--outer-lr", type=_POSITIVE, default=0.1,
                     help="Adam step of tune, unconstrained coordinates (default: %(default)s)")
    cmp.add_argument("--resample-key", action="store_true",
                     help="train each outer step of the gradient strategy on a fresh key (tune(resample_key=True)), "
                          "so that a tuned schedule or per-example weights do not fit one key's noise; its pick is "
                          "then among the trials scored on the run's key (the warm-up's and each tuner's final "
                          "iterate) (default: one key for every step)")
    cmp.add_argument("--method", choices=METHODS, default="auto",
                     help="the gradient strategy's hypergradients: reverse (hg.Reverse(), exact through the "
                          "training steps), implicit (hg.Implicit by CG at the trained parameters; each tuner "
                          "holds what only the optimiser reads, which Implicit cannot differentiate, where it starts: "
                          "the rates and momentum, or a fine-tuning preset's rates and warm-up length), "
                          "or auto: implicit on a preset with one weight per training example (digits-noisy) "
                          "unless --checkpoint-every asks for Reverse or the budget cannot pay for Implicit's step "
                          "(at a short --steps), reverse elsewhere (default: %(default)s)")
    cmp.add_argument("--checkpoint-every", type=_COUNT, default=None,
                     help="Reverse(checkpoint_every=K): the length K, in training steps, of each checkpointed "
                          "segment (about sqrt(T); default: no checkpointing)")
    cmp.add_argument("--chunk-size", type=_COUNT, default=DEFAULT_CHUNK,
                     help="trials per vmapped call of every search: random, grid and the gradient strategy's "
                          "random warm-up (a memory bound; default: %(default)s)")
    devices = _number(int, 0, f"0 (one device per core) or a count from 1 to {MAX_CPU_DEVICES}", MAX_CPU_DEVICES + 1)
    cmp.add_argument("--cpu-devices", type=devices, default=0,
                     help=f"JAX CPU devices that searches shard their trials over (default: %(default)s, one per "
                          f"core; 1: one device; at most {MAX_CPU_DEVICES}: a device runs its share on about one core, "
                          "so devices beyond the cores gain nothing, and JAX spends memory and seconds on each)")
    cmp.add_argument("--quiet", action="store_true", help="no progress lines")
    cmp.set_defaults(run=_compare)
    return parser


@contextlib.contextmanager
def _ctrl_c_honoured():
    """Yields `stop()`, which raises KeyboardInterrupt once Ctrl-C (SIGINT) was pressed, for the
    command's safe points (each strategy's start and progress lines, before the outputs are written).

    Python's own handler raises KeyboardInterrupt wherever the main thread is, and CPython drops one
    raised inside a garbage-collection callback (JAX installs one: "Exception ignored in
    _xla_gc_callback"), so a Ctrl-C could be swallowed and the run go on to the end. This handler
    raises it the same way and also records it, so that `stop()` raises it again at the next safe
    point. Installed only in the main thread and over Python's default handler (a SIGINT that is
    ignored, or handled by the caller, is left alone); the previous handler is restored on exit."""
    pressed = []

    def handler(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    def stop() -> None:
        if pressed:
            raise KeyboardInterrupt

    own = (threading.current_thread() is threading.main_thread()
           and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = signal.signal(signal.SIGINT, handler) if own else None
    try:
        yield stop
    finally:
        if own:
            signal.signal(signal.SIGINT, previous)


def _interrupted_words(out: str) -> str:
    """What an interrupted `compare` into `out` left there, from the folder itself."""
    names = _outputs_in(out)
    if not names:
        return "no trial was written"
    if _complete(out, names):
        return f"{out} holds the last complete run, as it was"
    logs = [path for name in ("", *_marked_folders(out)) if os.path.isfile(path := os.path.join(out, name, "trials.jsonl"))]
    return (f"the trials computed so far are in {', '.join(logs) or out}; the next run into {out} moves this run's "
            f"partial outputs to {os.path.join(out, INTERRUPTED)} and keeps the last complete run in "
            f"{os.path.join(out, PREVIOUS)}")


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """For the block, a `UserWarning` (hypergrad's own warnings: an uncached pretrained model,
    hyperparameters the objective never reads, a non-finite step) prints as one line,
    `hypergrad <command>: warning: <message>`, like the command's errors, instead of Python's
    `<file>:<line>: UserWarning: ...` and the source line; other categories (a dependency's
    DeprecationWarning) keep Python's format. Which warnings show, and how often, is still
    Python's filters' choice; the previous `warnings.showwarning` is restored at the end."""
    with warnings.catch_warnings():
        shown_by_python = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UserWarning):
                print(f"hypergrad {command}: warning: {message}", file=sys.stderr if file is None else file,
                      flush=True)
            else:
                shown_by_python(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Runs the command `argv` (default: the process's arguments); its exit status: 0 when done, 130
    when Ctrl-C stopped it (with what it left in its folder on stderr), 2 for a usage error, 1 when a
    package the command needs is missing (scikit-learn: `pip install 'hypergrad[cli]'`)."""
    args = build_parser().parse_args(argv)
    try:
        with _ctrl_c_honoured() as stop, _warnings_as_lines(args.command):
            return args.run(args, stop)
    except KeyboardInterrupt:
        print(f"\nhypergrad {args.command}: interrupted (Ctrl-C); {_interrupted_words(args.out)}", file=sys.stderr)
        return 130


def run() -> None:
    """The `hypergrad` command's entry point (`python -m hypergrad` too): `main()`'s exit status.
    After Ctrl-C (130) the process ends at once (`os._exit`, stdout and stderr flushed first),
    skipping the interpreter's shutdown: JAX's compilation threads may still be finishing the
    compilation the Ctrl-C interrupted, and jaxlib crashes (a segmentation fault, exit 139) when
    the interpreter frees its devices under them. The run's outputs are on disk already (each is
    written whole as it is produced). `main()` itself returns, for callers in the same process."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
