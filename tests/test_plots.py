"""Figures of results and comparisons: files exist, are valid PNGs, and degenerate results plot."""

import dataclasses
import os

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import plots
from hypergrad.results import FAIL

pytest.importorskip("matplotlib")  # the optional `plots` extra; hypergrad.plots imports it lazily

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_STEPS = 10


def _assert_png(path):
    assert os.path.isfile(path), path
    assert os.path.getsize(path) > 1000, path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path


def _all_failed(result: hg.Result) -> hg.Result:
    """The same trials, every one diverged (what a far too large learning rate gives)."""
    trials = tuple(dataclasses.replace(t, value=float("nan"), state=FAIL,
                                       scores={k: float("nan") for k in t.scores})
                   for t in result.trials)
    return dataclasses.replace(result, trials=trials)


@pytest.fixture(scope="module")
def objective():
    problem = hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)
    return hg.Objective(problem, lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=NUM_STEPS)


@pytest.fixture(scope="module")
def results(objective):
    """Real results of the three strategies on a space with a per-step schedule."""
    key = jax.random.key(0)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(NUM_STEPS,)),
                      "weight_decay": hg.LogUniform(1e-4, 1.0)})
    return {
        "hypergradient": hg.tune(objective, space, key, steps=3),
        "random": hg.random_search(objective, space, key, num_trials=8),
        "grid": hg.grid_search(objective, space, key, points_per_axis=2),
    }


@pytest.fixture(scope="module")
def scalar_results(objective):
    """Results on a space with scalar hyperparameters only (lr is one constant rate)."""
    problem = objective.problem
    scalar = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=NUM_STEPS)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    key = jax.random.key(1)
    return {"random": hg.random_search(scalar, space, key, num_trials=4),
            "grid": hg.grid_search(scalar, space, key, points_per_axis=2)}


def test_plot_comparison_writes_pngs(results, tmp_path):
    out = tmp_path / "figures" / "nested"  # created by the call
    paths = plots.plot_comparison(hg.compare(results), out)
    assert [os.path.basename(p) for p in paths] == [
        "best_value_vs_compute.png", "learned_schedules.png", "trials.png"]
    for path in paths:
        assert os.path.dirname(path) == str(out)
        _assert_png(path)


@pytest.fixture
def drawn(monkeypatch):
    """file name -> [{line label: (x, y)} per axes], read from each figure as it is saved (the
    plot functions clear their figures after saving; matplotlib's own Figure.savefig is wrapped)."""
    from matplotlib.figure import Figure

    record, savefig = {}, Figure.savefig

    def recording_savefig(fig, fname, *args, **kwargs):
        record[os.path.basename(str(fname))] = [
            {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
             for line in ax.get_lines()} for ax in fig.axes]
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return record


def _assert_curve_drawn(axes_lines, label, result):
    """The line labelled `label` is `result.curve()`: cumulative runs against the best value so far."""
    lines = [lines[label] for lines in axes_lines if label in lines]
    assert len(lines) == 1, (label, axes_lines)
    x, y = lines[0]
    runs, best = result.curve()
    assert np.all(np.isfinite(best)) and len(runs) == len(result.trials) > 1
    assert np.any(np.diff(best) < 0), "the best value never improves: the comparison would not see a raw-value plot"
    np.testing.assert_allclose(x, runs, rtol=1e-12)
    np.testing.assert_allclose(y, best, rtol=1e-12)


def test_plotted_curves_are_the_results_curves(results, drawn, tmp_path):
    """Read the numbers back from the figures: each strategy's step curve in best_value_vs_compute.png
    and in plot_result's curve.png is exactly `result.curve()`."""
    plots.plot_comparison(hg.compare(results), tmp_path / "comparison")
    for name, result in results.items():
        _assert_curve_drawn(drawn["best_value_vs_compute.png"], name, result)
    for name, result in results.items():
        plots.plot_result(result, tmp_path / "single", name=name)
        _assert_curve_drawn(drawn[f"{name}_curve.png"], name, result)


@pytest.mark.parametrize("by,axis,title", [
    ("seconds", "wall time (s, compilation included)", "best validation loss at equal wall time"),
    ("execution", "execution time (s, compilation left out)", "best validation loss at equal execution time")])
