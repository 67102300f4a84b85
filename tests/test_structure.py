"""Structural choices: masking and grouping give the same trials; the plan is recorded and priced."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile, accounting
from hypergrad.problems import _data
from hypergrad.problems._losses import cross_entropy
from hypergrad.structure import DEFAULT_PROGRAM_SECONDS, Masked, Rates, plan, select_transform

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
SOLVERS = {"sgd": lambda lr: optax.sgd(lr, momentum=0.9), "adam": lambda lr: optax.adam(lr)}

SPACE = hg.Space({
    "width": hg.Choice([4, 8], structural=True),
    "activation": hg.Choice(["tanh", "relu"]),
    "solver": hg.Choice(["sgd", "adam"]),
    "lr": hg.LogUniform(1e-3, 0.3),
    "weight_decay": hg.Choice([1e-4, 1e-2]),
})


@pytest.fixture(scope="module")
def splits():
    return _data.load("iris", seed=0, dtype=np.float64)


def make_family(splits, *, mask="auto", log=None, traces=None, solvers=SOLVERS):
    """A one-hidden-layer network whose width, activation and solver can be masked;
    `traces["train_loss"]` (if given) counts the traces of its training loss."""

    def build(config):
        if log is not None:
            log.append(config)
        def init(key, hparams):
            # Drawn at the widest option; a masked width zeroes the units past it, which then stay
            # zero (tanh(0) = relu(0) = 0, no gradient reaches them), so masked equals grouped.
            k1, k2 = jax.random.split(key)
            w1, w2 = jax.random.normal(k1, (4, 8)) / 2.0, jax.random.normal(k2, (8, 3)) / 2.0
            if isinstance(config["width"], Masked):
                width = jnp.asarray(config["width"].options)[hparams["width"]]
                keep = (jnp.arange(8) < width).astype(w1.dtype)
                return {"w1": w1 * keep, "w2": w2 * keep[:, None]}
            return {"w1": w1[:, :config["width"]], "w2": w2[:config["width"]]}

        def activate(h, hparams):
            if isinstance(config["activation"], Masked):
                names = config["activation"].options
                return jax.lax.switch(hparams["activation"], [ACTIVATIONS[n] for n in names], h)
            return ACTIVATIONS[config["activation"]](h)

        def logits(params, x, hparams):
            return activate(x @ params["w1"], hparams) @ params["w2"]

        def train_loss(params, hparams, batch):
            if traces is not None:
                traces["train_loss"] += 1  # Python runs only while JAX traces
            x, y = batch
            return cross_entropy(logits(params, x, hparams), y) + hparams["weight_decay"] * jnp.sum(params["w1"] ** 2)

        def val_loss(params, hparams, batch):  # the forward pass reads a masked activation's index
            x, y = batch
            return cross_entropy(logits(params, x, hparams), y)

        def optimizer(hparams):
            if isinstance(config["solver"], Masked):
                return select_transform(hparams["solver"], [solvers[n](hparams["lr"]) for n in config["solver"].options])
            return solvers[config["solver"]](hparams["lr"])

        problem = hg.Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=splits.train,
                             val_data=splits.val, test_data=splits.test, batch_size=None, name="tiny",
                             model_reads_hparams=True)
        return hg.Objective(problem, optimizer, num_steps=15)

    return hg.Structured(build, maskable=("width", "activation", "solver"), mask=mask)


def test_masked_and_grouped_solver_give_the_same_trials(splits, key):
    space = SPACE
    settings = space.sample(jax.random.fold_in(key, 2**31 - 1), 12)
    grouped = hg.random_search(make_family(splits, mask=False), space, key, num_trials=12)
    masked = hg.random_search(make_family(splits, mask=True), space, key, num_trials=12)
    for name in ("width", "activation", "solver"):
        assert masked.info["structure"][name]["decision"] == "mask"
        assert grouped.info["structure"][name]["decision"] == "group"
    assert masked.info["programs"] == 1 < grouped.info["programs"]
    assert 0 < masked.info["plan_seconds"] < 60 and 0 < grouped.info["plan_seconds"] < 60
    np.testing.assert_allclose([t.value for t in masked.trials], [t.value for t in grouped.trials], rtol=1e-10)
    for trial, width, solver, act in zip(grouped.trials, settings["width"], settings["solver"],
                                         settings["activation"]):
        assert trial.hparams["width"] == [4, 8][int(width)]
        assert trial.hparams["solver"] == ["sgd", "adam"][int(solver)]
        assert trial.hparams["activation"] == ["tanh", "relu"][int(act)]


def test_trials_equal_single_evaluations_of_their_configuration(splits, key):
    space = SPACE
    family = make_family(splits, mask=True)
    result = hg.random_search(family, space, key, num_trials=6)
    for trial in result.trials:
        objective, hparams = family.split(space, trial.hparams)
        np.testing.assert_allclose(float(objective(hparams, key)), trial.value, rtol=1e-10)


def test_one_program_per_group_and_builds_cached(splits, key):
    space = SPACE
    built = []
    family = make_family(splits, mask={"width": False, "activation": True, "solver": False}, log=built)
    before = _compile.stats.traces["search"]
    result = hg.grid_search(family, space, key, points_per_axis=2)
    assert len(result.trials) == 2 * 2 * 2 * 2 * 2  # width x activation x solver x lr x weight decay
    assert [t.number for t in result.trials] == list(range(32))
    assert _compile.stats.traces["search"] - before == 4 == result.info["programs"]
    assert len(built) == 4
    hg.grid_search(family, space, key, points_per_axis=2)  # same shapes: nothing rebuilt or recompiled
    assert _compile.stats.traces["search"] - before == 4 and len(built) == 4


# A FLOP rate so low that even this tiny study's whole masked run outweighs a compilation, so the
# plan prices every option instead of masking by the bound; and one so high that it masks by the bound.
SLOW = Rates(flops_per_second=1.0, program_seconds=DEFAULT_PROGRAM_SECONDS)
FAST = Rates(flops_per_second=1e9, program_seconds=DEFAULT_PROGRAM_SECONDS)


def test_auto_plan_masks_by_the_whole_run_bound_with_one_count(splits, key):
    family = make_family(splits)
    settings = SPACE.sample(key, 64)
    counted = accounting.stats["counts"]
    decisions = plan(family, SPACE, settings, key, rates=FAST)
    assert accounting.stats["counts"] == counted + 1  # the run with every choice masked, and nothing else
    whole = 64 * 15 * decisions["width"].flops_masked / 1e9
    for name in ("width", "activation", "solver"):
        d = decisions[name]
        assert d.masked and "whole masked run" in d.reason
        assert d.waste_seconds == pytest.approx(whole) and d.waste_seconds <= d.extra_compile_seconds
        assert d.flops_masked == decisions["width"].flops_masked > 0 and np.isnan(d.flops_exact)


def test_auto_plan_prices_each_choice(splits, key):
    space = SPACE
    family = make_family(splits)
    settings = space.sample(key, 64)
    decisions = plan(family, space, settings, key, rates=SLOW)
    for name in ("width", "activation", "solver"):
        d = decisions[name]
        # Masking computes every branch: more FLOPs per step than the options' mean alone.
        assert d.flops_masked > d.flops_exact > 0 and "whole masked run" not in d.reason
        assert d.masked == (d.waste_seconds <= d.extra_compile_seconds)
        assert d.extra_compile_seconds > 0


def test_plan_counts_each_configuration_once(splits, key):
    family = make_family(splits)
    settings = SPACE.sample(key, 64)
    counted = accounting.stats["counts"]
    first = plan(family, SPACE, settings, key, rates=SLOW)
    # The run with every choice masked (the bound), then per choice one masked run and one per
    # option, around the configuration of the first options, which every choice shares: 1 + 3
    # masked + 4 distinct exact configurations, not 1 + 3 + 6.
    assert accounting.stats["counts"] == counted + 8
    again = plan(family, SPACE, settings, key, rates=SLOW)  # a second search of the family counts nothing
    assert accounting.stats["counts"] == counted + 8 and {n: d.flops_masked for n, d in again.items()} == {
        n: d.flops_masked for n, d in first.items()}


def test_plan_is_a_function_of_its_rates(splits, key):
    family = make_family(splits)
    settings = SPACE.sample(key, 64)
    slow = [plan(family, SPACE, settings, key, rates=SLOW) for _ in range(2)]
    fast = plan(family, SPACE, settings, key, rates=FAST)
    as_json = [json.dumps({n: d.to_dict() for n, d in p.items()}, sort_keys=True) for p in (*slow, fast)]
    assert as_json[0] == as_json[1]  # the same rates, the same plan (whatever ran in between)
    # the rates alone flip the decision: a slow machine groups what a fast one masks
    assert all(d.masked for d in fast.values())
    assert not slow[0]["width"].masked and fast["width"].masked
    for decisions, rates in ((slow[0], SLOW), (fast, FAST)):
        for d in decisions.values():
            assert (d.flops_per_second, d.program_seconds) == (rates.flops_per_second, rates.program_seconds)
    with pytest.raises(ValueError, match="Rates"):
        plan(family, SPACE, settings, key, rates=1e9)
    with pytest.raises(ValueError, match="flops_per_second"):
        Rates(flops_per_second=0.0, program_seconds=1.0)


def test_plan_prices_the_runs_each_row_costs(splits, key):
    """A row costing 10 runs (a hybrid configuration's hypergradients) wastes 10 times a search
    trial's when masked: the plan's waste scales with runs_per_row, and so can its decision."""
    family = make_family(splits)
    settings = SPACE.sample(key, 64)
    one, ten = (plan(family, SPACE, settings, key, rates=SLOW, runs_per_row=r) for r in (1, 10))
    for name in ("width", "activation", "solver"):
        assert ten[name].waste_seconds == pytest.approx(10 * one[name].waste_seconds, rel=1e-12)
        assert ten[name].flops_masked == one[name].flops_masked
    middle = Rates(SLOW.flops_per_second, 3 * one["width"].waste_seconds / one["width"].extra_compile_seconds
                   * SLOW.program_seconds)  # an extra program costs 3 trials' waste of masking the width
    assert plan(family, SPACE, settings, key, rates=middle)["width"].masked
    assert not plan(family, SPACE, settings, key, rates=middle, runs_per_row=10)["width"].masked
    for bad in (0, -1.0, float("inf"), "10"):
        with pytest.raises(ValueError, match="runs_per_row"):
            plan(family, SPACE, settings, key, rates=SLOW, runs_per_row=bad)


def test_hybrid_plans_with_each_configuration_s_share_of_the_budget(splits, key):
    """hybrid_search prices masking over each configuration's runs (budget / configurations: its
    hypergradients), not over one run as a search trial: its recorded waste is the plan's at
    runs_per_row = budget / configurations, with the rates it recorded."""
    family = make_family(splits, mask={"width": "auto", "activation": True, "solver": True})
    space = SPACE
    budget = 120.0  # 16 configurations, 2 hypergradients each
    result = hg.hybrid_search(family, space, key, budget=budget, outer=optax.adam(0.1))
    recorded = result.info["structure"]["width"]
    settings = hg.hybrid.configurations(space, jax.random.fold_in(key, hg.space.SAMPLE_STREAM), "grid")
    rates = Rates(recorded["flops_per_second"], recorded["program_seconds"])
    again = plan(family, space, settings, key, rates=rates, runs_per_row=budget / result.info["configs"])["width"]
    assert recorded["waste_seconds"] == pytest.approx(again.waste_seconds, rel=1e-12)
    assert recorded["decision"] == ("mask" if again.masked else "group")


def test_the_plan_s_count_is_the_search_program_s_trace(splits, key, monkeypatch):
    """The plan counts the run with every choice masked; the search then compiles that same trace
    instead of tracing the objective again: a structured search traces as often as its plan alone
    (it traced twice as often before). Outside a search nothing is kept."""
    from hypergrad import search, structure

    settings = SPACE.sample(key, 16)
    planned = {"train_loss": 0}
    plan(make_family(splits, traces=planned), SPACE, settings, key, rates=FAST)
    assert planned["train_loss"] > 0
    monkeypatch.setattr(structure, "measured_rates", lambda: FAST)  # the plan masks all: one program
    searched = {"train_loss": 0}
    result = search.evaluate_settings(make_family(splits, traces=searched), settings, key, strategy="random",
                                      space=SPACE)
    assert result.info["programs"] == 1 and searched == planned
    assert accounting._held() is None


def test_a_program_s_recorded_set_up_includes_the_plan_s_trace_it_took(splits, key, monkeypatch):
    """The seconds one more program costs (what the planner prices as C) include its trace, also
    when the plan's count made it: a trace taking "100 s" shows in the recorded set-up."""
    import dataclasses

    from hypergrad import search, structure

    trace = accounting._trace_run
    monkeypatch.setattr(accounting, "_trace_run", lambda *a: dataclasses.replace(trace(*a), seconds=100.0))
    monkeypatch.setattr(structure, "measured_rates", lambda: FAST)
    recorded = []
    monkeypatch.setattr(structure, "record_program", recorded.append)
    search.evaluate_settings(make_family(splits), SPACE.sample(key, 16), key, strategy="random", space=SPACE)
    assert len(recorded) == 1 and 100.0 <= recorded[0] < 200.0


