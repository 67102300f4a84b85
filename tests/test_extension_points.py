"""Extending hypergrad from its public API: a Problem of one's own functions, a Method subclass, a
custom training loop. What is wrong there is refused with a message naming the argument and the fix,
before anything compiles (the findings of hunt E).

All checks run in float64 (tests/conftest.py turns it on before any problem is built).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile
from hypergrad.loop import Loop

from _helpers import _ProjectedLoop

KEY = jax.random.key(0)


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


def _problem(**changes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([2.0, -1.0, 3.0])
    args = dict(init=lambda key: {"w": jnp.zeros(3)},
                train_loss=lambda params, hparams, batch: _mse(params, batch) + hparams["l2"] * jnp.sum(params["w"] ** 2),
                val_loss=_mse, train_data=(X, y), val_data=(X, y))
    args.update(changes)
    return hg.Problem(**args)


def _objective(problem=None, num_steps=4):
    problem = _problem() if problem is None else problem
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=num_steps)


HPARAMS = {"lr": 0.05, "momentum": 0.9, "l2": 0.01}


def _exact(loop, hparams, key):
    return jax.value_and_grad(lambda h: loop.readout(loop.train(h, key), h), has_aux=True)(hparams)


# -- a Method subclass that cannot be hashed (finding 4) -------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Scaled(hg.Method):
    """Frozen, as the Method docstring asks, but a field may be given an unhashable value."""
    scale: object = 1.0

    def differentiate(self, loop, hparams, key):
        return _exact(loop, hparams, key)


@dataclasses.dataclass
class _Mutable(hg.Method):
    """A dataclass that is not frozen: eq without hash."""

    def differentiate(self, loop, hparams, key):
        return _exact(loop, hparams, key)


@pytest.mark.parametrize("method", [_Scaled(np.ones(2)), _Scaled([1.0, 2.0]), _Mutable()],
                         ids=["array field", "list field", "not frozen"])
@pytest.mark.parametrize("call", ["hypergradient", "hypergradient_flops"])
def test_an_unhashable_method_is_refused_naming_method_and_the_fix_before_anything_compiles(method, call):
    objective = _objective()
    before = _compile.stats.compilations
    with pytest.raises(TypeError, match=r"method=.*cannot be hashed.*frozen dataclass.*tuple"):
        if call == "hypergradient":
            hg.hypergradient(objective, HPARAMS, KEY, method=method)
        else:
            hg.hypergradient_flops(objective, method, HPARAMS, KEY)
    assert _compile.stats.compilations == before


def test_a_hashable_frozen_method_subclass_still_runs_and_compiles_once_for_equal_instances():
    objective = _objective()
    value, grads = hg.hypergradient(objective, HPARAMS, KEY, method=_Scaled((1.0, 2.0)))
    before = _compile.stats.compilations
    again = hg.hypergradient(objective, HPARAMS, KEY, method=_Scaled((1.0, 2.0)))
    assert _compile.stats.compilations == before
    np.testing.assert_allclose(again[0], value)
    reference = hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reverse())
    np.testing.assert_allclose(value, reference[0], rtol=1e-12)
    for name in HPARAMS:
        np.testing.assert_allclose(grads[name], reference[1][name], rtol=1e-10)


# -- a loss that returns (loss, aux) (finding 2) ----------------------------------------------------
def _with_aux(fn):
    return lambda *args: (fn(*args), {"aux": 0.0})


@pytest.mark.parametrize("argname", ["train_loss", "val_loss", "metric"])
@pytest.mark.parametrize("call", ["objective", "hypergradient"])
def test_a_loss_or_metric_returning_loss_and_aux_is_refused_naming_the_function_before_anything_compiles(argname, call):
    plain = _problem()
    if argname == "metric":
        problem = _problem(metrics={"mse": _with_aux(_mse)})
        named = r"Problem\(metrics=\{'mse': \.\.\.\}\)"
    else:
        problem = _problem(**{argname: _with_aux(getattr(plain, argname))})
        named = rf"Problem\({argname}=\.\.\.\)"
    objective = _objective(problem)
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=named + r" returned a tuple; it must return a scalar.*not \(loss, aux\).*\[0\]"):
        if call == "objective":
            objective(HPARAMS, KEY)
        else:
            hg.hypergradient(objective, HPARAMS, KEY)
    assert _compile.stats.compilations == before


def test_a_loss_returning_none_or_a_dict_is_refused_naming_what_it_returned():
    for returned, kind in ((None, "NoneType"), ({"loss": 1.0}, "dict")):
        objective = _objective(_problem(val_loss=lambda params, batch, r=returned: r))
        with pytest.raises(ValueError, match=rf"Problem\(val_loss=\.\.\.\) returned a {kind}; it must return a scalar"):
            objective(HPARAMS, KEY)


# -- a val_loss or metric that takes hparams without model_reads_hparams (finding 6) ----------------
def _val_with_hparams(params, hparams, batch):
    return _mse(params, batch)


@pytest.mark.parametrize("argname", ["val_loss", "metric"])
def test_a_val_loss_or_metric_taking_hparams_without_the_flag_names_model_reads_hparams(argname):
    if argname == "metric":
        problem, named = _problem(metrics={"mse": _val_with_hparams}), r"Problem\(metrics=\{'mse': \.\.\.\}\)"
    else:
        problem, named = _problem(val_loss=_val_with_hparams), r"Problem\(val_loss=\.\.\.\)"
    before = _compile.stats.compilations
    with pytest.raises(TypeError, match=named + r" takes \(params, hparams, batch\).*model_reads_hparams=True"):
        hg.hypergradient(_objective(problem), HPARAMS, KEY)
    assert _compile.stats.compilations == before
    flagged = _problem(init=lambda key, hparams: {"w": jnp.zeros(3)}, val_loss=_val_with_hparams,
                       model_reads_hparams=True)  # the fix it names runs, and equals the plain problem
    np.testing.assert_allclose(_objective(flagged)(HPARAMS, KEY), _objective()(HPARAMS, KEY), rtol=1e-12)


def test_a_type_error_inside_a_val_loss_is_not_blamed_on_the_flag():
    def broken(params, batch):
        return _mse(params, batch) + "a string"  # the user's own TypeError

    def star(*args):  # takes any arity: nothing to read from the signature, nothing guessed
        params, batch = args
        return _mse(params, batch) + "a string"

    for fn in (broken, star):
        with pytest.raises(TypeError) as info:
            _objective(_problem(val_loss=fn))(HPARAMS, KEY)
        assert "model_reads_hparams" not in str(info.value)


# -- a custom training step, by subclassing Loop (finding 3) ----------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _PenalisedLoop(Loop):
    """A training loss of the loop's own (the step itself is Loop's): Reversible calls it as it is."""

    def train_loss(self, params, hparams, minibatch):
        return super().train_loss(params, hparams, minibatch) + 0.1 * jnp.sum(params["w"] ** 4)


def _objective_with_loop(loop_class):
    @dataclasses.dataclass(frozen=True, eq=False)
    class _Custom(hg.Objective):
        def loop(self, data=None):
            plain = super().loop(data)
            return loop_class(plain.problem, plain.optimizer_fn, plain.num_steps, plain.unroll, plain.data)

    return _Custom(_problem(), lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)


def test_reversible_refuses_a_loop_whose_training_step_is_customised_before_anything_compiles():
    objective = _objective_with_loop(_ProjectedLoop)
    reverse_value, _ = hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reverse())
    np.testing.assert_allclose(reverse_value, objective(HPARAMS, KEY), rtol=1e-12)  # the custom step runs
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=r"Reversible cannot honour.*_ProjectedLoop overrides Loop\.update.*hg\.Reverse\(\)"):
        hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reversible())
    with pytest.raises(ValueError, match=r"_ProjectedLoop overrides Loop\.update"):
        hg.Reversible().run(objective, {k: jnp.asarray(v) for k, v in HPARAMS.items()}, KEY)
    assert _compile.stats.compilations == before


def test_reversible_still_honours_a_loop_that_changes_only_what_it_calls():
    objective = _objective_with_loop(_PenalisedLoop)
    value, grads = hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reversible())
    reference, reference_grads = hg.hypergradient(objective, HPARAMS, KEY, method=hg.Reverse())
    np.testing.assert_allclose(value, reference, rtol=1e-8)
    for name in HPARAMS:
        np.testing.assert_allclose(grads[name], reference_grads[name], rtol=1e-6, atol=1e-10)


# -- work in a host callback, which the FLOP count cannot see (finding 5) ----------------------------
def _host_scale(value):
    return np.asarray(np.linalg.solve(np.eye(4) * 2.0, np.full(4, float(value))).mean(), dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class _HostScaled(hg.Method):
    """Reverse mode, its gradient scaled by a number a numpy solve on the host computes."""

    def differentiate(self, loop, hparams, key):
        (value, scores), grads = _exact(loop, hparams, key)
        scale = jax.pure_callback(_host_scale, jax.ShapeDtypeStruct((), jnp.float64), value)
        return (value, scores), {name: g * scale for name, g in grads.items()}


def test_counting_a_program_with_a_host_callback_warns_that_its_work_is_not_counted():
    objective = _objective()
    with pytest.warns(UserWarning, match=r"calls _host_scale through jax\.pure_callback.*not counted.*by=\"seconds\""):
        hg.hypergradient_flops(objective, _HostScaled(), HPARAMS, KEY)

    def host_loss(params, batch):
        return jax.pure_callback(_host_scale, jax.ShapeDtypeStruct((), jnp.float64), _mse(params, batch))

    with pytest.warns(UserWarning, match=r"calls _host_scale through jax\.pure_callback.*not counted"):
        hg.run_flops(_objective(_problem(val_loss=host_loss)), HPARAMS, KEY)


def test_counting_a_program_without_a_callback_does_not_warn(recwarn):
    hg.hypergradient_flops(_objective(), _Scaled(), HPARAMS, KEY)
    assert not [w for w in recwarn if "not counted" in str(w.message)]
