"""Every reproduction keeps what it has measured as it goes (session 36): only finetuning.py did; the other
ten wrote everything at their end, so a run of minutes interrupted near its end (Ctrl-C, a crash, a killed
job) lost all of it. Each now keeps each finished unit in <out>/<name>.partial.json (experiments/_progress.py)
and the resuming ones read it back on a rerun with the same sizes.

Each experiment's --smoke main runs in-process with its measurements faked (seconds in all, no training):
the first unit is measured, the second raises KeyboardInterrupt, and the first unit's numbers must be on
disk. On the old code no file was left."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from _helpers import import_experiment


def once(value):
    """A stand-in that returns `value` on its first call and is interrupted (KeyboardInterrupt) on the next."""
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return value() if callable(value) else value

    return fake


def interrupted(module, *args):
    raise KeyboardInterrupt


class FakeResult:
    """The parts of a tuner's Result a keeping-only experiment keeps (`_progress.result_record`)."""
    strategy, runs, seconds, compile_seconds = "fake", 3.0, 1.0, 0.5

    def __init__(self):
        trial = types.SimpleNamespace(number=0, value=0.25, test_value=0.5, runs=1.0, tuner=None, state="complete",
                                      to_dict=lambda: {"value": 0.25, "hparams": {"lr": [0.5]}})
        self.trials, self.best_trial = [trial], trial


def hg_with(module, monkeypatch, **fakes):
    """The experiment's `hg` with some of its functions replaced (hypergrad itself untouched)."""
    names = {n: getattr(hg, n) for n in hg.__all__}
    proxy = types.SimpleNamespace(**{**names, "use_compilation_cache": lambda *a, **k: None, **fakes})
    monkeypatch.setattr(module, "hg", proxy)


def grid_result(seed_value):
    trials = [types.SimpleNamespace(hparams={"lr": r}, value=v) for r, v in ((0.01, seed_value), (0.1, 0.5),
                                                                             (1.0, float("nan")))]
    return types.SimpleNamespace(trials=trials, runs=3.0)


def fake_generalisation(m, mp):
    mp.setattr(m, "run", once(lambda: {"variant": "fixed key", "seed": 0, "pick": "p", "warmup_pick": False,
                                       "val": 0.125, "test": 0.5, "optimism": 0.25, "fresh_test": 0.5,
                                       "runs": 5.0, "seconds": 1.0}))
    return "seed 0, fixed key", lambda v: v["val"] == 0.125


def fake_truncation(m, mp):
    rows = [{"K": 1, "error": 0.5, "cosine": 0.75, "runs": 1.5}, {"K": 5, "error": 0.25, "cosine": 0.875, "runs": 2.0}]
    mp.setattr(m, "errors", once(rows))
    mp.setattr(m, "tuning", interrupted)
    return "ridge (strongly convex): errors", lambda v: v[1]["error"] == 0.25


def fake_online_lr(m, mp):
    hg_with(m, mp, grid_search=once(lambda: grid_result(0.375)))
    return "SGD fixed, key 0", lambda v: v["__tuple__"][1]["__array__"][0] == 0.375


def fake_long_horizon(m, mp):
    mp.setattr(m, "noise", once({"rows": {}, "agreement": 0.125, "keys": 2}))
    mp.setattr(m, "pick_row", interrupted)
    return "noise", lambda v: v["agreement"] == 0.125


def fake_chaos(m, mp):
    mp.setattr(m, "surface", once(lambda: (np.geomspace(1e-3, 1.0, 4), np.array([1.0, 0.5, 0.25, np.inf]))))
    mp.setattr(m, "norms", lambda objective, cfg: {"argmax": 0.1, "max": 2.5, "median": np.ones(3)})
    return f"T={min(m.SMOKE.horizons)}", lambda v: v["__tuple__"][1]["max"] == 2.5


