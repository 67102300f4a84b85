"""The outer step evaluates the trace of the hypergradient's FLOP count instead of tracing the method and the
objective's Python again: for `hg.hybrid_search` (a count with held values, `held=`) and for `hg.tune` with a
method that draws noise (`hg.ES`, `hg.PES`: counted with the noise key an input). Same numbers as tracing the
method again, and the same counts as before (`value_and_grad_fn`'s program)."""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import accounting, outer
from hypergrad.hypergradient import value_and_grad_fn

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Choice([0.0, 0.5])})
CONTINUOUS = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
STRUCTURED = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "hidden": hg.Choice([(2,), (3,)])})


def _problem(hidden=(3,)):
    return hg.problems.mlp_classifier("iris", hidden=hidden, batch_size=16)


def _momentum(h):
    return optax.sgd(h["lr"], momentum=h["momentum"])


def _sgd(h):
    return optax.sgd(h["lr"])


def _objective():  # a fresh objective: nothing counted or compiled for it yet
    return hg.Objective(_problem(), _momentum, num_steps=4)


def _counting(monkeypatch, cls):
    """Counts the Python traces of `cls.differentiate` (each trace of a hypergradient calls it once)."""
    calls = []
    original = cls.differentiate

    def differentiate(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "differentiate", differentiate)
    return calls


def _numbers(result):
    return [(t.number, {k: np.asarray(v).tobytes() for k, v in t.hparams.items() if k != "hidden"},
             np.float64(t.value).tobytes(), {k: np.asarray(v).tobytes() for k, v in t.scores.items()},
             t.flops, t.run_flops, t.state) for t in result.trials]


# The calls run with the replay (as a user runs them), each once per module: the trace counts below and the bitwise
# comparison with the method traced again (test_replayed_steps_compute_what_the_method_traced_again_computes) read
# the same run. name -> (the method class whose traces are counted, the call on a fresh objective).
REPLAYED_CALLS = {
    "hybrid-reverse": (hg.Reverse, lambda: hg.hybrid_search(_objective(), SPACE, jax.random.key(0), budget=24)),
    "hybrid-es": (hg.ES, lambda: hg.hybrid_search(_objective(), SPACE, jax.random.key(0), budget=40,
                                                  method=hg.ES(sigma=0.1, num_samples=2))),
    "tune-pes-population": (hg.PES, lambda: hg.tune(_objective(), CONTINUOUS, jax.random.key(2), steps=2, population=2,
                                                    resample_key=True, method=hg.PES(sigma=0.1, num_samples=2,
                                                                                     window=2))),
}
_replayed_runs = {}


def _replayed(name):
    """(result, _numbers(result), traces of the method's `differentiate`) of REPLAYED_CALLS[name], run once."""
    if name not in _replayed_runs:
        cls, call = REPLAYED_CALLS[name]
        with pytest.MonkeyPatch.context() as patch:
            calls = _counting(patch, cls)
            result = call()
        _replayed_runs[name] = (result, _numbers(result), len(calls))
    return _replayed_runs[name]


def test_hybrid_search_traces_each_programs_hypergradient_once():
    result, _, calls = _replayed("hybrid-reverse")
    assert calls == 1  # the count's trace (held= the configurations' values), evaluated by the outer step
    assert len(result.trials) > 0


def test_hybrid_search_of_a_structured_family_traces_each_programs_hypergradient_once(monkeypatch):
    calls = _counting(monkeypatch, hg.Reverse)
    family = hg.Structured(lambda config: hg.Objective(_problem(config["hidden"]), _sgd, num_steps=4))
    result = hg.hybrid_search(family, STRUCTURED, jax.random.key(0), budget=24)
    assert len(calls) == result.info["programs"] == 2


@pytest.mark.parametrize("method", [hg.ES(sigma=0.1, num_samples=2), hg.PES(sigma=0.1, num_samples=2, window=2)],
                         ids=["ES", "PES"])
def test_tune_with_a_random_estimate_traces_the_hypergradient_once(monkeypatch, method):
    calls = _counting(monkeypatch, type(method))
    hg.tune(_objective(), CONTINUOUS, jax.random.key(0), steps=2, method=method)
    assert len(calls) == 1  # the count's trace, its noise key an input, evaluated by the outer step


def test_hybrid_search_with_es_traces_each_programs_hypergradient_once():
    assert _replayed("hybrid-es")[2] == 1


def _without_replay(monkeypatch):
    monkeypatch.setattr(outer, "traced_hypergradient", lambda *args, **kwargs: None)


@pytest.mark.parametrize("name", list(REPLAYED_CALLS))
def test_replayed_steps_compute_what_the_method_traced_again_computes(monkeypatch, name):
    replayed = _replayed(name)[1]
    with monkeypatch.context() as patch:
        _without_replay(patch)
        traced_again = _numbers(REPLAYED_CALLS[name][1]())
    assert replayed == traced_again  # bitwise: values, scores, hyperparameters, FLOPs


@pytest.mark.parametrize("method, cv", [(hg.ES(sigma=0.1, num_samples=2), None), (hg.ES(sigma=0.1, num_samples=2), 2),
                                        (hg.PES(sigma=0.1, num_samples=2, window=2), None)], ids=["ES", "ES-cv", "PES"])
def test_counts_with_the_noise_key_an_input_are_those_of_the_compiled_program(method, cv):
    problem = _problem() if cv is None else dataclasses.replace(_problem(), cv=cv)
    objective = hg.Objective(problem, _momentum, num_steps=4)
    h, key, data = {"lr": 0.1, "momentum": 0.5}, jax.random.key(0), objective.problem.data
    compiled = accounting.jaxpr_flops(jax.make_jaxpr(value_and_grad_fn(objective, method))(h, key, data))
    assert accounting.hypergradient_flops(objective, method, h, key) == compiled
    fixed = {"momentum": np.asarray(0.5)}
    held = accounting.jaxpr_flops(jax.make_jaxpr(
        lambda h, f, k, d: value_and_grad_fn(objective.with_fixed(f), method)(h, k, d))({"lr": 0.1}, fixed, key, data))
    assert accounting.hypergradient_flops(objective, method, {"lr": 0.1}, key, held=fixed) == held
