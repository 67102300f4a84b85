"""optuna_search and Result.to_optuna: Optuna-name clashes, GridSampler's stop request, and the trials an
interruption leaves (optuna hunt, session 38).

1. An independent schedule "lr" is the Optuna params lr[0], lr[1]; a space entry literally named "lr[0]" overwrote
   element 0's distribution, so every trial trained element 0 at the other entry's value (outside its bounds), and
   `to_optuna` dropped element 0. Both now refuse the clash, naming both entries, before anything compiles or is
   written.
2. GridSampler calls `study.stop()` once its grid is told, which raises RuntimeError outside `study.optimize` (optuna
   issue 5141) after the trial is stored: the round completing the grid crashed and lost every trial, and a stored
   study crashed at every resume. The stop request is now ignored for a trial already finished.
3. A Ctrl-C (or any error) while a round was told re-told trials already COMPLETE in the cleanup (Optuna's "Cannot
   tell a COMPLETE trial." replaced the interrupt) and left the rest RUNNING; one during the asks left the asked
   trials RUNNING. Each trial is now tracked as it is asked, and the cleanup fails only the unfinished ones and
   never replaces the exception in flight.
"""

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.optuna_search import optuna_distributions

optuna = pytest.importorskip("optuna")

T = 2
UNREAD = pytest.mark.filterwarnings("ignore:the objective never reads")  # the tests' entries the optimizer ignores


def _objective(calls=None):
    problem = hg.problems.ridge(num_examples=12, num_features=3, noise=0.5, seed=0)

    def optimizer(h):
        if calls is not None:
            calls.append(1)
        lr = h["lr"]
        return optax.sgd(lambda s: lr[s] if np.ndim(lr) else lr, momentum=h["mom"])
    return hg.Objective(problem, optimizer, num_steps=T)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.3), "mom": hg.Choice([0.0, 0.5, 0.9])})
GRID = {"lr": [0.01, 0.1], "mom": [0.0, 0.9]}  # 4 points


def _states(study):
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _clashing_space():
    return hg.Space({"lr": hg.LogUniform(1e-3, 0.3, shape=(T,), independent=True), "lr[0]": hg.Uniform(5.0, 6.0),
                     "mom": hg.Choice([0.0, 0.9])})


def test_optuna_search_refuses_a_name_that_is_another_entrys_element_before_compiling():
    calls = []
    with pytest.raises(ValueError, match=r"'lr' and 'lr\[0\]' both give the Optuna param 'lr\[0\]'.*rename one"):
        hg.optuna_search(_objective(calls), _clashing_space(), jax.random.key(0), num_trials=2, sampler="random")
    assert calls == []  # nothing was traced


@UNREAD
def test_to_optuna_refuses_a_name_that_is_another_entrys_element_before_writing(tmp_path):
    space = _clashing_space()
    result = hg.random_search(_objective(), space, jax.random.key(0), num_trials=2)
    url = f"sqlite:///{tmp_path / 'export.db'}"
    with pytest.raises(ValueError, match=r"'lr' and 'lr\[0\]' both give the Optuna param 'lr\[0\]'.*rename one"):
        result.to_optuna(url, "s", space=space)
    assert optuna.get_all_study_names(url) == []


@UNREAD
def test_names_that_only_look_alike_are_still_accepted(tmp_path):
    """A scalar "lr[0]" beside a constant (not independent) schedule "lr" gives distinct params (lr, lr[0]):
    searched and exported as before."""
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3, shape=(T,)), "lr[0]": hg.Uniform(0.0, 0.9),
                      "mom": hg.Choice([0.0, 0.9])})
    result = hg.optuna_search(_objective(), space, jax.random.key(0), num_trials=2, sampler="random")
    study = result.to_optuna(f"sqlite:///{tmp_path / 'ok.db'}", "ok", space=space)
    assert set(study.trials[0].params) == {"lr", "lr[0]", "mom"}


