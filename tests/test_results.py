"""Trials tables: best setting, JSON and DataFrame export, streaming logs, and compare at equal compute.

Results are built by hand from `Trial`s with known compute, so every expected number below follows
from the construction, not from running anything.
"""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad._store_codec import describe_space  # noqa: E402
from hypergrad.results import COMPLETE, FAIL, SKIPPED, TrialRecorder  # noqa: E402

RUN_FLOPS = 1000.0
NAN, INF = float("nan"), float("inf")


def make_trial(number, value, *, runs=1.0, state=None, test=None, seconds=0.5, grad_norm=None):
    if state is None:
        state = COMPLETE if math.isfinite(value) else FAIL
    scores = {"val_loss": value, "test_loss": value + 0.5 if test is None else test,
              "val_accuracy": 0.5, "test_accuracy": 1.0 / (2.0 + number)}
    hparams = {"lr": np.asarray(0.01 * (number + 1)), "schedule": np.full((3,), 0.1 * number)}
    return hg.Trial(number=number, hparams=hparams, value=value, scores=scores, state=state,
                    flops=runs * RUN_FLOPS, seconds=seconds, run_flops=RUN_FLOPS, grad_norm=grad_norm)


def strict_json(obj):
    """json.dumps that refuses NaN/Infinity (which are not JSON)."""
    return json.dumps(obj, allow_nan=False)


@pytest.fixture
def random_result():
    """One run per trial; trial 2 diverged (NaN), trial 3 is marked failed despite a finite low value."""
    trials = (make_trial(0, 5.0), make_trial(1, 3.0), make_trial(2, NAN),
              make_trial(3, 0.5, state=FAIL), make_trial(4, 1.0, test=1.25))
    return hg.Result("random", trials, RUN_FLOPS, compile_seconds=2.0, info={"chunk_size": 4})


@pytest.fixture
def tune_result():
    """2.5 runs per trial (a hypergradient step); trial 2 diverged (inf), trial 1 was skipped."""
    trials = (make_trial(0, 4.0, runs=2.5, grad_norm=1.0),
              make_trial(1, 2.0, runs=2.5, state=SKIPPED, grad_norm=NAN),
              make_trial(2, INF, runs=2.5, grad_norm=NAN),
              make_trial(3, 0.8, runs=2.5, test=0.9, grad_norm=0.1))
    return hg.Result("tune[Reverse()]", trials, RUN_FLOPS, compile_seconds=3.0)


# -- best setting ---------------------------------------------------------------------------------
def test_best_ignores_failed_trials(random_result):
    best = random_result.best_trial
    assert best.number == 4  # not trial 3 (failed, value 0.5) and not trial 2 (NaN)
    assert random_result.best_value == 1.0
    assert random_result.best_test_value == 1.25
    np.testing.assert_array_equal(random_result.best_hparams["lr"], 0.05)
    assert random_result.num_failed == 2


def test_skipped_steps_with_a_finite_loss_can_be_best(tune_result):
    assert tune_result.best_trial.number == 3
    # Without trial 3, the skipped step (finite loss) is the best left; the inf one never is.
    partial = hg.Result("t", tune_result.trials[:3], RUN_FLOPS, 0.0)
    assert partial.best_trial.number == 1


def test_best_of_all_failed_is_inf_not_nan():
    result = hg.Result("random", (make_trial(0, NAN), make_trial(1, INF)), RUN_FLOPS, 0.0)
    assert result.best_trial is None
    assert result.best_value == INF
    assert result.best_hparams is None and result.best_test_value is None
    assert result.best_within(100.0) is None


def test_compute_totals(random_result, tune_result):
    assert random_result.runs == pytest.approx(5.0)
    assert random_result.flops == pytest.approx(5 * RUN_FLOPS)
    assert random_result.seconds == pytest.approx(2.5)
    assert tune_result.runs == pytest.approx(10.0)
    assert [t.runs for t in tune_result.trials] == pytest.approx([2.5] * 4)


