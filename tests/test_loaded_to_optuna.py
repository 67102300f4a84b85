"""A Result read back (`Result.load`, `Result.from_dict`) exports a numeric Choice to Optuna as the
space's options, as the Result returned in-process does, so `hg.optuna_search(study=)` continues it.

A loaded Result holds float64 copies of values that ran in float32 (0.10000000149011612 for the
option 0.1); `to_optuna(space=)` wrote those as extra categories beside the declared options, and
optuna_search then refused the study with advice (export with `space=`) that had been followed.
"""

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import describe_space
from hypergrad.results import COMPLETE

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _momentum_sgd(hparams):
    return optax.sgd(hparams["lr"], momentum=hparams["momentum"])


def _exported(result, space, url, name):
    """The categorical choices and the trials' params of `result` written to Optuna under `name`."""
    result.to_optuna(url, name, space=space)
    study = optuna.load_study(study_name=name, storage=url)
    return study, study.trials[0].distributions["momentum"].choices, [t.params["momentum"] for t in study.trials]


def test_a_loaded_float32_result_exports_the_options_and_optuna_search_continues_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with jax.enable_x64(False):  # the trials run in float32, as outside the test suite
        problem = hg.problems.ridge(num_examples=20, num_features=3, seed=0)
        objective = hg.Objective(problem, _momentum_sgd, num_steps=4)
        space = hg.Space({"lr": hg.LogUniform(1e-3, 1e-1), "momentum": hg.Choice([0.0, 0.1, 0.9])})
        key = jax.random.key(0)
        result = hg.random_search(objective, space, key, num_trials=6)
        result.save(tmp_path / "r.json")
        loaded = hg.Result.load(tmp_path / "r.json")
        held = [t.hparams["momentum"] for t in loaded.trials]
        assert {v.dtype for v in held} == {np.dtype(np.float64)} and any(float(v) not in (0.0, 0.1, 0.9) for v in held)
        exports = {"in-process": _exported(result, space, url, "a"), "load": _exported(loaded, space, url, "b"),
                   "from_dict": _exported(hg.Result.from_dict(result.to_dict()), space, url, "c")}
        for how, (_, choices, params) in exports.items():
            assert choices == (0.0, 0.1, 0.9), (how, choices)  # were also 0.10000000149011612, 0.8999999761581421
            assert params == exports["in-process"][2], how
        study = exports["load"][0]
        more = hg.optuna_search(objective, space, key, num_trials=4, study=study, batch_size=2)  # was a ValueError
    assert len(study.trials) == 10 and len(more.trials) == 4
    assert study.trials[-1].distributions["momentum"].choices == (0.0, 0.1, 0.9)


def test_an_exact_option_is_never_taken_for_another_that_equals_it_only_in_float32(tmp_path):
    """Options distinct in float64 but one float32 apart stay distinct when the values are float64:
    the exact match comes first (0.10000000149011612 is the second option, though the first rounds
    to it). A float64 value that is no option exactly is the float32 copy of the first option that
    rounds to it (0.8999999761581421 is 0.9), the option a float32 trial matches in-process."""
    rounded = float(np.float32(0.1))
    space = hg.Space({"momentum": hg.Choice([0.1, rounded, 0.9])})
    rows = [{"momentum": np.asarray(v, np.float64)} for v in (0.1, rounded, 0.9, float(np.float32(0.9)))]
    trials = tuple(hg.Trial(number=i, hparams=h, value=float(i), scores={"val_loss": float(i)}, state=COMPLETE,
                            flops=1.0, seconds=0.1, run_flops=1.0) for i, h in enumerate(rows))
    result = hg.Result("random", trials, 1.0, 0.0, info={"space": describe_space(space)})
    _, choices, params = _exported(result, space, f"sqlite:///{tmp_path / 'optuna.db'}", "s")
    assert choices == (0.1, rounded, 0.9)
    assert params == [0.1, rounded, 0.9, 0.9]
