"""Behaviours no other test pinned down, found by mutation testing: each test here fails with one
small change of the library's code that the rest of the suite let pass.

- halving ranks a non-finite latest loss last (NaN included, which `sorted` alone leaves anywhere)
  and breaks ties to the lower tuner id, across cohorts;
- a stored study resumed with another `chunk_size` (chunks only partly stored) gives the trials of
  one uninterrupted call, each logged once;
- `tune(warmup=)`'s `compile_seconds` is the outer step's plus the warm-up search's;
- `Result.best_within` picks among tied trials as `best_trial` does (the first).
"""

import importlib
import json

import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import outer as outer_driver
from hypergrad.outer import make_cohort
from hypergrad.results import COMPLETE, Result, Trial
from hypergrad.search import evaluate_settings
from _helpers import Stop, stop_after

tune_module = importlib.import_module("hypergrad.tune")  # `hypergrad.tune` is also the function
SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
NAN, INF = float("nan"), float("inf")


class FakeCohort:
    """What `outer.halve` reads and calls on a cohort: latest losses by tuner id, live ids, keep."""

    def __init__(self, latest):
        self.latest = dict(latest)
        self.tuners = np.asarray(list(latest), dtype=np.int64)

    def keep(self, ids):
        self.tuners = self.tuners[[int(t) in ids for t in self.tuners]]


def halved(*latest):
    """The tuner ids still live after halving cohorts with these {id: latest loss} dicts."""
    cohorts = [FakeCohort(c) for c in latest]
    outer_driver.halve(cohorts)
    return sorted(int(t) for c in cohorts for t in c.tuners)


@pytest.mark.parametrize("latest, kept", [
    (({0: NAN, 1: 0.9, 2: 0.1, 3: 0.5},), [2, 3]),
    (({0: 0.4, 1: NAN}, {2: 0.2, 3: NAN}), [0, 2]),
    (({0: -INF, 1: 0.2, 2: INF}, {3: 0.4, 4: NAN, 5: 0.3}), [1, 3, 5]),  # -inf is diverged, not best
    (({0: NAN, 1: NAN, 2: 0.7},), [0, 2]),  # ceil(3/2) go on: the finite one, then the lower id
])
def test_halving_ranks_a_non_finite_latest_loss_last(latest, kept):
    assert halved(*latest) == kept


@pytest.mark.parametrize("latest, kept", [
    (({0: 0.3, 1: 0.3, 2: 0.9, 3: 0.1},), [0, 3]),
    (({5: 0.3, 7: 0.9}, {2: 0.3, 4: 0.1}), [2, 4]),  # the lower id in the later cohort
    (({3: 0.5, 1: 0.5, 2: 0.5},), [1, 2]),
    (({4: INF, 1: NAN, 2: 0.1},), [1, 2]),  # non-finite ones tie with each other: the lower id
])
def test_halving_breaks_ties_to_the_lower_tuner_id(latest, kept):
    assert halved(*latest) == kept


@pytest.fixture(scope="module")
def ridge_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)


@pytest.mark.parametrize("interrupted, resumed", [(4, 3), (2, 4)])
def test_a_study_resumed_with_another_chunk_size_equals_one_uninterrupted_call(
        ridge_objective, key, tmp_path, interrupted, resumed):
    """A resumed chunk that holds stored and unstored trials runs; the stored ones stand."""
    db, log = tmp_path / "study.db", tmp_path / "trials.jsonl"
    whole = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=interrupted)
    with pytest.raises(Stop):
        hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=interrupted, storage=db, study="r", log=log,
                         progress=stop_after(1))
    assert hg.list_studies(db)[0].num_trials == interrupted
    again = hg.random_search(ridge_objective, SPACE, key, 10, chunk_size=resumed, storage=db, study="r", log=log)
    for result in (again, hg.load_study(db, "r")):
        assert [t.number for t in result.trials] == list(range(10))
        assert [t.value for t in result.trials] == [t.value for t in whole.trials]
        for a, b in zip(result.trials, whole.trials):
            assert all(np.array_equal(a.hparams[name], b.hparams[name]) for name in SPACE.names), a.number
    assert [json.loads(line)["number"] for line in log.read_text().splitlines()] == list(range(10))


def test_tune_compile_seconds_include_the_warm_ups(ridge_objective, key, monkeypatch):
    """The warm-up's Result is given 100 s more compilation than it measured (so a program cached by
    an earlier test cannot hide it): tune's compile seconds are the outer step's plus those."""
    seen = {}

    def warm_up(*args, **kwargs):
        result = evaluate_settings(*args, **kwargs)
        seen["warm-up"] = Result(result.strategy, result.trials, result.run_flops, result.compile_seconds + 100.0,
                                 result.info)
        return seen["warm-up"]

    def cohort(*args, **kwargs):
        seen["cohort"] = make_cohort(*args, **kwargs)
        return seen["cohort"]

    monkeypatch.setattr(tune_module, "evaluate_settings", warm_up)
    monkeypatch.setattr(tune_module, "make_cohort", cohort)
    result = hg.tune(ridge_objective, SPACE, key, population=2, warmup=4, steps=1)
    warm = seen["warm-up"]
    assert all(a is b for a, b in zip(result.trials[:4], warm.trials, strict=True))  # and their FLOPs: the call's
    assert result.compile_seconds == pytest.approx(seen["cohort"].compile_seconds + warm.compile_seconds, rel=1e-12)
    assert result.compile_seconds >= 100.0


def by_hand(values):
    """A Result of one-run trials with these validation losses, each with its own learning rate."""
    trials = tuple(Trial(number=i, hparams={"lr": np.asarray(0.1 * (i + 1))}, value=v, scores={"val_loss": v},
                         state=COMPLETE, flops=1.0, seconds=0.5, run_flops=1.0) for i, v in enumerate(values))
    return Result("random", trials, 1.0, 0.0, {})


@pytest.mark.parametrize("values", [[0.5, 0.3, 0.3], [0.3, 0.3], [0.9, 0.2, 0.4, 0.2, 0.2, 0.6]])
def test_best_within_picks_among_tied_trials_as_best_trial_does(values):
    result = by_hand(values)
    assert result.best_trial.number == values.index(min(values))  # the first of the tied
    for by in ("runs", "execution"):
        total = result.spent(by)[-1]
        assert result.best_within(total, by=by) is result.best_trial, by
