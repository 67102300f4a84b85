"""Metric names that would overwrite, or be read as, another score are refused; the names in
results' markdown tables and Optuna exports keep each trial's own identity."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad._store_codec import decode_value, describe_space, encode_value
from hypergrad.results import COMPLETE, Result, Trial


def _problem(metrics, **kwargs):
    p = hg.problems.ridge(num_examples=16, num_features=3, noise=0.5, seed=0)
    return hg.Problem(init=p.init, train_loss=p.train_loss, val_loss=p.val_loss, train_data=p.train_data,
                      val_data=p.val_data, test_data=p.test_data, metrics=metrics, **kwargs)


def _const(c):
    return lambda params, batch: c + 0.0 * jnp.sum(params["w"])


@pytest.mark.parametrize("name, match", [
    ("loss", r"Problem\(metrics=\{'loss': ...\}\).*'loss' is reserved.*val_loss.*rename it"),
    (1, r"Problem\(metrics=\{1: ...\}\).*non-empty string.*got int 1; rename it, e.g. '1'"),
    ("", r"non-empty string.*rename it"),
    (("a", "b"), r"non-empty string.*got tuple"),
    ("loss_std", r"Problem\(metrics=\{'loss_std': ...\}\).*suffix '_std' is reserved.*rename it, e.g. 'loss-std'"),
    ("loss_fold12", r"suffix '_fold12' is reserved.*val_<score>_fold<i>.*rename it, e.g. 'loss-fold12'"),
])
def test_metric_names_that_collide_with_scores_are_refused(name, match):
    # a metric "loss" replaced val_loss (the value every search tunes) and test_loss; {1: f, "1": g}
    # both wrote val_1; "loss_std" overwrote the std over folds under cv
    with pytest.raises(ValueError, match=match):
        _problem({name: _const(123.0)})


@pytest.mark.parametrize("names", [("acc", "acc_fold0"), ("acc_std", "acc")])
def test_a_suffix_on_another_metrics_name_is_refused(names):
    # "acc_fold0" beside a metric "acc" would be read as fold 0 of acc, in either order of the dict
    with pytest.raises(ValueError, match=r"suffix '_(fold0|std)' is reserved for the score 'acc'.*rename it, e.g. "
                                         r"'acc-(fold0|std)'"):
        _problem({n: _const(1.0) for n in names})


def test_metric_names_near_the_reserved_ones_are_accepted():
    # a reserved suffix on a stem that is no score's collides with nothing ("pred_std" was refused for a while)
    names = ["accuracy", "loss_metric", "std", "folded_acc", "fold0", "x_fold", "x_stdev", "x_fold_a", "pred_std",
             "acc_fold0"]
    problem = _problem({n: _const(float(i)) for i, n in enumerate(names)})
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    scores = objective.evaluate({"lr": jnp.asarray(0.01)}, jax.random.PRNGKey(0))
    for i, n in enumerate(names):
        assert float(scores[f"val_{n}"]) == i and float(scores[f"test_{n}"]) == i
    assert float(scores["val_loss"]) != 0.0 and float(scores["val_loss"]) not in range(len(names))


def _result(scores_per_trial):
    trials = tuple(Trial(number=i, hparams={"lr": np.asarray(0.1 * (i + 1))}, value=s["val_loss"], scores=s,
                         state=COMPLETE, flops=1.0, seconds=1.0, run_flops=1.0)
                   for i, s in enumerate(scores_per_trial))
    return Result("random", trials, 1.0, 0.0)


def test_cv_results_does_not_take_a_metrics_suffixed_names_for_folds(tmp_path):
    # a Result made (and saved) before Problem refused these names, without cv: a metric "loss_std"
    # (a spread of per-example errors) and one "loss_fold0" were read as the std over folds and fold 0
    old = _result([{"val_loss": 1.2, "val_loss_std": 1.53, "val_loss_fold0": -99.0},
                   {"val_loss": 1.4, "val_loss_std": 1.75, "val_loss_fold0": -99.0}])
    old.save(tmp_path / "old.json")
    for result in (old, Result.load(tmp_path / "old.json")):
        out = result.cv_results("loss")
        assert not any(name.startswith("split") for name in out)
        np.testing.assert_array_equal(out["std_test_score"], [0.0, 0.0])
        np.testing.assert_allclose(out["mean_test_score"], [-1.2, -1.4])
    only_std = _result([{"val_loss": 1.2, "val_loss_std": 1.53}]).cv_results("loss")
    assert only_std["std_test_score"][0] == 0.0
    # scores cross-validation wrote are still read as folds (float32 aggregates; a failed trial)
    folds = np.float32([0.3, 0.5, 0.4])
    cv = _result([{"val_loss": float(folds.mean()), "val_loss_std": float(folds.std()),
                   **{f"val_loss_fold{i}": float(v) for i, v in enumerate(folds)}},
                  {"val_loss": float("nan"), "val_loss_std": float("nan"),
                   **{f"val_loss_fold{i}": float("nan") for i in range(3)}}]).cv_results("loss")
    np.testing.assert_allclose(cv["split2_test_score"], [-0.4, np.nan], rtol=1e-6)
    np.testing.assert_allclose(cv["std_test_score"][0], folds.std(), rtol=1e-6)


def test_cv_results_offers_a_metric_whose_name_only_contains_fold():
    result = _result([{"val_loss": 1.0, "val_x_fold_a": 0.5}])  # a name Problem accepts
    np.testing.assert_array_equal(result.cv_results("x_fold_a")["mean_test_score"], [0.5])
    # a metric with a reserved suffix on a stem no score has ("pred_std") is accepted by Problem and offered
    result = _result([{"val_loss": 1.0, "val_pred_std": 0.25, "val_loss_std": 0.0}])
    np.testing.assert_array_equal(result.cv_results("pred_std")["mean_test_score"], [0.25])
    with pytest.raises(ValueError, match=r"the trials report \['loss', 'pred_std'\]"):
        result.cv_results("loss_std")


def _choice_result(values, space=None):
    trials = tuple(Trial(number=i, hparams={"act": v}, value=float(i), scores={"val_loss": float(i)},
                         state=COMPLETE, flops=1.0, seconds=1.0, run_flops=1.0) for i, v in enumerate(values))
    info = {} if space is None else {"space": describe_space(space)}
    return Result("random", trials, 1.0, 0.0, info=info)


def test_to_optuna_tells_apart_options_that_share_a_label(tmp_path):
    pytest.importorskip("optuna")
    # relu and relu6 are both "<jax._src.custom_derivatives.custom_jvp object>": every trial was
    # exported as option 0; so were the tuple (1, 2) and the string "(1, 2)"
    url = f"sqlite:///{tmp_path / 'o.db'}"
    for i, options in enumerate(([jax.nn.relu, jax.nn.relu6], [(1, 2), "(1, 2)"])):
        space = hg.Space({"act": hg.Choice(options)})
        result = _choice_result([options[j] for j in (1, 0, 1)])
        study = result.to_optuna(url, f"given{i}", space=space)
        assert [t.params["act"][:2] for t in study.trials] == ["1:", "0:", "1:"]
    # the space as a stored study describes it (labels): the tuple and the string still differ by type
    space = hg.Space({"act": hg.Choice([(1, 2), "(1, 2)"])})
    result = _choice_result([(1, 2), "(1, 2)"], space)
    result.save(tmp_path / "r.json")
    for k, r in enumerate((result, Result.load(tmp_path / "r.json"))):
        study = r.to_optuna(url, f"described{k}")
        assert [t.params["act"] for t in study.trials] == ["0:(1, 2)", "1:(1, 2)"]
    # functions known only by their shared label cannot be told apart: refused, not all option 0
    space = hg.Space({"act": hg.Choice([jax.nn.relu, jax.nn.relu6])})
    with pytest.raises(ValueError, match=r"to_optuna: '<jax.*custom_jvp object>' is the label of the "
                                         r"options \['0:.*', '1:.*'\].*not one loaded from a file.*with space="):
        _choice_result([jax.nn.relu6], space).to_optuna(url, "ambiguous")
    # a label held by one option only still finds it (a loaded Result's function option)
    space = hg.Space({"act": hg.Choice([jax.nn.relu, jnp.tanh])})
    study = _choice_result([_label_of(jnp.tanh)], space).to_optuna(url, "loaded")
    assert study.trials[0].params["act"] == _label_of(jnp.tanh)


def test_to_optuna_without_a_space_refuses_different_values_that_share_a_label(tmp_path):
    pytest.importorskip("optuna")
    # with no space (a plain random_search Result has none) the tuple (1, 2) and the string "(1, 2)", or
    # relu and relu6, were exported as one category: every trial the same option
    url = f"sqlite:///{tmp_path / 'o.db'}"
    for i, values in enumerate(([(1, 2), "(1, 2)", (1, 2)], [jax.nn.relu, jax.nn.relu6])):
        with pytest.raises(ValueError, match=r"to_optuna: .* is the label of two different values of 'act'.*"
                                             r"with space="):
            _choice_result(values).to_optuna(url, f"merged{i}")
    study = _choice_result([(1, 2), (1, 2), jax.nn.relu, jax.nn.relu]).to_optuna(url, "same")  # equal values: fine
    assert len({t.params["act"] for t in study.trials}) == 2


def test_to_optuna_exports_a_loaded_results_copies_of_one_option_as_one(tmp_path):
    pytest.importorskip("optuna")
    # a loaded Result holds each trial's own decoded copy of an option; 53e07ff took two copies of
    # {'s': array} or (nan,) for different values sharing a label and refused the export, and a
    # tuple holding an array and a number crashed in numpy (np.ndim of a ragged tuple)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    cases = [[{"s": np.ones(2)}, {"s": np.zeros(2)}, {"s": np.ones(2)}], [(float("nan"),), (1.0,), (float("nan"),)],
             [(np.array([1.0, 2.0]), 3), (np.array([1.0, 2.0]), 3)]]
    for i, values in enumerate(cases):
        _choice_result(values).save(tmp_path / f"r{i}.json")
        study = Result.load(tmp_path / f"r{i}.json").to_optuna(url, f"loaded{i}")
        labels = [t.params["act"] for t in study.trials]
        assert labels == [_label_of(v) for v in values] and labels[0] == labels[-1], labels


def _label_of(value):
    return str(decode_value(encode_value(value)))


def _cells(line):
    """A markdown table row's cells as GitHub splits it: at each "|" not escaped by a backslash."""
    cells, cell, i = [], "", 1
    while i < len(line) - 1:
        if line[i] == "\\":
            cell, i = cell + line[i:i + 2], i + 2
        elif line[i] == "|":
            cells, cell, i = cells + [cell.strip()], "", i + 1
        else:
            cell, i = cell + line[i], i + 1
    return cells + [cell.strip()]


def test_markdown_tables_keep_labels_and_metric_names_in_their_cells():
    # "a|b" added a cell and "line\nbreak" split a row of Comparison.to_markdown
    scores = {"val_loss": 1.0, "test_loss": 2.0, "test_x|y": 0.5, "test_a\\|b": 0.25, "test_n\nm": 0.125}
    result = _result([scores, {**scores, "val_loss": 0.5}])
    labels = ["a|b", "line\nbreak", "back\\|slash", "win\r\nline"]
    text = hg.compare({label: result for label in labels}).to_markdown()
    header, *rows = text.split("\n\n")[0].split("\n")
    widths = {len(_cells(line)) for line in (header, *rows)}
    assert widths == {len(_cells(header))} and len(_cells(header)) == 6 + 3
    assert len(rows) - 1 == len(labels) * len({r["budget"] for r in hg.compare({"a": result}).rows})
    assert r"test_x\|y of pick" in header and r"test_a\\\|b of pick" in header and "test_n m of pick" in header
    totals = text.split("\n\n")[1].split("\n")
    assert [_cells(line)[0] for line in totals[2:]] == [r"a\|b", "line break", r"back\\\|slash", "win line"]
    assert {len(_cells(line)) for line in totals} == {8}
