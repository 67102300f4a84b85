"""Optuna as an outside baseline: ask in batches, evaluate vmapped, tell back.

Checks that every trial's value equals a single evaluation of the objective (float64), that the
suggestions respect the space (bounds, log scale, broadcast and independent schedules, choices),
that all rounds run one compiled program with random search's compute accounting, that diverged
trials are told to Optuna as failed, that TPE beats its random start on an easy problem, that
results line up in `hg.compare`, and that bad arguments are refused before anything compiles.
"""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

optuna = pytest.importorskip("optuna")

import hypergrad as hg  # noqa: E402
from hypergrad import _compile  # noqa: E402
from hypergrad.optuna_search import optuna_distributions, settings_from_params  # noqa: E402
from hypergrad.problems import sgd_momentum_schedule  # noqa: E402
from hypergrad.results import COMPLETE, FAIL  # noqa: E402
from hypergrad.search import run_flops  # noqa: E402
from _helpers import WORKER_START, counting, two_workers  # noqa: E402

T = 8  # training steps of the minibatch objective


def sgd(h):
    return optax.sgd(h["lr"])


RIDGE_SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})


@pytest.fixture(scope="module")
def ridge():
    return hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)


@pytest.fixture(scope="module")
def ridge_objective(ridge):
    return hg.Objective(ridge, sgd, num_steps=20)


@pytest.fixture(scope="module")
def mb_objective():
    """Softmax regression on minibatches of 8 (every trial must replay the same batches)."""
    problem = hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0,
                                   batch_size=8)
    return hg.Objective(problem, sgd_momentum_schedule, num_steps=T)


def mb_space(independent):
    return hg.Space({
        "lr": hg.LogUniform(1e-2, 1.0, shape=(T,), independent=independent),
        "momentum": hg.Uniform(0.0, 0.9),
        "weight_decay": hg.Choice([1e-4, 1e-2]),
    })


@pytest.fixture(scope="module")
def mb_results(mb_objective):
    """10 trials in rounds of 4 (4 + 4 + 2), chunks of 3: both the round and the chunk get padded."""
    key = jax.random.key(3)
    return key, {independent: hg.optuna_search(mb_objective, mb_space(independent), key, num_trials=10,
                                               batch_size=4, chunk_size=3)
                 for independent in (False, True)}


# -- values equal single evaluations ------------------------------------------------------------------
@pytest.mark.parametrize("independent", [False, True])
def test_trials_equal_single_evaluations_in_ask_order(mb_results, mb_objective, independent):
    key, results = mb_results
    result = results[independent]
    assert result.strategy == "optuna-tpe"
    assert [t.number for t in result.trials] == list(range(10))
    evaluate = jax.jit(mb_objective.evaluate)
    for trial in result.trials:
        alone = evaluate(trial.hparams, key)
        assert set(trial.scores) == set(alone)
        for name, value in alone.items():
            np.testing.assert_allclose(trial.scores[name], float(value), rtol=1e-10, atol=1e-12,
                                       err_msg=f"trial {trial.number}, score {name}")
        assert trial.value == trial.scores["val_loss"]
    last = result.trials[-1]  # a trial of the padded last round, through the public call itself
    np.testing.assert_allclose(last.value, float(mb_objective(last.hparams, key)), rtol=1e-10)


@pytest.mark.parametrize("independent", [False, True])
def test_trials_respect_the_space(mb_results, independent):
    _, results = mb_results
    space = mb_space(independent)
    for trial in results[independent].trials:
        assert set(trial.hparams) == set(space.names)
        lr = trial.hparams["lr"]
        assert lr.shape == (T,) and lr.dtype == np.float64
        assert np.all((1e-2 <= lr) & (lr <= 1.0))
        assert 0.0 <= float(trial.hparams["momentum"]) <= 0.9
        assert float(trial.hparams["weight_decay"]) in (1e-4, 1e-2)
        if independent:
            assert len(set(lr.tolist())) == T  # one suggestion per element
        else:
            np.testing.assert_array_equal(lr, lr[0])  # one suggestion broadcast
    momenta = [float(t.hparams["momentum"]) for t in results[independent].trials]
    assert len(set(momenta)) == len(momenta)


