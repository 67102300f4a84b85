"""The pretrained-model cache keys the environment that trains a model: a file written under another
jax/jaxlib version or on another backend is never loaded in its place (the same recipe can train other
weights there), and each environment keeps its own file."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad.problems import pretrained as pre


def _counting_build(calls):
    def build():
        calls.append(1)
        return {"w": jnp.full((3,), float(len(calls)), jnp.float32)}
    return build


def test_a_model_cached_by_another_jax_or_backend_is_trained_again_and_kept_beside(tmp_path, monkeypatch):
    calls, template = [], {"w": jnp.zeros((3,), jnp.float32)}
    build = _counting_build(calls)
    first = pre.cached_params("model", {"k": 1}, template, build, tmp_path)
    assert np.asarray(pre.cached_params("model", {"k": 1}, template, build, tmp_path)["w"]).tolist() == [1.0] * 3
    assert len(calls) == 1  # the same environment loads its file
    files = set(os.listdir(tmp_path))

    with monkeypatch.context() as patched:
        patched.setattr(jax, "__version__", "0.0.1")  # a model cached by another JAX
        other = pre.cached_params("model", {"k": 1}, template, build, tmp_path)
        assert len(calls) == 2 and np.asarray(other["w"]).tolist() == [2.0] * 3
        assert pre.trained_by()["jax"] == "0.0.1"
    with monkeypatch.context() as patched:
        patched.setattr(jax, "default_backend", lambda: "gpu")  # one trained on another backend
        pre.cached_params("model", {"k": 1}, template, build, tmp_path)
        assert len(calls) == 3
    assert len(set(os.listdir(tmp_path)) - files) == 2  # each environment's file beside the first, none replaced
    # back in this environment: its own file, untouched
    again = pre.cached_params("model", {"k": 1}, template, build, tmp_path)
    assert len(calls) == 3 and np.asarray(again["w"]).tolist() == np.asarray(first["w"]).tolist()


def test_the_key_names_this_environment():
    import jaxlib
    assert pre.trained_by() == {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend()}