def fake_distillation(m, mp):
    mp.setattr(m, "real_draws", once({"lr": 0.125, "fixed": 0.5, "fresh": np.array([0.5, 0.75]), "runs": 4}))
    mp.setattr(m, "distil", interrupted)
    return "real images", lambda v: v["lr"] == 0.125


def fake_estimator_quality(m, mp):
    mp.setattr(m, "estimator_quality", once(("title", "| table |", ([{"name": "Reverse", "runs": 1.0}], 0.625))))
    mp.setattr(m, "short_horizon_bias", interrupted)
    return "estimator quality", lambda v: v["__tuple__"][2]["__tuple__"][1] == 0.625


def fake_hyper_cleaning(m, mp):
    hg_with(m, mp, tune=once(FakeResult))
    return "hyper-cleaning, Reverse", lambda v: v["trials"][0]["value"] == v["final"]["value"] == 0.25


def fake_learned_schedules(m, mp):
    hg_with(m, mp, tune=once(FakeResult))
    return ("learned per layer and step, Reverse(checkpoint_every)",
            lambda v: v["trials"][0]["value"] == v["best"]["value"] == 0.25)


def fake_weight_decay_per_parameter(m, mp):
    mp.setattr(m, "largest_eigenvalue", lambda *args: 2.0)
    hg_with(m, mp, run_flops=lambda *a, **k: 1.0, hypergradient_flops=lambda *a, **k: 2.5,
            hypergradient=once(lambda: (0.0, {"weight_decay": jnp.full(3, 0.5)})))
    return "hypergradient, Reverse (exact, unrolled)", lambda v: v["__tuple__"][1] == 2.5


FAKES = {f.__name__[len("fake_"):]: f for f in (
    fake_estimator_quality, fake_hyper_cleaning, fake_learned_schedules, fake_generalisation,
    fake_weight_decay_per_parameter, fake_online_lr, fake_truncation, fake_distillation, fake_long_horizon,
    fake_chaos)}


def test_every_registered_reproduction_is_covered():
    reproduce = import_experiment("reproduce")
    assert set(FAKES) | {"finetuning"} == set(reproduce.EXPERIMENTS)


