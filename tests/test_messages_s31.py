"""Error and warning messages whose advice, followed literally, must work (hunt of the messages, D3 to D11)."""

import json
import os
import re

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad.problems import pretrained as pre


# D3: hybrid_search's "give at least X runs" rounded X down (10.72 -> 10.7), so the advised budget was refused
# with the same advice.
def test_hybrid_budget_advice_rounds_up(logistic_problem, key):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"], momentum=h["m"]), num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Choice([0.0, 0.5, 0.9])})
    with pytest.raises(ValueError, match=r"budget=5 runs buys 0 hypergradient") as refused:
        hg.hybrid_search(objective, space, key, budget=5, configs=2)
    advised = float(re.search(r"give at least ([0-9.]+) runs", str(refused.value)).group(1))
    result = hg.hybrid_search(objective, space, key, budget=advised, configs=2)  # the advice works
    assert len(result.trials) >= 2


def _unwritable(folder, monkeypatch):
    """`folder` as a user who cannot write in it sees it (the suite may run as root, whom chmod does not stop)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(folder)
                        else real(p, mode, **kw))


# D5: an explicit path (use_compilation_cache(path), a problem's cache=) overrides the environment variable, so
# advising to set the variable left the same call failing.
def test_an_explicit_compilation_cache_path_is_not_told_to_set_the_variable(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    _unwritable(folder, monkeypatch)
    before = jax.config.jax_compilation_cache_dir
    with pytest.raises(ValueError, match=r"give a folder you can write, or call use_compilation_cache\(\) without "
                                         r"a path") as refused:
        hg.use_compilation_cache(folder)
    assert "COMPILATION_CACHE=0" not in str(refused.value)  # the variable is not read when a path is given
    assert hg.use_compilation_cache() is None  # the advice: no path (conftest's variable turns the cache off)
    monkeypatch.setenv("HYPERGRAD_COMPILATION_CACHE", str(folder))  # the variable gave the folder: it is named
    with pytest.raises(ValueError, match=r"HYPERGRAD_COMPILATION_CACHE=.*\(HYPERGRAD_COMPILATION_CACHE=0\)"):
        hg.use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == before


def test_an_explicit_pretrained_cache_is_not_told_to_set_the_variable(tmp_path, monkeypatch):
    a_file = tmp_path / "afile"
    a_file.write_text("")
    good = tmp_path / "good"
    monkeypatch.setenv(pre.CACHE_ENV, str(good))
    build = lambda: {"w": np.arange(3.0)}  # noqa: E731
    template = {"w": np.zeros(3)}
    with pytest.warns(UserWarning, match=r"cannot be written.*give cache= a folder you can write") as caught:
        pre.cached_params("tiny", {"k": 1}, template, build, a_file / "cache")
    assert "set HYPERGRAD_CACHE" not in str(caught[0].message)
    pre.cached_params("tiny", {"k": 1}, template, build)  # the advice: leave it out, HYPERGRAD_CACHE's folder is used
    assert [p.name[:5] for p in good.iterdir()] == ["tiny-"]
    monkeypatch.setenv(pre.CACHE_ENV, str(a_file / "cache"))  # the variable gave the folder: it is named
    with pytest.warns(UserWarning, match=r"cannot be written.*\(set HYPERGRAD_CACHE to a folder you can write"):
        pre.cached_params("tiny", {"k": 2}, template, build)


# D10: digits_transfer(10, val_shots=200) said "give shots from 1 to -66 (or lower val_shots)": an empty range, and no
# bound for val_shots.
def test_digits_transfer_says_how_far_to_lower_val_shots(tmp_path):
    with pytest.raises(ValueError, match=r"shots=10 with val_shots=200: .*; lower val_shots to at most") as refused:
        pre.digits_transfer(10, val_shots=200, cache=tmp_path)
    bound = int(re.search(r"at most (\d+)$", str(refused.value)).group(1))
    problem = pre.digits_transfer(10, val_shots=bound, hidden=(4,), pretrain_steps=1, cache=tmp_path)  # the advice
    assert problem.name == "digits-transfer-10shot"
    with pytest.raises(ValueError, match=r"shots=10 with val_shots="):
        pre.digits_transfer(10, val_shots=bound + 1, cache=tmp_path)  # the bound is the largest that works
    y = pre._target_data("mlp", "5-9", 0.0, 0.0)[1]
    with pytest.raises(ValueError, match=r"lower val_shots to at most \d+$"):
        pre._few_shot_split(y, "all", 200, 0)
    with pytest.raises(ValueError, match=r"add up to at most (\d+), e.g. shots=\d+, val_shots=1$") as refused:
        pre._few_shot_split(y, 500, 200, 0)
    room = int(re.search(r"at most (\d+),", str(refused.value)).group(1))
    train, val, _ = pre._few_shot_split(y, room - 1, 1, 0)
    assert len(train) == 5 * (room - 1) and len(val) == 5


# D6: "drop coef_init, or use scikit-learn's own estimator": scikit-learn's estimator's fit refuses coef_init too.
def test_an_unknown_fit_parameter_offers_scikit_learn_only_where_its_fit_takes_it(monkeypatch):
    import sklearn.linear_model

    from hypergrad import sklearn as hs
    from hypergrad.sklearn import _search
    from sklearn.utils.validation import has_fit_parameter
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = np.arange(30) % 2
    assert not has_fit_parameter(sklearn.linear_model.LogisticRegression, "coef_init")
    with pytest.raises(ValueError, match=r"LogisticRegression.fit takes no 'coef_init'; drop coef_init") as refused:
        hs.GridSearchCV(hs.LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, y, coef_init=None)
    assert "scikit-learn's own estimator" not in str(refused.value)

    class Wider(sklearn.linear_model.LogisticRegression):  # a scikit-learn estimator whose fit takes coef_init
        def fit(self, X, y, sample_weight=None, coef_init=None):
            return super().fit(X, y, sample_weight)

    assert _search.sklearn_counterpart(hs.LogisticRegression()) is sklearn.linear_model.LogisticRegression
    monkeypatch.setattr(_search, "sklearn_counterpart", lambda estimator: Wider)
    with pytest.raises(ValueError, match=r"drop coef_init, or use scikit-learn's own estimator, whose fit takes it"):
        hs.GridSearchCV(hs.LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, y, coef_init=None)


# D7: Implicit with optax.adamw(weight_decay=h['weight_decay']) advised fixing the decay inside the optimizer, and
# the same adamw, so fixed, was refused next for reading the parameters.
def test_implicit_advice_for_a_hyperparameter_of_adamw_leads_to_an_accepted_objective(logistic_problem, key):
    adamw = hg.Objective(logistic_problem, lambda h: optax.adamw(0.1, weight_decay=h["weight_decay"]), num_steps=3)
    with pytest.raises(ValueError, match=r"'weight_decay' is read by the optimizer.*must not read the parameters "
                                         r"either.*optax.adam or optax.sgd in place of optax.adamw") as refused:
        hg.hypergradient(adamw, {"weight_decay": 0.01}, key, method=hg.Implicit())
    assert "fix it inside the optimizer function" not in str(refused.value)
    adam = hg.Objective(logistic_problem, lambda h: optax.adam(0.1), num_steps=3)  # the advice: the decay in the loss
    value, grads = hg.hypergradient(adam, {"weight_decay": 0.01}, key, method=hg.Implicit())
    assert np.isfinite(grads["weight_decay"])
    centred = hg.Objective(logistic_problem, lambda h: optax.chain(optax.centralize(), optax.sgd(h["lr"])),
                           num_steps=3)
    with pytest.raises(ValueError, match=r"'lr' is read by the optimizer.*remove optax.centralize"):
        hg.hypergradient(centred, {"lr": 0.1, "weight_decay": 0.01}, key, method=hg.Implicit())


# D8: Reversible said "raise info_bits (up to 8)" with info_bits already 8 and for a momentum above 1, and told plain
# SGD to name a momentum hyperparameter it does not have.
def test_reversible_momentum_advice_works(logistic_problem, key):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)

    def run(momentum, **settings):
        return hg.hypergradient(objective, {"lr": 0.1, "momentum": momentum}, key, method=hg.Reversible(**settings))

    with pytest.raises(ValueError, match=r"got momentum=0.0; no info_bits reverses .* at least ([0-9.]+), or use "
                                         r"hg.Reverse\(\)") as refused:
        run(0.0)
    run(float(re.search(r"at least ([0-9.]+),", str(refused.value)).group(1)))  # the advised momentum is reversed
    with pytest.raises(ValueError, match=r"got momentum=1.5; the momentum must be at most 1") as refused:
        run(1.5)
    assert "raise info_bits" not in str(refused.value)
    with pytest.raises(ValueError, match=r"got momentum=0.1; raise info_bits to 4 \(or more\)"):
        run(0.1, info_bits=2)
    run(0.1, info_bits=4)  # the advice
    plain = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    with pytest.raises(ValueError, match=r"hparams has no 'momentum'.*for plain SGD .* use hg.Reverse\(\)"):
        hg.hypergradient(plain, {"lr": 0.1}, key, method=hg.Reversible())
    hg.hypergradient(plain, {"lr": 0.1}, key, method=hg.Reverse())


# D9: exponential_decay(decay_rate=h['decay']) was shown only the warm-up/cosine example, which makes the decay rate
# a peak learning rate: another optimiser, silently.
def test_exponential_decay_rate_refusal_gives_its_own_formula(logistic_problem, key):
    refused = hg.Objective(logistic_problem, lambda h: optax.sgd(optax.exponential_decay(0.1, 2, h["decay"])),
                           num_steps=5)
    with pytest.raises(ValueError, match=r"Here it is exponential_decay's decay_rate: .* e.g. lambda s: init_value "
                                         r"\* h\['decay'\] \*\* \(s / transition_steps\)"):
        refused({"decay": 0.5}, key)
    advised = hg.Objective(logistic_problem, lambda h: optax.sgd(lambda s: 0.1 * h["decay"] ** (s / 2)), num_steps=5)
    fixed = hg.Objective(logistic_problem, lambda h: optax.sgd(optax.exponential_decay(0.1, 2, 0.5)), num_steps=5)
    np.testing.assert_allclose(float(advised({"decay": 0.5}, key)), float(fixed({}, key)), rtol=1e-8)  # the same schedule, rounded differently
    _, grads = hg.hypergradient(advised, {"decay": 0.5}, key)
    assert np.isfinite(grads["decay"]) and grads["decay"] != 0


# D11: messages naming an argument the caller did not pass.
def test_result_load_of_a_compare_results_file_names_from_dict(logistic_problem, key, tmp_path):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    result = hg.random_search(objective, hg.Space({"lr": hg.LogUniform(1e-2, 1.0)}), key, num_trials=2)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": {"random": result.to_dict()}}))
    with pytest.raises(ValueError, match=r"Result.from_dict: not a Result's to_dict\(\) .* in Result.load\(.*"
                                         r"results.json'\); give a file Result.save wrote .*"
                                         r"Result.from_dict\(json.load\(f\)\['results'\]\[name\]\)"):
        hg.Result.load(path)
    with open(path) as f:  # the advice
        back = hg.Result.from_dict(json.load(f)["results"]["random"])
    assert back.to_dict() == result.to_dict()


def test_tune_of_a_structured_family_names_hybrid_search(logistic_problem, key):
    family = hg.Structured(build=lambda c: hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"],
                                                                                                momentum=c["m"]),
                                                        num_steps=3))
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Choice([0.0, 0.9], structural=True)})
    for call in (lambda: hg.tune(family, space, key, steps=1), lambda: hg.tune_step_cost(family, space, key)):
        with pytest.raises(ValueError, match=r"objective must be an hg.Objective, got Structured.*"
                                             r"hg.hybrid_search\(family, space, key, budget=...\)"):
            call()
    assert len(hg.hybrid_search(family, space, key, budget=20).trials) >= 2  # the advice


def test_tune_with_implicit_names_the_space_and_with_fixed(logistic_problem, key):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    with pytest.raises(ValueError, match=r"'lr' is read by the optimizer; use hg.Reverse\(\) or hg.Forward\(\) "
                                         r"for it, or leave it out of hparams \(of the space, in a search\).*"
                                         r"objective.with_fixed\(\{'lr': value\}\)"):
        hg.tune(objective, space, key, steps=1, method=hg.Implicit())
    fixed = objective.with_fixed({"lr": 0.1})  # the advice
    hg.tune(fixed, hg.Space({"weight_decay": hg.LogUniform(1e-4, 1.0)}), key, steps=1, method=hg.Implicit())


def test_a_short_schedule_from_a_space_names_the_distribution_shape(logistic_problem, key):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(lambda step: h["lr"][step]), num_steps=3)
    with pytest.raises(ValueError, match=r"shape \(3,\) \(in a search, its distribution's shape=\(3,\)\)"):
        hg.random_search(objective, hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(2,))}), key, num_trials=2)
    hg.random_search(objective, hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(3,))}), key, num_trials=2)
