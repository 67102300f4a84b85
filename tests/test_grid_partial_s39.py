"""A grid search cut by a budget is not lined up as the grid strategy's pick (space hunt s39, finding 1).

`grid_search` runs its trials in the grid's order, the space's first entry slowest (`Space.grid`),
so its first eighth all share that entry's lowest value: one corner of the grid, not the coarser
grid a user with that budget would run. `hg.compare` (`line_up`) and `hypergrad compare`'s verdict
give such a grid no pick before its last trial and say why; `Result.best_within` and `curve` stay
literal. Hand-built results: nothing trains.
"""

import math

import numpy as np

import hypergrad as hg
from hypergrad import cli
from hypergrad import results
from hypergrad.results import Result, Trial, line_up

# values in a grid's order: the first corner (the lowest learning rates) is poor, the best point last
VALUES = [0.9, 0.8, 0.85, 0.7, 0.3, 0.2, 0.25, 0.1]


def _result(strategy: str, values=VALUES, seconds: float = 1.0, compile_seconds: float = 0.0,
            info: dict | None = None) -> Result:
    trials = tuple(Trial(number=i, hparams={"lr": np.asarray(0.001 * (i + 1))}, value=v,
                         scores={"val_loss": v, "test_loss": v + 0.01}, state="complete", flops=2.0,
                         seconds=seconds, run_flops=2.0) for i, v in enumerate(values))
    return Result(strategy, trials, 2.0, compile_seconds, {} if info is None else info)


def test_a_grid_cut_by_the_budget_has_no_pick_and_its_row_says_why():
    grid = _result("grid", info={"points_per_axis": 2})
    comparison = line_up({"grid": grid, "random": _result("random")}, [2, 4, 8])
    rows = {(row["strategy"], row["budget"]): row for row in comparison.rows}
    for budget in (2, 4):
        row = rows[("grid", budget)]
        assert row["best_value"] is None and row["hparams"] is None and row["test_scores"] == {}
        assert row["note"] == f"grid incomplete: {budget} of 8 points"
        assert row["trials"] == budget and row["used"] == budget  # what it had run stays shown
    assert rows[("grid", 8)]["best_value"] == 0.1 and rows[("grid", 8)]["note"] is None
    # another strategy keeps its best so far at every budget (its draws are spread over the space)
    assert [rows[("random", b)]["best_value"] for b in (2, 4, 8)] == [0.8, 0.7, 0.1]
    assert all(rows[("random", b)]["note"] is None for b in (2, 4, 8))
    table = comparison.to_markdown()
    assert "| grid | 2.0 | 2.0 | 2 | n/a (grid incomplete: 2 of 8 points) | - |" in table
    assert "| grid | 8.0 | 8.0 | 8 | 0.1 | 0.11 |" in table
    assert comparison.to_dict()["rows"][0]["note"] == "grid incomplete: 2 of 8 points"


def test_compare_default_budgets_line_a_grid_up_only_whole_by_compute_and_by_time():
    grid = _result("grid", seconds=0.5, compile_seconds=1.0)
    for by in ("runs", "seconds", "execution"):
        report = hg.compare({"grid": grid}, by=by)
        picks = [row["best_value"] for row in report.rows]
        assert picks[:3] == [None, None, None] and picks[3] == 0.1, (by, picks)
        # a row with trials run says why it has no pick; one before the first trial (compilation) has none to say
        assert [row["note"] for row in report.rows] == [
            f"grid incomplete: {row['trials']} of 8 points" if row["trials"] else None for row in report.rows[:3]
        ] + [None]
        assert report.rows[2]["trials"] > 0


def test_best_within_and_curve_stay_literal_for_a_grid():
    grid = _result("grid")
    assert grid.best_within(2).value == 0.8  # the best of the trials run so far, in the grid's order
    assert list(grid.curve()[1]) == [0.9, 0.8, 0.8, 0.7, 0.3, 0.2, 0.2, 0.1]
    assert results.line_up_pick(grid, 2) == (None, "grid incomplete: 2 of 8 points")
    assert results.line_up_pick(grid, 100)[0].value == 0.1 and results.line_up_pick(grid, 100)[1] is None
    assert results.line_up_pick(grid, 0.5) == (None, None)  # no trial finished: nothing to explain
    assert results.line_up_pick(_result("random"), 2)[0].value == 0.8


def test_a_saved_or_loaded_grid_is_lined_up_as_the_returned_one():
    grid = Result.from_dict(_result("grid", info={"points_per_axis": 2}).to_dict())
    assert line_up({"grid": grid}, [4]).rows[0]["note"] == "grid incomplete: 4 of 8 points"


def test_the_verdict_lists_a_cut_grid_with_its_reason_instead_of_its_corner():
    # by_seconds' grid ran longer than the equal-wall-time budget (the slowest of `results`): cut at 4 of 8
    grid, random = _result("grid", values=VALUES[:4]), _result("random", values=[0.95] * 4)
    longer = _result("grid")
    verdict = cli._verdict("p", {"grid": grid, "random": random}, {"grid": longer, "random": random})
    wall = next(line for line in verdict.splitlines() if "equal wall time" in line)
    assert "no pick: grid (grid incomplete: 4 of 8 points)" in wall and "**random** wins on test" in wall
    # at equal compute each strategy's whole result: the grid's pick counts
    compute = next(line for line in verdict.splitlines() if "equal compute" in line)
    assert "**grid**" in compute and "incomplete" not in compute and not math.isnan(grid.best_value)