@pytest.mark.parametrize("name", FAKES)
def test_an_interrupted_smoke_run_keeps_its_first_unit(name, tmp_path, monkeypatch):
    module = import_experiment(name)
    monkeypatch.setattr(module.hg, "use_compilation_cache", lambda *a, **k: None)
    first, check = FAKES[name](module, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        module.main(["--smoke", "--out", str(tmp_path)])
    assert not (tmp_path / f"{name}.json").exists()
    kept = json.loads((tmp_path / f"{name}.partial.json").read_text())
    assert kept["partial"] is True and kept["mode"] == "smoke" and kept["experiment"] == name
    units = kept["numbers"]["units"]
    assert [u["key"] for u in units] == [first], units
    assert check(units[0]["value"]), units[0]


def rows(calls, stop_at=None):
    """generalisation.run stand-in: a row whose numbers depend on (variant, seed); interrupted at call `stop_at`."""
    def run(variant, seed, sizes):
        calls.append((variant, seed))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        v = 0.1 * (1 + list(("fixed key", "resample_key", "cv=3")).index(variant)) + seed / 3
        return {"variant": variant, "seed": seed, "pick": "tuner 0", "warmup_pick": False, "val": v,
                "test": v + 0.05, "optimism": v / 7, "fresh_test": v + 0.1, "runs": 10.0, "seconds": 1.0}
    return run


def test_a_rerun_resumes_the_kept_units_and_ends_with_the_uninterrupted_numbers(tmp_path, monkeypatch, capsys):
    """generalisation (full mode's 9 rows, faked): interrupted at its 5th row, the rerun measures only the
    5 rows left, says so, and writes the sidecar an uninterrupted run writes; the page names the rows read
    back. An uninterrupted run's page has no such sentence."""
    generalisation = import_experiment("generalisation")
    monkeypatch.setattr(generalisation.hg, "use_compilation_cache", lambda *a, **k: None)
    whole, calls = tmp_path / "whole", []
    monkeypatch.setattr(generalisation, "run", rows(calls))
    generalisation.main(["--out", str(whole)])
    assert len(calls) == 9 and "read back" not in (whole / "generalisation.md").read_text()

    calls.clear()
    monkeypatch.setattr(generalisation, "run", rows(calls, stop_at=5))
    with pytest.raises(KeyboardInterrupt):
        generalisation.main(["--out", str(tmp_path)])
    capsys.readouterr()
    calls.clear()
    monkeypatch.setattr(generalisation, "run", rows(calls))
    generalisation.main(["--out", str(tmp_path)])
    assert calls == [(v, s) for s in (1, 2) for v in generalisation.VARIANTS][1:], calls
    assert "resuming: 4 units" in capsys.readouterr().out
    ours, theirs = (json.loads((f / "generalisation.json").read_text()) for f in (tmp_path, whole))
    assert ours["numbers"] == theirs["numbers"] and ours["claims"] == theirs["claims"]
    assert "4 of this run's 9 units" in (tmp_path / "generalisation.md").read_text()
    assert not (tmp_path / "generalisation.partial.json").exists()


def test_a_kept_file_of_other_sizes_or_a_keeping_only_experiment_is_set_aside(tmp_path, monkeypatch, capsys):
    """A smoke run's kept rows are not resumed by a full run (other sizes): the file is moved aside, never
    overwritten, and every row is measured. A keeping-only experiment (hyper_cleaning) never resumes: its
    earlier file is moved aside too."""
    generalisation = import_experiment("generalisation")
    monkeypatch.setattr(generalisation.hg, "use_compilation_cache", lambda *a, **k: None)
    calls = []
    monkeypatch.setattr(generalisation, "run", rows(calls, stop_at=2))
    with pytest.raises(KeyboardInterrupt):
        generalisation.main(["--smoke", "--out", str(tmp_path)])
    earlier = (tmp_path / "generalisation.partial.json").read_text()
    calls.clear()
    monkeypatch.setattr(generalisation, "run", rows(calls))
    generalisation.main(["--out", str(tmp_path)])
    assert len(calls) == 9 and (tmp_path / "generalisation.partial.previous.json").read_text() == earlier
    assert "moved to" in capsys.readouterr().out

    hyper_cleaning = import_experiment("hyper_cleaning")
    monkeypatch.setattr(hyper_cleaning.hg, "use_compilation_cache", lambda *a, **k: None)
    fake_hyper_cleaning(hyper_cleaning, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        hyper_cleaning.main(["--smoke", "--out", str(tmp_path)])
    first = (tmp_path / "hyper_cleaning.partial.json").read_text()
    fake_hyper_cleaning(hyper_cleaning, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        hyper_cleaning.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "hyper_cleaning.partial.previous.json").read_text() == first


def test_kept_values_read_back_exactly():
    """What a resuming experiment keeps comes back with its types and bits: dtypes, tuples, non-finite
    numbers, int keys, numpy scalars and jax arrays (a resumed run must give the uninterrupted numbers)."""
    progress = import_experiment("_progress")
    value = {"a": (1, 0.1, float("nan"), float("-inf"), None, "s", True),
             5: [np.float32(0.1), np.arange(6, dtype=np.int32).reshape(2, 3), np.array([np.nan, 1 / 3], np.float32)],
             "__float__": jnp.asarray(np.array([0.1, 0.7], np.float32)), "e": np.zeros((0, 2)),
             "w": jnp.asarray(0.5), "z": np.float64(math.pi)}
    back = progress.decode(json.loads(json.dumps(progress.encode(value))))
    assert list(back) == list(value) and back["a"][:2] == (1, 0.1) and math.isnan(back["a"][2])
    assert back["a"][3:] == (float("-inf"), None, "s", True)
    for ours, theirs in zip(back[5], value[5]):
        assert type(ours) is type(theirs) and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    assert back["__float__"].dtype == jnp.float32 and np.array_equal(back["__float__"], value["__float__"])
    assert back["e"].shape == (0, 2) and back["w"].weak_type == value["w"].weak_type
    assert type(back["z"]) is np.float64 and back["z"] == value["z"]
    with pytest.raises(TypeError):
        progress.encode(FakeResult())


# -- review of d00ddbf (session 36): the code in the identity, bfloat16, undecodable units, online_lr's seconds ---
def test_a_kept_file_of_other_code_or_xla_flags_is_set_aside(tmp_path, monkeypatch, capsys):
    """hypergrad's commit is "<sha>+dirty" for any uncommitted edit (and "unknown" outside a checkout), so
    it was the whole identity of the code: a rerun after an edit resumed rows measured by the code before
    it. The identity now holds a digest of hypergrad's and the experiments' .py files and XLA_FLAGS: a
    file kept by other code, or under other XLA_FLAGS, is set aside and every row measured again."""
    generalisation = import_experiment("generalisation")
    progress = import_experiment("_progress")
    monkeypatch.setattr(generalisation.hg, "use_compilation_cache", lambda *a, **k: None)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    calls = []
    monkeypatch.setattr(generalisation, "run", rows(calls, stop_at=2))
    with pytest.raises(KeyboardInterrupt):
        generalisation.main(["--smoke", "--out", str(tmp_path)])
    first = (tmp_path / "generalisation.partial.json").read_text()

    monkeypatch.setattr(progress, "code_digest", lambda: "0" * 64, raising=False)  # an edited file
    calls.clear()
    monkeypatch.setattr(generalisation, "run", rows(calls, stop_at=2))
    with pytest.raises(KeyboardInterrupt):
        generalisation.main(["--smoke", "--out", str(tmp_path)])
    assert calls[0] == ("fixed key", 0), calls  # measured again, not read back
    assert (tmp_path / "generalisation.partial.previous.json").read_text() == first
    assert "resuming" not in capsys.readouterr().out
    second = (tmp_path / "generalisation.partial.json").read_text()

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    calls.clear()
    monkeypatch.setattr(generalisation, "run", rows(calls))
    generalisation.main(["--smoke", "--out", str(tmp_path)])
    assert calls[0] == ("fixed key", 0) and "resuming" not in capsys.readouterr().out
    assert (tmp_path / "generalisation.partial.previous-2.json").read_text() == second


def test_the_code_digest_moves_with_any_py_file(tmp_path):
    """`folder_digest` changes with a file's contents and with an untracked new file (what "+dirty" and
    `git status -uno` do not tell apart), reads subfolders only when recursive, and ignores other files;
    the identity holds the digest of the code running and XLA_FLAGS."""
    progress = import_experiment("_progress")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("n")
    digests = [(progress.folder_digest(str(tmp_path), True), progress.folder_digest(str(tmp_path), False))]
    (tmp_path / "notes.txt").write_text("other")
    assert (progress.folder_digest(str(tmp_path), True), progress.folder_digest(str(tmp_path), False)) == digests[0]
    for change in (lambda: (tmp_path / "a.py").write_text("x = 3\n"), lambda: (tmp_path / "new.py").write_text("")):
        change()
        digests.append((progress.folder_digest(str(tmp_path), True), progress.folder_digest(str(tmp_path), False)))
    (tmp_path / "sub" / "b.py").write_text("y = 4\n")
    digests.append((progress.folder_digest(str(tmp_path), True), progress.folder_digest(str(tmp_path), False)))
    assert len({d[0] for d in digests}) == 4 and len({d[1] for d in digests}) == 3  # non-recursive: b.py unseen
    identity = progress.identity(True, {"n": 1})
    assert identity["code"] == progress.code_digest() and len(identity["code"]) == 64
    assert "xla_flags" in identity


def test_bfloat16_and_float8_values_read_back_exactly():
    """ml_dtypes' dtypes were written as numpy's `dtype.str` ('<V2', a void dtype), which `decode` could
    not read back (TypeError on every rerun); they are now written by name."""
    import ml_dtypes

    progress = import_experiment("_progress")
    value = {"a": np.array([[1.5, np.nan], [-np.inf, 0.30078125]], ml_dtypes.bfloat16),
             "s": ml_dtypes.bfloat16(0.1), "j": jnp.asarray([0.1, 2.0], jnp.bfloat16),
             "f8": np.array([1.0, -2.0], ml_dtypes.float8_e4m3fn), "f": np.array([0.1], np.float32)}
    encoded = json.loads(json.dumps(progress.encode(value)))
    back = progress.decode(encoded)
    for key in value:
        assert type(back[key]) is type(value[key]) and back[key].dtype == value[key].dtype, key
        np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(value[key]))
    assert encoded["f"]["dtype"] == "<f4"  # numpy's own dtypes are written as before


def kept_demo(out, measure=lambda: 1.5):
    """A resuming Progress named 'demo' in `out` (smoke, sizes {"n": 1}) that keeps unit 'a'."""
    progress = import_experiment("_progress")
    run = progress.Progress(types.SimpleNamespace(out=str(out), smoke=True), "demo", {"n": 1}, resume=True)
    return run, run.unit("a", measure)


@pytest.mark.parametrize("bad", [{"__array__": [1.5], "dtype": "<V2", "shape": [1]},   # the old bfloat16 form
                                 {"__array__": [1.0, 2.0, 3.0], "dtype": "<f8", "shape": [2, 2]},
                                 {"__scalar__": 1.0, "dtype": "no such dtype"}])
def test_a_kept_unit_that_cannot_be_decoded_sets_the_file_aside(tmp_path, capsys, bad):
    """A partial file that is valid JSON but holds a unit `decode` fails on was read at the unit, outside
    the code that sets a bad file aside: every rerun crashed there. It is now set aside when read, and
    the unit is measured again."""
    kept_demo(tmp_path)
    path = tmp_path / "demo.partial.json"
    record = json.loads(path.read_text())
    record["numbers"]["units"][0]["value"] = bad
    path.write_text(json.dumps(record))
    capsys.readouterr()
    measured = []
    run, value = kept_demo(tmp_path, lambda: measured.append(1) or 2.5)
    assert value == 2.5 and measured == [1] and not run.resumed
    assert "cannot be read back" in capsys.readouterr().out
    assert json.loads((tmp_path / "demo.partial.previous.json").read_text()) == record


def test_online_lr_resumed_rows_keep_their_earlier_seconds(tmp_path, monkeypatch):
    """online_lr timed each (family, variant) around its units, so a row read back from an interrupted run
    showed 0.0 s while the page says its seconds are that run's. Each grid now returns its own seconds.
    The first run's grid takes 7 s of a fake clock; the rerun (real clock, instant fakes) shows them."""
    online_lr = import_experiment("online_lr")
    monkeypatch.setattr(online_lr.hg, "use_compilation_cache", lambda *a, **k: None)
    clock = [100.0]

    def slow(*args, **kwargs):
        clock[0] += 7.0
        return grid_result(0.375)

    monkeypatch.setattr(online_lr, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    hg_with(online_lr, monkeypatch, grid_search=once(slow))
    with pytest.raises(KeyboardInterrupt):
        online_lr.main(["--smoke", "--out", str(tmp_path)])
    monkeypatch.setattr(online_lr, "time", __import__("time"))
    hg_with(online_lr, monkeypatch, grid_search=lambda *a, **k: grid_result(0.375))
    online_lr.main(["--smoke", "--out", str(tmp_path)])
    page = (tmp_path / "online_lr.md").read_text()
    assert "1 of this run's 4 units (SGD fixed, key 0)" in page
    seconds = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in page.splitlines()
               if line.startswith(("| SGD fixed rate |", "| SGD-HD |"))}  # the summary's rows
    assert seconds == {"SGD fixed rate": "7.0", "SGD-HD": "0.0"}, seconds