def test_search_records_the_rates_it_measured(splits, key):
    from hypergrad.space import SAMPLE_STREAM

    result = hg.random_search(make_family(splits), SPACE, key, num_trials=8)
    for name in ("width", "activation", "solver"):
        recorded = result.info["structure"][name]
        assert recorded["flops_per_second"] > 0 and recorded["program_seconds"] > 0
    # replaying the plan with the recorded rates reproduces the recorded decisions
    rates = Rates(recorded["flops_per_second"], recorded["program_seconds"])
    settings = SPACE.sample(jax.random.fold_in(key, SAMPLE_STREAM), 8)
    again = plan(make_family(splits), SPACE, settings, key, rates=rates)
    assert {n: d.to_dict()["decision"] for n, d in again.items()} == {
        n: r["decision"] for n, r in result.info["structure"].items()}


def test_select_transform_applies_the_chosen_optimiser():
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    transforms = [optax.sgd(0.1), optax.adam(0.1)]
    for index, transform in enumerate(transforms):
        chosen = select_transform(jnp.asarray(index), transforms)
        state = chosen.init(params)
        ref_state = transform.init(params)
        for _ in range(3):
            update, state = chosen.update(grads, state, params)
            ref_update, ref_state = transform.update(grads, ref_state, params)
            np.testing.assert_allclose(update["w"], ref_update["w"], rtol=1e-12)