def test_independent_elements_are_named_parameters_of_the_study():
    space = hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(3,), independent=True),
                      "w": hg.Uniform(-1.0, 1.0, shape=(2, 2), independent=True),
                      "momentum": hg.Uniform(0.0, 0.9, shape=(4,))})
    dists = optuna_distributions(space)
    assert list(dists) == ["lr[0]", "lr[1]", "lr[2]", "w[0,0]", "w[0,1]", "w[1,0]", "w[1,1]", "momentum"]
    assert dists["lr[1]"].log and not dists["w[1,0]"].log and not dists["momentum"].log
    row = {**{f"lr[{i}]": 0.1 * (i + 1) for i in range(3)}, "w[0,0]": 0.1, "w[0,1]": 0.2, "w[1,0]": 0.3,
           "w[1,1]": 0.4, "momentum": 0.5}
    settings = settings_from_params(space, [row])
    np.testing.assert_allclose(settings["lr"][0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(settings["w"][0], [[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(settings["momentum"][0], [0.5] * 4)


def test_log_scale_and_bounds_of_the_random_sampler(ridge_objective):
    space = hg.Space({"lr": hg.LogUniform(1e-4, 1.0), "weight_decay": hg.Uniform(0.0, 1.0)})
    result = hg.optuna_search(ridge_objective, space, jax.random.key(0), num_trials=64, sampler="random",
                              batch_size=32)
    assert result.strategy == "optuna-random"
    lr = np.array([float(t.hparams["lr"]) for t in result.trials])
    decay = np.array([float(t.hparams["weight_decay"]) for t in result.trials])
    assert np.all((1e-4 <= lr) & (lr <= 1.0)) and np.all((0.0 <= decay) & (decay <= 1.0))
    # Log-uniform: about half below the geometric centre 1e-2 (uniform in value would put 1% there).
    assert 0.25 < np.mean(lr < 1e-2) < 0.75
    assert np.mean(lr < 1e-3) > 0.05
    # Uniform: about half below the arithmetic centre.
    assert 0.25 < np.mean(decay < 0.5) < 0.75


def test_choices_map_to_numbers_or_option_indices():
    space = hg.Space({"alpha": hg.Choice([1e-4, 1e-3]), "width": hg.Choice([1, 2, 3]),
                      "activation": hg.Choice(["tanh", "relu"]), "hidden": hg.Choice([(50,), (100,)])})
    assert space.structural == ("activation", "hidden")
    dists = optuna_distributions(space)
    assert dists["alpha"].choices == (1e-4, 1e-3) and dists["width"].choices == (1, 2, 3)
    assert dists["activation"].choices == ("tanh", "relu")
    assert dists["hidden"].choices == ("(50,)", "(100,)")  # Optuna stores strings, not tuples
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials = [study.ask(dists) for _ in range(20)]
    settings = settings_from_params(space, [t.params for t in trials])
    assert settings["activation"].dtype == np.int32 and settings["hidden"].dtype == np.int32
    assert settings["alpha"].dtype == np.float64 and settings["width"].dtype == np.asarray([1]).dtype
    for i, trial in enumerate(trials):
        assert space["activation"].option(settings["activation"][i]) == trial.params["activation"]
        assert str(space["hidden"].option(settings["hidden"][i])) == trial.params["hidden"]
        assert settings["alpha"][i] == trial.params["alpha"] and settings["width"][i] == trial.params["width"]
    assert set(settings["hidden"].tolist()) == {0, 1}


def test_structural_choice_with_a_plain_objective_is_refused(ridge_objective):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "activation": hg.Choice(["tanh", "relu"])})
    _raises_before_compiling("structural", hg.optuna_search, ridge_objective, space, jax.random.key(0),
                             num_trials=4)


def test_structural_choices_run_through_a_structured_family(ridge, key):
    optimizers = {"sgd": lambda h: optax.sgd(h["lr"]), "momentum": lambda h: optax.sgd(h["lr"], momentum=0.9)}
    family = hg.Structured(lambda config: hg.Objective(ridge, optimizers[config["solver"]], num_steps=20))
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0),
                      "solver": hg.Choice(["sgd", "momentum"])})
    result = hg.optuna_search(family, space, key, num_trials=8, batch_size=4)
    assert {t.hparams["solver"] for t in result.trials} <= {"sgd", "momentum"}
    assert result.info["structure"]["solver"]["decision"] == "group"
    for trial in result.trials:
        objective, hparams = family.split(space, trial.hparams)
        np.testing.assert_allclose(float(objective(hparams, key)), trial.value, rtol=1e-9)


