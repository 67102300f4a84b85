"""The pretrained-model cache (fine-tuning hunt, session 37): its key records the flax and optax that
initialise and train a cached model, as it records jax's, so a file written under other versions is
trained again rather than loaded; a file whose arrays have another dtype is a stale cache (rebuilt
with a warning, as one of another shape), never loaded silently; and a `~user` cache folder that
does not expand is named as the cause, with the fix, rather than blamed on an unset HOME."""

import os
import pwd

import flax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hypergrad.problems import pretrained as pre

TEMPLATE = {"w": jnp.zeros((3,), jnp.float32)}


def _counting_build(calls):
    def build():
        calls.append(1)
        return {"w": jnp.full((3,), float(len(calls)), jnp.float32)}
    return build


@pytest.mark.parametrize("library", [flax, optax], ids=["flax", "optax"])
def test_a_model_cached_by_another_flax_or_optax_is_trained_again(tmp_path, monkeypatch, library):
    # the key named jax, jaxlib and the backend only: a file cached under another flax (another
    # nnx.Rngs stream, other initialisers) or optax (another Adam) was loaded as this one's
    calls = []
    build = _counting_build(calls)
    pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(library, "__version__", "0.0.1")
        other = pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)
        assert len(calls) == 2 and np.asarray(other["w"]).tolist() == [2.0] * 3
        assert pre.trained_with()[library.__name__] == "0.0.1"
    assert len(list(tmp_path.glob("model-*.npz"))) == 2  # each version's file beside the other
    again = pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)  # this environment's own file
    assert len(calls) == 2 and np.asarray(again["w"]).tolist() == [1.0] * 3


def test_the_key_names_this_flax_and_optax():
    assert pre.trained_with() == {"flax": flax.__version__, "optax": optax.__version__}


def test_a_file_of_another_dtype_is_rebuilt_with_a_warning_as_one_of_another_shape(tmp_path):
    # a float16 file with the right configuration, paths and shapes was loaded as float16, silently
    calls = []
    build = _counting_build(calls)
    pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)
    (path,) = tmp_path.glob("model-*.npz")
    pre.save_params(str(path), {"w": np.full(3, 7.0, np.float16)}, {"k": 1})
    with pytest.raises(ValueError, match=r"parameter 'w' is stored as float16, not float32"):
        pre.load_params(str(path), TEMPLATE, {"k": 1})
    with pytest.warns(UserWarning, match=r"pretrained cache: .*'w' is stored as float16, not float32; rebuilding"):
        rebuilt = pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)
    assert len(calls) == 2 and rebuilt["w"].dtype == jnp.float32
    assert np.asarray(rebuilt["w"]).tolist() == [2.0] * 3
    with np.load(path, allow_pickle=False) as stored:  # rewritten in the template's dtype
        assert stored["param:w"].dtype == np.float32
    # and a file of another shape is handled the same way (rebuilt, with a warning)
    pre.save_params(str(path), {"w": np.zeros(4, np.float32)}, {"k": 1})
    with pytest.warns(UserWarning, match=r"pretrained cache: .*'w' missing or of another shape; rebuilding"):
        pre.cached_params("model", {"k": 1}, TEMPLATE, build, tmp_path)
    assert len(calls) == 3


@pytest.fixture
def no_user(monkeypatch, tmp_path):
    """`~nosuchuser` names a user this machine does not have (HOME is set)."""
    real = pwd.getpwnam

    def getpwnam(name):
        if name == "nosuchuser":
            raise KeyError(f"getpwnam(): name not found: {name!r}")
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert os.path.expanduser("~nosuchuser/hg") == "~nosuchuser/hg"


def test_an_unknown_users_cache_folder_is_named_as_the_cause(no_user, monkeypatch):
    # HYPERGRAD_CACHE=~nosuchuser/hg-cache was reported as "HOME is unset" (it is set), with the advice
    # to set HYPERGRAD_CACHE, which was the cause
    monkeypatch.setenv(pre.CACHE_ENV, "~nosuchuser/hg-cache")
    calls = []
    with pytest.warns(UserWarning) as caught:
        pre.cached_params("model", {"k": 1}, TEMPLATE, _counting_build(calls))
    (message,) = [str(w.message) for w in caught]
    assert "HYPERGRAD_CACHE='~nosuchuser/hg-cache' cannot be expanded: no user 'nosuchuser' exists" in message
    assert "correct HYPERGRAD_CACHE: give an absolute folder you can write" in message
    assert "HOME is unset" not in message and "set HYPERGRAD_CACHE to a folder" not in message
    assert len(calls) == 1  # the model is still built and used, uncached


def test_an_unknown_users_cache_argument_is_named_as_the_cause(no_user, monkeypatch):
    monkeypatch.delenv(pre.CACHE_ENV, raising=False)
    with pytest.warns(UserWarning) as caught:
        pre.cached_params("model", {"k": 1}, TEMPLATE, _counting_build([]), "~nosuchuser/x")
    (message,) = [str(w.message) for w in caught]
    assert "cache='~nosuchuser/x' cannot be expanded: no user 'nosuchuser' exists" in message
    assert "correct cache=: give an absolute folder you can write" in message
    assert "HOME is unset" not in message and "leave it out" not in message
