"""Every experiment runs in its --smoke mode (seconds), as a user would start it."""

import os
import pathlib
import subprocess
import sys

import pytest

EXPERIMENTS = sorted(pathlib.Path(__file__).parent.parent.joinpath("experiments").glob("*.py"))


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_smoke(script, tmp_path):
    env = dict(os.environ)
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "| strategy |" in result.stdout