# -- one program, random search's accounting ---------------------------------------------------------
def test_all_rounds_run_one_compiled_program(ridge):
    problem, count = counting(ridge)
    objective = hg.Objective(problem, sgd, num_steps=10)
    at_report = []

    def progress(line):
        at_report.append((count["traces"], _compile.stats.compilations))

    compilations, searches = _compile.stats.compilations, _compile.stats.traces["search"]
    first = hg.optuna_search(objective, RIDGE_SPACE, jax.random.key(1), num_trials=10, batch_size=4,
                             progress=progress)  # rounds of 4 + 4 + 2 (padded to 4)
    assert len(first.trials) == 10 and first.info["chunk_size"] == 4
    assert _compile.stats.compilations == compilations + 1
    assert _compile.stats.traces["search"] == searches + 1
    assert len(at_report) == 3 and at_report[0][0] > 0 and all(r == at_report[0] for r in at_report)
    assert first.compile_seconds > 0
    traced, compilations = count["traces"], _compile.stats.compilations
    again = hg.optuna_search(objective, RIDGE_SPACE, jax.random.key(2), num_trials=7, batch_size=4,
                             sampler="random")
    rand = hg.random_search(objective, RIDGE_SPACE, jax.random.key(2), num_trials=5, chunk_size=4)
    assert len(again.trials) == 7 and len(rand.trials) == 5
    assert count["traces"] == traced and _compile.stats.compilations == compilations
    assert again.compile_seconds == 0.0


def test_compute_accounting_matches_random_search(ridge_objective):
    key = jax.random.key(0)
    result = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=10, batch_size=4)
    rand = hg.random_search(ridge_objective, RIDGE_SPACE, key, num_trials=10, chunk_size=4)
    unit = run_flops(ridge_objective, result.trials[0].hparams, key)
    assert result.run_flops == pytest.approx(unit, rel=1e-12)
    # The last round (2 trials padded to 4) costs 4 runs, as random search's padded last chunk.
    assert result.flops == pytest.approx(12 * unit, rel=1e-9)
    assert result.flops == pytest.approx(rand.flops, rel=1e-9)
    assert [t.runs for t in result.trials] == pytest.approx([1.0] * 8 + [2.0] * 2, rel=1e-9)
    assert all(t.seconds > 0 for t in result.trials)


def test_padding_of_a_structured_round_is_charged_what_it_ran(ridge, key):
    """Configurations of different cost: a short round's padding copies its first trial (its
    configuration), and the result charges exactly the rows that ran, not each trial's own cost
    scaled by rows / trials (which is right only when every row costs the same)."""
    steps = {"short": 2, "long": 6}
    family = hg.Structured(lambda c: hg.Objective(ridge, sgd, num_steps=steps[c["len"]]))
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "weight_decay": hg.LogUniform(1e-4, 1.0),
                      "len": hg.Choice(["short", "long"])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lengths = ["long", "short", "long", "short", "short", "long"]  # rounds of 4 + 2 (padded by 2 "short")
    for length in lengths:
        study.enqueue_trial({"lr": 0.05, "weight_decay": 0.01, "len": length})
    result = hg.optuna_search(family, space, key, num_trials=6, batch_size=4, study=study)
    assert [t.hparams["len"] for t in result.trials] == lengths
    assert result.info["structure"]["len"]["decision"] == "group"
    unit = {length: run_flops(family.objective({"len": length}), {"lr": np.float64(0.05),
                                                                   "weight_decay": np.float64(0.01)}, key)
            for length in steps}
    assert unit["long"] > 2 * unit["short"]
    executed = sum(unit[length] for length in lengths) + 2 * unit["short"]
    assert result.flops == pytest.approx(executed, rel=1e-12)
    assert result.runs == pytest.approx(8.0, rel=1e-12)  # 6 trials and 2 padding rows, each one run
    first, last = result.trials[:4], result.trials[4:]
    assert [t.runs for t in first] == pytest.approx([1.0] * 4, rel=1e-12)
    assert [t.flops for t in first] == pytest.approx([unit[length] for length in lengths[:4]], rel=1e-12)
    share = unit["short"]  # the 2 padding rows' cost, shared equally by the round's 2 trials
    assert [t.flops for t in last] == pytest.approx([unit["short"] + share, unit["long"] + share], rel=1e-12)
    assert [t.runs for t in last] == pytest.approx([2.0, 2.0], rel=1e-12)
    assert all(t.seconds > 0 for t in result.trials)