def test_curve_is_best_so_far_over_cumulative_runs(random_result):
    runs, best = random_result.curve()
    np.testing.assert_allclose(runs, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(best, [5, 3, 3, 3, 1])


# -- export ---------------------------------------------------------------------------------------
def test_to_dict_is_json_safe_with_nan(random_result, tune_result):
    for result in (random_result, tune_result):
        data = result.to_dict()
        text = strict_json(data)  # raises on NaN or inf
        back = json.loads(text)
        assert len(back["trials"]) == len(result.trials)
        assert back["strategy"] == result.strategy
        assert back["best"]["number"] == result.best_trial.number
    trials = random_result.to_dict()["trials"]
    assert trials[2]["value"] is None and trials[2]["state"] == FAIL
    assert trials[2]["scores"]["val_loss"] is None
    assert trials[0]["hparams"]["schedule"] == [0.0, 0.0, 0.0]
    assert trials[4]["test_value"] == 1.25 and trials[4]["runs"] == 1.0
    tune_trials = tune_result.to_dict()["trials"]
    assert tune_trials[1]["grad_norm"] is None and tune_trials[2]["value"] is None
    assert tune_trials[0]["grad_norm"] == 1.0


def test_trial_arrays_export_exactly_with_none_for_non_finite():
    """Arrays go to nested lists whole (not an element at a time): every element keeps its exact
    value and type, and non-finite entries become None at any depth."""
    hparams = {"matrix": np.array([[0.1, np.nan], [np.inf, -2.5]], np.float32),
               "schedule": np.full(200, 0.05, np.float32), "counts": np.arange(3, dtype=np.int32),
               "flags": np.array([True, False]), "scalar": np.float32(-np.inf), "zero_d": np.array(0.3)}
    trial = hg.Trial(number=0, hparams=hparams, value=1.0, scores={"val_loss": 1.0}, state="complete",
                     flops=1.0, seconds=0.1, run_flops=1.0)
    exported = json.loads(strict_json(trial.to_dict()))["hparams"]

    def one_at_a_time(array):
        if array.ndim:
            return [one_at_a_time(row) for row in array]
        item = array.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item

    for name, value in hparams.items():
        expected = one_at_a_time(np.asarray(value))
        assert exported[name] == expected, name
        assert json.dumps(exported[name]) == json.dumps(expected), name  # same types: 1 stays 1, not 1.0
    assert exported["matrix"] == [[float(np.float32(0.1)), None], [None, -2.5]]


def test_save_writes_the_dict(tmp_path, random_result):
    path = tmp_path / "result.json"
    random_result.save(path)
    assert json.loads(path.read_text()) == json.loads(strict_json(random_result.to_dict()))


def activation(x):
    """A structural option that is a function (`hg.Choice([activation, jnp.tanh], structural=True)`)."""
    return x


def test_a_function_option_is_exported_logged_and_saved_as_its_repr(tmp_path):
    """A function (or other object JSON cannot hold) chosen as a structural option is written as
    {"option": its repr} by `to_dict`, `save` and the streaming log, and read back as that string."""
    trial = dataclasses.replace(make_trial(0, 1.0), hparams={"act": activation, "builtin": abs, "lr": np.asarray(0.1)})
    result = hg.Result("random", (trial,), RUN_FLOPS, 0.0, {})
    exported = json.loads(strict_json(result.to_dict()))["trials"][0]["hparams"]
    assert exported["act"] == {"option": {"repr": f"<function {activation.__qualname__}>"}}
    result.save(tmp_path / "result.json")
    back = hg.Result.load(tmp_path / "result.json").trials[0].hparams
    assert back["act"] == f"<function {activation.__qualname__}>" and back["builtin"] == "<built-in function abs>"
    assert back["lr"] == 0.1
    path = tmp_path / "trials.jsonl"
    recorder = TrialRecorder("random", path, None, total=2)
    try:
        recorder.add(trial)
        recorder.add(make_trial(1, 2.0))
    finally:
        recorder.close()
    assert [json.loads(line)["number"] for line in path.read_text().splitlines()] == [0, 1]


def test_a_failed_save_leaves_the_earlier_file_whole(tmp_path, random_result, monkeypatch):
    """`save` writes beside the target and renames: an error part-way never truncates a good file."""
    path = tmp_path / "result.json"
    random_result.save(path)
    good = path.read_text()
    monkeypatch.setattr(hg.Result, "to_dict", lambda self: {"broken": object()})
    with pytest.raises(TypeError):
        random_result.save(path)
    assert path.read_text() == good and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_load_reads_back_what_save_wrote(tmp_path, random_result, tune_result):
    structural = hg.Result("grid", (hg.Trial(
        number=0, hparams={"activation": "tanh", "widths": (64, 32), "matrix": np.array([[0.1, np.nan]], np.float32),
                           "flags": np.array([True, False]), "count": np.int32(3), "clip": None,
                           "optimizer": ("adam", 0.1), "layers": [{"width": 8}]},
        value=0.25, scores={"val_loss": 0.25, "test_loss": np.inf}, state=COMPLETE, flops=2.0, seconds=0.1,
        run_flops=2.0, tuner=1),), 2.0, compile_seconds=0.5, info={"points_per_axis": 3})
    for result in (random_result, tune_result, structural):
        path = tmp_path / f"{result.strategy}.json"
        result.save(path)
        back = hg.Result.load(path)
        assert isinstance(back, hg.Result) and back.to_dict() == json.loads(path.read_text())
        assert strict_json(back.to_dict()) == strict_json(result.to_dict())
        assert (back.strategy, back.run_flops, back.compile_seconds, back.info) == (
            result.strategy, result.run_flops, result.compile_seconds, result.info)
        for ours, theirs in zip(back.trials, result.trials, strict=True):
            assert (ours.number, ours.state, ours.tuner, ours.flops, ours.seconds, ours.runs) == (
                theirs.number, theirs.state, theirs.tuner, theirs.flops, theirs.seconds, theirs.runs)
            np.testing.assert_equal(ours.value, theirs.value if math.isfinite(theirs.value) else NAN)
            assert ours.scores.keys() == theirs.scores.keys()
            for name, value in theirs.scores.items():
                np.testing.assert_equal(ours.scores[name], value if math.isfinite(value) else NAN)
        assert back.best_trial.number == result.best_trial.number and back.runs == result.runs
    hparams = hg.Result.load(tmp_path / "grid.json").trials[0].hparams
    # structural options come back as the objects they were: None is not NaN, a tuple not an array
    assert hparams["activation"] == "tanh" and hparams["widths"] == (64, 32) and hparams["clip"] is None
    assert hparams["optimizer"] == ("adam", 0.1) and hparams["layers"] == [{"width": 8}]
    np.testing.assert_array_equal(hparams["matrix"], np.array([[np.float32(0.1), np.nan]]))
    assert hparams["flags"].dtype == bool and hparams["count"].shape == () and hparams["count"] == 3
    schedule = hg.Result.load(tmp_path / "random.json").trials[1].hparams["schedule"]
    assert schedule.shape == (3,) and schedule.dtype == np.float64
    (tmp_path / "bad.json").write_text(json.dumps({"strategy": "random", "trials": [{"number": 0}]}))
    with pytest.raises(ValueError, match="Result.from_dict: not a Result's to_dict"):
        hg.Result.load(tmp_path / "bad.json")


def test_to_optuna_keeps_a_float32_choice_on_its_declared_options(tmp_path):
    # A float32 run records Choice([0.0, 0.1, 1.0])'s 0.1 as 0.10000000149011612: exported as is, it
    # was a fourth category beside the declared 0.1, and Optuna refused to continue the study.
    optuna = pytest.importorskip("optuna")
    space = hg.Space({"l2": hg.Choice([0.0, 0.1, 1.0]), "lr": hg.LogUniform(1e-3, 1.0)})
    trials = tuple(hg.Trial(number=i, hparams={"l2": np.float32(l2), "lr": np.float32(0.01)}, value=1.0 - l2,
                            scores={"val_loss": 1.0 - l2}, state=COMPLETE, flops=1.0, seconds=0.1, run_flops=1.0)
                   for i, l2 in enumerate([0.1, 0.0, 1.0, 0.1]))
    result = hg.Result("random", trials, 1.0, 0.0, info={"space": describe_space(space)})
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = result.to_optuna(url, "s")
    declared = optuna.distributions.CategoricalDistribution([0.0, 0.1, 1.0])
    assert [t.distributions["l2"] for t in study.trials] == [declared] * 4
    assert [t.params["l2"] for t in study.trials] == [0.1, 0.0, 1.0, 0.1]
    loaded = optuna.load_study(study_name="s", storage=url, sampler=optuna.samplers.TPESampler(seed=0))
    loaded.optimize(lambda trial: trial.suggest_categorical("l2", [0.0, 0.1, 1.0]), n_trials=2)  # continues
    assert len(loaded.trials) == 6


def test_to_optuna_keeps_an_int_choice_as_ints(tmp_path):
    """Choice([1, 2, 4]) (the search records an int array) is exported as the declared ints, not as
    the floats 1.0, 2.0, 4.0, so `suggest_categorical("width", [1, 2, 4])` continues the study."""
    optuna = pytest.importorskip("optuna")
    space = hg.Space({"width": hg.Choice([1, 2, 4]), "lr": hg.LogUniform(1e-3, 1.0)})
    trials = tuple(hg.Trial(number=i, hparams={"width": np.asarray(w), "lr": np.asarray(0.01)}, value=float(w),
                            scores={"val_loss": float(w)}, state=COMPLETE, flops=1.0, seconds=0.1, run_flops=1.0)
                   for i, w in enumerate([2, 4, 1]))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = hg.Result("random", trials, 1.0, 0.0, info={"space": describe_space(space)}).to_optuna(url, "s")
    assert [t.distributions["width"] for t in study.trials] == [optuna.distributions.CategoricalDistribution([1, 2, 4])] * 3
    params = [t.params["width"] for t in optuna.load_study(study_name="s", storage=url).trials]
    assert params == [2, 4, 1] and all(type(p) is int for p in params)


def test_to_dataframe_has_optuna_columns(random_result):
    pd = pytest.importorskip("pandas")
    df = random_result.to_dataframe()
    for column in ("number", "value", "params_lr", "params_schedule", "duration", "state"):
        assert column in df.columns
    assert list(df.columns[:2]) == ["number", "value"]
    assert list(df["number"]) == [0, 1, 2, 3, 4]
    assert list(df["state"]) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert df["value"].isna().tolist() == [False, False, True, False, False]
    np.testing.assert_allclose(df["params_lr"].to_numpy(dtype=float), [0.01, 0.02, 0.03, 0.04, 0.05])
    np.testing.assert_allclose(df["params_schedule"][2], [0.2, 0.2, 0.2])
    assert pd.api.types.is_timedelta64_dtype(df["duration"])
    assert df["duration"][0].total_seconds() == pytest.approx(0.5)
    np.testing.assert_allclose(df["test_value"][:2], [5.5, 3.5])
    assert "user_attrs_test_accuracy" in df.columns


# -- streaming log --------------------------------------------------------------------------------
def test_recorder_appends_one_flushed_json_line_per_trial(tmp_path):
    path = tmp_path / "deeper" / "trials.jsonl"  # the folder is created
    lines_seen, progress = [], []
    recorder = TrialRecorder("random", path, progress.append, total=3)
    try:
        for trial in (make_trial(0, 2.0), make_trial(1, NAN), make_trial(2, 1.0)):
            recorder.add(trial)
            recorder.report()
            lines_seen.append(len(path.read_text().splitlines()))  # readable before close
    finally:
        recorder.close()
    assert lines_seen == [1, 2, 3]
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
               for line in path.read_text().splitlines()]
    assert [r["number"] for r in records] == [0, 1, 2]
    assert [r["value"] for r in records] == [2.0, None, 1.0]
    assert all(r["strategy"] == "random" for r in records)
    assert len(progress) == 3 and "3/3" in progress[-1]


