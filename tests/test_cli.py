"""The `hypergrad compare` command end to end, on a tiny budget."""

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import gc
import io
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import _compile, cli
from hypergrad.results import Trial
from hypergrad.outer import cohort_chunk, rows_computed
from hypergrad.problems.presets import preset


IRIS_RUN = ["compare", "--problem", "iris-mlp", "--budget", "8", "--steps", "8", "--quiet", "--cpu-devices", "1"]


@functools.cache
def _one_preset(problem, steps):
    """`preset(problem, steps)`, built once in this module: the programs compiled for its objective
    serve every later run that gets it (they are cached per objective object)."""
    return preset(problem, steps)


def _programs_kept(monkeypatch):
    """For a test of what a run writes and sets aside, not of what it compiles: every run gets
    `_one_preset`'s objective and keeps the programs an earlier run compiled for it (no
    `hg.clear_caches()` before each strategy), so the same programs are not compiled run after run.
    The compilation each strategy is charged is checked by the tests that run without this."""
    monkeypatch.setattr(cli, "preset", _one_preset)
    monkeypatch.setattr(hg, "clear_caches", lambda: None)


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """One complete `hypergrad compare` (IRIS_RUN) run in this process: (its folder, what it printed).
    Shared by the tests that only read a complete run's outputs, or start from one (they copy it).
    Its objective is `_one_preset`'s (each strategy still compiles its programs afresh here), so
    the programs it leaves in memory serve the tests that rerun it under `_programs_kept`."""
    out = tmp_path_factory.mktemp("iris") / "run"
    printed = io.StringIO()
    # one device: in a process where JAX has not started yet, the default would give every test after
    # this one two CPU devices (and their padding)
    with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as patched:
        patched.setattr(cli, "preset", _one_preset)
        assert cli.main([*IRIS_RUN, "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def two_problem_run(tmp_path_factory):
    """One `hypergrad compare` on two problems, the second the noisy preset (digits-noisy), in this
    process, not quiet: (its folder, what it printed on stderr). The tests of a run over several
    problems, of the noisy preset's report and of `--method auto` at a budget Implicit cannot pay
    (an Implicit step on digits-noisy costs about 27 runs at T=8) read it: one run instead of three."""
    out = tmp_path_factory.mktemp("two") / "run"
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["compare", "--problem", "breast-cancer-logistic,digits-noisy", "--budget", "8", "--steps",
                         "8", "--out", str(out), "--cpu-devices", "1"]) == 0
    return out, said.getvalue()


def _complete_run_in(out, iris_run):
    """`out` holding a copy of the shared complete run's outputs, as if IRIS_RUN had written it there."""
    shutil.copytree(iris_run[0], out)


def test_compare_writes_report_trials_results_and_plots(iris_run):
    pytest.importorskip("matplotlib")
    out, printed = iris_run
    for strategy in ("hypergradient", "random", "grid"):
        assert f"| {strategy} |" in printed
    report = (out / "report.md").read_text()
    assert "| hypergradient |" in report and "## Picks" in report
    assert "## At equal compute" in report and "## At equal wall time" in report and "budget (s)" in report
    assert "wins on test" in report.split("## Verdict")[1]
    # beside the wall time with compilation, the execution seconds alone, and where the compile seconds came from
    assert "## At equal execution time" in report and "| share compiling | programs compiled | programs loaded | cache |" in report
    assert "equal execution time (compilation left out)" in printed
    verdict = report.split("## Verdict")[1]
    assert "compilation included" in verdict and "equal execution time (" in verdict
    assert "compilation in the equal-wall-time seconds: hypergradient " in verdict
    assert "persistent cache off" in verdict  # conftest: HYPERGRAD_COMPILATION_CACHE=0
    assert re.search(r"the verdicts (agree|\*\*disagree\*\*)", verdict)
    results = json.loads((out / "results.json").read_text())
    assert results["comparison_by_execution_seconds"]["rows"] and set(results["compilation"]) == {
        "hypergradient", "random", "grid"}
    assert all(c["cache"] == "off" and c["compiled"] is None for c in results["compilation"].values())
    plan = results["plan"]
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    by_strategy = {}
    for trial in trials:
        by_strategy.setdefault(trial["strategy"].split("[")[0], []).append(trial)
    # the warm-up's trials, then every live tuner's outer steps and final iterates
    assert len(by_strategy["tune"]) == (plan["warmup"] or 0) + cli._evaluations(
        plan["population"], plan["tune_steps"], plan["halving"])
    # random search: its budget's trials, then (at equal wall time) the same search continued toward the
    # slowest strategy's seconds, numbered on. Usually the hypergradient (a larger program, compiled) is the
    # slower, but on a loaded machine random search's own compilation can make it the slowest by both
    # measures, and then nothing is continued: the rule, not the usual timing, decides what to expect.
    continued = results["random_at_equal_wall_time"]
    assert continued["budget_trials"] == plan["random_trials"]
    budget = {name: hg.Result.from_dict(result) for name, result in results["results"].items()}
    wanted = max(cli._trials_for(budget["random"], cli._slowest(budget)),
                 cli._trials_for(budget["random"], cli._slowest_execution(budget), by="execution"))
    assert continued["trials"] == wanted
    if wanted > plan["random_trials"]:
        assert wanted <= cli.EQUAL_TIME_CAP * plan["random_trials"]
        assert f"continued with the same key (the same first draws) to {continued['trials']} trials" in report
    assert [t["number"] for t in by_strategy["random"]] == list(range(continued["trials"]))
    assert len(by_strategy["grid"]) == plan["grid_points_per_axis"] ** 3
    # Equal compute: no strategy spent more than the budget plus one unit of its own granularity.
    for name, result in results["results"].items():
        assert result["runs"] <= 8 * 1.6, (name, result["runs"])
        loaded = hg.Result.from_dict(result)  # results.json reads back into Results
        assert loaded.to_dict() == result and loaded.best_trial.number == result["best"]["number"]
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert "best_value_vs_compute.png" in pngs and "learned_schedules.png" in pngs


def _random_result(trial_seconds: list[float], compile_seconds: float) -> hg.Result:
    # a test loss, as every pick of a real run has: a pick without one now ranks as not finite (no winner)
    trials = tuple(Trial(number=i, hparams={}, value=1.0, scores={"val_loss": 1.0, "test_loss": 1.0},
                         state="complete", flops=1.0, seconds=s, run_flops=1.0) for i, s in enumerate(trial_seconds))
    return hg.Result("random", trials, 1.0, compile_seconds)


def test_equal_wall_time_continues_random_search_to_the_slowest_seconds_within_its_cap():
    random = _random_result([0.01] * 20, compile_seconds=0.5)  # 0.7 s in all, 10 ms per trial
    # to 1.63 s: (1.63 - 0.5) / 0.01 = 113 trials, and 10% more (124.3) so the cut at 1.63 s falls inside them
    assert cli._trials_for(random, 1.63) == 125
    assert cli._trials_for(random, 100.0) == cli.EQUAL_TIME_CAP * 20  # capped
    assert cli._trials_for(random, 0.7) == cli._trials_for(random, 0.3) == 20  # as slow as the slowest: as it ran
    assert cli._trials_for(_random_result([0.0] * 3, 0.1), 5.0) == 3  # no execution time measured: as it ran


def test_verdict_at_equal_wall_time_is_at_the_slowest_strategys_seconds():
    quick = dataclasses.replace(_random_result([0.01] * 20, compile_seconds=0.5), strategy="grid")
    slow = _random_result([0.1] * 20, compile_seconds=1.0)  # random search, the slowest: 3.0 s
    results = {"grid": quick, "random": slow}
    verdict = cli._verdict("p", results, results)
    assert "- p, equal wall time (3.0 s, compilation included): **" in verdict and "continued" not in verdict
    more = dataclasses.replace(slow, trials=slow.trials + slow.trials)  # as if continued to 40 trials
    assert "(3.0 s, compilation included; random search continued to 40 trials)" in cli._verdict(
        "p", results, dict(results, random=more))
    # without compilation: the most execution seconds any strategy's trials took (random's 2.0 s)
    assert "- p, equal execution time (2.0 s, compilation left out): **" in verdict


def _strategy(name: str, seconds: list[float], values: list[float], compile_seconds: float,
              compilation: dict | None = None) -> hg.Result:
    """A Result whose trial i took seconds[i] and scored values[i] on validation and test (its setting:
    trials of equal values are one setting, as the same hyperparameters on the same key are)."""
    trials = tuple(Trial(number=i, hparams={"setting": np.asarray(v)}, value=v, scores={"val_loss": v, "test_loss": v},
                         state="complete", flops=1.0, seconds=s, run_flops=1.0)
                   for i, (s, v) in enumerate(zip(seconds, values)))
    return hg.Result(name, trials, 1.0, compile_seconds, {} if compilation is None else {"compilation": compilation})


def _noiseless(pick) -> np.ndarray:
    """Per-example test losses all equal to the pick's test loss: any difference is beyond noise."""
    return np.full(8, pick.scores["test_loss"])


def _cold_gradient_warm_random():
    """The hypergradient compiles 4 s (cold), then 4 steps of 0.5 s, its best (0.3) last: 6 s of wall, 2 s of
    execution. Random search compiles 0.5 s (warm), then 20 trials of 0.05 s at 0.5 (1 s of execution);
    continued to 120 trials, its trial 100 (0.2) ends at 5.05 s of execution, 5.55 s of wall."""
    cold = {"cache": "cold", "compiled": 12, "loaded": 0}
    warm = {"cache": "warm", "compiled": 0, "loaded": 2}
    gradient = _strategy("tune", [0.5] * 4, [1.0, 0.9, 0.8, 0.3], 4.0, cold)
    values = [0.5] * 120
    values[100] = 0.2
    random = _strategy("random", [0.05] * 20, values[:20], 0.5, warm)
    continued = _strategy("random", [0.05] * 120, values, 0.5, warm)
    results = {"hypergradient": gradient, "random": random}
    return results, dict(results, random=continued)


def test_equal_execution_time_picks_what_the_execution_seconds_imply_and_the_verdicts_can_disagree():
    results, by_seconds = _cold_gradient_warm_random()
    # with compilation: 6 s (the hypergradient's wall), within which random search reaches its trial 100
    assert by_seconds["random"].best_within(6.0, "seconds").number == 100
    # without: 2 s (the hypergradient's execution), within which random search has trials 0-39 only
    assert by_seconds["random"].best_within(2.0, "execution").number == 0
    assert results["hypergradient"].best_within(2.0, "execution").number == 3
    verdict = cli._verdict("p", results, by_seconds, per_example=_noiseless)
    assert ("- p, equal wall time (6.0 s, compilation included; random search continued to 120 trials): "
            "**random** wins on test: random (val 0.2") in verdict
    assert "- p, equal execution time (2.0 s, compilation left out): **hypergradient** wins on test: " in verdict
    assert ("compilation in the equal-wall-time seconds: hypergradient 4.0 s of its 6.0 s (cold cache: 12 programs "
            "compiled); random 0.5 s of its 6.5 s (warm cache: 2 programs loaded, none compiled).") in verdict
    assert ("the verdicts **disagree** (**random** with compilation, **hypergradient** without)") in verdict
    # the call's other set-up seconds are named beside the compilation and counted in the wall
    set_up = {name: dataclasses.replace(r, info={**r.info, "setup_seconds": 1.0}) for name, r in by_seconds.items()}
    assert "hypergradient 4.0 s (and 1.0 s of other set-up) of its 7.0 s (cold cache" in cli._verdict(
        "p", results, set_up, per_example=_noiseless)
    # the same strategies with no compilation at all: both equal-time verdicts are the hypergradient's
    free = {name: dataclasses.replace(r, compile_seconds=0.0) for name, r in by_seconds.items()}
    verdict = cli._verdict("p", dict(free, random=dataclasses.replace(results["random"], compile_seconds=0.0)),
                           free, per_example=_noiseless)
    assert "- p, equal wall time (2.0 s, compilation included; random search continued to 120 trials): " \
           "**hypergradient** wins" in verdict
    assert "the verdicts agree (**hypergradient**)" in verdict and "disagree" not in verdict


def test_equal_time_sections_say_where_each_strategys_compile_seconds_came_from():
    results, by_seconds = _cold_gradient_warm_random()
    lines = "\n".join(cli._equal_time_sections(results, by_seconds, ("TABLE-WALL", "TABLE-EXECUTION")))
    wall, execution = lines.split("## At equal execution time")
    assert "TABLE-WALL" in wall and "TABLE-EXECUTION" in execution
    assert "| hypergradient | 4.0 | 6.0 | 67% | 12 | 0 | cold |" in wall and "| share compiling |" in wall
    assert "| random | 0.5 | 6.5 | 8% | 0 | 2 | warm |" in wall
    assert "most any one's trials took, 2.0 s: random search, continued as above, executed its 120 trials in " \
           "6.0 s" in execution


def test_provenance_tells_a_cold_cache_from_a_warm_one(monkeypatch):
    def counts(requests, hits, loads):
        return {"jax_requests": requests, "jax_hits": hits, "store_loads": loads}

    monkeypatch.setattr(cli, "_cache_on", lambda: True)
    assert cli._provenance(counts(5, 0, 0)) == {"cache": "cold", "compiled": 5, "loaded": 0, **counts(5, 0, 0)}
    assert cli._provenance(counts(5, 5, 1))["cache"] == "warm" and cli._provenance(counts(5, 5, 1))["loaded"] == 6
    assert cli._provenance(counts(0, 0, 2))["cache"] == "warm"  # a search program from the program store alone
    assert cli._provenance(counts(5, 3, 0))["cache"] == "partly warm"
    assert cli._provenance(counts(0, 0, 0))["cache"] == "in memory"
    monkeypatch.setattr(cli, "_cache_on", lambda: False)
    assert cli._provenance(counts(0, 0, 0))["cache"] == "off" and cli._provenance(counts(0, 0, 0))["compiled"] is None


def test_equal_time_continues_random_search_toward_the_slowest_execution_seconds_too(monkeypatch):
    """The hypergradient compiles 0.1 s and executes 2 s; random search compiles 1.5 s and executes 0.2 s.
    Toward the slowest wall (2.1 s) random search needs ceil(1.1 * 0.6 / 0.01) = 66 trials; toward the
    slowest execution (2 s), 220, capped at 200: it is continued to 200."""
    random = _random_result([0.01] * 20, compile_seconds=1.5)
    gradient = dataclasses.replace(_random_result([0.5] * 4, compile_seconds=0.1), strategy="tune")
    assert cli._trials_for(random, 2.1) == 66
    assert cli._trials_for(random, 0.5, by="execution") == 55 and cli._trials_for(random, 0.2, by="execution") == 20
    asked = []

    def continued(objective, space, key, num_trials, **kwargs):
        asked.append((num_trials, kwargs["extends"]))
        return _random_result([0.01] * num_trials, compile_seconds=1.5)

    monkeypatch.setattr(hg, "random_search", continued)
    by_seconds = cli._at_equal_wall_time(None, None, None, {"hypergradient": gradient, "random": random}, None, None)
    assert asked == [(200, random)] and len(by_seconds["random"].trials) == 200
    assert by_seconds["random"].info["compilation"]["cache"] == "off"  # conftest: the persistent cache is off


def test_a_second_run_says_its_programs_came_from_the_warm_cache(tmp_path):
    """Two processes with the persistent cache on, in a folder of their own: the first compiles every
    program (cold), the second loads them all and compiles none (warm), and the reports say so."""
    env = {**os.environ, "HYPERGRAD_COMPILATION_CACHE": str(tmp_path / "cache")}
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        proc = subprocess.run([sys.executable, "-m", "hypergrad.cli", "compare", "--problem", "iris-mlp", "--budget",
                               "8", "--steps", "8", "--out", str(out), "--quiet", "--cpu-devices", "1"],
                              capture_output=True, text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append((json.loads((out / "results.json").read_text())["compilation"], (out / "report.md").read_text()))
    (cold, cold_report), (warm, warm_report) = runs
    assert cold["hypergradient"]["cache"] == "cold" and cold["hypergradient"]["loaded"] == 0
    # each strategy starts with the in-memory caches emptied: it compiles its own programs, or loads
    # one an earlier strategy of the same run stored (never "in memory", reused at no cost)
    assert all(c["cache"] in ("cold", "partly warm") and c["compiled"] > 0 for c in cold.values()), cold
    assert all(c["cache"] == "warm" and c["compiled"] == 0 and c["loaded"] > 0 for c in warm.values()), warm
    cold_verdict, warm_verdict = cold_report.split("## Verdict")[1], warm_report.split("## Verdict")[1]
    assert "(cold cache: " in cold_verdict and "(warm cache: " not in cold_verdict
    assert "(warm cache: " in warm_verdict and "(cold cache: " not in warm_verdict
    assert "| warm |" in warm_report and "| cold |" in cold_report  # the compilation table


def test_compare_refuses_a_bad_budget(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error, before anything runs
        cli.main(["compare", "--budget", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--budget" in capsys.readouterr().err


def test_compare_refuses_an_out_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(SystemExit) as exit_:  # was a FileExistsError traceback after the plan was made
        cli.main(["compare", "--out", str(a_file)])
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err and a_file.read_text() == "mine"


def test_compare_refuses_an_out_it_cannot_create_before_building_anything(tmp_path, capsys, monkeypatch):
    # was a raw NotADirectoryError (or PermissionError) traceback, exit 1, after every preset was planned
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access  # as root every folder is writable: the permission is denied by hand
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(locked) and access(path, mode))
    monkeypatch.setattr(cli, "preset", lambda *args: pytest.fail("a preset was built"))
    for out, why in ((a_file / "sub", f"({a_file} is a file)"), (a_file / "sub" / "deeper", f"({a_file} is a file)"),
                     (locked / "run", f"({locked} cannot be written)"), (locked, "cannot be written")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["compare", "--problem", "iris-mlp", "--out", str(out), "--quiet", "--cpu-devices", "1"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --out" in err and why in err, err
    assert a_file.read_text() == "mine" and os.listdir(locked) == []
    with pytest.raises(SystemExit) as exit_:  # was a raw FileNotFoundError from os.makedirs('')
        cli.build_parser().parse_args(["compare", "--out", ""])
    assert exit_.value.code == 2 and "argument --out: '': give a folder" in capsys.readouterr().err
    assert cli._folder(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")  # created later, by set_aside
    assert not (tmp_path / "new").exists()


def test_compare_refuses_more_cpu_devices_than_its_cap(capsys):
    # --cpu-devices 100000 made JAX create 100,000 devices (1.6 GB, over 30 s) before any output
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["compare", "--cpu-devices", str(cli.MAX_CPU_DEVICES + 1)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--cpu-devices" in err and f"from 1 to {cli.MAX_CPU_DEVICES}" in err
    parsed = cli.build_parser().parse_args(["compare", "--cpu-devices", str(cli.MAX_CPU_DEVICES)])
    assert parsed.cpu_devices == cli.MAX_CPU_DEVICES >= 4 * (os.cpu_count() or 1)


def test_compare_help_names_each_default(monkeypatch, capsys):
    # `hypergrad compare --help` gave no default for --budget, --out, --seed, --outer-lr,
    # --chunk-size or --cpu-devices (0, one device per core), though the README relies on them
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapping inside a default
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["compare", "--help"])
    assert exit_.value.code == 0
    lines, option = {}, None  # option -> its entry, with the help argparse puts on the next line after a long name
    for line in capsys.readouterr().out.split("options:")[1].splitlines():
        option = line.split()[0] if line.startswith("  -") else option
        if option is not None:
            lines[option] = lines.get(option, "") + " " + line.strip()
    expected = {"--problem": "digits-mlp", "--budget": "300", "--out": "results", "--seed": "0",
                "--outer-lr": "0.1", "--chunk-size": "64", "--cpu-devices": "0, one per core",
                "--steps": "the preset's", "--checkpoint-every": "no checkpointing", "--method": "auto"}
    for option, default in expected.items():
        assert f"default: {default}" in lines[option], (option, lines[option])
    compare = cli.build_parser()._subparsers._group_actions[0].choices["compare"]
    with_defaults = {a.option_strings[-1] for a in compare._actions if a.default not in (None, False, "==SUPPRESS==")}
    assert with_defaults <= set(expected), with_defaults - set(expected)


def test_compare_refuses_a_budget_below_one_gradient_step(tmp_path, capsys, monkeypatch):
    # The gradient strategy used to fall back to one tuner's step regardless: at budget 2 it spent
    # 3.9 runs on breast-cancer-logistic and was still reported "at equal compute".
    out = tmp_path / "small"
    args = ["compare", "--problem", "iris-mlp,breast-cancer-logistic", "--steps", "5", "--out", str(out), "--quiet",
            "--cpu-devices", "1"]
    monkeypatch.setattr(cli, "preset", _one_preset)
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--budget", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --budget: 2 training runs cannot pay" in err
    assert not out.exists()  # every problem's budget is checked before anything runs or is written
    least = int(re.search(r"give --budget (\d+) or more", err).group(1))
    objective, space = _one_preset("iris-mlp", 5)  # the run's objective: its FLOP counts are traced once
    step_runs = cli.tune_step_cost(objective, space, jax.random.key(0), hg.Reverse())
    assert least == math.ceil(cli._minimum_budget(step_runs)) and cli._minimum_budget(step_runs) == 2 * step_runs
    assert cli._gradient_plan(least, step_runs) is not None  # the least budget it names does fit
    assert cli._gradient_plan(2 * step_runs * (1 - 1e-9), step_runs) is None


def test_plans_in_words():
    assert cli._gradient_words(cli._gradient_plan(10, step_runs=3.0)) == (
        "one tuner started from the space's centre for 2 outer steps")
    plan = cli._gradient_plan(300, step_runs=3.0)
    assert cli._gradient_words(plan) == (f"75 random warm-up trials, then 8 tuners started from the best of them for "
                                         f"{plan['tune_steps']} outer steps (halving every {plan['halving']} steps)")


def test_budget_plan_fits_the_budget():
    plan = cli._budget_plan(300, step_runs=2.2, trial_runs=1.01, num_grid_axes=3)
    # the warm-up: a quarter of the budget (75) plus the 18 trials that the 18.2 runs the outer steps leave pay for
    assert plan["population"] == cli.POPULATION and plan["warmup"] == 93 and plan["halving"] == plan["tune_steps"] // 4
    spent = plan["warmup"] + cli._evaluations(plan["population"], plan["tune_steps"], plan["halving"]) * 2.2
    assert spent + 1 > 300  # no further warm-up trial fits
    assert spent <= 300 < plan["warmup"] + cli._evaluations(plan["population"], plan["tune_steps"] + 1,
                                                            max(1, (plan["tune_steps"] + 1) // 4)) * 2.2
    assert plan["random_trials"] * 1.01 <= 300
    assert plan["grid_points_per_axis"] ** 3 * 1.01 <= 300 < (plan["grid_points_per_axis"] + 1) ** 3 * 1.01


def test_budget_plan_counts_the_padding_of_searches_split_over_devices():
    """On 2 devices a search of 31 trials runs, and is charged, 32 rows; the plan lowers its counts
    until the padded runs fit: 30 random trials at a budget of 31, a 2-point grid where 3^3 = 27
    would run 28 rows at a budget of 27, and the gradient strategy's warm-up counted padded too."""
    two = lambda n: cli._rows_run(n, 64, 2)  # noqa: E731
    assert [two(n) for n in (31, 30, 27, 1, 100)] == [32, 30, 28, 2, 100]
    assert cli._rows_run(31, 64, 1) == 31 and cli._rows_run(65, 64, 1) == 66  # one device: two calls of 33
    plan = cli._budget_plan(31, step_runs=2.2, trial_runs=1.0, num_grid_axes=3, rows=two, warmup_rows=two)
    assert plan["random_trials"] == 30 and plan["grid_points_per_axis"] == 3  # 28 rows <= 31
    assert cli._budget_plan(27, step_runs=2.2, trial_runs=1.0, num_grid_axes=3, rows=two)["grid_points_per_axis"] == 2
    assert cli._budget_plan(31, step_runs=2.2, trial_runs=1.0, num_grid_axes=3)["random_trials"] == 31  # one device
    for budget in (31, 57, 300):
        plan = cli._budget_plan(budget, step_runs=2.2, trial_runs=1.0, num_grid_axes=3, rows=two, warmup_rows=two)
        warmup = two(plan["warmup"]) if plan["warmup"] else 0
        assert warmup + cli._evaluations(plan["population"], plan["tune_steps"], plan["halving"]) * 2.2 <= budget
        assert two(plan["random_trials"]) <= budget and two(plan["grid_points_per_axis"] ** 3) <= budget


def test_evaluations_count_halving_as_the_driver_does():
    assert cli._evaluations(8, 3, None) == 32
    # halving on a CPU: one tuner per device, so rounds pad to the devices when there are several
    # (a test before may have made two)
    chunk = cohort_chunk(None, 1)
    assert chunk == jax.local_device_count()
    assert cli._evaluations(8, 4, 1) == sum(rows_computed(n, chunk) for n in (8, 4, 2, 1, 1))  # halved after
    assert cli._evaluations(5, 2, 2) == 2 * rows_computed(5, chunk) + rows_computed(3, chunk)  # steps 0, 1, 2
    assert rows_computed(5, chunk) >= 5 and rows_computed(3, chunk) >= 3
    if chunk == 1:
        assert cli._evaluations(8, 4, 1) == 8 + 4 + 2 + 1 + 1


def test_small_budgets_fall_back_to_fewer_tuners():
    plan = cli._gradient_plan(8, step_runs=2.0)
    assert plan["population"] < cli.POPULATION and plan["tune_steps"] >= 1
    assert (plan["warmup"] or 0) + cli._evaluations(plan["population"], plan["tune_steps"], plan["halving"]) * 2 <= 8


def _evaluations_step_by_step(population, steps, halving):
    """The planner's count as it was computed before, one step at a time (the reference)."""
    live, total, chunk = population, 0, cli.cohort_chunk(None, halving, population)
    for step in range(steps + 1):
        total += rows_computed(live, chunk)
        if halving and step < steps and (step + 1) % halving == 0 and live > 1:
            live = -(-live // 2)
    return total


def _gradient_plan_step_by_step(budget, step_runs, warmup_rows=lambda n: n):
    """The gradient strategy's plan as it was made before: steps tried 1, 2, ... (the reference)."""
    for population in (cli.POPULATION, 4, 2, 1):
        warmup = max(population, round(cli.WARMUP_SHARE * budget)) if population > 1 else 0
        fits = 0
        for steps in range(1, 100_000):
            halving = max(1, steps // 4) if population > 1 else None
            if (warmup_rows(warmup) if warmup else 0) + _evaluations_step_by_step(
                    population, steps, halving) * step_runs > budget:
                break
            fits = steps
        if fits:
            return {"population": population, "warmup": warmup or None, "tune_steps": fits,
                    "halving": max(1, fits // 4) if population > 1 else None}
    return None


@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_plans_are_made_per_halving_round_and_equal_the_step_by_step_plans(monkeypatch, chunk):
    """Planning tried 1, 2, ... steps, each counted step by step: O(steps^2), 8 s at --budget 1e5 and
    a hang at 1e7, with the steps silently capped at 100,000. Counted per halving round and bisected,
    it gives the same plans (padding to 1, 2 or 3 devices, or none, and padded warm-ups included)."""
    if chunk is not None:  # halving pads each round's tuners to the devices (`cohort_chunk`)
        monkeypatch.setattr(cli, "cohort_chunk", lambda size, halving, population=None: (
            chunk if population is None else min(chunk, population)) if halving else size)
    for population in range(1, 10):
        for halving in (None, *range(1, 13)):
            for steps in range(0, 41):
                assert cli._evaluations(population, steps, halving) == _evaluations_step_by_step(
                    population, steps, halving), (population, steps, halving)
    three = lambda n: cli._rows_run(n, 64, 3)  # noqa: E731
    budgets = [*range(1, 80), 7.5, 13.3, 21.9, 99.99, 101, 257, 300, 999, 1001, 2468.5]
    for step_runs in (1.0, 2.2, 2.68, 3.0, 7.3):
        for budget in budgets:
            for warmup_rows in (lambda n: n, three):
                expected = _gradient_plan_step_by_step(budget, step_runs, warmup_rows)
                assert cli._gradient_plan(budget, step_runs, warmup_rows) == expected, (budget, step_runs)


def test_planning_a_large_budget_is_quick_and_uncapped(monkeypatch):
    counted, rows = [], rows_computed
    monkeypatch.setattr(cli, "rows_computed", lambda *args: counted.append(1) or rows(*args))
    plan = cli._gradient_plan(3000, step_runs=2.68)
    assert plan == _gradient_plan_step_by_step(3000, 2.68) and len(counted) < 1000  # was 125,000 counts
    step_runs = 2.68  # iris-mlp's hypergradient at T=3, in runs
    for budget in (1e7, 1e12):  # 1e7 used to hang; past about 1e6 the steps were capped at 100,000
        plan = cli._gradient_plan(budget, step_runs)
        steps, population, warmup = plan["tune_steps"], plan["population"], plan["warmup"]
        assert steps > 100_000 and population == cli.POPULATION
        assert warmup + cli._evaluations(population, steps, plan["halving"]) * step_runs <= budget
        assert warmup + cli._evaluations(population, steps + 1, max(1, (steps + 1) // 4)) * step_runs > budget
    assert cli._gradient_plan(1e308, 1.0)["tune_steps"] > 1e300  # no count overflows a float


def test_compare_on_two_problems_writes_a_summary_of_who_wins_where(two_problem_run):
    out, _ = two_problem_run
    summary = (out / "summary.md").read_text()
    for problem in ("breast-cancer-logistic", "digits-noisy"):
        assert (out / problem / "report.md").exists()
        assert f"- {problem}, equal compute: **" in summary and f"- {problem}, equal wall time (" in summary


def test_compare_refuses_an_unknown_problem(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["compare", "--problem", "digits-mlp,mnist", "--out", str(tmp_path)])


def _picked(weights) -> hg.Result:
    trial = Trial(number=0, hparams={"example_weight": np.asarray(weights)}, value=0.5, scores={"val_loss": 0.5},
                  state="complete", flops=1.0, seconds=0.1, run_flops=1.0)
    return hg.Result("x", (trial,), 1.0, 0.0)


def test_example_weights_section_reads_each_picks_weights_against_the_flipped_labels():
    corrupted = np.asarray([True, False, False, True, False, False])
    results = {"hypergradient": _picked(np.where(corrupted, 0.1, 0.9)), "random": _picked(0.3),
               "mixed": _picked([0.2, 0.1, 0.9, 0.5, 0.6, 0.7])}
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:]
            for line in cli._example_weights(results, corrupted) if line.startswith("| ") and "strategy" not in line}
    assert rows["hypergradient"] == ["0.9", "0.1", "1.000"]  # every corrupted example weighs less
    assert rows["random"] == ["0.3", "0.3", "0.500"]  # one weight for every example: chance
    # corrupted weights 0.2 and 0.5 against clean 0.1, 0.9, 0.6, 0.7: 6 of the 8 pairs ordered
    assert rows["mixed"] == ["0.575", "0.35", "0.750"]
    assert cli._example_weights({"grid": _random_result([0.1], 0.0)}, corrupted) == []
    assert cli._example_weights(results, np.zeros(6, bool)) == []  # nothing flipped: no AUC to read


def test_picks_describe_schedules_per_layer_values_and_long_vectors_apart():
    line = cli._describe({"lr": np.linspace(1.0, 0.5, 4), "layers": np.asarray([0.1, 0.2]),
                          "example_weight": np.linspace(0.0, 1.0, 20), "momentum": np.asarray(0.9),
                          "flat": np.full(4, 0.25)}, num_steps=4)
    assert "lr=schedule 1 -> 0.5 (min 0.5, max 1)" in line
    assert "layers=[0.1, 0.2]" in line
    assert "example_weight=20 values, mean 0.5 (min 0, max 1)" in line
    assert "momentum=0.9" in line and "flat=constant 0.25" in line


def test_compare_on_a_noisy_preset_reports_what_the_example_weights_learned(two_problem_run):
    out, said = two_problem_run
    out = out / "digits-noisy"
    report = (out / "report.md").read_text()
    section = report.split("## What the example weights learned")[1].split("##")[0]
    assert "323 of the 1078 training labels were flipped" in section
    for strategy in ("hypergradient", "random", "grid"):
        assert f"| {strategy} |" in section
    summary_line = report.split("## Verdict")[1].split("digits-noisy, example weights of the picks")[1]
    assert "random" in summary_line and "AUC 0.50" in summary_line
    if "[plots skipped]" not in said:
        assert (out / "example_weights.png").exists() and "![example_weights.png]" in report


def test_auto_falls_back_to_reverse_where_the_budget_cannot_pay_for_implicits_step(two_problem_run):
    # at T=8 an Implicit step on digits-noisy costs about 27 runs (CG on the full training set): auto used to refuse
    # a budget (20) that Reverse fits, and so refused every problem of the run (moved from test_cli_method_s34.py,
    # where it ran a compare of its own at --budget 20; the shared run's budget of 8 is as far below Implicit's step)
    out, said = two_problem_run
    plan_lines = [line for line in said.splitlines() if line.startswith("[plan]")]
    assert len(plan_lines) == 2  # one per problem, in the order given: digits-noisy's second
    noisy_plan = plan_lines[1]
    assert "(Reverse)" in noisy_plan and "Implicit" not in noisy_plan
    results = json.loads((out / "digits-noisy" / "results.json").read_text())
    assert results["plan"]["hold"] == [] and results["plan"]["method"] == "Reverse"
    assert "(Reverse, Adam 0.1 in unconstrained coordinates)" in (out / "digits-noisy" / "report.md").read_text()


def _listing(folder):
    """Every file under `folder`, relative, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_moves_the_previous_runs_outputs_aside_together(tmp_path, monkeypatch, capsys, iris_run):
    # The second run used to move only trials.jsonl aside (to trials.jsonl.previous): interrupted, it left the
    # first run's report.md, results.json and plots beside its own partial trials.jsonl.
    _programs_kept(monkeypatch)
    out = tmp_path / "run"
    args = [*IRIS_RUN, "--out", str(out)]
    _complete_run_in(out, iris_run)  # the first run: a complete one
    first = _listing(out)
    assert {"report.md", "results.json", "trials.jsonl"} <= set(first)
    assert set(first) <= set(cli.OUTPUTS), set(first) - set(cli.OUTPUTS)  # every output is one it sets aside

    def interrupted(*_, **__):
        raise KeyboardInterrupt  # after every strategy ran, before anything but trials.jsonl was written
    monkeypatch.setattr(cli, "_write_outputs", interrupted)
    capsys.readouterr()
    assert cli.main(args) == 130  # the shell's status for Ctrl-C, with where the partial trials are
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and f"trials computed so far are in {out / 'trials.jsonl'}" in err
    assert str(out / "previous-interrupted") in err
    assert sorted(os.listdir(out)) == ["previous", "trials.jsonl"]  # only the new run's partial log at the top
    assert (out / "trials.jsonl").read_text() and (out / "trials.jsonl").read_bytes() != first["trials.jsonl"]
    assert _listing(out / "previous") == first  # the whole first run, kept
    interrupted_log = (out / "trials.jsonl").read_bytes()

    # a third run sets the interrupted one's partial log aside in previous-interrupted/: the complete first run
    # stays whole in previous/ (it used to be deleted to make room for the partial one)
    monkeypatch.undo()
    _programs_kept(monkeypatch)
    assert cli.main(args) == 0
    assert _listing(out / "previous") == first
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": interrupted_log}
    assert {"report.md", "results.json", "trials.jsonl"} <= set(os.listdir(out))


def test_a_run_stopped_while_writing_its_report_leaves_no_report_and_keeps_the_complete_one(tmp_path, monkeypatch,
                                                                                               iris_run):
    # report.md was opened (created empty) before its text was made: a run stopped there left an empty report.md,
    # so the next run took it for a complete one and replaced the last complete run kept in previous/.
    _programs_kept(monkeypatch)
    out = tmp_path / "run"
    args = [*IRIS_RUN, "--out", str(out)]
    _complete_run_in(out, iris_run)  # the first run: a complete one
    first = _listing(out)

    def stopped(*_, **__):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_report_markdown", stopped)
    assert cli.main(args) == 130
    assert "report.md" not in os.listdir(out) and not [n for n in os.listdir(out) if n.startswith(".partial-")]
    assert json.loads((out / "results.json").read_text())["problem"] == "iris-mlp"  # written whole before it
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "previous") == first


def _marked(out, *folders):
    """Writes the marker a run on several problems (`folders`) writes into `out` before it runs; its bytes."""
    out.mkdir(parents=True, exist_ok=True)
    cli._mark(str(out), list(folders))
    return (out / cli.MARKER).read_bytes()


def test_setting_aside_takes_a_run_on_several_problems_and_leaves_other_files(tmp_path):
    out = tmp_path / "mixed"
    marker = _marked(out, "iris-mlp", "digits-mlp")
    (out / "iris-mlp").mkdir(parents=True)
    (out / "iris-mlp" / "report.md").write_text("iris")
    (out / "summary.md").write_text("who wins")
    (out / "trials.jsonl.previous").write_text("older")  # as the old _fresh_log left it
    (out / "notes.txt").write_text("mine")  # not the command's: stays where it is
    (out / "previous").mkdir()
    (out / "previous" / "report.md").write_text("oldest")
    assert cli.set_aside(str(out)) == str(out / "previous")
    assert sorted(os.listdir(out)) == ["notes.txt", "previous"]
    assert _listing(out / "previous") == {"iris-mlp/report.md": b"iris", "summary.md": b"who wins",
                                          "trials.jsonl.previous": b"older", cli.MARKER: marker}
    assert cli.set_aside(str(out)) is None and _listing(out / "previous")["summary.md"] == b"who wins"
    # a set-aside interrupted half way (report.md moved, results.json not yet) is completed by the next one
    (out / ".previous-partial").mkdir()
    (out / ".previous-partial" / "report.md").write_text("new")
    (out / "results.json").write_text("{}")
    assert cli.set_aside(str(out)) == str(out / "previous")
    assert sorted(os.listdir(out)) == ["notes.txt", "previous"]
    assert _listing(out / "previous") == {"report.md": b"new", "results.json": b"{}"}
    assert cli.set_aside(str(tmp_path / "new")) is None and (tmp_path / "new").is_dir()


def test_setting_aside_an_interrupted_run_never_deletes_the_last_complete_one(tmp_path):
    # An interrupted run's partial trials.jsonl counted as "a previous run": the next set_aside moved it into
    # previous/ and deleted the complete run kept there (report, results, plots). A run is complete when it holds
    # report.md (summary.md on several problems); anything less goes to previous-interrupted/, replacing an older
    # interrupted one, and previous/ stays.
    out = tmp_path / "run"
    out.mkdir()
    complete = {"report.md": b"# run A", "results.json": b"{}", "trials.jsonl": b"A\n"}
    for name, data in complete.items():
        (out / name).write_bytes(data)
    assert cli.set_aside(str(out)) == str(out / "previous")  # run B starts
    (out / "trials.jsonl").write_text("B partial\n")  # ... and is interrupted
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")  # run C starts
    assert _listing(out / "previous") == complete
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": b"B partial\n"}
    assert sorted(os.listdir(out)) == ["previous", "previous-interrupted"]
    (out / "trials.jsonl").write_text("")  # C is interrupted before its first trial: the next one replaces B's
    (out / "results.json").write_text("{")  # ... or while writing its outputs, before report.md
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "previous") == complete
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": b"", "results.json": b"{"}
    # on several problems a run is complete once it wrote summary.md, whatever its problems' folders hold
    marker = _marked(out, "iris-mlp", "digits-mlp")
    (out / "iris-mlp").mkdir()
    (out / "iris-mlp" / "report.md").write_text("iris")  # the first problem done, the run interrupted on the second
    (out / "digits-mlp").mkdir()
    (out / "digits-mlp" / "trials.jsonl").write_text("digits partial")
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "previous") == complete
    assert _listing(out / "previous-interrupted") == {"iris-mlp/report.md": b"iris", cli.MARKER: marker,
                                                      "digits-mlp/trials.jsonl": b"digits partial"}
    _marked(out, "iris-mlp")
    (out / "iris-mlp").mkdir()
    (out / "iris-mlp" / "report.md").write_text("iris 2")
    (out / "summary.md").write_text("who wins")
    assert cli.set_aside(str(out)) == str(out / "previous")  # a complete run replaces the older complete one
    assert _listing(out / "previous") == {"iris-mlp/report.md": b"iris 2", "summary.md": b"who wins",
                                          cli.MARKER: (out / "previous" / cli.MARKER).read_bytes()}
    assert "digits-mlp/trials.jsonl" in _listing(out / "previous-interrupted")  # the last interrupted one stays
    # a set-aside of an interrupted run, itself interrupted half way, is completed by the next one into the same place
    (out / ".previous-interrupted-partial").mkdir()
    (out / ".previous-interrupted-partial" / "trials.jsonl").write_text("D partial")
    (out / "results.json").write_text("{}")  # left at the top by that set-aside; with report.md missing
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": b"D partial", "results.json": b"{}"}
    assert _listing(out / "previous")["summary.md"] == b"who wins"
    assert sorted(os.listdir(out)) == ["previous", "previous-interrupted"]


def test_setting_aside_leaves_a_folder_named_after_a_preset_that_no_run_of_it_wrote(tmp_path):
    # Any folder named after a preset counted as a per-problem output: a complete run written with
    # `--out res/digits-mlp` (the docstring's example) was moved to res/previous-interrupted/ as "interrupted" by the
    # next `--out res` run, and deleted by the set-aside after the next interrupted one. Only the folders that a run's
    # marker names are moved now.
    out = tmp_path / "res"
    own = {"report.md": b"# run A", "results.json": b"{}", "trials.jsonl": b"A\n"}
    for name, data in own.items():
        (out / "digits-mlp").mkdir(parents=True, exist_ok=True)
        (out / "digits-mlp" / name).write_bytes(data)
    (out / "trials.jsonl").write_text("B partial\n")  # a run into res, interrupted
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "digits-mlp") == own  # left where it is
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": b"B partial\n"}
    (out / "trials.jsonl").write_text("C partial\n")  # another one, interrupted too
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "digits-mlp") == own


def test_setting_aside_never_deletes_a_complete_run_an_earlier_version_set_aside_as_interrupted(tmp_path):
    # An earlier version moved a complete run in res/digits-mlp/ into previous-interrupted/; the next interrupted
    # run's set-aside removed it. It is renamed with the time instead.
    out = tmp_path / "res"
    (out / "previous-interrupted" / "digits-mlp").mkdir(parents=True)
    (out / "previous-interrupted" / "digits-mlp" / "report.md").write_text("# run A")
    (out / "trials.jsonl").write_text("C partial\n")
    assert cli.set_aside(str(out)) == str(out / "previous-interrupted")
    assert _listing(out / "previous-interrupted") == {"trials.jsonl": b"C partial\n"}
    kept = [name for name in os.listdir(out) if name.startswith("previous-interrupted-")]
    assert len(kept) == 1 and _listing(out / kept[0]) == {"digits-mlp/report.md": b"# run A"}


def test_compare_refuses_to_write_into_a_folder_no_run_of_it_wrote(tmp_path, capsys):
    # A run on several problems would have written its digits-mlp/ outputs into the user's complete single-problem run.
    out = tmp_path / "res"
    (out / "digits-mlp").mkdir(parents=True)
    (out / "digits-mlp" / "report.md").write_text("# run A")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--problem", "iris-mlp,digits-mlp", "--budget", "8", "--steps", "5", "--out", str(out),
                  "--quiet", "--cpu-devices", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --out" in err and str(out / "digits-mlp") in err
    assert sorted(os.listdir(out)) == ["digits-mlp"] and _listing(out) == {"digits-mlp/report.md": b"# run A"}


def test_a_run_written_before_markers_is_set_aside_by_its_summary_and_nothing_else(tmp_path):
    # `make demo` in a checkout holding results/demo from a version before the marker (903e5dc) was refused
    # ("results/demo/digits-mlp, results/demo/digits-noisy already exist and no earlier run of this command
    # wrote them"): the README's main job failed after an upgrade. The folders that run's summary.md reports on
    # are now this command's, set aside with it; a folder the summary does not name is still not moved.
    out = tmp_path / "res"
    for name in ("iris-mlp", "digits-mlp", "breast-cancer-logistic"):
        (out / name).mkdir(parents=True)
        (out / name / "report.md").write_text(name)
    summary = f"{cli.SUMMARY_TITLE}\n\nBudget 8.\n\n- iris-mlp, equal compute: **random** wins\n- digits-mlp, equal compute: x\n"
    (out / "summary.md").write_text(summary)
    problems = ["iris-mlp", "digits-mlp", "breast-cancer-logistic"]
    assert cli._foreign_folders(str(out), problems) == ["breast-cancer-logistic"]
    assert cli.set_aside(str(out)) == str(out / "previous")
    assert sorted(os.listdir(out)) == ["breast-cancer-logistic", "previous"]
    assert _listing(out / "previous") == {"digits-mlp/report.md": b"digits-mlp", "iris-mlp/report.md": b"iris-mlp",
                                          "summary.md": summary.encode()}
    other = tmp_path / "other"  # a summary.md of the user's, not the command's title: nothing is the command's
    (other / "iris-mlp").mkdir(parents=True)
    (other / "summary.md").write_text("# my notes\n- iris-mlp, good\n")
    assert cli._foreign_folders(str(other), ["iris-mlp", "digits-mlp"]) == ["iris-mlp"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one
def test_a_ctrl_c_swallowed_by_a_gc_callback_is_raised_at_the_next_safe_point():
    # JAX's garbage-collection callback made CPython drop a KeyboardInterrupt raised inside it ("Exception ignored
    # in _xla_gc_callback"): `hypergrad compare` went on to the end and exited 0. The command's handler records
    # the Ctrl-C, and `stop()` (at each strategy's start and progress line) raises it again.
    default = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell's foreground process
    pressed = []

    def ctrl_c_during_collection(phase, info):
        if phase == "start" and not pressed:
            pressed.append(phase)
            signal.raise_signal(signal.SIGINT)  # its KeyboardInterrupt is raised here, and dropped
    try:
        with cli._ctrl_c_honoured() as stop:
            stop()  # not pressed: carries on
            gc.callbacks.append(ctrl_c_during_collection)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(ctrl_c_during_collection)
            assert pressed
            with pytest.raises(KeyboardInterrupt):
                stop()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored Ctrl-C (a background job) stays ignored
        with cli._ctrl_c_honoured() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, default)


def test_ctrl_c_stops_compare_with_status_130_and_says_where_the_trials_are(tmp_path):
    # A child in a session of its own with Python's default Ctrl-C handler (as a shell's foreground job has),
    # sent SIGINT once its first strategy reported progress.
    out = tmp_path / "run"
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from hypergrad.cli import main; sys.exit(main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", code, "compare", "--problem", "iris-mlp", "--budget", "8",
                              "--steps", "8", "--out", str(out), "--cpu-devices", "1"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             cwd=os.path.join(os.path.dirname(__file__), ".."))
    try:
        lines = []
        for line in child.stderr:
            lines.append(line)
            if line.startswith("[tune"):
                child.send_signal(signal.SIGINT)
                break
        lines += child.stderr.readlines()
        assert child.wait(timeout=60) == 130, "".join(lines)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    err = "".join(lines)
    assert "interrupted (Ctrl-C)" in err and f"trials computed so far are in {out / 'trials.jsonl'}" in err, err
    assert "report.md" not in os.listdir(out) and (out / "trials.jsonl").exists()


def test_compare_refuses_a_problem_given_twice(capsys):
    with pytest.raises(SystemExit) as exit_:  # both would have run into the same DIR/iris-mlp/
        cli.build_parser().parse_args(["compare", "--problem", "iris-mlp,digits-mlp, iris-mlp"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--problem" in err and "iris-mlp given twice" in err


def test_plan_words_say_one_outer_step():
    one = cli._gradient_plan(6, step_runs=3.0)  # one tuner's one step and its scoring: 2 hypergradients
    assert one["tune_steps"] == 1
    assert cli._gradient_words(one) == "one tuner started from the space's centre for 1 outer step"
    plan = dict(cli._gradient_plan(300, step_runs=3.0), tune_steps=1, halving=1)
    assert cli._gradient_words(plan).endswith("for 1 outer step (halving every step)")


def test_custom_nnx_model_experiment_starts_a_fresh_log_as_the_cli_does(tmp_path, monkeypatch):
    # experiments/custom_nnx_model.py appended to <out>/trials.jsonl: a second run's log held both runs' trials.
    # The searches are stand-ins that log one trial each (the experiment's smoke run itself is in test_experiments).
    pytest.importorskip("flax")
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "custom_nnx_model.py")
    spec = importlib.util.spec_from_file_location("custom_nnx_model", path)
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)

    def search(*_, log, **__):
        with open(log, "a") as f:
            f.write(json.dumps({"run": run}) + "\n")
        return _random_result([0.1], compile_seconds=0.0)
    for name in ("tune", "random_search", "grid_search"):
        monkeypatch.setattr(hg, name, search)
    monkeypatch.setattr(hg, "tune_step_cost", lambda *_, **__: 1.0)
    out = tmp_path / "nnx"
    for run in range(2):
        experiment.main(["--smoke", "--out", str(out)])
    assert sorted(os.listdir(out)) == ["previous", "report.md", "trials.jsonl"]
    assert (out / "trials.jsonl").read_text().splitlines() == ['{"run": 1}'] * 3
    assert (out / "previous" / "trials.jsonl").read_text().splitlines() == ['{"run": 0}'] * 3
    assert (out / "previous" / "report.md").read_text() == (out / "report.md").read_text()


def test_make_smoke_gives_every_experiment_a_folder_of_its_own(tmp_path):
    # `make smoke` ran every experiment with --out results/smoke: custom_nnx_model.py's report.md and seed_iris.py's
    # report.md (and results.json) overwrote each other. A stand-in python records each command instead of running it.
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    root = pathlib.Path(__file__).parent.parent
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "commands"}\n')
    fake.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.write_text("")  # newer than pyproject.toml: the venv rule does not run (PYTHON=false if it did)
    done = subprocess.run([make, "-s", "-C", str(root), "smoke", f"BIN={tmp_path / 'bin'}", f"STAMP={stamp}",
                           "PYTHON=false"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outs = {line.split()[0]: line.split("--out ")[1] for line in (tmp_path / "commands").read_text().splitlines()}
    scripts = {f"experiments/{p.name}" for p in (root / "experiments").glob("*.py")
               if not p.name.startswith("_") and p.name != "reproduce.py"}
    assert set(outs) == scripts and {"experiments/seed_iris.py", "experiments/custom_nnx_model.py"} <= scripts
    assert outs == {script: f"results/smoke/{pathlib.Path(script).stem}" for script in scripts}


def test_python_dash_m_hypergrad_runs_the_command():
    """`python -m hypergrad` is the `hypergrad` command (where the scripts folder is not on PATH)."""
    proc = subprocess.run([sys.executable, "-m", "hypergrad", "compare", "--help"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--budget" in proc.stdout and proc.stdout.startswith("usage: hypergrad compare")


def test_each_strategy_is_charged_the_compilation_of_a_program_another_strategy_shares(monkeypatch):
    """tune's warm-up (8 trials) and random search (8 trials) run one search program of the same
    shape. Each strategy starts with the in-memory caches emptied, so both compile it and each one's
    set-up seconds hold at least the compilation made during its own call, whatever ran first."""
    objective, space = preset("iris-mlp", 4)
    running, made = [None], []
    compiled = _compile.compiled

    def counted(tag, *args, **kwargs):
        out = compiled(tag, *args, **kwargs)
        made.append((running[0], tag[0], out[1]))
        return out

    monkeypatch.setattr(_compile, "compiled", counted)
    for name, label in (("tune", "hypergradient"), ("random_search", "random"), ("grid_search", "grid")):
        def marked(*args, _run=getattr(hg, name), _label=label, **kwargs):
            running[0] = _label
            return _run(*args, **kwargs)
        monkeypatch.setattr(hg, name, marked)
    plan = {"tune_steps": 1, "population": 2, "warmup": 8, "halving": None, "random_trials": 8,
            "grid_points_per_axis": 2}
    results = cli._run_strategies(argparse.Namespace(outer_lr=0.05, chunk_size=64), objective, space,
                                  jax.random.key(0), hg.Reverse(), plan, None, None)
    assert list(results) == ["hypergradient", "random", "grid"]
    assert {strategy for strategy, kind, _ in made if kind == "search"} == {"hypergradient", "random", "grid"}
    for name, result in results.items():
        assert result.compile_seconds >= sum(seconds for strategy, _, seconds in made if strategy == name) > 0, name


def test_compare_refuses_a_budget_whose_counts_overflow_the_device_before_moving_anything(tmp_path, capsys,
                                                                                            monkeypatch):
    # --budget 1e10 passed the budget check, set the last complete run aside (deleting the older one in
    # previous/), then failed in hg.tune with "warmup=2500000000 is more than 2147483647", a traceback, exit 1
    out = tmp_path / "run"
    (out / "previous").mkdir(parents=True)
    (out / "report.md").write_text("last complete run")
    (out / "previous" / "report.md").write_text("older complete run")
    monkeypatch.setattr(cli, "preset", _one_preset)
    for budget in ("1e10", "1e308"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["compare", "--problem", "iris-mlp", "--steps", "3", "--budget", budget, "--out", str(out),
                      "--quiet", "--cpu-devices", "1"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --budget:" in err and f"more than {2**31 - 1}" in err, err
        assert len(err.splitlines()) == 1 and len(err) < 400, err  # no count of 300 digits
        assert (out / "report.md").read_text() == "last complete run"
        assert (out / "previous" / "report.md").read_text() == "older complete run"
    most = int(re.search(r"give --budget (\d+) or less", err).group(1))
    objective, space = _one_preset("iris-mlp", 3)  # the runs' objective: its FLOP counts are traced once
    step_runs = cli.tune_step_cost(objective, space, jax.random.key(0), hg.Reverse())
    devices = jax.local_device_count()

    def beyond(budget):
        plan = cli._budget_plan(budget, step_runs, 1.0, len(space), rows=lambda n: cli._rows_run(n, 64, devices),
                                warmup_rows=lambda n: cli._rows_run(n, cli.DEFAULT_CHUNK, devices))
        return cli._count_beyond_the_device(plan, len(space))
    assert beyond(most) is None and beyond(most + 1) is not None  # the budget it names is the largest that works
    assert beyond(1e10)[1] > cli.MAX_COUNT


def test_a_second_compare_into_a_folder_in_use_is_refused_before_anything_moves(tmp_path, capsys, monkeypatch):
    # Two runs into one --out at once: the second moved the first's live trials.jsonl into previous-interrupted/,
    # the first went on appending to the second's log, and both exited 0
    out = tmp_path / "run"
    out.mkdir()
    (out / "trials.jsonl").write_text('{"live": true}\n')  # the other run's live log
    monkeypatch.setattr(cli, "set_aside", lambda *args: pytest.fail("set aside while another run holds the folder"))
    with open(out / cli.LOCK, "w") as held:
        held.write("4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit) as exit_:
            cli.main(["compare", "--problem", "iris-mlp", "--steps", "3", "--budget", "8", "--out", str(out),
                      "--quiet", "--cpu-devices", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --out:" in err and "in use by another hypergrad compare (pid 4242)" in err
    assert (out / "trials.jsonl").read_text() == '{"live": true}\n' and sorted(os.listdir(out)) == [
        cli.LOCK, "trials.jsonl"]
    # a lock file left by a run that ended (or was killed: the kernel drops its flock) blocks nothing
    with cli._run_alone_in(str(out)):
        assert (out / cli.LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(SystemExit), cli._run_alone_in(str(out)):  # held for the whole block
            pytest.fail("entered a folder another run holds")
    with pytest.raises(RuntimeError), cli._run_alone_in(str(out)):
        raise RuntimeError("a crash")  # released on the way out
    with cli._run_alone_in(str(out)):
        pass
    assert not (out / cli.LOCK).exists()  # removed at the end: a folder holds only a run's outputs


def test_compare_refuses_a_compilation_cache_folder_it_cannot_use_with_a_usage_error(tmp_path, capsys, monkeypatch):
    # HYPERGRAD_COMPILATION_CACHE naming a file gave a 20-line ValueError traceback and exit 1
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    monkeypatch.setattr(cli, "preset", lambda *args: pytest.fail("a preset was built"))
    for setting, why in ((a_file, "is a file"), (a_file / "cache", "which is a file")):
        monkeypatch.setenv("HYPERGRAD_COMPILATION_CACHE", str(setting))
        with pytest.raises(SystemExit) as exit_:
            cli.main(["compare", "--problem", "iris-mlp", "--out", str(tmp_path / "run"), "--quiet",
                      "--cpu-devices", "1"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("hypergrad compare: error: HYPERGRAD_COMPILATION_CACHE=") and why in err, err
        assert "or to 0 to turn the persistent compilation cache off" in err
    assert a_file.read_text() == "mine" and not (tmp_path / "run").exists()


def test_the_command_ends_at_once_after_ctrl_c_and_exits_with_mains_status_otherwise(monkeypatch):
    # After Ctrl-C the command printed "interrupted (Ctrl-C)" and then, in most runs with a compilation under
    # way, died of a segmentation fault (exit 139, not 130): jaxlib's compile threads ran on while the
    # interpreter shut down and freed the devices under them. The entry point now ends the process at once
    # (os._exit(130)) after Ctrl-C; main() still returns, for callers in the process.
    ended = []

    class Ended(BaseException):
        pass

    def _exit(code):  # as os._exit: never returns
        ended.append(code)
        raise Ended

    monkeypatch.setattr(cli.os, "_exit", _exit)
    monkeypatch.setattr(cli, "main", lambda: 130)
    with pytest.raises(Ended):
        cli.run()
    assert ended == [130]
    for code in (0, 2):
        monkeypatch.setattr(cli, "main", lambda code=code: code)
        with pytest.raises(SystemExit) as exit_:
            cli.run()
        assert exit_.value.code == code and ended == [130]
