"""`Result.to_optuna` writes a study that Optuna and `hg.optuna_search` continue with the same space.

Checks that a Choice is exported as every declared option in declared order (not the values the
trials happened to draw), by the labels `hg.optuna_search` asks with (no memory addresses), that
`to_optuna(space=)` gives an in-memory result its space's distributions, and that
`optuna_search(study=)` refuses a study it cannot continue before compiling, naming `study=` and
the fix.
"""

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad._store_codec import describe_space
from hypergrad.optuna_search import optuna_distributions, settings_from_params
from hypergrad.results import COMPLETE, optuna_choices

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def _result(space, rows, info_space=True):
    """A Result of hand-made trials (nothing compiled), one per dict of hyperparameters."""
    trials = tuple(hg.Trial(number=i, hparams=h, value=float(i), scores={"val_loss": float(i)}, state=COMPLETE,
                            flops=1.0, seconds=0.1, run_flops=1.0) for i, h in enumerate(rows))
    return hg.Result("random", trials, 1.0, 0.0, info={"space": describe_space(space)} if info_space else {})


def _url(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture(scope="module")
def ridge_objective():
    return hg.Objective(hg.problems.ridge(num_examples=40, num_features=3, seed=0), lambda h: optax.sgd(h["lr"]),
                        num_steps=5)


def test_to_optuna_exports_every_option_of_a_choice_of_bools_and_none_in_declared_order(tmp_path):
    # The trials drew only False and (None, "relu"): the export held ('False',) and ('relu', 'None'),
    # and Optuna refused to continue the study with the space's own choices.
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "nesterov": hg.Choice([True, False]),
                      "act": hg.Choice(["relu", None]), "hidden": hg.Choice([(4,), (8, 8), (16,)])})
    rows = [{"lr": np.float64(0.01), "nesterov": False, "act": None, "hidden": (8, 8)},
            {"lr": np.float64(0.1), "nesterov": False, "act": "relu", "hidden": (8, 8)}]
    study = _result(space, rows).to_optuna(_url(tmp_path), "s")
    expected = {"nesterov": ("True", "False"), "act": ("relu", "None"), "hidden": ("(4,)", "(8, 8)", "(16,)")}
    for trial in study.trials:
        assert {name: trial.distributions[name].choices for name in expected} == expected
    assert [(t.params["nesterov"], t.params["act"]) for t in study.trials] == [("False", "None"), ("False", "relu")]
    loaded = optuna.load_study(study_name="s", storage=_url(tmp_path), sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        trial.suggest_float("lr", 1e-3, 0.5, log=True)
        return sum(len(trial.suggest_categorical(name, list(choices))) for name, choices in expected.items())

    loaded.optimize(objective, n_trials=2)  # the documented str convention continues the study
    assert len(loaded.trials) == 4


def test_to_optuna_labels_a_function_option_without_its_address_in_memory_and_from_the_store(tmp_path):
    space = hg.Space({"schedule": hg.Choice([optax.constant_schedule, optax.linear_schedule])})
    in_memory = _result(space, [{"schedule": optax.linear_schedule}])
    loaded = _result(space, [{"schedule": "<function linear_schedule>"}])  # load_study reads a function by repr
    choices = ("<function constant_schedule>", "<function linear_schedule>")
    for name, result in [("memory", in_memory), ("loaded", loaded)]:
        (trial,) = result.to_optuna(_url(tmp_path), name).trials
        assert trial.distributions["schedule"].choices == choices
        assert trial.params["schedule"] == "<function linear_schedule>"
    assert tuple(optuna_distributions(space)["schedule"].choices) == choices  # what optuna_search asks


def test_optuna_choices_number_options_whose_labels_collide_and_optuna_search_maps_them_back():
    assert optuna_choices([1, np.float32(0.5), "a", None]) == [1, 0.5, "a", "None"]
    space = hg.Space({"act": hg.Choice(["None", None])})
    assert optuna_choices(space["act"].options) == ["0:None", "1:None"]
    settings = settings_from_params(space, [{"act": "1:None"}, {"act": "0:None"}])
    assert settings["act"].tolist() == [1, 0]


def test_to_optuna_space_argument_gives_an_in_memory_result_its_log_scale(ridge_objective, key, tmp_path):
    # Without storage= a result has no info["space"]: its LogUniform axis was exported as a linear
    # range, and optuna_search(study=) failed at its first ask with Optuna's "Cannot set different log
    # configuration". space= exports the space's distributions, and the study continues.
    result = hg.random_search(ridge_objective, SPACE, key, num_trials=4)
    assert "space" not in result.info
    exported = result.to_optuna(_url(tmp_path), "s", space=SPACE)
    assert exported.trials[0].distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)
    more = hg.optuna_search(ridge_objective, SPACE, key, num_trials=2, study=exported, sampler="random")
    assert len(more.trials) == 2 and len(exported.trials) == 6


