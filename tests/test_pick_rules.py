"""Which trial or pick comes first where trials are ranked, compared or exported.

Hand-built trials and results (no training): `hypergrad compare`'s verdict with non-finite test
losses and with picks that all diverged.
"""

import math

import numpy as np
import pytest

from hypergrad import cli
from hypergrad.results import Result, Trial, _min_rank, _ranked_after


def _pick(setting: float, val: float, test: float, state: str = "complete") -> Trial:
    return Trial(number=0, hparams={"lr": np.asarray(setting)}, value=val, scores={"val_loss": val, "test_loss": test},
                 state=state, flops=1.0, seconds=1.0, run_flops=1.0)


def test_a_pick_whose_test_loss_is_not_finite_ranks_last_whatever_the_dict_order():
    diverged, finite = _pick(0.1, 0.1, math.nan), _pick(0.2, 0.2, 0.5)
    outcomes = set()
    for picks in ({"a": diverged, "b": finite}, {"b": finite, "a": diverged}):
        kind, ranked, leaders, _, _ = cli._standing(picks, None)
        assert ranked == ["b", "a"] and leaders == ["b"]
        outcomes.add(cli._winner_line("p", "equal compute", picks, None))
    (line, outcome), = outcomes  # the same line whichever order the strategies came in
    assert outcome == "b" and line.startswith("- p, equal compute: **b** wins on test")
    assert "then a (val 0.1, test loss nan)" in line


def test_a_diverged_pick_is_not_weighed_against_the_leader():
    # z's test loss diverged: per_example gives it no losses; the leader m is weighed against a alone
    picks = {"z": _pick(0.1, 0.1, math.nan), "a": _pick(0.2, 0.2, 5.0), "m": _pick(0.3, 0.2, 0.3)}
    table = {0.2: np.full(50, 5.0) + np.linspace(-0.1, 0.1, 50), 0.3: np.full(50, 0.3) + np.linspace(0.1, -0.1, 50)}
    kind, ranked, leaders, margin, against = cli._standing(picks, lambda p: table.get(float(p.hparams["lr"])))
    assert (kind, ranked, leaders, against) == ("win", ["m", "a", "z"], ["m"], "a")
    line, outcome = cli._winner_line("p", "equal compute", picks, lambda p: table.get(float(p.hparams["lr"])))
    assert outcome == "m" and "**m** wins on test" in line


def test_no_pick_with_a_finite_test_loss_has_no_leader():
    picks = {"z": _pick(0.1, 0.1, math.nan), "a": _pick(0.2, 0.2, math.inf), "b": None}
    line, outcome = cli._winner_line("p", "equal compute", picks, lambda p: None)
    assert outcome is None and "**" not in line and "lowest" not in line
    assert line == ("- p, equal compute: no pick has a finite test loss, so no winner on test: "
                    "a (val 0.2, test loss inf); z (val 0.1, test loss nan); no trial yet: b.")
    assert len(cli._compilation_lines("p", {}, outcome, outcome)) == 1  # no agreement line about no winner


def _trial(number: int, value: float, state: str = "complete", tuner: int | None = None) -> Trial:
    return Trial(number=number, hparams={"lr": np.asarray(0.1 * (number + 1))}, value=value,
                 scores={"val_loss": value, "test_loss": value}, state=state, flops=1.0, seconds=1.0, run_flops=1.0,
                 tuner=tuner)


def test_the_verdict_tells_trials_that_all_diverged_from_no_trial():
    diverged = {"random": Result("random", [_trial(0, math.nan, "fail")], 1.0, 0.0),
                "grid": Result("grid", [_trial(0, math.nan, "fail"), _trial(1, math.inf, "fail")], 1.0, 0.0)}
    line = cli._verdict("p", diverged, diverged).splitlines()[0]
    assert line == ("- p, equal compute: no strategy has a pick: random (its one finished trial diverged); "
                    "grid (all 2 of its finished trials diverged).")
    line, outcome = cli._winner_line("p", "equal compute", {"random": None}, None, {})
    assert line == "- p, equal compute: no strategy finished a trial." and outcome is None
    line, outcome = cli._winner_line("p", "equal compute", {"random": None})  # not told why: no claim
    assert line == "- p, equal compute: no strategy has a pick." and outcome is None
    # beside a pick: a strategy whose trials all diverged is not one with no trial yet
    picks = {"random": None, "grid": _trial(0, 0.5)}
    line, outcome = cli._winner_line("p", "equal compute", picks, None, {"random": "its one finished trial diverged"})
    assert outcome == "grid" and line.endswith("then no other; no pick: random (its one finished trial diverged).")


def test_a_resample_key_tunes_steps_on_their_own_keys_are_named_as_such():
    tuned = Result("tune", [_trial(0, 0.3, tuner=0), _trial(1, math.nan, "fail", tuner=0), _trial(2, 0.2, tuner=0)],
                   1.0, 0.0, {"resample_key": True, "final_trials": [2]})
    assert cli._why_no_pick(tuned, 2.0, "runs") == ("2 finished trials: 1 diverged, 1 step scored on its own key "
                                                    "(resample_key), never the pick")
    assert tuned.best_within(3.0) is not None and cli._why_no_pick(tuned, 0.5, "runs") is None