def test_hypergradients_through_masked_choices_equal_the_grouped_ones(splits, key):
    """Width 4 masked within 8 (units 5-8 zero, their gradients exactly 0) and a masked solver.
    With sgd chosen, the hypergradient equals the grouped sgd one: adam, not chosen, has an
    infinite derivative at its zero second moments, which must not reach it (it gave NaN). Adam
    chosen with optax's eps_root equals grouped adam; without eps_root its hypergradient is NaN
    (optax's own arithmetic), and tune says why when it skips the step."""
    rooted = {"sgd": SOLVERS["sgd"], "adam": lambda lr: optax.adam(lr, eps_root=1e-16)}
    masked = {"width": Masked("width", (4, 8)), "activation": "tanh", "solver": Masked("solver", ("sgd", "adam"))}
    lr = {"lr": 0.02}
    for i, (solver, solvers) in enumerate((("sgd", SOLVERS), ("adam", rooted))):
        family = make_family(splits, solvers=solvers)
        ours = family.objective(masked).with_fixed({"width": 0, "solver": i, "weight_decay": 1e-4})
        grouped = family.objective({"width": 4, "activation": "tanh", "solver": solver}).with_fixed(
            {"weight_decay": 1e-4})
        want_value, want = hg.hypergradient(grouped, lr, key)
        for method in (hg.Reverse(), hg.Forward()):
            value, grads = hg.hypergradient(ours, lr, key, method=method)
            np.testing.assert_allclose(value, want_value, rtol=1e-10)
            np.testing.assert_allclose(grads["lr"], want["lr"], rtol=1e-8)
    plain = make_family(splits).objective(masked).with_fixed({"width": 0, "solver": 1, "weight_decay": 1e-4})
    assert not np.isfinite(hg.hypergradient(plain, lr, key)[1]["lr"])
    with pytest.warns(RuntimeWarning, match=r"eps_root"):
        tuned = hg.tune(plain, hg.Space({"lr": SPACE["lr"]}), key, steps=1)
    assert tuned.trials[0].state == "skipped"