# -- compare --------------------------------------------------------------------------------------
def _rows(comparison, strategy):
    return [row for row in comparison.rows if row["strategy"] == strategy]


def test_best_within_budget(random_result, tune_result):
    assert random_result.best_within(0.5) is None
    assert random_result.best_within(1.0).number == 0
    assert random_result.best_within(2.0).number == 1
    assert random_result.best_within(4.0).number == 1  # trials 2 and 3 failed
    assert random_result.best_within(5.0).number == 4
    assert tune_result.best_within(2.0) is None
    assert tune_result.best_within(2.5).number == 0
    assert tune_result.best_within(9.99).number == 1
    assert tune_result.best_within(10.0).number == 3


def test_compare_at_equal_compute(random_result, tune_result):
    report = hg.compare({"random": random_result, "tune": tune_result}, budgets=[1, 2.5, 5, 10])
    assert report.budgets == (1.0, 2.5, 5.0, 10.0)
    assert len(report.rows) == 8
    rand = _rows(report, "random")
    assert [r["budget"] for r in rand] == [1.0, 2.5, 5.0, 10.0]
    assert [r["best_value"] for r in rand] == [5.0, 3.0, 1.0, 1.0]
    assert [r["trials"] for r in rand] == [1, 2, 5, 5]
    assert [r["runs_used"] for r in rand] == [1.0, 2.0, 5.0, 5.0]  # compute actually spent, <= budget
    assert [r["test_scores"]["test_loss"] for r in rand] == [5.5, 3.5, 1.25, 1.25]
    assert rand[0]["test_scores"]["test_accuracy"] == pytest.approx(1 / 2)  # trial 0's metric
    assert all(not any(k.startswith("val_") for k in r["test_scores"]) for r in rand)
    np.testing.assert_array_equal(rand[2]["hparams"]["lr"], 0.05)
    tune = _rows(report, "tune")
    assert [r["best_value"] for r in tune] == [None, 4.0, 2.0, 0.8]
    assert [r["trials"] for r in tune] == [0, 1, 2, 4]
    assert tune[0]["test_scores"] == {} and tune[0]["hparams"] is None
    assert [r["test_scores"].get("test_loss") for r in tune[1:]] == [4.5, 2.5, 0.9]


