"""A method of one's own (an `hg.Method` subclass) is checked before anything is compiled from it:
its output must be ((value, scores), grads) with a scalar value, scores holding 'val_loss' and
grads shaped like the hyperparameters (hunt E finding 1), and it must hash (refused before the
objective's schedule check compiles its probe). The library's own methods pass unchanged.
float64 throughout (tests/conftest.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile

KEY = jax.random.key(0)
T = 3
HPARAMS = {"lr": 0.05, "l2": 0.1}


def _mse(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] - y) ** 2)


def _problem(num_folds=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    return hg.Problem(init=lambda key: {"w": jnp.zeros(3)},
                      train_loss=lambda p, h, b: _mse(p, b) + h["l2"] * jnp.sum(p["w"] ** 2),
                      val_loss=_mse, train_data=(X, y), val_data=(X, y), cv=num_folds)


def _objective(num_folds=None):
    return hg.Objective(_problem(num_folds), lambda h: optax.sgd(h["lr"]), num_steps=T)


def _schedule_objective(traced):
    def optimizer(h):  # records each trace of the optimiser (the schedule check's probe traces it first)
        traced.append(h)
        return optax.sgd(lambda step: h["lr"][step])
    return hg.Objective(_problem(), optimizer, num_steps=T)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.2), "l2": hg.LogUniform(1e-3, 1.0)})


@dataclasses.dataclass(frozen=True)
class Wrong(hg.Method):
    """Plain autodiff, its output then spoilt as `kind` says."""
    kind: str = "right"

    def differentiate(self, loop, hparams, key):
        f = lambda h: loop.readout(loop.train(h, key), h)  # noqa: E731
        (value, scores), grads = jax.value_and_grad(f, has_aux=True)(hparams)
        spoilt = {
            "missing grad": lambda: ((value, scores), {"lr": grads["lr"]}),
            "extra grad": lambda: ((value, scores), {**grads, "typo": grads["lr"]}),
            "grad shape": lambda: ((value, scores), {n: jnp.full(3, g) for n, g in grads.items()}),
            "grad dtype": lambda: ((value, scores), {n: g.astype(jnp.float32) for n, g in grads.items()}),
            "value shape": lambda: ((jnp.stack([value, value]), scores), grads),
            "no val_loss": lambda: ((value, {}), grads),
            "not a pair": lambda: (value, grads),
            "right": lambda: ((value, scores), grads),
        }
        return spoilt[self.kind]()


FAULTS = {
    "missing grad": r"grads has the names \['lr'\], expected those of hparams \['l2', 'lr'\] \(missing \['l2'\]",
    "extra grad": r"grads has the names \['l2', 'lr', 'typo'\].*unexpected \['typo'\]",
    "grad shape": r"grads\['l2'\] is float64\[3\], expected float64\[\]",
    "grad dtype": r"grads\['l2'\] is float32\[\], expected float64\[\]",
    "value shape": r"value is float64\[2\], expected a floating-point scalar",
    "no val_loss": r"scores is \[\], expected a dict holding 'val_loss'",
    "not a pair": r"it returned \(float64\[\], \{'l2': float64\[\], 'lr': float64\[\]\}\), not a pair",
}


def _refusal(kind):
    return rf"method=Wrong\(kind='{kind}'\) returned the wrong structure: {FAULTS[kind]}.*Fix Wrong\.differentiate"


@pytest.mark.parametrize("kind", list(FAULTS))
def test_hypergradient_refuses_a_method_returning_the_wrong_structure_before_compiling_it(kind):
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=_refusal(kind)):
        hg.hypergradient(_objective(), HPARAMS, KEY, method=Wrong(kind))
    assert _compile.stats.compilations == before


@pytest.mark.parametrize("kind", ["missing grad", "grad shape", "value shape", "no val_loss"])
def test_tune_refuses_a_method_returning_the_wrong_structure_before_the_study_opens(kind, tmp_path):
    storage = tmp_path / "study.db"
    with pytest.raises(ValueError, match=_refusal(kind)):
        hg.tune(_objective(), SPACE, KEY, method=Wrong(kind), steps=1, storage=storage, study="s")
    assert not storage.exists() or hg.list_studies(storage) == []
    fixed = hg.tune(_objective(), SPACE, KEY, method=Wrong(), steps=1, storage=storage, study="s")
    assert len(fixed.trials) == 2


def test_tune_with_a_warmup_refuses_the_method_before_spending_the_warmup():
    before = _compile.stats.compilations
    with pytest.raises(ValueError, match=_refusal("extra grad")):
        hg.tune(_objective(), SPACE, KEY, method=Wrong("extra grad"), steps=1, population=2, warmup=4)
    assert _compile.stats.compilations == before


def test_hybrid_search_and_the_flop_count_refuse_the_method_too():
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.2), "l2": hg.Choice([0.01, 0.1])})
    with pytest.raises(ValueError, match=r"Wrong\(kind='no val_loss'\) returned the wrong structure"):
        hg.hybrid_search(_objective(), space, KEY, budget=40, method=Wrong("no val_loss"))
    with pytest.raises(ValueError, match=_refusal("grad shape")):
        hg.hypergradient_flops(_objective(), Wrong("grad shape"), HPARAMS, KEY)


def test_a_method_returning_the_right_structure_agrees_with_reverse_also_under_cv_and_jit():
    for objective in (_objective(), _objective(num_folds=3)):
        value, grads = hg.hypergradient(objective, HPARAMS, KEY, method=Wrong())
        reference = hg.hypergradient(objective, HPARAMS, KEY)
        np.testing.assert_allclose(value, reference[0], rtol=1e-12)
        for name in HPARAMS:
            np.testing.assert_allclose(grads[name], reference[1][name], rtol=1e-10)
    jitted = jax.jit(lambda h: hg.hypergradient(_objective(), h, KEY, method=Wrong("value shape")))
    with pytest.raises(ValueError, match=_refusal("value shape")):
        jitted({n: jnp.asarray(v) for n, v in HPARAMS.items()})


@pytest.mark.parametrize("method", [hg.Reverse(), hg.Reverse(checkpoint_every=2), hg.Truncated(2), hg.Forward(),
                                    hg.Implicit(), hg.ES(0.01, 2), hg.PES(0.01, 2, window=1)],
                         ids=repr)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_every_built_in_method_passes_the_output_check(method, dtype):
    names = ["l2"] if isinstance(method, hg.Implicit) else list(HPARAMS)  # Implicit: the training loss's only
    objective = hg.Objective(_problem(), lambda h: optax.sgd(h.get("lr", 0.05)), num_steps=T)
    hparams = {n: jnp.asarray(HPARAMS[n], dtype) for n in names}
    value, grads = hg.hypergradient(objective, hparams, KEY, method=method)
    assert np.shape(value) == () and set(grads) == set(names)


@dataclasses.dataclass(frozen=True)
class _Listed(hg.Method):
    """Frozen, but given a list: cannot be hashed."""
    scales: object = (1.0,)

    def differentiate(self, loop, hparams, key):
        return jax.value_and_grad(lambda h: loop.readout(loop.train(h, key), h), has_aux=True)(hparams)


def test_an_unhashable_method_is_refused_before_the_schedule_check_compiles_its_probe():
    traced = []
    schedule = {"lr": jnp.full(T, 0.05), "l2": 0.1}
    with pytest.raises(TypeError, match=r"method=.*cannot be hashed.*frozen dataclass"):
        hg.hypergradient(_schedule_objective(traced), schedule, KEY, method=_Listed([1.0, 2.0]))
    assert traced == []  # refused before the objective was traced, let alone its probe compiled
    hg.hypergradient(_schedule_objective(traced), schedule, KEY, method=_Listed((1.0, 2.0)))
    assert traced