def test_a_comparison_by_seconds_is_drawn_against_seconds(results, drawn, tmp_path, by, axis, title):
    """`hg.compare(by="seconds")`'s budgets are seconds: its curves and trials are drawn against
    each result's `spent("seconds")` (compilation first), on an axis saying so. They were drawn
    against training-run equivalents, with the seconds' budget lines among them. The same by
    execution seconds alone (`by="execution"`)."""
    import matplotlib.figure

    labels = {}
    savefig = matplotlib.figure.Figure.savefig

    def keep_labels(fig, fname, *args, **kwargs):
        labels[os.path.basename(str(fname))] = [(ax.get_xlabel(), ax.get_title()) for ax in fig.axes]
        return savefig(fig, fname, *args, **kwargs)

    comparison = hg.compare(results, by=by)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", keep_labels)
        plots.plot_comparison(comparison, tmp_path)
    for name, result in results.items():
        lines = [lines[name] for lines in drawn["best_value_vs_compute.png"] if name in lines]
        x, y = lines[0]
        np.testing.assert_allclose(x, result.spent(by), rtol=1e-12)
        np.testing.assert_allclose(y, result.curve()[1], rtol=1e-12)
    # the dotted budgets (the unnamed vertical lines) stand at the comparison's seconds
    budget_lines = [x for lines in drawn["best_value_vs_compute.png"] for label, (x, _) in lines.items()
                    if label == "budgets" or label.startswith("_")]
    assert sorted(float(x[0]) for x in budget_lines) == sorted(comparison.budgets)
    assert labels["best_value_vs_compute.png"][0] == (axis, title)
    assert labels["trials.png"][0][0] == f"cumulative {axis}"


def test_comparison_plot_method_delegates(results, tmp_path):
    paths = hg.compare(results, budgets=[2.0, 4.0]).plot(str(tmp_path))
    assert len(paths) == 3
    for path in paths:
        _assert_png(path)


def test_scalar_only_space_plots_picked_hparams(scalar_results, tmp_path):
    paths = plots.plot_comparison(hg.compare(scalar_results), tmp_path)
    names = [os.path.basename(p) for p in paths]
    assert names == ["best_value_vs_compute.png", "picked_hparams.png", "trials.png"]
    assert not (tmp_path / "learned_schedules.png").exists()
    for path in paths:
        _assert_png(path)


def test_plot_result(results, tmp_path):
    paths = plots.plot_result(results["hypergradient"], tmp_path)
    # the strategy label, safe for a file name, and 8 hex digits of its hash (it is not its own prefix)
    prefix = f"tune_Reverse_checkpoint_every_None_store_steps-{plots._slug(results['hypergradient'].strategy)[-8:]}_"
    assert [os.path.basename(p) for p in paths] == [f"{prefix}curve.png", f"{prefix}learned_schedules.png"]
    for path in paths:
        _assert_png(path)
    paths = plots.plot_result(results["random"], tmp_path, name="my random")
    assert [os.path.basename(p) for p in paths] == ["my_random-86a89020_curve.png",
                                                    "my_random-86a89020_learned_schedules.png"]
    for path in paths:
        _assert_png(path)


def test_all_trials_failed(results, scalar_results, tmp_path):
    failed = _all_failed(results["random"])
    assert failed.best_trial is None and np.all(np.isinf(failed.curve()[1]))
    mixed = {"hypergradient": results["hypergradient"], "random (diverged)": failed}
    for path in plots.plot_comparison(hg.compare(mixed), tmp_path / "mixed"):
        _assert_png(path)
    only_failed = {"random": failed}
    for path in plots.plot_comparison(hg.compare(only_failed), tmp_path / "only_failed"):
        _assert_png(path)
    for path in plots.plot_result(failed, tmp_path / "single"):
        _assert_png(path)
    scalar_failed = {"random": _all_failed(scalar_results["random"])}
    for path in plots.plot_comparison(hg.compare(scalar_failed), tmp_path / "scalar_failed"):
        _assert_png(path)


def test_empty_result_plots(tmp_path):
    empty = hg.Result("empty", (), run_flops=1.0, compile_seconds=0.0)
    paths = plots.plot_result(empty, tmp_path)
    assert [os.path.basename(p) for p in paths] == ["empty_curve.png", "empty_picked_hparams.png"]
    for path in paths:
        _assert_png(path)


def test_rejects_wrong_input(results, tmp_path):
    with pytest.raises(ValueError, match="hg.compare"):
        plots.plot_comparison(results, tmp_path)
    with pytest.raises(ValueError, match="Result"):
        plots.plot_result(hg.compare(results), tmp_path)