def test_optuna_search_refuses_a_study_it_cannot_continue_before_compiling_naming_study_and_the_fix(
        ridge_objective, key, tmp_path):
    rows = [{"lr": np.float64(0.01), "weight_decay": np.float64(0.1)},
            {"lr": np.float64(0.2), "weight_decay": np.float64(0.5)}]
    linear = _result(SPACE, rows, info_space=False).to_optuna(_url(tmp_path), "linear")
    assert linear.trials[0].distributions["lr"].log is False  # the documented fallback: the range seen
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"study='linear' holds param 'lr' .*log=False.*to_optuna\(url, name, "
                                         r"space=space\)"):
        hg.optuna_search(ridge_objective, SPACE, key, num_trials=2, study=linear)
    assert _compile.stats.compilations == compilations
    assert len(linear.trials) == 2  # nothing asked


def test_optuna_search_refuses_a_study_with_other_choices(ridge_objective, key):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.Choice([0.0, 0.1])})
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(
        params={"weight_decay": 0.0}, value=1.0,
        distributions={"weight_decay": optuna.distributions.CategoricalDistribution([0.0, 0.1, 1.0])}))
    with pytest.raises(ValueError, match=r"study=.*'weight_decay'.*choices \[0.0, 0.1, 1.0\].*\[0.0, 0.1\]"):
        hg.optuna_search(ridge_objective, space, key, num_trials=2, study=study)


def test_optuna_search_continues_a_stored_structured_search_exported_by_to_optuna(key, tmp_path):
    problem = hg.problems.ridge(num_examples=40, num_features=3, seed=0)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "nesterov": hg.Choice([True, False])})
    family = hg.Structured(lambda c: hg.Objective(
        problem, lambda h: optax.sgd(h["lr"], momentum=0.5, nesterov=c["nesterov"]), num_steps=5))
    result = hg.random_search(family, space, key, num_trials=2, storage=tmp_path / "s.db", study="rs")
    assert {t.hparams["nesterov"] for t in result.trials} == {False}  # this key draws one option only
    exported = hg.load_study(tmp_path / "s.db", "rs").to_optuna(_url(tmp_path), "s")
    more = hg.optuna_search(family, space, key, num_trials=4, study=exported, sampler="random", batch_size=4)
    assert len(more.trials) == 4 and len(exported.trials) == 6
    assert {t.params["nesterov"] for t in exported.trials} <= {"True", "False"}


def test_to_optuna_refuses_a_space_that_is_not_the_trials(tmp_path):
    result = _result(SPACE, [{"lr": np.float64(0.01), "weight_decay": np.float64(0.1)}], info_space=False)
    with pytest.raises(TypeError, match="space= must be an hg.Space"):
        result.to_optuna(_url(tmp_path), "s", space={"lr": hg.LogUniform(1e-3, 0.5)})
    with pytest.raises(ValueError, match=r"space= names \['lr'\] but the trials hold \['lr', 'weight_decay'\]"):
        result.to_optuna(_url(tmp_path), "s", space=hg.Space({"lr": hg.LogUniform(1e-3, 0.5)}))
    assert optuna.get_all_study_names(_url(tmp_path)) == []  # refused before anything is written
