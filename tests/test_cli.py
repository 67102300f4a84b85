"""The `hypergrad compare` command end to end, on a tiny budget."""

import json
import os

import pytest

from hypergrad import cli


def test_compare_writes_report_trials_results_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert cli.main(["compare", "--problem", "iris-mlp", "--budget", "8", "--steps", "8",
                     "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for strategy in ("hypergradient", "random", "grid"):
        assert f"| {strategy} |" in printed
    report = (out / "report.md").read_text()
    assert "| hypergradient |" in report and "## Picks" in report
    results = json.loads((out / "results.json").read_text())
    plan = results["plan"]
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    by_strategy = {}
    for trial in trials:
        by_strategy.setdefault(trial["strategy"].split("[")[0], []).append(trial)
    assert len(by_strategy["tune"]) == plan["tune_steps"] + 1  # every outer step, plus the final iterate
    assert len(by_strategy["random"]) == plan["random_trials"]
    assert len(by_strategy["grid"]) == plan["grid_points_per_axis"] ** 3
    # Equal compute: no strategy spent more than the budget plus one unit of its own granularity.
    for name, result in results["results"].items():
        assert result["runs"] <= 8 * 1.6, (name, result["runs"])
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert "best_value_vs_compute.png" in pngs and "learned_schedules.png" in pngs


def test_compare_refuses_a_bad_budget(tmp_path):
    with pytest.raises(SystemExit, match="--budget"):
        cli.main(["compare", "--budget", "0", "--out", str(tmp_path)])


def test_budget_plan_fits_the_budget():
    plan = cli._budget_plan(300, step_runs=2.2, trial_runs=1.01, num_grid_axes=3)
    assert (plan["tune_steps"] + 1) * 2.2 <= 300
    assert plan["random_trials"] * 1.01 <= 300
    assert plan["grid_points_per_axis"] ** 3 * 1.01 <= 300 < (plan["grid_points_per_axis"] + 1) ** 3 * 1.01