@pytest.mark.parametrize("num_trials", [4, 6])
def test_grid_sampler_completing_its_grid_returns_the_result(num_trials):
    sampler = optuna.samplers.GridSampler(GRID, seed=0)
    result = hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=num_trials, sampler=sampler,
                              batch_size=2)
    assert len(result.trials) == num_trials
    seen = {(float(t.hparams["lr"]), float(t.hparams["mom"])) for t in result.trials}
    assert seen == {(lr, mom) for lr in GRID["lr"] for mom in GRID["mom"]}


def test_grid_sampler_stored_study_completes_and_resumes(tmp_path):
    db = tmp_path / "grid.db"

    def call():
        return hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=4,
                                sampler=optuna.samplers.GridSampler(GRID, seed=0), batch_size=2, storage=db,
                                study="g")
    first, again = call(), call()
    assert [t.value for t in first.trials] == [t.value for t in again.trials]
    assert hg.list_studies(db)[0].state != "running"


class _CtrlCOnSecondTell(optuna.samplers.RandomSampler):
    """Stands for a Ctrl-C landing while a round is told (in Optuna's tell, where the sampler's hook runs)."""

    def __init__(self, seed):
        super().__init__(seed=seed)
        self.told = 0

    def after_trial(self, study, trial, state, values):
        self.told += 1
        if self.told == 2:
            raise KeyboardInterrupt
        super().after_trial(study, trial, state, values)


def test_interrupt_while_telling_is_raised_and_leaves_no_running_trial(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'tell.db'}", study_name="s",
                                sampler=_CtrlCOnSecondTell(seed=0))
    with pytest.raises(KeyboardInterrupt):
        hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=4, study=study, batch_size=4)
    assert _states(study) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]


class _CtrlCInAsk(optuna.samplers.RandomSampler):
    """Stands for a Ctrl-C landing while the sampler proposes (the `at`-th suggestion)."""

    def __init__(self, seed, at):
        super().__init__(seed=seed)
        self.calls, self.at = 0, at

    def sample_independent(self, study, trial, name, dist):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().sample_independent(study, trial, name, dist)


def test_interrupt_while_asking_leaves_no_running_trial(tmp_path):
    # 2 params a trial: round 1 is suggestions 1-4, round 2's second trial's first suggestion is the 7th
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'ask.db'}", study_name="s",
                                sampler=_CtrlCInAsk(seed=0, at=7))
    with pytest.raises(KeyboardInterrupt):
        hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=4, study=study, batch_size=2)
    assert _states(study) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]


def test_an_ask_that_raises_keeps_its_error_and_leaves_no_running_trial(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'enq.db'}", study_name="s",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for mom in (0.5, 0.5, 0.7):  # 0.7 is no option of the Choice: Optuna's third ask raises
        study.enqueue_trial({"mom": mom})
    with pytest.raises(ValueError, match="0.7"):
        hg.optuna_search(_objective(), SPACE, jax.random.key(0), num_trials=4, study=study, batch_size=4)
    assert _states(study) == ["FAIL", "FAIL", "FAIL"]


@UNREAD
def test_asking_trial_by_trial_proposes_what_ask_with_distributions_did():
    """The asks suggest each param as `study.ask(distributions)` did, so searches (and stored studies' replays)
    propose the same settings as before."""
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3, shape=(T,), independent=True), "mom": hg.Choice([0.0, 0.9]),
                      "wd": hg.Uniform(0.0, 0.1)})
    result = hg.optuna_search(_objective(), space, jax.random.key(0), num_trials=6, batch_size=3,
                              sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2, constant_liar=True))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2, constant_liar=True))
    distributions = optuna_distributions(space)
    for first in (0, 3):
        asked = [study.ask(distributions) for _ in range(3)]
        for a, trial in zip(asked, result.trials[first:first + 3]):
            np.testing.assert_array_equal(trial.hparams["lr"], np.array([a.params["lr[0]"], a.params["lr[1]"]]))
            assert (trial.hparams["mom"], trial.hparams["wd"]) == (a.params["mom"], a.params["wd"])
            study.tell(a, trial.value)