def test_missing_matplotlib_message(monkeypatch, results, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'hypergrad\[plots\]'"):
        plots.plot_comparison(hg.compare(results), tmp_path)


def _weights_result(weights) -> hg.Result:
    trial = hg.Trial(number=0, hparams={"example_weight": np.asarray(weights)}, value=0.5,
                     scores={"val_loss": 0.5}, state="complete", flops=1.0, seconds=0.1, run_flops=1.0)
    return hg.Result("x", (trial,), 1.0, 0.0)


def test_example_weights_histograms_count_clean_and_corrupted_picks(monkeypatch, tmp_path):
    """Read the bars back: per strategy, the clean and the corrupted histograms hold exactly those
    examples' picked weights; a result without weights gets no panel, and none at all gives None."""
    from matplotlib.figure import Figure

    corrupted = np.arange(12) % 3 == 0
    weights = np.where(corrupted, 0.1, 0.8) + np.linspace(0.0, 0.05, 12)
    results = {"hypergradient": _weights_result(weights), "random": _weights_result(0.4),
               "no weights": dataclasses.replace(_weights_result(0.4), trials=())}
    record, savefig = {}, Figure.savefig

    def recording_savefig(fig, fname, *args, **kwargs):
        record["bars"] = [(ax.get_title(), list(zip([t.get_text() for t in ax.get_legend().get_texts()],
                                                    [[(p.get_x(), p.get_height()) for p in c.patches]
                                                     for c in ax.containers]))) for ax in fig.axes]
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    path = plots.plot_example_weights(results, corrupted, tmp_path)
    assert os.path.basename(path) == "example_weights.png"
    _assert_png(path)
    titles = [title for title, _ in record["bars"]]
    assert [t.split(" (")[0] for t in titles] == ["hypergradient", "random"]
    for (title, containers), picked in zip(record["bars"], (weights, np.full(12, 0.4))):
        (clean_label, clean), (dirty_label, dirty) = containers
        assert clean_label == "clean (8)" and dirty_label == "corrupted (4)"
        assert sum(h for _, h in clean) == 8 and sum(h for _, h in dirty) == 4
        # every bar holds the examples whose weight falls in it
        left = [x for x, _ in clean] + [clean[-1][0] + (clean[1][0] - clean[0][0])]
        expected_clean, _ = np.histogram(picked[~corrupted], bins=left)
        np.testing.assert_array_equal([h for _, h in clean], expected_clean)
    assert plots.plot_example_weights({"random": results["no weights"]}, corrupted, tmp_path / "none") is None
    with pytest.raises(ValueError, match=r"corrupted has shape \(13,\) but hypergradient's picked example_weight has"):
        plots.plot_example_weights(results, np.zeros(13, bool), tmp_path / "wrong")  # was numpy's broadcast error


@pytest.fixture
def x_labels(monkeypatch):
    """file name -> [the x axis's tick labels, major and minor, per axes], read as each figure is saved."""
    from matplotlib.figure import Figure

    record, savefig = {}, Figure.savefig

    def recording_savefig(fig, fname, *args, **kwargs):
        fig.canvas.draw()
        record[os.path.basename(str(fname))] = [
            [t.get_text() for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)]
            for ax in fig.axes]
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return record


def test_log_x_axes_are_labelled_plainly(results, x_labels, tmp_path):
    """Log x axes carry plain numbers (0.3, 2, 10), as the y axes do: matplotlib's own minor labels
    (3x10^-1, 4x10^-1) ran into each other along an x axis."""
    plots.plot_comparison(hg.compare(results), tmp_path)
    labels = [text for axes in x_labels["best_value_vs_compute.png"] for text in axes if text]
    assert labels and not any("times" in text or "^" in text for text in labels), labels


def test_example_weights_takes_a_comparison_and_refuses_other_results(results, tmp_path):
    """The Report (what plot_comparison takes) gave AttributeError: 'Report' object has no attribute
    'items'; a list of Results the same. A comparison is read through its results; anything else that
    is not a dict of name -> Result is refused by name."""
    corrupted = np.zeros(3, bool)
    weighted = {"a": _weights_result(np.array([0.1, 0.2, 0.3]))}
    report = hg.compare(weighted)
    assert os.path.basename(plots.plot_example_weights(report, corrupted, tmp_path)) == "example_weights.png"
    for bad in (list(results.values()), {"a": [1.0]}, {1: weighted["a"]}, None):
        with pytest.raises(ValueError, match=r"plot_example_weights\(results=.*\): give a dict of name -> hg Result"):
            plots.plot_example_weights(bad, corrupted, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_plot_result_refuses_a_result_of_unknown_cost(results, tmp_path):
    """run_flops 0 (a JSON that lost it) gave empty panels that said "no finite trial yet" and "no
    trials" beside trials that finished; compare refuses it, and so does plot_result now."""
    result = results["random"]
    for run_flops in (0.0, float("nan")):
        lost = dataclasses.replace(result, run_flops=run_flops, trials=tuple(
            dataclasses.replace(t, run_flops=run_flops) for t in result.trials))
        with pytest.raises(ValueError, match=r"plot_result: the result has a non-finite cost by 'runs'"):
            plots.plot_result(lost, tmp_path / "lost")
    assert not (tmp_path / "lost").exists()


@pytest.mark.parametrize("name", [5, b"x", ("a",)])
def test_plot_result_refuses_a_name_that_is_not_a_string(results, tmp_path, name):
    with pytest.raises(ValueError, match=r"plot_result\(name=.*\): give a string"):
        plots.plot_result(results["random"], tmp_path / "named", name=name)
    assert not (tmp_path / "named").exists()