def test_compare_default_budgets_are_fractions_of_the_largest_total(random_result, tune_result):
    report = hg.compare({"random": random_result, "tune": tune_result})
    largest = max(random_result.runs, tune_result.runs)  # 10 runs (tune); random spent 5
    assert report.budgets == pytest.approx((largest / 8, largest / 4, largest / 2, largest))
    # random stopped at 5 runs: at the 10-run budget it keeps what it found with the 5 it used.
    assert [r["best_value"] for r in _rows(report, "random")] == [5.0, 3.0, 1.0, 1.0]
    assert [r["runs_used"] for r in _rows(report, "random")] == [1.0, 2.0, 5.0, 5.0]
    assert [r["best_value"] for r in _rows(report, "tune")] == [None, 4.0, 2.0, 0.8]
    assert [r["runs_used"] for r in _rows(report, "tune")] == [0.0, 2.5, 5.0, 10.0]


def test_comparison_exports(random_result, tune_result):
    report = hg.compare({"random": random_result, "tune": tune_result}, budgets=[1, 10])
    data = json.loads(strict_json(report.to_dict()))
    assert data["budgets"] == [1.0, 10.0]
    assert data["totals"]["random"]["failed"] == 2 and data["totals"]["tune"]["trials"] == 4
    assert data["rows"][2]["best_value"] is None  # tune at budget 1
    markdown = report.to_markdown()
    for name in ("random", "tune"):
        # one line per budget in the first table, one line in the totals table
        assert sum(line.startswith(f"| {name} |") for line in markdown.splitlines()) == 3
    assert "test_accuracy of pick" in markdown


def test_compare_returns_a_report_that_plots(random_result, tune_result, tmp_path, monkeypatch):
    from hypergrad import plots, results

    report = hg.compare({"random": random_result, "tune": tune_result}, budgets=[1, 10])
    assert isinstance(report, hg.Report) and isinstance(report, hg.Comparison)
    table = results.line_up({"random": random_result, "tune": tune_result}, budgets=[1, 10])  # the data alone
    assert (table.budgets, table.to_markdown()) == (report.budgets, report.to_markdown())
    drawn = []
    monkeypatch.setattr(plots, "plot_comparison", lambda comparison, out: drawn.append((comparison, out)) or [])
    assert report.plot(tmp_path) == [] and drawn == [(report, tmp_path)]


@pytest.mark.parametrize("bad", [{}, [], None])
def test_compare_rejects_empty_input(bad):
    with pytest.raises(ValueError, match="results"):
        hg.compare(bad)


def test_compare_rejects_non_results_and_bad_budgets(random_result):
    with pytest.raises(ValueError, match="'oops'"):
        hg.compare({"random": random_result, "oops": [1, 2]})
    for budgets in ([], [0.0], [-1.0, 2.0], 5, "all", [float("nan")], ["5"], [True]):
        with pytest.raises(ValueError, match=r"compare\(budgets=.*\): give a list of positive budgets"):
            hg.compare({"random": random_result}, budgets=budgets)
    assert hg.compare({"random": random_result}, budgets=np.array([1.0, 2.0])).to_dict()  # any sequence of numbers