def test_family_errors_name_the_fix(splits, key):
    with pytest.raises(ValueError, match="must be 'auto', True"):
        hg.Structured(lambda c: None, maskable=("solver",), mask="sometimes")
    for equal_to_a_bool in (1, 0, np.True_, 1.0):  # == True or False, but no decision reads them so
        with pytest.raises(ValueError, match=r"mask\['solver'\]=.* must be 'auto', True \(mask\) or False"):
            hg.Structured(lambda c: None, maskable=("solver",), mask=equal_to_a_bool)
    with pytest.raises(ValueError, match="not in maskable"):
        hg.Structured(lambda c: None, maskable=("solver",), mask={"width": True})
    fixed_width = hg.Structured(lambda c: None, maskable=("solver",))
    assert fixed_width.mode("width") is False and fixed_width.mode("solver") == "auto"
    with pytest.raises(ValueError, match="maskable='solver' must be a tuple"):
        hg.Structured(lambda c: None, maskable="solver")
    family = hg.Structured(lambda c: None, maskable=("optimizer",))
    with pytest.raises(ValueError, match=r"names \['optimizer'\], which are not structural"):
        hg.random_search(family, SPACE, key, num_trials=2)
    bad = hg.Structured(lambda c: "not an objective")
    with pytest.raises(ValueError, match="must return an hg.Objective"):
        hg.random_search(bad, SPACE, key, num_trials=2)