def test_fewer_trials_than_a_batch_run_and_are_charged_only_themselves(ridge_objective):
    """num_trials below batch_size: one round of just those trials, no padding (as random search's
    single chunk), and Optuna proposes the same trials as when it was padded."""
    key = jax.random.key(1)
    few = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=3, batch_size=16)
    assert few.info["chunk_size"] == 3
    assert [t.runs for t in few.trials] == pytest.approx([1.0] * 3, rel=1e-12)
    assert few.flops == pytest.approx(3 * run_flops(ridge_objective, few.trials[0].hparams, key), rel=1e-12)
    more = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=5, batch_size=3)  # rounds of 3 + 2
    assert [float(t.hparams["lr"]) for t in few.trials] == [float(t.hparams["lr"]) for t in more.trials[:3]]


def test_same_key_same_trials_and_seed_overrides(ridge_objective):
    key = jax.random.key(5)
    a = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=12, batch_size=6)
    b = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=12, batch_size=6)
    c = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=12, batch_size=6, seed=123)
    lrs = [[float(t.hparams["lr"]) for t in r.trials] for r in (a, b, c)]
    assert lrs[0] == lrs[1] and lrs[0] != lrs[2]


# -- failures, logs, studies ----------------------------------------------------------------------
def test_diverged_trials_are_told_as_failed(ridge_objective, tmp_path):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1e12), "weight_decay": hg.LogUniform(1e-4, 1.0)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    log = tmp_path / "optuna.jsonl"
    result = hg.optuna_search(ridge_objective, space, jax.random.key(0), num_trials=20, batch_size=8,
                              study=study, log=log)
    failed = [t for t in result.trials if t.state == FAIL]
    assert failed and len(failed) < 20
    assert all(not math.isfinite(t.value) for t in failed)
    assert math.isfinite(result.best_value) and result.best_trial.state == COMPLETE
    states = [t.state for t in study.trials]
    assert len(states) == 20
    for trial, frozen in zip(result.trials, study.trials, strict=True):
        if trial.state == FAIL:
            assert frozen.state == optuna.trial.TrialState.FAIL
        else:
            assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == trial.value
        assert frozen.params["lr"] == pytest.approx(float(trial.hparams["lr"]), rel=1e-15)
    records = [json.loads(line) for line in log.read_text().splitlines()]  # no padding rows logged
    assert [r["number"] for r in records] == list(range(20))
    assert all(r["strategy"] == "optuna-random" for r in records)
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_study_is_continued(ridge_objective):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    first = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=6, batch_size=3,
                             study=study)
    second = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=5, batch_size=3,
                              study=study)
    assert len(study.trials) == 11
    assert first.info["optuna_first_trial"] == 0 and second.info["optuna_first_trial"] == 6
    assert [t.number for t in second.trials] == list(range(5))
    assert second.strategy == "optuna-tpe"
    assert study.best_value == pytest.approx(min(first.best_value, second.best_value))


