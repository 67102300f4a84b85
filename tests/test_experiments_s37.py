"""Session 37: two experiments that kept nothing of an interrupted run, and distillation's verdicts on a
diverging outer loop.

custom_nnx_model.py and seed_iris.py wrote their report only at the end, so a run interrupted part-way
(Ctrl-C, a crash, a killed job) lost every finished unit. Each now keeps its units in
<out>/<name>.partial.json (experiments/_progress.py): custom_nnx_model keeps only (its units are hg.Results
that hg.compare lines up; a rerun sets the file aside and measures again), seed_iris resumes (its rows are
plain data). Both are run in-process with their measurements faked (no training), interrupted at the second
unit. On the old code no file was left.

distillation.py's verdicts read each distillation's last outer step: a loop that diverged late (NaN, or a
validation loss climbing back) was judged on that step's broken network. They now read the best iterate on
validation (the lowest finite validation loss), and say where the loop ended; checked on a synthetic
diverging history.
"""

import json

import numpy as np
import pytest

import hypergrad as hg
from _helpers import import_experiment


def result(value: float) -> hg.Result:
    """A one-trial Result with validation loss `value` (what a strategy of custom_nnx_model returns)."""
    trial = hg.Trial(number=0, hparams={}, value=value, scores={"val_loss": value, "test_loss": value},
                  state="complete", flops=1.0, seconds=0.5, run_flops=1.0)
    return hg.Result("random", (trial,), 1.0, 0.0)


def test_custom_nnx_model_keeps_an_interrupted_runs_results_and_a_rerun_measures_again(tmp_path, monkeypatch):
    experiment = import_experiment("custom_nnx_model")
    calls = []

    def strategy(name, value, stop=False):
        def fake(*args, **kwargs):
            calls.append(name)
            if stop:
                raise KeyboardInterrupt
            return result(value)
        return fake

    monkeypatch.setattr(hg, "tune_step_cost", lambda *a, **k: 1.0)
    monkeypatch.setattr(hg, "tune", strategy("tune", 0.25))
    monkeypatch.setattr(hg, "random_search", strategy("random", 0.5, stop=True))
    monkeypatch.setattr(hg, "grid_search", strategy("grid", 0.75))
    out = tmp_path / "nnx"
    with pytest.raises(KeyboardInterrupt):
        experiment.main(["--smoke", "--out", str(out)])
    assert calls == ["tune", "random"] and not (out / "report.md").exists()
    kept = json.loads((out / "custom_nnx_model.partial.json").read_text())
    assert kept["partial"] is True and kept["mode"] == "smoke" and kept["numbers"]["resume"] is False
    units = kept["numbers"]["units"]
    assert [u["key"] for u in units] == ["hypergradient"], units
    assert units[0]["value"]["trials"][0]["value"] == units[0]["value"]["best"]["value"] == 0.25

    first = (out / "custom_nnx_model.partial.json").read_text()
    calls.clear()
    monkeypatch.setattr(hg, "random_search", strategy("random", 0.5))
    experiment.main(["--smoke", "--out", str(out)])
    assert calls == ["tune", "random", "grid"]  # keeping only: every strategy measured again
    assert (out / "custom_nnx_model.partial.previous.json").read_text() == first  # set aside, not overwritten
    assert not (out / "custom_nnx_model.partial.json").exists() and (out / "report.md").exists()


def iris_row(library):
    """A seed_iris row whose numbers depend on the library, with a tuple and numpy numbers (read back exactly)."""
    a = 0.5 if library == "hypergrad" else 0.75
    return {"library": library, "n_jobs": 1, "fit_s": 1.0, "refit_s": 0.1, "fits": 8,
            "best_params": {"hidden_layer_sizes": (50,), "alpha": np.float64(1e-4), "activation": "tanh"},
            "cv_accuracy": a, "cv_std": np.float64(a / 9), "test_accuracy": a / 3}