def test_structured_results_export_and_compare(splits, key, tmp_path):
    family = make_family(splits, mask=True)
    log = tmp_path / "trials.jsonl"
    result = hg.random_search(family, SPACE, key, num_trials=6, log=log)
    frame = result.to_dataframe()
    assert set(frame["params_activation"]) <= {"tanh", "relu"}
    assert all(w in (4, 8) for w in frame["params_width"])
    cv = result.cv_results()
    assert list(cv["param_solver"]) == [t.hparams["solver"] for t in result.trials]
    assert cv["rank_test_score"].min() == 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["hparams"]["activation"] for r in records] == [t.hparams["activation"] for t in result.trials]
    json.dumps(result.to_dict())
    comparison = hg.compare({"random": result})
    assert "| random |" in comparison.to_markdown()
    pytest.importorskip("matplotlib")
    assert len(comparison.plot(tmp_path / "plots")) == 3  # string and tuple options are left out of the bars


def test_a_grouped_search_s_compute_is_the_sum_of_its_trials_and_survives_save_and_load(splits, key, tmp_path):
    """Grouped configurations (widths of 4 and 8 units among them): each trial counts against its own
    configuration's run, the
    Result's runs are the sum of its trials' (its `run_flops` the mean), and a saved Result loads
    back with every trial's compute, so budgets pick the same trials before and after."""
    result = hg.random_search(make_family(splits, mask=False), SPACE, key, num_trials=8)
    units = {t.run_flops for t in result.trials}
    assert len(units) > 1  # a unit per configuration run
    assert result.runs == pytest.approx(sum(t.runs for t in result.trials), rel=1e-12)
    result.save(tmp_path / "grouped.json")
    back = hg.Result.load(tmp_path / "grouped.json")
    assert back.to_dict() == result.to_dict()
    assert [t.run_flops for t in back.trials] == [t.run_flops for t in result.trials]
    np.testing.assert_array_equal(back.spent("runs"), result.spent("runs"))
    for budget in (2.0, 3.5, 6.0):
        ours, theirs = back.best_within(budget), result.best_within(budget)
        assert (ours and ours.number) == (theirs and theirs.number)


