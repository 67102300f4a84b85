"""`Result.to_optuna` writes the whole study or none, as `Result.save` writes the whole file.

An exception or a Ctrl-C while the trials were written left the new study on the storage with the
trials written so far, all COMPLETE, which Optuna's dashboard and plots show as a finished study,
and the same call again was refused ("already exists"). The export now deletes the study it created
and re-raises; a name taken before the call is refused, and left alone.
"""

import numpy as np
import pytest

import hypergrad as hg
from hypergrad._store_codec import describe_space
from hypergrad.results import COMPLETE

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})


def _result(num_trials):
    """A Result of hand-made trials (nothing compiled)."""
    trials = tuple(hg.Trial(number=i, hparams={"lr": np.float64(0.01 * (i + 1))}, value=float(i),
                            scores={"val_loss": float(i)}, state=COMPLETE, flops=1.0, seconds=0.1, run_flops=1.0)
                   for i in range(num_trials))
    return hg.Result("random", trials, 1.0, 0.0, info={"space": describe_space(SPACE)})


def _failing_add_trial(monkeypatch, k, exc):
    """Study.add_trial raises `exc` at its k-th call (1-based); the earlier ones write."""
    original = optuna.study.Study.add_trial
    calls = [0]

    def add_trial(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "add_trial", add_trial)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("storage went away")], ids=["ctrl-c", "error"])
def test_an_interrupted_export_leaves_no_study_and_can_be_made_again(tmp_path, monkeypatch, exc):
    url, result = f"sqlite:///{tmp_path / 'optuna.db'}", _result(6)
    with monkeypatch.context() as patch:
        _failing_add_trial(patch, 4, exc)
        with pytest.raises(type(exc)):
            result.to_optuna(url, "s")
    assert "s" not in optuna.get_all_study_names(storage=url)  # was there, with 3 COMPLETE trials of 6
    study = result.to_optuna(url, "s")
    assert [t.value for t in optuna.load_study(study_name="s", storage=url).trials] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(study.trials) == 6


def test_a_taken_name_is_refused_and_kept_and_a_failed_cleanup_is_noted(tmp_path, monkeypatch):
    url, result = f"sqlite:///{tmp_path / 'optuna.db'}", _result(3)
    result.to_optuna(url, "taken")
    with pytest.raises(ValueError, match=r"study_name='taken' already exists.*killed part-way.*"
                                         r"optuna\.delete_study\(study_name='taken', storage="):
        _result(2).to_optuna(url, "taken")
    assert len(optuna.load_study(study_name="taken", storage=url).trials) == 3  # not deleted
    _failing_add_trial(monkeypatch, 2, RuntimeError("write failed"))

    def delete_study(**kwargs):
        raise OSError("read-only storage")

    monkeypatch.setattr(optuna, "delete_study", delete_study)
    with pytest.raises(RuntimeError, match="write failed") as info:
        result.to_optuna(url, "other")
    assert any("could not delete the partial study 'other'" in note and "read-only storage" in note
               for note in info.value.__notes__)