def test_seed_iris_keeps_an_interrupted_runs_rows_and_a_rerun_resumes_them(tmp_path, monkeypatch, capsys):
    seed_iris = import_experiment("seed_iris")
    monkeypatch.setattr(hg, "use_compilation_cache", lambda *a, **k: None)
    calls = []

    def study(library, smoke, n_jobs, stop_at=None):
        calls.append(library)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return iris_row(library)

    whole = tmp_path / "whole"
    monkeypatch.setattr(seed_iris, "study", study)
    seed_iris.main(["--smoke", "--out", str(whole)])
    assert calls == ["hypergrad", "scikit-learn"]

    calls.clear()
    monkeypatch.setattr(seed_iris, "study", lambda *a, **k: study(*a, **k, stop_at=2))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        seed_iris.main(["--smoke", "--out", str(out)])
    assert not (out / "results.json").exists()
    kept = json.loads((out / "seed_iris.partial.json").read_text())
    assert [u["key"] for u in kept["numbers"]["units"]] == ["hypergrad"] and kept["numbers"]["resume"] is True

    capsys.readouterr()
    calls.clear()
    monkeypatch.setattr(seed_iris, "study", study)
    rows = seed_iris.main(["--smoke", "--out", str(out)])
    assert calls == ["scikit-learn"], calls  # the kept row read back, not fitted again
    assert "resuming: 1 unit" in capsys.readouterr().out
    assert rows[0]["best_params"]["hidden_layer_sizes"] == (50,) and type(rows[0]["cv_std"]) is np.float64
    assert (out / "results.json").read_text() == (whole / "results.json").read_text()
    assert "Read back from seed_iris.partial.json" in (out / "report.md").read_text()
    assert "Read back" not in (whole / "report.md").read_text()
    assert not (out / "seed_iris.partial.json").exists()


def distilled(curve, final_fixed, final_fresh, best_step, best_fixed, best_fresh):
    """One distillation's unit (distillation.run's `distilled`): the outer loop's validation losses, the
    final iterate's scores and the best iterate's."""
    return {"hparams": {"lr": np.float32(curve[-1] if np.isfinite(curve[-1]) else np.nan)}, "runs": 40.0,
            "seconds": 1.0, "fixed": final_fixed, "fresh": np.asarray(final_fresh),
            "val_curve": list(curve), "lr_curve": [0.1 * (i + 1) for i in range(len(curve))],
            "best": {"hparams": {"lr": np.float32(2.5)}, "step": best_step, "fixed": best_fixed,
                     "fresh": np.asarray(best_fresh)}}


def test_distillation_verdicts_judge_the_best_finite_step_of_a_diverging_loop():
    """Fixed init: the loop reaches 0.2 at step 2 and ends in NaN (its final network scores 0.1); random
    inits: the loss climbs back to 1.6. Judged on their best iterates both clear every rule; judged on their
    last steps (the old code) none does."""
    distillation = import_experiment("distillation")
    r = {"real": {"fixed": np.array([0.5, 0.55, 0.6, 0.5]), "fresh": np.array([0.5, 0.52, 0.55, 0.5]), "lr": 1.0},
         "fixed": distilled([2.3, 0.4, 0.2, 0.9, float("nan")], 0.1, [0.1, 0.1, 0.1, 0.1], 2, 0.95,
                            [0.9, 0.91, 0.92, 0.9]),
         "random": distilled([2.3, 0.3, 1.2, 1.6], 0.4, [0.4, 0.42, 0.38, 0.41], 1, 0.9, [0.85, 0.86, 0.84, 0.87]),
         "search": {"hparams": {"lr": 1.0}, "runs": 40.0, "seconds": 1.0, "fixed": 0.6,
                    "fresh": np.array([0.6, 0.62, 0.61, 0.6])}}
    claims, numbers = distillation.verdicts(r)
    assert [c.verdict for c in claims] == ["held", "held", "held"], [(c.verdict, c.why) for c in claims]
    assert "distilled 0.950 (best iterate on validation, outer step 2)" in claims[0].ours
    assert "diverged" in claims[0].why and "final validation loss is not finite" in claims[0].why
    assert "2 of 4" in claims[0].why and "0.100 from the fixed init" in claims[0].why
    assert "5.33x above its best" in claims[1].why  # 1.6 against 0.3
    assert numbers["distilled_fixed"] == 0.95 and numbers["distilled_random_fresh"] == [0.85, 0.86, 0.84, 0.87]
    assert numbers["final_iterate_verdicts"] == ["not held", "not held", "not held"]
    assert numbers["final_iterate"]["fixed"]["step"] == 4 and numbers["best_iterate"]["random"]["step"] == 1
    assert all("would be not held" in c.why for c in claims)