def test_compare_refuses_a_result_of_unknown_cost_and_prints_small_budgets_apart(random_result):
    """A Result whose unit is 0 (a JSON that lost it) has NaN runs: lined up, its NaN budgets
    counted every trial of every strategy; it is refused by name. Budgets below 1 print with two
    significant digits (0.12 and 0.25, not 0.1 and 0.2)."""
    lost = dataclasses.replace(random_result, run_flops=0.0, trials=tuple(
        dataclasses.replace(t, run_flops=0.0) for t in random_result.trials))
    with pytest.raises(ValueError, match=r"results\['lost'\] has a non-finite cost by 'runs'"):
        hg.compare({"random": random_result, "lost": lost})
    table = hg.compare({"random": random_result}, budgets=[0.125, 0.25, 10]).to_markdown()
    assert "| random | 0.12 |" in table and "| random | 0.25 |" in table and "| random | 10.0 |" in table


# -- equal wall time --------------------------------------------------------------------------------
def test_compare_at_equal_wall_time_counts_compilation_and_execution_seconds(random_result, tune_result):
    """random: compile 2 s, then 0.5 s a trial (trials end at 2.5, 3, 3.5, 4, 4.5 s); tune: compile
    3 s, then 0.5 s a trial (3.5, 4, 4.5, 5 s). At 4 s random has trials 0-3 (best: trial 1, 3.0;
    trial 3 failed) and tune trials 0-1 (trial 0, 4.0; trial 1 skipped but its value counts)."""
    np.testing.assert_allclose(random_result.spent("seconds"), [2.5, 3.0, 3.5, 4.0, 4.5])
    np.testing.assert_allclose(tune_result.spent("runs"), [2.5, 5.0, 7.5, 10.0])
    assert random_result.best_within(4.0, "seconds").number == 1
    assert tune_result.best_within(4.0, "seconds").number == 1
    assert random_result.best_within(2.4, "seconds") is None
    report = hg.compare({"random": random_result, "tune": tune_result}, budgets=[4.0, 5.0], by="seconds")
    rows = {(r["strategy"], r["budget"]): r for r in report.rows}
    assert rows[("random", 4.0)]["trials"] == 4 and rows[("random", 4.0)]["best_value"] == 3.0
    assert rows[("random", 4.0)]["used"] == 4.0 and rows[("random", 4.0)]["runs_used"] == 4.0
    assert rows[("tune", 4.0)]["trials"] == 2 and rows[("tune", 4.0)]["runs_used"] == 5.0
    assert rows[("random", 5.0)]["best_value"] == 1.0 and rows[("tune", 5.0)]["best_value"] == 0.8
    assert "budget (s)" in report.to_markdown() and report.by == "seconds"
    with pytest.raises(ValueError, match=r"compare\(by='minutes'\) must be 'runs'"):
        hg.compare({"random": random_result}, by="minutes")


