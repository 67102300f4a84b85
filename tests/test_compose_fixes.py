"""Features combined (hunt COMPOSE F4).

Checks that `random_search(extends=)` of a stored study keeps its `info["space"]`, so that
`to_optuna` exports the declared log scale.
"""

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import describe_space

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def ridge():
    return hg.problems.ridge(num_examples=40, num_features=3, seed=0)


def _objective(problem):
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def test_extending_a_stored_study_keeps_its_space_so_to_optuna_exports_the_log_scale(ridge, tmp_path):
    # The extended Result lost info["space"]: to_optuna exported lr as the linear range of the
    # values seen (log=False), and hg.optuna_search refused to continue that study.
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective, key, db = _objective(ridge), jax.random.key(0), tmp_path / "s.db"
    hg.random_search(objective, SPACE, key, num_trials=2, storage=db, study="s")
    loaded = hg.load_study(db, "s")
    assert loaded.info["space"] == describe_space(SPACE)
    more = hg.random_search(objective, SPACE, key, num_trials=3, extends=loaded)
    assert more.info["space"] == loaded.info["space"]
    study = more.to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "more")
    assert study.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)
    # a plain Result (no space recorded) extends into one without it, as a plain call returns
    plain = hg.random_search(objective, SPACE, key, num_trials=3, extends=hg.random_search(
        objective, SPACE, key, num_trials=2))
    assert "space" not in plain.info
