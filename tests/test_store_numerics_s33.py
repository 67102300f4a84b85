"""A stored study resumed under other JAX settings than it was created under (hunt DTYPES, finding 1).

`jax_enable_x64` or `jax_threefry_partitionable` flipped between the call that started a study and the same call
again changes the numbers (`jax.random.uniform` draws others in float64, the PRNG partitioning others again) but,
for an objective whose data and parameters have fixed dtypes, not the call's fingerprint: random_search resumed
silently, its result trials 0-3 of one setting's draws and 4-7 of the other's (equal to neither uninterrupted run);
tune refused blaming a damaged checkpoint; a built-in problem's study was refused naming an internal closure. The
study now records the settings in its info at creation and a resume under others is refused, naming the setting,
both values and the `jax.config.update` that restores it, before anything traces.
"""

import contextlib
import json
import sqlite3

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import Stop, stop_after

import hypergrad as hg
from hypergrad import _compile
from hypergrad.store import SETTINGS_KEY

KEY_ARGS = dict(num_trials=4, chunk_size=2)


def _objective(data_dtype=np.float32):
    """A tiny linear regression whose data and parameters are float32 whatever `jax_enable_x64` says (so its
    fingerprint is the same under both), built afresh as a program started under either would build it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(data_dtype)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=60)).astype(data_dtype)

    def train_loss(p, h, batch):
        return jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2) + h["wd"] * jnp.sum(p["w"] ** 2)

    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(3, jnp.float32)}, train_loss=train_loss,
                         val_loss=lambda p, batch: jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2),
                         train_data=(x[:30], y[:30]), val_data=(x[30:45], y[30:45]), test_data=(x[45:], y[45:]),
                         batch_size=10)
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "wd": hg.LogUniform(1e-6, 1e-1)})


@contextlib.contextmanager
def x64(on):
    """`jax_enable_x64` set to `on` inside the block (the suite runs with it on), restored after."""
    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", on)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", was)


def _rows(result):
    return [(t.number, repr(float(np.asarray(t.hparams["lr"]))), repr(float(t.value))) for t in result.trials]


X64_REFUSAL = r'jax_enable_x64 \(True stored, False now\).*jax\.config\.update\("jax_enable_x64", True\)'


def test_random_search_resumed_without_x64_is_refused_and_resumes_with_it(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Stop):  # started with x64 on, stopped after its first chunk
        hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs",
                         progress=stop_after(1))
    assert len(hg.load_study(db, "rs").trials) == 2
    with x64(False), pytest.raises(ValueError, match=X64_REFUSAL):  # old: accepted, trials 2-3 float32 draws
        hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")
    assert len(hg.load_study(db, "rs").trials) == 2  # nothing ran
    resumed = hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")
    whole = hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS)
    assert _rows(resumed) == _rows(whole)


def test_a_study_started_in_a_threefry_partitionable_block_is_refused_outside_it(tmp_path):
    db, other = tmp_path / "s.db", not jax.config.jax_threefry_partitionable
    with jax.threefry_partitionable(other), pytest.raises(Stop):  # a new file: registered by the writer's thread
        hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs",
                         progress=stop_after(1))
    with pytest.raises(ValueError, match=rf"jax_threefry_partitionable \({other} stored, {not other} now\).*"
                                         rf'jax\.config\.update\("jax_threefry_partitionable", {other}\)'):
        hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")


def test_grid_search_resumed_without_x64_is_refused(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Stop):
        hg.grid_search(_objective(), SPACE, jax.random.key(0), 2, chunk_size=2, storage=db, study="g",
                       progress=stop_after(1))
    with x64(False), pytest.raises(ValueError, match=X64_REFUSAL):
        hg.grid_search(_objective(), SPACE, jax.random.key(0), 2, chunk_size=2, storage=db, study="g")


def test_tune_resumed_without_x64_is_refused_naming_it_before_anything_compiles(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Stop):
        hg.tune(_objective(), SPACE, jax.random.key(0), steps=3, storage=db, study="t", progress=stop_after(1))
    with x64(False):
        objective = _objective()
        # old: "a checkpoint's iterates or outer-optimiser state do not fit this call's ... edited or damaged",
        # after the call's checks had compiled its programs
        with pytest.raises(ValueError, match=X64_REFUSAL):
            hg.tune(objective, SPACE, jax.random.key(0), steps=3, storage=db, study="t")
        assert _compile.programs_made(objective) == 0


def test_hybrid_search_resumed_under_another_threefry_partitioning_is_refused(tmp_path):
    db, other = tmp_path / "s.db", not jax.config.jax_threefry_partitionable
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "wd": hg.Choice([1e-3, 1e-1])})
    with pytest.raises(Stop):
        hg.hybrid_search(_objective(), space, jax.random.key(0), budget=16, storage=db, study="h",
                         progress=stop_after(1))
    with jax.threefry_partitionable(other):
        objective = _objective()
        with pytest.raises(ValueError, match="jax_threefry_partitionable"):  # old: resumed with other draws
            hg.hybrid_search(objective, space, jax.random.key(0), budget=16, storage=db, study="h")
        assert _compile.programs_made(objective) == 0


def test_optuna_search_resumed_under_another_threefry_partitioning_is_refused(tmp_path):
    optuna = pytest.importorskip("optuna")
    db, other = tmp_path / "s.db", not jax.config.jax_threefry_partitionable

    def search(**kw):
        return hg.optuna_search(_objective(), SPACE, jax.random.key(0), 4, sampler=optuna.samplers.RandomSampler(
            seed=0), batch_size=2, chunk_size=2, storage=db, study="o", **kw)

    with pytest.raises(Stop):
        search(progress=stop_after(1))
    with jax.threefry_partitionable(other), pytest.raises(ValueError, match="jax_threefry_partitionable"):
        search()  # old: resumed, its minibatch orders drawn under the other partitioning


def test_a_finished_study_whose_call_differs_under_other_settings_names_the_setting(tmp_path):
    db = tmp_path / "s.db"
    hg.random_search(_objective(np.float64), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")
    with x64(False), pytest.raises(ValueError, match=X64_REFUSAL):  # old: 'train_data[0].array differs'
        hg.random_search(_objective(np.float64), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")


def test_settings_are_kept_when_a_study_finishes_and_left_out_of_its_loaded_info(tmp_path):
    db = tmp_path / "s.db"
    result = hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")
    with sqlite3.connect(db) as conn:
        info = json.loads(conn.execute("SELECT info FROM studies WHERE name = 'rs'").fetchone()[0])
    assert info["dict"][SETTINGS_KEY]["dict"]["jax_enable_x64"] is True
    assert set(hg.load_study(db, "rs").info) == set(result.info)


def test_a_study_stored_without_settings_resumes_as_before(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Stop):
        hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs",
                         progress=stop_after(1))
    with sqlite3.connect(db) as conn:  # as an earlier hypergrad stored a running study: no info
        conn.execute("UPDATE studies SET info = NULL WHERE name = 'rs'")
    resumed = hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS, storage=db, study="rs")
    assert _rows(resumed) == _rows(hg.random_search(_objective(), SPACE, jax.random.key(0), **KEY_ARGS))
