"""hypergrad.sklearn's compiled programs stay bounded: fits on data of many lengths keep at most the
program cache's cap alive, and `hg.clear_caches()` frees what the fits compiled."""

import gc
import warnings

import numpy as np
import pytest

import hypergrad as hg

pytest.importorskip("sklearn")

from jax._src.interpreters import pxla  # noqa: E402

from hypergrad.sklearn import MLPClassifier, Ridge, _base  # noqa: E402


def live_executables() -> int:
    """XLA executables alive in this process: JAX's compilation cache keys each weakly on the program
    it compiled, so an entry lives exactly as long as something holds that program."""
    gc.collect()
    return pxla._cached_compilation.cache_info().currsize


@pytest.mark.parametrize("fit, lengths", [
    # n > 200: minibatches of 200, so one program per number of rows (not bucketed)
    (lambda x, y: MLPClassifier(hidden_layer_sizes=(2,), max_iter=1, shuffle=False, random_state=0).fit(x, y),
     (201, 202, 203)),
    (lambda x, y: Ridge().fit(x.astype(np.float32), y), (201, 202, 203)),  # cast to the fit's width
], ids=["mlp-minibatch", "ridge"])
def test_fits_on_many_lengths_keep_their_executables_bounded_and_clear_caches_frees_them(fit, lengths, monkeypatch):
    """A loop of fits over data lengths (learning curves, one's own CV splits) held one small
    compiled program per length for ever in JAX's own caches (each fit's `jnp.asarray` of its data;
    Ridge's jit of its module-level solver too), past the program cache's cap and through
    `hg.clear_caches()`."""
    monkeypatch.setattr(_base, "_MAX_PROGRAMS", 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(260, 3))
    y = (x[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(x[:250], y[:250])  # the fit's shape-independent programs (the key, the scalars), once
        hg.clear_caches()
        before = live_executables()
        counts = []
        for n in lengths:
            fit(x[:n], y[:n])
            counts.append(live_executables())
    hg.clear_caches()
    after = live_executables()
    assert counts[-1] == counts[0], f"executables alive grow fit after fit past the cap of 1 program: {counts}"
    assert after <= before, f"hg.clear_caches() left {after - before} executables of the fits alive"
