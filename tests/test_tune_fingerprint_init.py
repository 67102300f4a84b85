"""What a stored tune study's fingerprint holds, and what it refuses on resume.

`init=` given as hyperparameters is described as the starts made of it (hunt D finding 2): 0.01,
np.asarray(0.01) and jnp.asarray(0.01) start the same tuner, so they resume one another's study; a
study stored in fingerprint format 3 or older is still compared with `init` as given. A study of a
random estimate (ES, PES) with resample_key=False stored in format 3 or older ran with one noise
draw for every step, before the driver drew fresh noise per step (f0a0e1d): resuming it is refused
naming the study and the fix, unless it finished. float64 throughout (tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from _helpers import Stop, fingerprint_format, stop_after

KEY = jax.random.key(0)
SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.2), "l2": hg.LogUniform(1e-3, 1.0)})


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


@pytest.fixture(scope="module")
def objective():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(3)},
                         train_loss=lambda p, h, b: _mse(p, b) + h["l2"] * jnp.sum(p["w"] ** 2),
                         val_loss=_mse, train_data=(X, y), val_data=(X, y))
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


def _values(result):
    return [t.value for t in result.trials]


def _stored_in_format(version, call):
    """`call()` (a stored study, interrupted) with fingerprints written in format `version`."""
    with fingerprint_format(version), pytest.raises(Stop):
        call()


@pytest.mark.parametrize("again", [{"lr": jnp.asarray(0.01), "l2": jnp.asarray(0.1)},
                                   {"lr": np.asarray(0.01), "l2": np.float64(0.1)}], ids=["jnp", "numpy"])
def test_a_study_started_from_python_floats_resumes_from_the_same_starts_given_as_arrays(objective, tmp_path, again):
    db = tmp_path / "study.db"
    init = {"lr": 0.01, "l2": 0.1}
    with pytest.raises(Stop):
        hg.tune(objective, SPACE, KEY, init=init, steps=2, storage=db, study="t", progress=stop_after(1))
    resumed = hg.tune(objective, SPACE, KEY, init=again, steps=2, storage=db, study="t")
    assert _values(resumed) == _values(hg.tune(objective, SPACE, KEY, init=init, steps=2))


def test_a_population_s_starts_given_as_a_list_or_an_array_describe_alike(objective, tmp_path):
    db = tmp_path / "study.db"
    hg.tune(objective, SPACE, KEY, init={"lr": [0.01, 0.02], "l2": [0.1, 0.2]}, population=2, steps=1,
            storage=db, study="p")
    again = hg.tune(objective, SPACE, KEY, init={"lr": np.array([0.01, 0.02]), "l2": jnp.array([0.1, 0.2])},
                    population=2, steps=1, storage=db, study="p")
    assert len(again.trials) == 4


def test_other_starts_are_still_refused(objective, tmp_path):
    db = tmp_path / "study.db"
    hg.tune(objective, SPACE, KEY, init={"lr": 0.01, "l2": 0.1}, steps=1, storage=db, study="t")
    with pytest.raises(ValueError, match=r"study 't' .* different call: arguments\.init\.lr\S* differs"):
        hg.tune(objective, SPACE, KEY, init={"lr": 0.02, "l2": 0.1}, steps=1, storage=db, study="t")
    float32 = r"different call: arguments\.init\.l2\.array differs \(\"float64\" stored, \"float32\" now"
    with pytest.raises(ValueError, match=float32):  # float32 starts train otherwise (in float32 coordinates)
        hg.tune(objective, SPACE, KEY, init={"lr": np.float32(0.01), "l2": np.float32(0.1)}, steps=1, storage=db,
                study="t")


def test_a_study_stored_in_format_3_with_init_still_resumes(objective, tmp_path):
    db = tmp_path / "study.db"
    init = {"lr": 0.01, "l2": 0.1}
    _stored_in_format(3, lambda: hg.tune(objective, SPACE, KEY, init=init, steps=2, storage=db, study="t",
                                         progress=stop_after(1)))
    progress = stop_after(0)
    resumed = hg.tune(objective, SPACE, KEY, init=init, steps=2, storage=db, study="t", progress=progress)
    assert len(progress.calls) == 2  # resumed after the stored first of its reports
    assert _values(resumed) == _values(hg.tune(objective, SPACE, KEY, init=init, steps=2))


ES = hg.ES(0.05, 2)


def test_an_es_study_stored_before_fresh_noise_per_step_is_refused_naming_the_study(objective, tmp_path):
    db = tmp_path / "study.db"
    _stored_in_format(3, lambda: hg.tune(objective, SPACE, KEY, method=ES, steps=3, storage=db, study="es",
                                         progress=stop_after(2)))
    with pytest.raises(ValueError, match=r"study 'es' in .* cannot be resumed: .*method=ES\(.*fresh noise at each "
                                         r"outer step.*new study name"):
        hg.tune(objective, SPACE, KEY, method=ES, steps=3, storage=db, study="es")
    fresh = hg.tune(objective, SPACE, KEY, method=ES, steps=3, storage=db, study="es-again")
    assert _values(fresh) == _values(hg.tune(objective, SPACE, KEY, method=ES, steps=3))


def test_a_hybrid_es_study_stored_before_fresh_noise_per_step_is_refused(objective, tmp_path):
    db = tmp_path / "study.db"
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.2), "l2": hg.Choice([0.01, 0.1])})
    _stored_in_format(3, lambda: hg.hybrid_search(objective, space, KEY, budget=40, method=ES, storage=db,
                                                  study="h", progress=stop_after(1)))
    with pytest.raises(ValueError, match=r"study 'h' in .* cannot be resumed: .*new study name"):
        hg.hybrid_search(objective, space, KEY, budget=40, method=ES, storage=db, study="h")


def test_an_old_es_study_that_resampled_keys_or_finished_is_not_refused(objective, tmp_path):
    db = tmp_path / "study.db"
    _stored_in_format(3, lambda: hg.tune(objective, SPACE, KEY, method=ES, steps=2, resample_key=True, storage=db,
                                         study="resampled", progress=stop_after(1)))
    resumed = hg.tune(objective, SPACE, KEY, method=ES, steps=2, resample_key=True, storage=db, study="resampled")
    assert _values(resumed) == _values(hg.tune(objective, SPACE, KEY, method=ES, steps=2, resample_key=True))
    with fingerprint_format(3):
        finished = hg.tune(objective, SPACE, KEY, method=ES, steps=1, storage=db, study="finished")
    assert _values(hg.tune(objective, SPACE, KEY, method=ES, steps=1, storage=db, study="finished")) == \
        _values(finished)  # the same call returns its stored result
