"""Methods, loops and problems of one's own, refused before anything compiles with a message naming
the argument and the fix (wave 1, task X1): Implicit and a customised training step, a method's
output under cross-validation checked per fold, the output check before the schedule probe
compiles, an unhashable static setting named as itself, and a model_reads_hparams problem whose
functions take no hparams. float64 throughout (tests/conftest.py)."""

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
T = 3
HPARAMS = {"lr": 0.05, "l2": 0.1}

_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None)


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


def _train_loss(params, hparams, batch):
    return _mse(params, batch) + hparams["l2"] * jnp.sum(params["w"] ** 2)


def _problem(**changes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    args = dict(init=lambda key: {"w": jnp.zeros(3)}, train_loss=_train_loss, val_loss=_mse,
                train_data=(X, y), val_data=(X, y))
    args.update(changes)
    return hg.Problem(**args)


def _objective(problem=None, optimizer=lambda h: optax.sgd(0.05)):
    return hg.Objective(_problem() if problem is None else problem, optimizer, num_steps=T)


@dataclasses.dataclass(frozen=True)
class Wrong(hg.Method):
    """Plain autodiff, its output then spoilt as `kind` says."""
    kind: str = "right"

    def differentiate(self, loop, hparams, key):
        (value, scores), grads = jax.value_and_grad(lambda h: loop.readout(loop.train(h, key), h),
                                                    has_aux=True)(hparams)
        return {"right": lambda: ((value, scores), grads),
                "not a pair": lambda: (value, grads),
                "value shape": lambda: ((jnp.stack([value, value]), scores), grads),
                "grad shape": lambda: ((value, scores), {n: jnp.full(2, g) for n, g in grads.items()})}[self.kind]()


# -- 1. Implicit and a customised training step --------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _PenalisedLoop(Loop):
    """A training loss of the loop's own, the step Loop's: Implicit solves this loss's stationarity."""

    def train_loss(self, params, hparams, minibatch):
        return super().train_loss(params, hparams, minibatch) + 0.3 * jnp.sum(params["w"] ** 2)


def _objective_with_loop(loop_class, num_steps=T):
    @dataclasses.dataclass(frozen=True, eq=False)
    class _Custom(hg.Objective):
        def loop(self, data=None):
            plain = super().loop(data)
            return loop_class(plain.problem, plain.optimizer_fn, plain.num_steps, plain.unroll, plain.data)

    return _Custom(_problem(), lambda h: optax.sgd(0.05), num_steps=num_steps)


def test_implicit_refuses_a_loop_whose_training_step_is_customised_before_anything_compiles():
    objective = _objective_with_loop(_ProjectedLoop)
    hparams = {"l2": 0.1}
    with pytest.raises(ValueError):  # the eager conversions of the arguments, compiled once per process
        hg.hypergradient(_objective_with_loop(_ProjectedLoop), hparams, KEY, method=hg.Implicit())
    before, compiles = _compile.stats.compilations, len(_COMPILES)
    with pytest.raises(ValueError, match=r"Implicit cannot vouch for the objective's custom training loop: "
                                         r"_ProjectedLoop overrides Loop\.update.*stationary point of "
                                         r"Loop\.train_loss.*optimizer.*Loop\.train_loss.*hg\.Reverse\(\)"):
        hg.hypergradient(objective, hparams, KEY, method=hg.Implicit())
    with pytest.raises(ValueError, match=r"_ProjectedLoop overrides Loop\.update"):
        hg.hypergradient_flops(objective, hg.Implicit(), hparams, KEY)
    assert _compile.stats.compilations == before and len(_COMPILES) == compiles
    hg.hypergradient(objective, hparams, KEY, method=hg.Reverse())  # the loop itself runs


def test_implicit_honours_a_loop_that_changes_only_its_training_loss():
    """Equal to Implicit on the problem whose own train_loss holds the loop's penalty."""
    hparams = {"l2": 0.1}
    value, grads = hg.hypergradient(_objective_with_loop(_PenalisedLoop, num_steps=200), hparams, KEY,
                                    method=hg.Implicit())
    penalised = _problem(train_loss=lambda p, h, b: _train_loss(p, h, b) + 0.3 * jnp.sum(p["w"] ** 2))
    reference = hg.hypergradient(hg.Objective(penalised, lambda h: optax.sgd(0.05), num_steps=200), hparams, KEY,
                                 method=hg.Implicit())
    np.testing.assert_allclose(value, reference[0], rtol=1e-12)
    np.testing.assert_allclose(grads["l2"], reference[1]["l2"], rtol=1e-10)
    assert abs(float(grads["l2"])) > 1e-6  # not a trivial zero


# -- 2. a method's output under cross-validation, checked per fold ---------------------------------
@pytest.mark.parametrize("kind, fault", [("not a pair", r"it returned \(float64\[\], \{'l2': float64\[\].*not a pair"),
                                         ("value shape", r"value is float64\[2\], expected a floating-point scalar"),
                                         ("grad shape", r"grads\['l2'\] is float64\[2\], expected float64\[\]")])
def test_under_cv_each_folds_output_is_checked_before_the_folds_are_averaged(kind, fault):
    objective = _objective(_problem(cv=3), optimizer=lambda h: optax.sgd(h["lr"]))
    before = _compile.stats.compilations
    refusal = (rf"method=Wrong\(kind='{kind}'\) returned the wrong structure on a cross-validation fold "
               rf"\(checked before the folds are averaged\): {fault}.*Fix Wrong\.differentiate")
    with pytest.raises(ValueError, match=refusal):
        hg.hypergradient(objective, HPARAMS, KEY, method=Wrong(kind))
    with pytest.raises(ValueError, match=refusal):
        hg.hypergradient_flops(objective, Wrong(kind), HPARAMS, KEY)
    assert _compile.stats.compilations == before
    value, grads = hg.hypergradient(objective, HPARAMS, KEY, method=Wrong())
    reference = hg.hypergradient(objective, HPARAMS, KEY)
    np.testing.assert_allclose(value, reference[0], rtol=1e-12)
    for name in HPARAMS:
        np.testing.assert_allclose(grads[name], reference[1][name], rtol=1e-10)


# -- 3. the output check before the schedule probe compiles ---------------------------------------
def _schedule_objective():
    return _objective(optimizer=lambda h: optax.sgd(lambda step: h["lr"][step]))


def test_a_wrong_method_output_is_refused_before_the_schedule_probe_compiles():
    schedule = {"lr": jnp.full(T, 0.05), "l2": jnp.asarray(0.1)}
    with pytest.raises(ValueError, match=r"returned the wrong structure"):  # eager conversions, once
        hg.hypergradient(_schedule_objective(), schedule, KEY, method=Wrong("value shape"))
    compiles = len(_COMPILES)
    with pytest.raises(ValueError, match=r"Wrong\(kind='value shape'\) returned the wrong structure: value is "
                                         r"float64\[2\]"):
        hg.hypergradient(_schedule_objective(), schedule, KEY, method=Wrong("value shape"))
    assert len(_COMPILES) == compiles  # the probe of the schedule check compiled nothing before the refusal
    objective = _schedule_objective()  # the probe still runs before the program compiles, and refuses
    with pytest.raises(ValueError, match=r"indexes a hyperparameter past its end"):
        hg.hypergradient(objective, {"lr": jnp.full(T - 1, 0.05), "l2": jnp.asarray(0.1)}, KEY, method=Wrong())
    value, grads = hg.hypergradient(objective, schedule, KEY, method=Wrong())
    reference = hg.hypergradient(objective, schedule, KEY)
    np.testing.assert_allclose(grads["lr"], reference[1]["lr"], rtol=1e-10)


# -- 4. an unhashable static setting is named as itself --------------------------------------------
def test_an_unhashable_static_setting_is_named_as_itself_not_as_method():
    args = (jnp.zeros(2),)
    with pytest.raises(TypeError) as info:
        _compile.compiled(("probe", object(), 3, [1, 2]), lambda: lambda x: x + 1, args)
    message = str(info.value)
    assert "a static setting of the 'probe' program, [1, 2] (a list), cannot be hashed" in message
    assert "method=" not in message and "hg.Method" not in message
    with pytest.raises(TypeError, match=r"a static setting of the 'probe' program, \[1, 2\] \(a list\)"):
        _compile.cached(("probe", object(), [1, 2]), args)
    with pytest.raises(TypeError, match=r"method=\[1, 2\] cannot be hashed.*hg\.Method subclass"):
        _compile.compiled(("probe", object(), [1, 2]), lambda: lambda x: x + 1, args, static_names=("method",))


# -- 5. model_reads_hparams=True with functions that take no hparams -------------------------------
def _val_with_hparams(params, hparams, batch):
    return _mse(params, batch)


@pytest.mark.parametrize("argname", ["val_loss", "metric", "init"])
def test_a_function_without_hparams_under_model_reads_hparams_names_the_flag_and_the_fix(argname):
    flagged = dict(init=lambda key, hparams: {"w": jnp.zeros(3)}, val_loss=_val_with_hparams,
                   model_reads_hparams=True)
    forms = r"\(params, batch\), but Problem\(model_reads_hparams=True\) calls it as fn\(params, hparams, batch\)"
    if argname == "metric":
        changes, named = {"metrics": {"mse": _mse}}, r"Problem\(metrics=\{'mse': \.\.\.\}\) takes " + forms
    elif argname == "val_loss":
        changes, named = {"val_loss": _mse}, r"Problem\(val_loss=\.\.\.\) takes " + forms
    else:
        changes = {"init": lambda key: {"w": jnp.zeros(3)}}
        named = r"Problem\(init=\.\.\.\) takes \(key\), but .* calls it as fn\(key, hparams\)"
    objective = _objective(_problem(**{**flagged, **changes}), optimizer=lambda h: optax.sgd(h["lr"]))
    before = _compile.stats.compilations
    with pytest.raises(TypeError, match=named + r".*hparams argument.*drop model_reads_hparams=True"):
        hg.hypergradient(objective, HPARAMS, KEY)
    assert _compile.stats.compilations == before
    fixed = _objective(_problem(**flagged), optimizer=lambda h: optax.sgd(h["lr"]))  # the fix it names runs
    np.testing.assert_allclose(fixed(HPARAMS, KEY), _objective(optimizer=lambda h: optax.sgd(h["lr"]))(HPARAMS, KEY),
                               rtol=1e-12)


def test_a_type_error_inside_a_flagged_val_loss_is_not_blamed_on_the_flag():
    def broken(params, hparams, batch):
        return _mse(params, batch) + "a string"  # the user's own TypeError

    problem = _problem(init=lambda key, hparams: {"w": jnp.zeros(3)}, val_loss=broken, model_reads_hparams=True)
    with pytest.raises(TypeError) as info:
        _objective(problem)(HPARAMS, KEY)
    assert "model_reads_hparams" not in str(info.value)
