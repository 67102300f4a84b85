"""distillation.py's post hoc "best iterate" row took its step from an argmin over every trial's value but
its images, scores and step size from `result.best_hparams`, which with resample_key=True is the final
iterate: the row showed step 51's number beside the final step's settings (hunt-experiments finding 2)."""

import types

import numpy as np

from _helpers import import_experiment


def trial(value, lr):
    return types.SimpleNamespace(value=value, hparams={"lr": np.float32(lr), "images": np.full((2,), lr)})


def test_the_post_hoc_step_and_its_settings_come_from_one_trial():
    distillation = import_experiment("distillation")
    trials = [trial(0.9, 1.0), trial(float("nan"), 5.0), trial(0.3, 2.5), trial(0.6, 1.8)]
    step, hparams = distillation.best_iterate(trials)
    assert step == 2  # the lowest finite value: a NaN (a diverged step) is never the pick
    assert float(hparams["lr"]) == 2.5 and np.all(np.asarray(hparams["images"]) == 2.5)