def test_sampler_instance_and_logging_restored(ridge_objective):
    class Halton(optuna.samplers.RandomSampler):  # any sampler class, labelled by its name
        pass

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # quiet inside the call, restored after it
    result = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=3,
                              sampler=Halton(seed=0), batch_size=3)
    assert result.strategy == "optuna-Halton" and len(result.trials) == 3
    result = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=3,
                              sampler=optuna.samplers.RandomSampler(seed=0), batch_size=3)
    assert result.strategy == "optuna-random"
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
    optuna.logging.set_verbosity(before)


# -- TPE does its job ---------------------------------------------------------------------------
def test_tpe_beats_its_random_start_and_matches_grid_search(ridge_objective):
    """Ridge in (lr, weight_decay): TPE's later rounds concentrate where the loss is low.

    After its random first round, TPE's last two rounds have a lower median value than the first
    round and than the random sampler's last two rounds (pooled over 3 keys; random's later rounds
    are no better than its first), and its best is within 1% of a 7 x 7 grid's best at 48 trials.
    """
    grid = hg.grid_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), points_per_axis=7)
    medians = {"tpe": [], "random": [], "first": []}
    for seed in range(3):
        key = jax.random.key(seed)
        for sampler in ("tpe", "random"):
            result = hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=48, batch_size=8,
                                      sampler=sampler)
            values = np.array([t.value for t in result.trials])
            medians[sampler].append(np.median(values[-16:]))
            if sampler == "tpe":
                medians["first"].append(np.median(values[:8]))
                assert result.best_value <= 1.01 * grid.best_value
    tpe, random, first = (np.mean(medians[k]) for k in ("tpe", "random", "first"))
    assert tpe < 0.85 * first
    assert tpe < 0.85 * random


def test_compare_lines_optuna_up_with_ours(ridge_objective):
    key = jax.random.key(0)
    results = {"optuna": hg.optuna_search(ridge_objective, RIDGE_SPACE, key, num_trials=8, batch_size=4),
               "random": hg.random_search(ridge_objective, RIDGE_SPACE, key, num_trials=8)}
    report = hg.compare(results)
    table = report.to_markdown()
    assert "| optuna |" in table and "| random |" in table
    rows = [r for r in report.rows if r["strategy"] == "optuna"]
    assert rows[-1]["trials"] == 8 and rows[-1]["best_value"] == results["optuna"].best_value
    frame = pytest.importorskip("pandas") and results["optuna"].to_dataframe()
    assert list(frame["number"]) == list(range(8))


# -- bad arguments ---------------------------------------------------------------------------------
def _raises_before_compiling(match, fn, *args, **kwargs):
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
    assert _compile.stats.compilations == compilations


@pytest.mark.parametrize("argname,value", [
    ("num_trials", 0), ("num_trials", 2.5), ("num_trials", True), ("batch_size", 0), ("batch_size", -1),
    ("chunk_size", 0), ("sampler", "cmaes"), ("sampler", 3), ("seed", -1), ("seed", 1.5), ("seed", 2**32),
])
def test_bad_arguments_are_refused_before_compiling(ridge_objective, argname, value):
    kwargs = {"num_trials": 4, argname: value}
    _raises_before_compiling(argname, hg.optuna_search, ridge_objective, RIDGE_SPACE, jax.random.key(0),
                             **kwargs)


def test_a_refused_seed_leaves_no_stored_study(ridge_objective, tmp_path):
    """numpy seeds only 0 <= seed < 2**32: a larger seed is refused before the store records the
    study, so the corrected call runs instead of being refused as another search."""
    storage = tmp_path / "study.db"
    _raises_before_compiling(r"seed=4294967296 .*2\*\*32", hg.optuna_search, ridge_objective, RIDGE_SPACE,
                             jax.random.key(0), 2, seed=2**32, storage=storage, study="s")
    result = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), 2, seed=2**32 - 1,
                              storage=storage, study="s")
    assert len(result.trials) == 2


