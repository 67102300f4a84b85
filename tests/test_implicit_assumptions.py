"""Implicit's assumptions made checkable (hunt H25): training must stop where the training loss's
gradient is 0, so an optimiser whose update reads the parameters (a decoupled weight decay, a
projection) is refused before compiling, while optimisers that are functions of the gradient pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.methods.implicit import hparams_read_by

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
