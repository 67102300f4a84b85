"""No hypergradient method keeps a dropped objective's problem or data alive (README, Engine state: every cache is
weakly keyed on its objective and never keeps an objective or its data alive), without `hg.clear_caches()`.

Reversible's probe table held its key (the optimiser function) through its value, the jitted probe; Implicit handed
the loop (problem and data in its tree structure) to `jax.make_jaxpr` as an argument, where JAX's own caches kept it.
"""

import gc
import weakref

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.methods import reversible


def _built(optimizer, fixed=None):
    """A tiny objective (T=3) and weak references to its objective, problem and training inputs."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(12, 3)))
    y = jnp.asarray(rng.normal(size=12))

    def train_loss(p, h, b):
        return jnp.mean((b[0] @ p["w"] - b[1]) ** 2) + h["wd"] * jnp.sum(p["w"] ** 2)

    def val_loss(p, b):
        return jnp.mean((b[0] @ p["w"] - b[1]) ** 2)

    problem = hg.Problem(init=lambda key: {"w": jnp.zeros(3)}, train_loss=train_loss, val_loss=val_loss,
                         train_data=(X, y), val_data=(X, y), batch_size=None)
    objective = hg.Objective(problem, optimizer, num_steps=3)
    if fixed is not None:
        objective = objective.with_fixed(fixed)
    return objective, (weakref.ref(objective), weakref.ref(problem), weakref.ref(X))


def _alive(refs):
    gc.collect()
    return [ref() is not None for ref in refs]


def _sgd(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])


@pytest.mark.parametrize("fixed", [None, {"wd": 0.01}], ids=["plain", "with_fixed"])
def test_reversible_keeps_no_dropped_objective_alive(key, fixed):
    hparams = {"lr": 0.1, "momentum": 0.5} if fixed else {"lr": 0.1, "momentum": 0.5, "wd": 0.01}
    objective, refs = _built(lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), fixed)
    value, grads = hg.hypergradient(objective, hparams, key, method=hg.Reversible())
    assert np.isfinite(float(value)) and set(grads) == set(hparams)
    del objective
    assert _alive(refs) == [False, False, False]  # objective, problem, data: none kept by the method
    hg.clear_caches()


def test_reversible_probe_is_reused_while_its_objective_lives(key):
    """The probe is still compiled once per optimiser function: a second call traces no probe."""
    hparams = {"lr": 0.1, "momentum": 0.5, "wd": 0.01}
    objective, refs = _built(_sgd)
    hg.hypergradient(objective, hparams, key, method=hg.Reversible())
    probes = dict(reversible._PROBES[_sgd])
    hg.hypergradient(objective, hparams, key, method=hg.Reversible())
    assert reversible._PROBES[_sgd] == probes  # the same jitted probe, not a new one
    del objective
    assert _alive(refs) == [False, False, False]  # a module-level optimiser lives on; the problem does not
    hg.clear_caches()


def test_reversible_probe_table_is_bounded(key, monkeypatch):
    monkeypatch.setattr(reversible, "_MAX_PROBES", 2)
    hparams = {"lr": 0.1, "momentum": 0.5, "wd": 0.01}
    kept = []
    for _ in range(4):  # four live objectives, each with an optimiser function of its own
        objective, _refs = _built(lambda h: optax.sgd(h["lr"], momentum=h["momentum"]))
        hg.hypergradient(objective, hparams, key, method=hg.Reversible())
        kept.append(objective)
    assert len(reversible._PROBES) <= 2
    hg.clear_caches()


def test_implicit_keeps_no_dropped_objective_alive(key):
    objective, refs = _built(lambda h: optax.sgd(0.1))
    value, grads = hg.hypergradient(objective, {"wd": 0.01}, key, method=hg.Implicit())
    assert np.isfinite(float(value)) and set(grads) == {"wd"}
    del objective
    assert _alive(refs) == [False, False, False]  # not in hypergrad's caches, nor in JAX's
    hg.clear_caches()


def test_implicit_refusal_keeps_no_dropped_objective_alive(key):
    """The refusal path (an initialisation's hyperparameter, which traces the validation loss too) holds nothing
    either, and still refuses."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(12, 3)))
    problem = hg.Problem(init=lambda key, h: {"w": h["scale"] * jnp.ones(3)},
                         train_loss=lambda p, h, b: jnp.mean((b @ p["w"]) ** 2),
                         val_loss=lambda p, h, b: jnp.mean((b @ p["w"]) ** 2) * h["scale"],
                         train_data=X, val_data=X, batch_size=None, model_reads_hparams=True)
    objective = hg.Objective(problem, lambda h: optax.sgd(0.1), num_steps=3)
    refs = (weakref.ref(objective), weakref.ref(problem), weakref.ref(X))
    del problem, X
    with pytest.raises(ValueError, match="read by the initialisation"):
        hg.hypergradient(objective, {"scale": 1.0}, key, method=hg.Implicit())
    del objective
    assert _alive(refs) == [False, False, False]
    hg.clear_caches()


def test_implicit_still_reads_what_it_read(key):
    """The static checks, now tracing a closure over the loop, still see the optimiser's reads (and refuse them)
    and still accept a hyperparameter of the training loss alone."""
    objective, _refs = _built(lambda h: optax.sgd(0.1))
    _, grads = hg.hypergradient(objective, {"wd": jnp.asarray(0.01)}, key, method=hg.Implicit())
    assert set(grads) == {"wd"} and np.isfinite(float(grads["wd"]))
    lr_objective, _refs = _built(lambda h: optax.sgd(h["lr"]))
    with pytest.raises(ValueError, match="'lr' is read by the optimizer"):
        hg.hypergradient(lr_objective, {"lr": 0.1, "wd": 0.01}, key, method=hg.Implicit())
    hg.clear_caches()