def test_tpe_turns_the_constant_liar_on(ridge_objective, monkeypatch):
    """The docstring's batch bias relies on the constant liar, Optuna's default for TPE only from
    Optuna 5: "tpe" asks for it whatever Optuna is installed."""
    made = []

    class Recording(optuna.samplers.TPESampler):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(optuna.samplers, "TPESampler", Recording)
    result = hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=2, batch_size=2)
    assert result.strategy == "optuna-tpe"
    assert len(made) == 1 and made[0].get("constant_liar") is True


def test_bad_objective_space_key_and_study_are_refused(ridge_objective):
    key = jax.random.key(0)
    _raises_before_compiling("objective", hg.optuna_search, lambda h, k: 0.0, RIDGE_SPACE, key, 4)
    _raises_before_compiling("space", hg.optuna_search, ridge_objective, {"lr": hg.LogUniform(1e-3, 1.0)},
                             key, 4)
    _raises_before_compiling("key", hg.optuna_search, ridge_objective, RIDGE_SPACE, 0, 4)
    _raises_before_compiling("seed", hg.optuna_search, ridge_objective, RIDGE_SPACE, key, 4,
                             sampler=optuna.samplers.RandomSampler(), seed=1)
    maximising = optuna.create_study(direction="maximize")
    _raises_before_compiling("minimize", hg.optuna_search, ridge_objective, RIDGE_SPACE, key, 4,
                             study=maximising)
    study = optuna.create_study()
    _raises_before_compiling("sampler", hg.optuna_search, ridge_objective, RIDGE_SPACE, key, 4, study=study,
                             sampler=optuna.samplers.RandomSampler())
    _raises_before_compiling("study", hg.optuna_search, ridge_objective, RIDGE_SPACE, key, 4, study="s")
    assert len(maximising.trials) == 0 and len(study.trials) == 0  # nothing was asked