def test_compare_at_equal_execution_time_leaves_compilation_out(random_result, tune_result):
    """The same results by their trials' execution seconds alone (0.5 s each, from 0): at 2 s random
    has trials 0-3 (best: trial 1, 3.0) and tune all four (best: trial 3, 0.8), where at 2 s of wall
    time, compilation included, neither had finished a trial (random compiles 2 s, tune 3 s)."""
    np.testing.assert_allclose(random_result.spent("execution"), [0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(tune_result.spent("execution"), [0.5, 1.0, 1.5, 2.0])
    assert random_result.best_within(2.0, "execution").number == 1
    assert tune_result.best_within(2.0, "execution").number == 3
    assert random_result.best_within(2.0, "seconds") is None and tune_result.best_within(2.0, "seconds") is None
    report = hg.compare({"random": random_result, "tune": tune_result}, budgets=[1.0, 2.0], by="execution")
    rows = {(r["strategy"], r["budget"]): r for r in report.rows}
    assert rows[("random", 2.0)]["trials"] == 4 and rows[("random", 2.0)]["best_value"] == 3.0
    assert rows[("tune", 2.0)]["trials"] == 4 and rows[("tune", 2.0)]["best_value"] == 0.8
    assert rows[("tune", 1.0)]["trials"] == 2 and rows[("tune", 1.0)]["best_value"] == 2.0  # skipped counts
    assert rows[("tune", 2.0)]["used"] == 2.0 and rows[("tune", 2.0)]["runs_used"] == 10.0
    assert report.by == "execution" and "budget (s)" in report.to_markdown()
    default = hg.compare({"random": random_result, "tune": tune_result}, by="execution")
    assert default.budgets == (2.5 / 8, 2.5 / 4, 2.5 / 2, 2.5)  # fractions of the most any spent executing
    with pytest.raises(ValueError, match=r"'execution' \(equal execution time, compilation left out\)"):
        random_result.spent("compile")


@pytest.mark.parametrize("budget", [NAN, "10", -1.0, 0, None])
def test_best_within_refuses_a_budget_that_is_not_a_positive_number(random_result, budget):
    with pytest.raises(ValueError, match=r"best_within\(budget=.*positive budget in training-run equivalents"):
        random_result.best_within(budget)
    with pytest.raises(ValueError, match=r"positive budget in seconds"):
        random_result.best_within(budget, by="seconds")


def test_set_up_paid_between_trials_is_charged_there(random_result):
    """`info["setup_seconds_at"]` places part of the set-up before a later trial (a continued search's
    compilation): the trials before it keep their seconds, the total is unchanged."""
    placed = dataclasses.replace(random_result, compile_seconds=2.0 + 5.0,
                                 info={**random_result.info, "setup_seconds_at": [[3, 5.0]]})
    plain = random_result.spent("seconds")
    np.testing.assert_allclose(placed.spent("seconds"), np.concatenate([plain[:3], plain[3:] + 5.0]))
    assert placed.best_within(plain[2], by="seconds") == random_result.best_within(plain[2], by="seconds")
    assert hg.Result.from_dict(json.loads(json.dumps(placed.to_dict()))).spent("seconds").tolist() == \
        placed.spent("seconds").tolist()


# -- degenerate comparisons, totals and names -------------------------------------------------------
def test_compare_of_results_that_spent_nothing_says_so_and_asks_for_budgets(random_result):
    """A study killed before its first chunk loads with no trials, and trials that took 0 s spend
    nothing by "execution": the default budgets (fractions of the largest spent) were all 0 and the
    user got best_within(budget=0.0)'s error about a budget they never gave."""
    empty = hg.Result("random", (), RUN_FLOPS, 0.0)
    with pytest.raises(ValueError, match=r"compare: every result spent nothing by 'runs' .*no trials.*budgets="):
        hg.compare({"random": empty, "grid": empty})
    instant = dataclasses.replace(random_result, trials=tuple(
        dataclasses.replace(t, seconds=0.0) for t in random_result.trials))
    with pytest.raises(ValueError, match=r"spent nothing by 'execution'.*budgets="):
        hg.compare({"random": instant}, by="execution")
    # given budgets, the same results line up as rows with no pick
    rows = hg.compare({"random": empty}, budgets=[1, 2]).rows
    assert [(r["trials"], r["best_value"]) for r in rows] == [(0, None), (0, None)]


def test_compare_totals_add_up_to_the_wall_time_by_seconds(random_result):
    """The rows' "used (s)" by="seconds" are `Result.spent("seconds")`: compilation, set-up and the
    trials' seconds. The totals left set-up out, so they did not add up to the last row."""
    setup = dataclasses.replace(random_result, info={**random_result.info, "setup_seconds": 7.0})
    report = hg.compare({"random": setup}, budgets=[100.0], by="seconds")
    totals = json.loads(strict_json(report.to_dict()))["totals"]["random"]
    assert totals["setup_seconds"] == 7.0
    assert totals["seconds"] + totals["compile_seconds"] + totals["setup_seconds"] == report.rows[-1]["used"]
    header, _, row = report.to_markdown().split("\n\n")[1].splitlines()
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | ")))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert (cells["run s"], cells["compile s"], cells["setup s"]) == ("2.5", "2.0", "7.0")
    assert _amount_used(report) == "11.5"


def _amount_used(report):
    """The "used (s)" cell of the first table's last row."""
    first = report.to_markdown().split("\n\n")[0].splitlines()
    return first[-1].strip("|").split(" | ")[2].strip()


@pytest.mark.parametrize("name", [1, None, ("a",)])
def test_compare_refuses_names_that_are_not_strings(random_result, name):
    """compare({1: r}) was accepted and failed only at to_markdown (joining an int)."""
    kind = re.escape(f"({type(name).__name__!r})")
    with pytest.raises(ValueError, match=r"compare: results' names must be strings.*got .* " + kind):
        hg.compare({name: random_result})


def test_to_dataframe_keeps_tuner_an_integer_column(random_result, tune_result):
    """A population opened by a warm-up has search trials (tuner None) before tuner steps: the
    column was float64 (NaN, 0.0, 1.0); it is pandas' nullable Int64, missing for search trials."""
    pd = pytest.importorskip("pandas")
    trials = (*random_result.trials[:2], *(dataclasses.replace(t, number=2 + i, tuner=i % 2)
                                           for i, t in enumerate(tune_result.trials)))
    frame = hg.Result("tune", trials, RUN_FLOPS, 0.0).to_dataframe()
    assert frame["tuner"].dtype == pd.Int64Dtype()
    assert frame["tuner"].isna().tolist() == [True, True, False, False, False, False]
    assert frame["tuner"][2:].tolist() == [0, 1, 0, 1]
    assert random_result.to_dataframe()["tuner"].dtype == pd.Int64Dtype()  # search trials alone too


@pytest.mark.parametrize("test", [INF, NAN])
def test_a_picks_non_finite_test_loss_is_shown_not_taken_for_no_pick(test):
    """A pick whose test loss diverged printed "-", the mark of a budget with no pick: the
    divergence on the test split was hidden. The table and the summary now show inf or nan;
    "-" stays for no pick (JSON still writes null: it has no inf)."""
    result = hg.Result("random", (make_trial(0, 1.0, test=test), make_trial(1, 2.0)), RUN_FLOPS, compile_seconds=0.0)
    table = hg.compare({"random": result}, budgets=[0.5, 1.0]).to_markdown()
    no_pick, pick = table.split("\n\n")[0].splitlines()[2:]
    assert no_pick.split(" | ")[4:6] == ["-", "-"]
    assert pick.split(" | ")[4:6] == ["1", f"{test}"]
    assert result.summary().endswith(f"best val 1, test {test}")


def test_records_appended_after_a_line_cut_short_are_each_readable(tmp_path):
    # A kill or a full disk in the middle of a record left a line with no end; the next call's first record was glued
    # onto it, so that trial never had a readable record. The cut line is ended first now.
    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps({"strategy": "random", "number": 0}) + "\n" + '{"strategy": "random", "nu')
    recorder = TrialRecorder("random", path, None, total=2)
    try:
        for trial in (make_trial(0, 2.0), make_trial(1, 1.0)):
            recorder.add(trial)
    finally:
        recorder.close()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"strategy": "random", "nu'  # the fragment stays as it was
    assert [json.loads(line)["value"] for line in lines[2:]] == [2.0, 1.0]


# -- progress lines -------------------------------------------------------------------------------
def _line_before_fold(strategy, trials, total):
    """A progress line as `TrialRecorder.report` printed it when it re-read every trial so far (its
    elapsed seconds left off): the reference the running totals must reproduce exactly."""
    values = [t.value for t in trials if t.state != FAIL and math.isfinite(t.value)]
    best = min(values) if values else None
    runs = sum(t.runs for t in trials)
    return f"[{strategy}] {len(trials)}/{total}  best val {'-' if best is None else f'{best:.4g}'}  {runs:.1f} runs  "


class _StoredStudy:
    """What `TrialRecorder` uses of a study's writer: the trials it already holds, and commits."""

    path, identity, study, resumed = None, None, "s", False

    def __init__(self, done):
        self.done, self.added = done, []

    def add(self, trial):
        self.added.append(trial)

    def commit(self, checkpoint=None):
        pass


def test_progress_lines_are_the_running_totals_of_every_trial_however_collected():
    """The lines print what a min and a sum over every trial so far printed, for trials added, resumed
    from a study, or put into `trials` directly (as tune does with its warm-up and a resumed study's
    trials): failed, NaN, skipped, a lower value marked failed, -0.0 and a tie included."""
    stored = {n: make_trial(n, v, runs=0.75) for n, v in ((4, 0.25), (5, 3.0))}
    lines = []
    recorder = TrialRecorder("tune[Reverse()]", None, lines.append, total=12, sink=_StoredStudy(stored))
    recorder.report()  # no trial yet: "-" and 0.0 runs
    recorder.trials.extend([make_trial(0, 2.0, runs=0.1), make_trial(1, NAN)])
    recorder.report()
    recorder.add(make_trial(2, 0.5, state=FAIL))
    recorder.add(make_trial(3, 1.5, runs=2.5, state=SKIPPED))
    recorder.report()
    assert recorder.resume([4, 5])
    recorder.report()
    for trial in (make_trial(6, INF), make_trial(7, 0.25, runs=1 / 3), make_trial(8, -0.0), make_trial(9, 0.0)):
        recorder.add(trial)
        recorder.report()
    reports = [2, 4, 6, 7, 8, 9, 10]
    expected = [_line_before_fold("tune[Reverse()]", [], 12)] + [
        _line_before_fold("tune[Reverse()]", recorder.trials[:n], 12) for n in reports]
    assert [line.rsplit("  ", 1)[0] + "  " for line in lines] == expected
    assert all(re.fullmatch(r"\d+\.\ds", line.rsplit("  ", 1)[1]) for line in lines)
    assert "best val 0.25" in lines[4] and "best val -0 " in lines[-2] and "best val -0 " in lines[-1]


def test_a_progress_line_reads_only_the_trials_since_the_last_one(monkeypatch):
    """Each line re-read every trial so far (their values and `runs`), so a long tune or a search in
    small chunks with `progress` on was quadratic in its trials; each trial is now read once."""
    reads = []
    runs = hg.Trial.runs

    def counted(trial):
        reads.append(trial.number)
        return runs.fget(trial)

    monkeypatch.setattr(hg.Trial, "runs", property(counted))
    lines = []
    recorder = TrialRecorder("random", None, lines.append, total=300)
    for number in range(300):
        recorder.add(make_trial(number, 1.0 + number % 7))
        recorder.report()
    assert len(lines) == 300 and "300/300  best val 1  300.0 runs" in lines[-1]
    assert sorted(reads) == list(range(300))  # 45150 reads when each line re-read every trial


# -- which trials a pick ranges over: tune(resample_key=True) ------------------------------------
def resampled(trials, final_trials=(4,), **info):
    """A tune(resample_key=True) result: the steps' trials were scored on fold_in(key, step), the
    warm-up's (tuner None) and the final iterates' (`final_trials`) on the call's key."""
    info = {"resample_key": True, "final_trials": list(final_trials), **info}
    return hg.Result("tune[Reverse()]", tuple(trials), RUN_FLOPS, compile_seconds=0.0, info=info)


def on_tuner(trial, tuner=0):
    return dataclasses.replace(trial, tuner=tuner)


def test_a_resample_key_tunes_pick_is_among_the_trials_scored_on_its_key():
    """best_* and compare took the minimum over every trial, mixing values taken on the steps' own keys
    (biased low, not reproduced by objective(best_hparams, key)) with the warm-up's and the final
    iterate's, taken on key like a search's: the steps' trials (1 and 2 here) are never picked now."""
    trials = [make_trial(0, 3.0), on_tuner(make_trial(1, 0.1, runs=2.0)), on_tuner(make_trial(2, 0.2, runs=2.0)),
              make_trial(3, 2.5), on_tuner(make_trial(4, 1.0, runs=2.0, test=1.25))]
    result = resampled(trials)
    assert result.best_trial.number == 4 and result.best_value == 1.0 and result.best_test_value == 1.25
    assert [result.best_within(b).number for b in (1.0, 5.0, 6.0, 8.0)] == [0, 0, 3, 4]
    np.testing.assert_array_equal(result.curve()[1], [3.0, 3.0, 3.0, 2.5, 1.0])
    rows = hg.compare({"tuned": result}, budgets=[5.0, 8.0]).rows
    assert [row["best_value"] for row in rows] == [3.0, 1.0]
    assert rows[1]["test_scores"]["test_loss"] == 1.25 and rows[1]["hparams"] is trials[4].hparams
    assert result.to_dict()["best"]["number"] == 4 and result.summary().endswith("best val 1, test 1.25")
    back = hg.Result.from_dict(json.loads(strict_json(result.to_dict())))
    assert back.best_trial.number == 4 and back.best_within(5.0).number == 0


def test_before_a_resample_key_tunes_first_trial_on_its_key_there_is_no_pick():
    """No warm-up: the final iterate (trial 2) is the only trial on key; a budget before it has no pick,
    as a budget before any finished trial, and the row says so; a failed final iterate leaves none."""
    trials = [on_tuner(make_trial(0, 0.5)), on_tuner(make_trial(1, 0.25)), on_tuner(make_trial(2, 0.75))]
    result = resampled(trials, final_trials=[2])
    assert result.best_trial.number == 2 and result.best_within(2.0) is None and result.best_within(3.0).number == 2
    np.testing.assert_array_equal(result.curve()[1], [INF, INF, 0.75])
    early, late = hg.compare({"tuned": result}, budgets=[2.0, 3.0]).rows
    assert early["best_value"] is None and early["hparams"] is None and early["test_scores"] == {}
    assert early["trials"] == 2 and late["best_value"] == 0.75
    failed = resampled([*trials[:2], on_tuner(make_trial(2, NAN))], final_trials=[2])
    assert failed.best_trial is None and failed.best_value == INF and failed.best_within(10.0) is None


def test_a_halved_tuner_and_a_live_tuners_steps_are_never_picked_in_a_resample_key_population():
    """Two tuners after a warm-up of one trial, tuner 1 halved away after step 0: only the warm-up and
    tuner 0's final iterate (trial 5) were scored on key."""
    trials = [make_trial(0, 4.0), on_tuner(make_trial(1, 0.1)), on_tuner(make_trial(2, 0.2), 1),
              on_tuner(make_trial(3, 0.3)), on_tuner(make_trial(4, 0.4)), on_tuner(make_trial(5, 2.0))]
    result = resampled(trials, final_trials=[5])
    assert result.best_trial.number == 5 and result.best_within(5.0).number == 0


@pytest.mark.parametrize("info", [{"resample_key": True}, {"resample_key": False, "final_trials": [4]}, {}])
def test_results_that_do_not_say_their_steps_were_resampled_pick_among_every_trial(info):
    """An older resample_key result (no final_trials), a fixed-key tune and a search keep the rule for
    every trial: all their trials count."""
    trials = (make_trial(0, 3.0), on_tuner(make_trial(1, 0.1)), on_tuner(make_trial(4, 1.0)))
    result = hg.Result("tune[Reverse()]", trials, RUN_FLOPS, 0.0, info)
    assert result.best_trial.number == 1 and result.best_within(2.0).number == 1
    np.testing.assert_array_equal(result.curve()[1], [3.0, 0.1, 0.1])


def test_to_optuna_refuses_a_path_for_a_storage_url_naming_the_url(tmp_path):
    # a plain path, as storage= takes elsewhere, failed deep in SQLAlchemy ("Could not parse SQLAlchemy URL")
    pytest.importorskip("optuna")
    result = hg.Result(strategy="random", trials=[], run_flops=1.0, compile_seconds=0.0)
    for path in ("optuna.db", tmp_path / "optuna.db"):
        with pytest.raises(ValueError, match=r"storage_url=.*is a path, not an Optuna storage URL; give 'sqlite:///"):
            result.to_optuna(path, "s")
    assert not (tmp_path / "optuna.db").exists()


def _pick_with(option):
    trial = hg.Trial(number=0, hparams={"opt": option, "lr": np.float32(0.1)}, value=1.0,
                  scores={"val_loss": 1.0, "test_loss": 2.0}, state="complete", flops=10.0, seconds=0.1, run_flops=10.0)
    return hg.Result("random", [trial], 10.0, 0.0)


def _a_function_option():
    pass


def test_comparison_to_dict_writes_structural_options_as_result_to_dict_does():
    # a function option made json.dumps(Comparison.to_dict()) raise TypeError (the CLI's results.json,
    # after the whole run), a tuple came out as a list and None as null, like a NaN
    for option in (_a_function_option, ("mom", 0.5), None, "sgd"):
        written = json.loads(json.dumps(hg.compare({"r": _pick_with(option)}).to_dict()))["rows"][-1]["hparams"]
        assert written["opt"] == _pick_with(option).to_dict()["trials"][0]["hparams"]["opt"]
        assert written["lr"] == pytest.approx(0.1)
