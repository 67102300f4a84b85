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