def test_a_trial_refuses_a_state_the_library_does_not_write():
    for state in ("FAIL", "Complete", "banana", None):
        with pytest.raises(ValueError, match=r"Trial\(state=.*give one of 'complete', 'fail', 'skipped'"):
            _trial(0, 0.1, state)
    with pytest.raises(ValueError, match=r"lower case: 'fail'; to_dataframe's state column"):
        _trial(0, 0.1, "FAIL")
    assert _trial(0, 0.1, np.str_("skipped")).state == "skipped" and type(_trial(0, 0.1, "fail").state) is str


def test_a_result_round_trips_every_state_and_refuses_an_unknown_one(tmp_path):
    result = Result("random", [_trial(0, 0.5), _trial(1, math.nan, "fail"), _trial(2, 0.4, "skipped")], 1.0, 0.0)
    result.save(tmp_path / "r.json")
    assert [t.state for t in Result.load(tmp_path / "r.json").trials] == ["complete", "fail", "skipped"]
    data = result.to_dict()
    data["trials"][0]["state"] = "FAIL"  # e.g. rebuilt from to_dataframe's column
    with pytest.raises(ValueError, match="not a Result's to_dict"):
        Result.from_dict(data)


def test_cv_results_of_a_result_with_no_trials_has_every_key_with_no_entries():
    empty = Result("random", [], 1.0, 0.0)
    for metric in (None, "loss", "accuracy"):
        cv = empty.cv_results(metric)
        assert cv["params"] == [] and cv["rank_test_score"].dtype == np.int32
        assert {k for k, v in cv.items() if len(v)} == set()
        assert {"mean_fit_time", "mean_test_score", "std_test_score", "rank_test_score"} <= cv.keys()


def _resampled() -> Result:
    """A `tune(resample_key=True)`-like result: a warm-up trial (tuner None), two steps on their own keys (the
    lowest values, never the pick), one failed step, and the final iterate (trial 4) scored on the call's key."""
    trials = [_trial(0, 0.9), _trial(1, 0.2, tuner=0), _trial(2, 0.3, tuner=0), _trial(3, math.nan, "fail", tuner=0),
              _trial(4, 0.6, tuner=0)]
    return Result("tune", trials, 1.0, 0.0, {"resample_key": True, "final_trials": [4]})


def test_cv_results_ranks_first_the_trials_that_can_be_the_pick():
    result = _resampled()
    cv = result.cv_results()
    assert result.best_trial.number == 4 and int(np.argmin(cv["rank_test_score"])) == 4
    assert cv["rank_test_score"].tolist() == [2, 3, 4, 5, 1] and cv["rank_test_score"].dtype == np.int32
    assert np.allclose(cv["mean_test_score"], [-0.9, -0.2, -0.3, np.nan, -0.6], equal_nan=True)  # scores kept
    # without the rule (no final_trials: every finished finite trial can be the pick) the ranks are scipy's
    plain = Result("tune", result.trials, 1.0, 0.0, {"resample_key": True})
    assert plain.cv_results()["rank_test_score"].tolist() == [4, 1, 2, 5, 3]


def test_to_optuna_marks_the_trials_that_cannot_be_the_pick_and_names_the_pick(tmp_path):
    # exported PRUNED for a while, they vanished from Optuna's plots (slice, history, importance keep
    # COMPLETE trials only) and TPE ordered them by number: now COMPLETE, marked, and the pick named
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _resampled().to_optuna(f"sqlite:///{tmp_path / 'o.db'}", "s")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert [t.value for t in study.trials][:3] == [0.9, 0.2, 0.3]
    assert [t.user_attrs["pickable"] for t in study.trials] == [True, False, False, False, True]
    assert study.user_attrs["best_trial"] == 4 == _resampled().best_trial.number
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))) == 4  # what Optuna's plots read


def test_ranked_after_puts_the_first_group_ahead_and_nan_last():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 8))
        scores = rng.integers(0, 4, n).astype(float)
        scores[rng.random(n) < 0.25] = np.nan
        first = rng.random(n) < 0.6
        ranks = _ranked_after(scores, first)
        assert ranks.dtype == np.int32 and ranks.shape == (n,)
        if first.all():
            assert ranks.tolist() == _min_rank(scores).tolist()
        finite = ~np.isnan(scores)
        for group in (first & finite, ~first & finite):
            if group.any():  # within a group: its own min ranks, shifted
                own = _min_rank(scores[group])
                assert (ranks[group] - own == ranks[group].min() - 1).all()
        assert ((first & finite).sum() == 0 or not (~first & finite).any()
                or ranks[first & finite].max() < ranks[~first & finite].min())
        assert (ranks[~finite] == finite.sum() + 1).all()
