"""Metric names that would overwrite, or be read as, another score are refused; the names in
results' markdown tables and Optuna exports keep each trial's own identity."""

import jax
import jax.numpy as jnp
import optax
import pytest

import hypergrad as hg


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
    ("acc_fold0", r"suffix '_fold0' is reserved.*val_<score>_fold<i>.*rename it, e.g. 'acc-fold0'"),
    ("loss_fold12", r"suffix '_fold12' is reserved"),
])
def test_metric_names_that_collide_with_scores_are_refused(name, match):
    # a metric "loss" replaced val_loss (the value every search tunes) and test_loss; {1: f, "1": g}
    # both wrote val_1; "loss_std" overwrote the std over folds under cv
    with pytest.raises(ValueError, match=match):
        _problem({name: _const(123.0)})


def test_metric_names_near_the_reserved_ones_are_accepted():
    names = ["accuracy", "loss_metric", "std", "folded_acc", "fold0", "x_fold", "x_stdev", "x_fold_a"]
    problem = _problem({n: _const(float(i)) for i, n in enumerate(names)})
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    scores = objective.evaluate({"lr": jnp.asarray(0.01)}, jax.random.PRNGKey(0))
    for i, n in enumerate(names):
        assert float(scores[f"val_{n}"]) == i and float(scores[f"test_{n}"]) == i
    assert float(scores["val_loss"]) != 0.0 and float(scores["val_loss"]) not in range(len(names))