def test_hypergradient_flops_with_held_choices_count_every_branch_and_are_cached(splits, key):
    family = make_family(splits, mask=True)
    objective = family.objective({name: Masked(name, SPACE[name].options) for name in SPACE.structural})
    continuous = {"lr": jnp.asarray(0.05)}
    sgd_tanh = {"width": jnp.asarray(0), "activation": jnp.asarray(0), "solver": jnp.asarray(0),
                "weight_decay": jnp.asarray(1e-4)}
    adam_relu = {"width": jnp.asarray(1), "activation": jnp.asarray(1), "solver": jnp.asarray(1),
                 "weight_decay": jnp.asarray(1e-2)}
    method = hg.Reverse()
    counted = accounting.stats["counts"]
    held = hg.hypergradient_flops(objective, method, continuous, key, held=sgd_tanh)
    # Held as inputs, every branch is counted whatever the values, and new values reuse the count.
    assert hg.hypergradient_flops(objective, method, continuous, key, held=adam_relu) == held > 0
    assert accounting.stats["counts"] == counted + 1
    # The same hypergradient of a family member built with those options: every branch of the
    # masked one is at least any single option's work.
    for options in ({"width": 8, "activation": "tanh", "solver": "sgd"}, {"width": 8, "activation": "relu", "solver": "adam"}):
        exact = family.objective(options).with_fixed({"weight_decay": jnp.asarray(1e-4)})
        assert held > hg.hypergradient_flops(exact, method, continuous, key) > 0


def test_a_saved_structural_search_with_a_none_option_loads_back_and_continues(tmp_path):
    # None ("no clipping") was written as null and read back as NaN: the loaded Result's picks named
    # a configuration that does not exist, and extends= refused it as another search's draws.
    problem = hg.problems.ridge(num_examples=40, num_features=5, seed=0)

    def build(config):
        inner = optax.sgd(0.05) if config["clip"] is None else optax.chain(optax.clip(1e-3), optax.sgd(0.05))
        return hg.Objective(problem, lambda h: optax.chain(inner, optax.scale(h["lr_scale"])), num_steps=5)

    space = hg.Space({"clip": hg.Choice([None, ("clip", 1e-3)]), "lr_scale": hg.Uniform(0.5, 1.0)})
    family, key = hg.Structured(build), jax.random.key(0)
    first = hg.random_search(family, space, key, num_trials=6)
    first.save(tmp_path / "first.json")
    loaded = hg.Result.load(tmp_path / "first.json")
    assert [t.hparams["clip"] for t in loaded.trials] == [t.hparams["clip"] for t in first.trials]
    assert {None, ("clip", 1e-3)} <= {t.hparams["clip"] for t in first.trials}  # both options drawn
    more = hg.random_search(family, space, key, num_trials=8, extends=loaded)
    again = hg.random_search(family, space, key, num_trials=8)
    assert [t.hparams["clip"] for t in more.trials] == [t.hparams["clip"] for t in again.trials]
    np.testing.assert_allclose([t.value for t in more.trials], [t.value for t in again.trials], rtol=1e-6)


