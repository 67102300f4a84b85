"""Every experiment runs in its --smoke mode (seconds), as a user would start it."""

import os
import pathlib
import subprocess
import sys

import pytest

EXPERIMENTS = sorted(pathlib.Path(__file__).parent.parent.joinpath("experiments").glob("*.py"))


def markdown_table(text, heading):
    """The rows of the first markdown table after the line starting with `heading`, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif table:
            break
    header, rule, *rows = table
    assert set(rule) <= {"---"}, rule
    assert rows and all(len(row) == len(header) for row in rows), table
    return [dict(zip(header, row)) for row in rows]


def check_estimator_quality(stdout):
    """Reverse is the exact hypergradient the others are scored against: its cosines are 1.000 and its
    error 0. The estimators (truncated, zero-order) are biased or noisy: cosines inside [-1, 1], below
    1, with a positive error; every method costs more than nothing. An estimator that silently ran
    Reverse, or scores paired with the wrong key's exact gradient, shows here."""
    rows = markdown_table(stdout, "## Estimator quality")
    cosines = ["cosine, all z (mean ± std)", "cosine, lr schedule", "cosine, relative"]
    exact = [row for row in rows if row["strategy"] == "Reverse (exact)"]
    assert len(exact) == 1, rows
    assert exact[0][cosines[0]] == "1.000 ± 0.000", exact
    assert exact[0][cosines[1]] == exact[0][cosines[2]] == "1.000", exact
    assert float(exact[0]["relative error"]) == 0.0, exact
    assert float(exact[0]["cost (runs)"]) > 1.0, exact  # a hypergradient costs more than a training run
    estimators = [row for row in rows if row["strategy"].startswith(("Truncated(", "ES(", "PES("))]
    assert estimators, rows
    for row in estimators:
        mean, std = (float(x) for x in row[cosines[0]].split("±"))
        assert -1.0 <= mean < 0.999 and std >= 0, row
        assert all(-1.0 <= float(row[c]) <= 1.0 for c in cosines[1:]), row
        assert float(row["relative error"]) > 1e-3 and float(row["cost (runs)"]) > 0, row


READ_BACK = {"estimator_quality.py": check_estimator_quality}


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_smoke(script, tmp_path):
    env = dict(os.environ)
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "| strategy |" in result.stdout
    if script.name in READ_BACK:  # the numbers, not only the exit code
        READ_BACK[script.name](result.stdout)
