"""What `Result` and `TrialRecorder` give on real runs of `tune`: the progress lines' totals, and a
`resample_key` tune's pick, scored on the call's key (the hand-built cases are in test_results.py)."""

import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad.results import FAIL  # noqa: E402

SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def objective(logistic_minibatch_problem):
    return hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(h["lr"]), num_steps=6)


def test_tunes_progress_lines_are_the_totals_of_the_trials_so_far(objective):
    """A population with a warm-up (put into the recorder's trials directly, not added): each line's
    best value and runs are those of the trials it counts, as when every line re-read them all."""
    lines = []
    result = hg.tune(objective, SPACE, jax.random.key(0), population=2, warmup=3, steps=3, progress=lines.append)
    assert len(lines) >= 4  # a line per outer step at least
    for line in lines:
        head, done = re.match(r"(\[.*\]) (\d+/\d+)  ", line).groups()
        trials = result.trials[:int(done.split("/")[0])]
        values = [t.value for t in trials if t.state != FAIL and math.isfinite(t.value)]
        expected = f"{head} {done}  best val {min(values):.4g}  {sum(t.runs for t in trials):.1f} runs  "
        assert line.rsplit("  ", 1)[0] + "  " == expected
    assert lines[-1].startswith(f"[{result.strategy}] {len(result.trials)}/")


def test_a_resample_key_tunes_best_value_is_reproduced_on_its_key(objective):
    """best_value was the minimum over every step's trial, each scored on fold_in(key, step): lower
    than objective(best_hparams, key). The pick is now the warm-up's or a final iterate's, scored on
    key, so objective(best_hparams, key) gives best_value back, and compare lines that value up."""
    key = jax.random.key(3)
    result = hg.tune(objective, SPACE, key, steps=4, outer=optax.adam(0.3), resample_key=True)
    assert result.best_trial.number in result.info["final_trials"]
    np.testing.assert_allclose(float(objective(result.best_hparams, key)), result.best_value, rtol=1e-12)
    assert hg.compare({"tuned": result}, budgets=[1e9]).rows[0]["best_value"] == result.best_value