def test_missing_optuna_is_a_clear_import_error(ridge_objective, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hypergrad\[optuna\]'"):
        hg.optuna_search(ridge_objective, RIDGE_SPACE, jax.random.key(0), num_trials=4)


def test_recorded_seconds_are_the_whole_call(ridge, monkeypatch):
    """`spent("seconds")` at the last trial is the call's wall time, Optuna's asking and telling and
    the set-up included, as for the other strategies (it held the compile and trial seconds only).
    Load-proof: sleeps of a known length inside the call's untimed parts (its set-up checks, the
    sampler's asking, its telling, the host's bookkeeping between rounds) must all be in the
    recorded set-up seconds (a sleep lasts at least its length, however loaded the machine), and
    the recorded seconds can never exceed the wall time measured around the call."""
    import time

    slept = []

    def sleep(seconds=0.01):
        time.sleep(seconds)
        slept.append(seconds)

    class SlowSampler(optuna.samplers.RandomSampler):  # Optuna's own time: asking and telling
        def sample_independent(self, *args, **kwargs):
            sleep()
            return super().sample_independent(*args, **kwargs)

        def after_trial(self, *args, **kwargs):
            sleep()
            return super().after_trial(*args, **kwargs)

    checked = sys.modules["hypergrad.optuna_search"].check_space  # the call's set-up checks
    monkeypatch.setattr(sys.modules["hypergrad.optuna_search"], "check_space", lambda space: sleep(0.2) or
                        checked(space))
    objective = hg.Objective(ridge, sgd, num_steps=10)
    for _ in range(2):  # a cold call, then a warm one (nothing compiled)
        slept.clear()
        began = time.perf_counter()
        result = hg.optuna_search(objective, RIDGE_SPACE, jax.random.key(0), num_trials=6, batch_size=3,
                                  sampler=SlowSampler(seed=0), progress=lambda line: sleep())
        measured = time.perf_counter() - began
        recorded = float(result.spent("seconds")[-1])
        assert len(slept) == 1 + 6 * 2 + 6 + 2  # the checks; 2 params and a tell per trial; 2 rounds' lines
        timed = result.compile_seconds + sum(t.seconds for t in result.trials)
        assert recorded - timed >= sum(slept), (recorded, timed, sum(slept))
        assert recorded <= measured * (1 + 1e-9), (recorded, measured)


@pytest.mark.parametrize("kwargs, match", [
    ({"log": 123}, r"log=123 must be the path of a JSON-lines file"),  # was open()'s TypeError
    ({"log": "/proc/no_such_dir/trials.jsonl"}, r"log='/proc/no_such_dir/trials.jsonl': its directory"),
])
def test_a_bad_log_is_refused_before_compiling(ridge_objective, kwargs, match):
    _raises_before_compiling(match, hg.optuna_search, ridge_objective, hg.Space({"lr": hg.LogUniform(1e-3, 1.0)}),
                             jax.random.key(0), num_trials=4, **kwargs)


# -- several processes ---------------------------------------------------------------------------------
_SAMPLERS_WORKER = r'''
import optuna
optuna_search = sys.modules["hypergrad.optuna_search"]
evaluated = []  # rounds evaluated (each compiles or runs the program)
evaluate = optuna_search.evaluate_settings
optuna_search.evaluate_settings = lambda *a, **k: evaluated.append(1) or evaluate(*a, **k)
objective = hg.Objective(hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0),
                         lambda h: optax.sgd(h["lr"]), num_steps=5)
space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})
key = jax.random.key(0)
tpe = lambda **k: optuna.samplers.TPESampler(**k)


class Drifting(optuna.samplers.RandomSampler):
    def sample_independent(self, study, trial, name, distribution):
        value = super().sample_independent(study, trial, name, distribution)
        return distribution.low if jax.process_index() == 1 and trial.number >= 2 else value


calls = {  # each process's call: the same but for its sampler (or its study's)
    "seeds": lambda: hg.optuna_search(objective, space, key, 4, batch_size=2, sampler=tpe(seed=process)),
    "study": lambda: hg.optuna_search(objective, space, key, 4, batch_size=2,
                                      study=optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=process))),
    # a sampler that drifts from trial 2 on, on process 1 alone: round 2 differs
    "later": lambda: hg.optuna_search(objective, space, key, 4, batch_size=2, sampler=Drifting(seed=0)),
    "same": lambda: [t.value for t in hg.optuna_search(objective, space, key, 4, batch_size=2,
                                                       sampler=tpe(seed=0)).trials],
}
out = {}
for name, call in calls.items():
    evaluated.clear()
    try:
        out[name] = call()
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
    out[name] = [out[name], len(evaluated)]
with open(os.path.join(tmp, f"samplers{process}.json"), "w") as f:
    json.dump(out, f)
'''


def test_samplers_proposing_otherwise_on_two_processes_are_refused_on_every_process(tmp_path):
    """Two processes of one `jax.distributed` run given samplers seeded otherwise (TPESampler(seed=0)
    and seed=1), or studies whose samplers are: every process asked its own sampler, and the round's
    settings differed, which JAX refused with its own `AssertionError` ("passed to device_put is not
    the same on each process"), naming neither sampler= nor study=. Every process now refuses with
    one `ValueError` naming both and the fix, before the first round runs (nothing evaluated), or
    before the first round that differs (a sampler drifting on one process from its third trial on),
    and the next call still runs on both."""
    out = two_workers(tmp_path, WORKER_START + _SAMPLERS_WORKER, "samplers")

    def refusal(first):
        return (f"ValueError: optuna_search: the processes' samplers proposed different settings for trials {first} "
                f"to {first + 1} (process 1's differ from process 0's), so the processes cannot evaluate them "
                "together: every process asks its own sampler and must get the same proposals. Give the same "
                "sampler= on every process: 'tpe' or 'random' (seeded from the key, or by the same seed=), or an "
                "instance of the same class with the same settings and seed (TPESampler(seed=0) on every process, "
                "not seed=jax.process_index()); a study= must hold the same trials and such a sampler on every "
                "process")
    for i in (0, 1):
        assert out[i]["seeds"] == [refusal(0), 0], out[i]["seeds"]
        assert out[i]["study"] == [refusal(0), 0], out[i]["study"]
        assert out[i]["later"] == [refusal(2), 1], out[i]["later"]
        assert len(out[i]["same"][0]) == 4 and out[i]["same"][1] == 2
    assert out[0]["same"] == out[1]["same"]