def test_mask_is_checked_without_maskable_and_mask_true_needs_it():
    """Structured(mask=...) with no maskable= was checked over the maskable names only: 'sometimes',
    1 and [True] were accepted, and mask=True then grouped every choice."""
    for bad in ("sometimes", 1, [True]):
        with pytest.raises(ValueError, match=r"mask=.* must be 'auto', True \(mask\) or False"):
            hg.Structured(lambda c: None, mask=bad)
    with pytest.raises(ValueError, match=r"mask=True\) with maskable=\(\).*maskable="):
        hg.Structured(lambda c: None, mask=True)
    with pytest.raises(ValueError, match=r"not in maskable=\(\).*maskable=\('width',\)"):
        hg.Structured(lambda c: None, mask={"width": True})
    for fine in ("auto", False, {}):
        assert hg.Structured(lambda c: None, mask=fine).mode("width") is False
    with pytest.raises(ValueError, match="maskable=None must be a tuple"):
        hg.Structured(lambda c: None, maskable=None)


def test_rates_take_numpy_integers_and_select_transform_names_a_bad_entry():
    rates = Rates(np.int64(5), np.float32(1.0))
    assert rates.flops_per_second == 5
    for bad in (True, "5", float("nan")):
        with pytest.raises(ValueError, match="flops_per_second"):
            Rates(bad, 1.0)
    with pytest.raises(ValueError, match=r"transforms=.*entry 0 .*not an optax transformation"):
        select_transform(0, (lambda x: x, optax.adam(0.1)))


def test_a_mask_true_choice_is_priced_masked_as_the_search_runs_it(splits, key, monkeypatch):
    """plan held a mask=True choice at its first option while pricing the auto ones: the masked
    width was priced at 4 units instead of 8, so the waste of masking the others was
    underestimated, and the whole-run count was of a program the search never ran (a second
    build and count during the search)."""
    from hypergrad import search, structure

    built = []
    family = make_family(splits, mask={"width": True, "activation": "auto", "solver": "auto"}, log=built)
    settings = SPACE.sample(key, 16)
    decisions = plan(family, SPACE, settings, key, rates=SLOW)
    assert built and all(isinstance(config["width"], Masked) for config in built)
    masked_width = {"width": Masked("width", (4, 8)), "activation": Masked("activation", ("tanh", "relu")),
                    "solver": "sgd"}
    expected = structure.step_flops(family.objective(masked_width),
                                    structure._example_hparams(SPACE, settings, masked_width), key)
    assert decisions["activation"].flops_masked == expected
    # The search runs (and counts) the program the plan counted: one build, one count in all.
    monkeypatch.setattr(structure, "measured_rates", lambda: FAST)
    built.clear()
    fresh = make_family(splits, mask={"width": True, "activation": "auto", "solver": "auto"}, log=built)
    counted = accounting.stats["counts"]
    result = search.evaluate_settings(fresh, settings, key, strategy="random", space=SPACE)
    assert result.info["programs"] == 1 and len(built) == 1
    assert accounting.stats["counts"] - counted == 1


def test_a_stored_hybrid_study_resumes_with_the_plan_it_started_with(splits, key, tmp_path, monkeypatch):
    """A resumed hybrid_search planned again with the rates measured now (they differ between
    processes, and within one as it runs): a plan that masked the width at first grouped it on
    resume, and the study failed with "a checkpoint of 1 cohorts cannot resume 2 ... edited or
    damaged". The plan's rates are stored with each checkpoint and a resume plans with them; a
    study stored without them, whose plan changed, is refused saying so."""
    from hypergrad import hybrid

    family = make_family(splits, mask={"width": "auto", "activation": True, "solver": True})
    rates = {"now": FAST}
    monkeypatch.setattr(hybrid, "measured_rates", lambda: rates["now"])
    call = dict(budget=120.0, outer=optax.adam(0.1))
    whole = hg.hybrid_search(family, SPACE, key, **call)
    assert whole.info["structure"]["width"]["decision"] == "mask" and whole.info["programs"] == 1

    def interrupted(path):
        reports = []

        def stop(line):
            reports.append(line)
            if len(reports) == 2:
                raise KeyboardInterrupt("killed after two committed steps")
        rates["now"] = FAST
        with pytest.raises(KeyboardInterrupt):
            hg.hybrid_search(family, SPACE, key, storage=path, study="h", progress=stop, **call)
        rates["now"] = SLOW  # another process measures other rates: alone they would group the width
        return path

    resumed = hg.hybrid_search(family, SPACE, key, storage=interrupted(tmp_path / "a.db"), study="h", **call)
    assert resumed.info["programs"] == 1 and resumed.info["structure"] == whole.info["structure"]
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
    with monkeypatch.context() as old:  # a study written without the plan's rates
        old.setattr(hybrid, "_PlannedSink", lambda writer, rates: writer)
        path = interrupted(tmp_path / "b.db")
    with pytest.raises(ValueError, match=r"checkpoint holds 1 programs, but the structure plan now makes 2: the "
                                         r"plan changed"):
        hg.hybrid_search(family, SPACE, key, storage=path, study="h", **call)


