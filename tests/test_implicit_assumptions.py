"""Implicit's assumptions made checkable (hunt H25): training must stop where the training loss's
gradient is 0, so an optimiser whose update reads the parameters (a decoupled weight decay, a
projection) is refused before compiling, while optimisers that are functions of the gradient pass;
and a diverging Neumann series returns NaN (which `tune` skips), not a huge finite number.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.implicit import _neumann_series, hparams_read_by

CG = hg.Implicit(solver="cg", maxiter=50, tol=1e-13)
HPARAMS = {"weight_decay": jnp.asarray(0.1)}

# Each stops training where the update is 0, not where the gradient is: SGDW 77% off and a projection
# of the wrong sign against Reverse and the closed form in the hunt, adamw 0.3-0.6% off.
READS_PARAMS = {
    "add_decayed_weights": lambda h: optax.chain(optax.add_decayed_weights(0.5), optax.sgd(0.5)),
    "masked_decay": lambda h: optax.chain(optax.masked(optax.add_decayed_weights(0.1), {"w": True}), optax.sgd(0.5)),
    "adamw": lambda h: optax.adamw(0.1, weight_decay=0.1),
    "keep_params_nonnegative": lambda h: optax.chain(optax.sgd(0.5), optax.keep_params_nonnegative()),
}

# Functions of the gradient (and the step, the loss value, the parameters' structure): they stop at
# gradient 0. MultiSteps steps its inner optimiser inside a lax.cond, which the dependency analysis
# now follows into each branch instead of taking every output to read every input.
GRADIENT_ONLY = {
    "sgd": lambda h: optax.sgd(0.5),
    "momentum": lambda h: optax.sgd(0.5, momentum=0.9),
    "adam": lambda h: optax.adam(0.1),
    "clip": lambda h: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5)),
    "adamw_without_decay": lambda h: optax.adamw(0.1, weight_decay=0.0),
    "multi_steps": lambda h: optax.MultiSteps(optax.sgd(0.5), 2).gradient_transformation(),
    "frozen_group": lambda h: optax.multi_transform({"train": optax.sgd(0.5), "frozen": optax.set_to_zero()},
                                                    {"w": "train"}),
}


@pytest.mark.parametrize("name", list(READS_PARAMS))
def test_an_optimizer_whose_update_reads_the_parameters_is_refused_before_compiling(ridge_problem, key, name):
    objective = hg.Objective(ridge_problem, READS_PARAMS[name], num_steps=5)
    match = (r"Implicit cannot differentiate this objective: its optimizer's update reads the parameters "
             r"themselves.*Problem\(train_loss=\.\.\.\).*hg\.Reverse\(\) or hg\.Forward\(\)")
    with pytest.raises(ValueError, match=match):  # the eager conversions of the arguments, once per process
        hg.hypergradient(objective, HPARAMS, key, method=CG)
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        hg.hypergradient(objective, HPARAMS, key, method=CG)
    with pytest.raises(ValueError, match=match):
        hg.tune(objective, hg.Space({"weight_decay": hg.LogUniform(1e-3, 1.0)}), key, method=CG, steps=2)
    assert _compile.stats.compilations == before
    hg.hypergradient(objective, HPARAMS, key, method=hg.Reverse())  # the objective itself is fine


@pytest.mark.parametrize("name", list(GRADIENT_ONLY))
def test_an_optimizer_that_reads_only_the_gradient_is_accepted(ridge_problem, name):
    CG.check(hg.Objective(ridge_problem, GRADIENT_ONLY[name], num_steps=5), HPARAMS)  # nothing raised


def test_the_refusal_would_have_been_wrong_to_skip(ridge_problem, key):
    """Why it is refused: with decoupled decay c, training ends at the ridge solution of decay
    weight_decay + c, and Reverse differentiates that; Implicit's answer (the ridge solution of
    weight_decay alone, since the decay is not in the loss) differs from it by far more than rounding."""
    c = 0.5
    decoupled = hg.Objective(ridge_problem, lambda h: optax.chain(optax.add_decayed_weights(c), optax.sgd(0.5)),
                             num_steps=300)

    def closed_form(weight_decay):
        w = hg.problems.ridge_solution(ridge_problem, weight_decay)
        return ridge_problem.val_loss({"w": w}, ridge_problem.val_data)

    _, reverse = hg.hypergradient(decoupled, HPARAMS, key, method=hg.Reverse())
    truth = jax.grad(closed_form)(HPARAMS["weight_decay"] + c)
    np.testing.assert_allclose(reverse["weight_decay"], truth, rtol=1e-6)
    plain = hg.Objective(ridge_problem, lambda h: optax.sgd(0.5), num_steps=300)
    _, implicit_plain = hg.hypergradient(plain, HPARAMS, key, method=CG)  # what Implicit solved before
    assert abs(float(implicit_plain["weight_decay"]) - float(truth)) > 0.1 * abs(float(truth))


def test_the_dependency_analysis_follows_each_branch_of_a_conditional():
    def fn(h, x):
        return jax.lax.cond(x > 0, lambda a, b: a * 2.0, lambda a, b: a + 1.0, h["a"], h["b"])

    assert hparams_read_by(fn, {"a": 1.0, "b": 2.0}, 1.0) == {"a"}
    # the predicate is read too
    assert hparams_read_by(lambda h: jax.lax.cond(h["b"] > 0, lambda a: a, lambda a: -a, h["a"]),
                           {"a": 1.0, "b": 2.0}) == {"a", "b"}


def test_a_diverging_neumann_series_is_nan_and_a_converging_one_is_unchanged():
    a = jnp.array([1.0, 3.0])  # A = diag(1, 3): converges for 0 < alpha < 2/3

    def matvec(v):
        return a * v

    b = jnp.array([1.0, 1.0])
    x = _neumann_series(matvec, b, num_terms=200, alpha=0.5, unroll=False)
    np.testing.assert_allclose(x, b / a, rtol=1e-12)
    # alpha = 0.9: I - alpha A = diag(0.1, -1.7), so the second component's terms grow as 1.7^j
    assert np.all(np.isnan(_neumann_series(matvec, b, num_terms=50, alpha=0.9, unroll=False)))
    assert np.all(np.isnan(_neumann_series(matvec, b, num_terms=50, alpha=0.9, unroll=True)))
    # b without weight on the diverging direction: the series converges there
    np.testing.assert_allclose(_neumann_series(matvec, jnp.array([1.0, 0.0]), num_terms=50, alpha=0.9,
                                               unroll=False), [1.0, 0.0], rtol=1e-12)
    # two terms of the same divergence (last term 2 times the first): the truncated sum, as before
    m = 1.0 - 0.9 * a
    np.testing.assert_allclose(_neumann_series(matvec, b, num_terms=2, alpha=0.9, unroll=False),
                               0.9 * (b + m * b + m * m * b), rtol=1e-12)


def test_neumann_with_too_large_a_step_gives_non_finite_grads_that_tune_skips(ridge_problem, key):
    """The hunt's ridge (lambda_max about 1.9 with the decay): alpha 1.5 gave -1e21, and tune took it."""
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(0.5), num_steps=50)
    _, grads = hg.hypergradient(objective, HPARAMS, key,
                                method=hg.Implicit(solver="neumann", num_terms=100, alpha=1.5))
    assert not np.isfinite(grads["weight_decay"])
    _, good = hg.hypergradient(objective, HPARAMS, key, method=hg.Implicit(solver="neumann", num_terms=100,
                                                                             alpha=1.0))
    assert np.isfinite(good["weight_decay"])
    space = hg.Space({"weight_decay": hg.LogUniform(1e-3, 1.0)})
    with pytest.warns(RuntimeWarning, match="hypergradient was not"):
        result = hg.tune(objective, space, key, method=hg.Implicit(solver="neumann", num_terms=100, alpha=1.5),
                         steps=2)
    assert result.trials[0].state == "skipped"
