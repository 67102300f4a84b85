"""Reports over results: a comparison together with its figures.

`hg.compare` returns a `Report`: the `Comparison` of `hypergrad.results` (data: the rows, budgets,
`to_dict`, `to_markdown`) plus `plot(dir)`, which draws its figures with `hypergrad.plots` (the
optional matplotlib extra). Results are data and import nothing above them; this module sits on
top of both, so the layers only import downwards: results <- plots <- report.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence

from hypergrad import plots
from hypergrad.results import Comparison, Result, line_up

__all__ = ["Report", "compare", "UNIT_TOLERANCE"]

UNIT_TOLERANCE = 0.01
"""Relative difference above which `compare` tells two results' runs (FLOPs per training run) apart:
one objective's results count the same FLOPs; counts of another XLA build or backend may differ a
little, without changing a line-up."""


@dataclasses.dataclass(frozen=True)
class Report(Comparison):
    """A `Comparison` that can draw itself (what `hg.compare` returns)."""

    def plot(self, out_dir: str | os.PathLike) -> list[str]:
        """Writes PNG figures into `out_dir` (created if missing) and returns their paths (needs
        matplotlib); see `hypergrad.plots.plot_comparison`.

        Raises:
            ValueError: before anything is drawn, for an `out_dir` that is not a path, is a file or
                lies under one.
        """
        path = _checked_out_dir(out_dir)
        # the folder as given once checked (a pathlib.Path stays one); a bytes path as its str
        return plots.plot_comparison(self, out_dir if os.fspath(out_dir) == path else path)


def _checked_out_dir(out_dir: object) -> str:
    """`out_dir` as a str; `ValueError` naming it for a non-path, a file, or a folder under a file
    (which `os.makedirs` refused with a raw FileExistsError or NotADirectoryError)."""
    try:
        path = os.fsdecode(out_dir)
    except TypeError:
        raise ValueError(f"Report.plot(out_dir={out_dir!r}) must be the path of a folder (a str or "
                         "os.PathLike)") from None
    existing = os.path.abspath(path)
    while not os.path.exists(existing):  # the root exists, so this ends
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(path) else f"lies under {existing!r}, which is a file"
        raise ValueError(f"Report.plot(out_dir={path!r}) {where}; give a folder (created if missing) for the "
                         "figures")
    return path


def compare(results: Mapping[str, Result], budgets: Sequence[float] | None = None, *, by: str = "runs") -> Report:
    """Lines strategies up at equal compute (or, with `by="seconds"`, at equal wall time; with
    `by="execution"`, at equal execution time).

    For each budget (in training-run equivalents) and each strategy: the lowest validation loss
    among the trials that finished within the budget, and the test scores of that pick. Of a
    `tune(..., resample_key=True)` result only the trials scored on the call's key (its warm-up and
    each live tuner's final iterate, `info["final_trials"]`) are picked, as the searches score
    every trial on that key; a budget before the first of them has no pick (`Result`'s docstring).
    A grid search has a pick only at a budget (or time) its last trial finished within: its trials
    run in the grid's order, the space's first entry slowest, so before its last one they are a
    corner of the grid (the first eighth all at the first entry's lowest value), not the coarser grid
    that budget would buy; its row has no pick, "n/a (grid incomplete: 8 of 64 points)" in the table
    (the row's `note`, `hypergrad.results.line_up_pick`). The figures' curves and
    `Result.best_within` stay literal: the best of the trials run so far, in the grid's order.

    Args:
        results: `{name: Result}`, names strings (they label the rows and the figures).
        budgets: budgets in training-run equivalents (seconds with `by="seconds"` or
            "execution"); default: 1/8, 1/4, 1/2 and all of the largest total any strategy spent
            (refused when every result spent nothing: no trials, or trials of zero cost; given
            budgets, such results line up as rows with no pick). A strategy that stopped short of
            a budget keeps the best it found with the compute it used (shown in the row), never more.
        by: "runs" (equal compute), "seconds" (equal wall time: each result's compilation and
            set-up seconds plus its trials' execution seconds, the call's wall time; the totals
            table shows the three apart) or "execution" (equal execution time: its
            trials' execution seconds alone, so whether programs were compiled or loaded from a
            warm persistent cache changes nothing); see `Result.spent`. A search that finished its
            budget before a slower strategy stops there; to give random search the slower one's
            seconds, continue it first (`random_search(..., extends=result)`, as `hypergrad
            compare` does).

    A run is each result's own unit, the FLOPs of one plain training run of its objective
    (`Result.run_flops`), so `by="runs"` is equal compute only between results of one objective.
    When the results' runs differ by more than `UNIT_TOLERANCE` (a `cv=k` problem's run is its k
    fits, another model's run is another size), it warns naming each result and its FLOPs per run:
    at each budget the one with the larger run is given that many times the compute. Line such
    results up with `by="seconds"` or `by="execution"`. A result whose trials count in several
    runs (a grouped `hg.Structured` search: each trial in its configuration's) is left out of this
    check.

    Returns:
        a `Report`: the `Comparison` (`to_markdown()`, `to_dict()`) with `plot(dir)`.
    """
    comparison = line_up(results, budgets, by=by)
    if by == "runs":
        _warn_unequal_runs(results)
    return Report(**{field.name: getattr(comparison, field.name) for field in dataclasses.fields(comparison)})


def _warn_unequal_runs(results: Mapping[str, Result]) -> None:
    """Warns (`UserWarning`) when `results` (checked by `line_up`) count their runs in units that
    differ by more than `UNIT_TOLERANCE`, naming each result and its FLOPs per run; a result with
    no trials, or whose trials hold several units (a grouped structural search), is left out."""
    units = {}
    for name, result in results.items():
        own = {t.run_flops for t in result.trials}
        if len(own) == 1:
            units[name] = own.pop()
    if len(units) < 2 or max(units.values()) <= min(units.values()) * (1 + UNIT_TOLERANCE):
        return
    ratio = max(units.values()) / min(units.values())
    listed = ", ".join(f"{name!r} {unit:.6g}" for name, unit in units.items())
    warnings.warn(
        f"compare(by='runs'): the results count compute in runs of different sizes (FLOPs per training run: "
        f"{listed}; up to {ratio:.3g}x apart: a cv=k problem's run is its k fits, another objective's run is "
        f"another size), so equal runs is not equal compute: at each budget a result of larger runs is given up "
        f"to {ratio:.3g}x the FLOPs. To line them up at equal time give by='seconds' (or by='execution'), or "
        f"compare results of one objective", UserWarning, stacklevel=3)