def test_a_stored_search_of_a_family_resumes_with_the_plan_it_started_with(splits, key, tmp_path, monkeypatch):
    """A resumed random_search of a family planned again with the rates measured now (they differ
    between processes, and within one as it runs): the width masked at first was grouped on resume,
    so the result's plan (and possibly its values' last bits) differed from an uninterrupted run's.
    The plan's rates are stored with the study's first commit and a resume plans with them."""
    from hypergrad import structure

    family = make_family(splits, mask={"width": "auto", "activation": True, "solver": True})
    rates = {"now": FAST}
    monkeypatch.setattr(structure, "measured_rates", lambda: rates["now"])
    call = dict(num_trials=8, chunk_size=4)
    whole = hg.random_search(family, SPACE, key, **call)
    assert whole.info["structure"]["width"]["decision"] == "mask" and whole.info["programs"] == 1

    def stop(line):
        raise KeyboardInterrupt("killed after the first committed chunk")

    path = tmp_path / "s.db"
    with pytest.raises(KeyboardInterrupt):
        hg.random_search(family, SPACE, key, storage=path, study="s", progress=stop, **call)
    assert len(hg.load_study(path, "s").trials) == 4
    rates["now"] = SLOW  # another process measures other rates: alone they would group the width
    resumed = hg.random_search(family, SPACE, key, storage=path, study="s", **call)
    assert resumed.info["programs"] == 1 and resumed.info["structure"] == whole.info["structure"]
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
    assert [t.hparams for t in resumed.trials] == [t.hparams for t in whole.trials]


def test_a_grouped_search_compiles_nothing_for_a_new_key(splits, key):
    """Each group's chunk was sized to how many trials the key's draw put in it (6 + 2, 5 + 3, ...):
    every new split made new shapes, so a new key compiled new search programs, against the README's
    promise. Groups now run chunks sized from the trial count and the number of configurations
    (small groups padded, the padding charged), so a new key reuses them; the values are unchanged."""
    family = make_family(splits, mask={"width": False, "activation": True, "solver": True})
    hg.random_search(family, SPACE, key, num_trials=8)  # key 0 puts 6 trials at width 4, 2 at width 8
    before = _compile.stats.compilations
    results = {seed: hg.random_search(family, SPACE, jax.random.key(seed), num_trials=8) for seed in (1, 2, 3)}
    assert _compile.stats.compilations == before  # 5 + 3, 3 + 5 and 4 + 4 trials: no new program
    assert sorted(sum(t.hparams["width"] == 4 for t in r.trials) for r in results.values()) == [3, 4, 5]
    for seed, result in results.items():
        assert result.info["programs"] == 2 and [t.number for t in result.trials] == list(range(8))
        counts = [sum(t.hparams["width"] == w for t in result.trials) for w in (4, 8)]
        # calls of 4 rows (8 trials over 2 widths), the padding rows charged to the real trials
        assert sum(t.runs for t in result.trials) == pytest.approx(sum(-(-n // 4) * 4 for n in counts))
        for trial in result.trials[:2]:
            objective, hparams = family.split(SPACE, trial.hparams)
            np.testing.assert_allclose(float(objective(hparams, jax.random.key(seed))), trial.value, rtol=1e-10)
