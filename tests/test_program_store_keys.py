"""`hypergrad._program_store`'s keys see everything a program is a function of, and its writes never
raise (hunt PS): a captured array under `jax_use_simplified_jaxpr_constants` (a literal printed
`[...]`, absent from the consts), a `custom_vmap` rule or a host callback (printed by name, its
address masked) loaded another program; a cache folder that cannot be written crashed the search
after compiling. In-process checks of the keys: equal keys are what made a later process load the
other program."""

import os
import platform
import stat

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.custom_batching import custom_vmap

import hypergrad as hg
from hypergrad import _program_store, outer

ARGS = (jnp.ones(4),)


@pytest.fixture(params=[False, True], ids=["consts", "simplified-constants"])
def simplified(request):
    """Both ways JAX may hold a captured array: a constvar (default) or a literal in the equation."""
    before = jax.config.jax_use_simplified_jaxpr_constants
    jax.config.update("jax_use_simplified_jaxpr_constants", request.param)
    yield request.param
    jax.config.update("jax_use_simplified_jaxpr_constants", before)


def _captured(scale):
    """Jaxprs that differ only in the captured array `scale`: at the top, in a nested jit, in a scan body."""
    inner = jax.jit(lambda x: x * scale)
    return [jax.make_jaxpr(lambda x: x * scale)(*ARGS),
            jax.make_jaxpr(lambda x: inner(x) + 1)(*ARGS),
            jax.make_jaxpr(lambda x: jax.lax.scan(lambda s, _: (s + scale, None), x, None, length=2)[0])(*ARGS),
            jax.make_jaxpr(lambda x: (x, scale))(*ARGS)]  # returned as it is


def test_a_captured_array_enters_the_key_and_the_digest(simplified):
    ones, twos = _captured(np.ones(4)), _captured(np.full(4, 2.0))
    for a, b in zip(ones, twos):
        assert str(a) == str(b)  # the text cannot tell them apart ([...]:f64[4] with the flag on)
        assert _program_store.digest(a, ("search",), ARGS) != _program_store.digest(b, ("search",), ARGS)
        assert _program_store.key(a, ("search",), ARGS) != _program_store.key(b, ("search",), ARGS)
        # and a key still hits: the same program traced again has the same key
        again = _captured(np.ones(4))[ones.index(a)]
        assert _program_store.key(a, ("search",), ARGS) == _program_store.key(again, ("search",), ARGS)


def test_outer_schedules_differing_in_a_captured_array_get_different_update_keys(simplified):
    """hg.tune with optax.sgd(lambda s: lrs[s]) for two arrays `lrs` shared one outer program in one
    process under the flag (`update_key` is a `digest`), so the second followed the first's steps."""
    z = {"lr": np.zeros(())}

    def key_of(rates):
        sgd = optax.sgd(lambda step: jnp.asarray(rates)[step])
        return outer.update_key(sgd, z, sgd.init(z))

    assert key_of(np.full(8, 0.1)) != key_of(np.full(8, 0.5))
    assert key_of(np.full(8, 0.1)) == key_of(np.full(8, 0.1))


def _vmap_scaled(k):
    """The identity, whose batching rule (run when the search vmaps the trial) multiplies by `k`."""
    @custom_vmap
    def f(x):
        return x

    @f.def_vmap
    def rule(axis_size, in_batched, x):
        return x * k, in_batched[0]

    return jax.make_jaxpr(lambda x: f(x) + 1)(*ARGS)


def test_a_jaxpr_holding_python_code_is_never_stored_and_never_shares_a_digest():
    """The rule prints as `rule=<function rule at 0xXXXXXXXXXXXX>`: an edited rule had the old key,
    and a later process loaded the old program (a third of the true values)."""
    once, thrice = _vmap_scaled(1.0), _vmap_scaled(3.0)
    assert str(once) == str(thrice)
    callback = jax.make_jaxpr(lambda x: jax.pure_callback(lambda a: np.sin(a), jax.ShapeDtypeStruct((4,), x.dtype), x))(*ARGS)
    for jaxpr in (once, thrice, callback):
        assert _program_store.key(jaxpr, ("search",), ARGS) is None  # neither stored nor loaded
    # in memory: a digest of its own at every call, so never another program's
    assert _program_store.digest(once, ("x",), ARGS) != _program_store.digest(thrice, ("x",), ARGS)
    assert _program_store.digest(once, ("x",), ARGS) != _program_store.digest(once, ("x",), ARGS)


def test_rules_only_differentiation_reads_keep_the_program_keyed():
    """custom_jvp/custom_vjp rules and a remat policy print by name too, but a program made here is
    never differentiated again: a jaxpr holding them is still stored, under a key that hits."""
    def traced():
        @jax.custom_vjp
        def h(x):
            return jnp.sin(x)

        h.defvjp(lambda x: (h(x), x), lambda r, c: (c * 2,))
        remat = jax.checkpoint(jnp.cos, policy=jax.checkpoint_policies.nothing_saveable)
        return jax.make_jaxpr(lambda x: jax.nn.relu(x) + h(x) + remat(x))(*ARGS)

    first = _program_store.key(traced(), ("search",), ARGS)
    assert first is not None and first == _program_store.key(traced(), ("search",), ARGS)


def test_a_key_made_inside_the_program_keeps_it_keyed():
    """`jax.random.key(n)` and `wrap_key_data` inside a traced run carry the PRNG implementation as a
    NamedTuple of functions (printed `fry`): 75e9d24 took it for Python code, so an objective whose
    `init` seeds its own key was never stored, and an outer optimiser seeding a key from its step
    count got a new digest, and compiled its outer step again, on every tune call (hunt RV)."""
    def traced():
        return jax.make_jaxpr(lambda x: x + jax.random.normal(jax.random.key(0), x.shape)
                              + jax.random.uniform(jax.random.wrap_key_data(jnp.zeros(2, jnp.uint32)), x.shape))(*ARGS)

    first = _program_store.key(traced(), ("search",), ARGS)
    assert first is not None and first == _program_store.key(traced(), ("search",), ARGS)
    assert _program_store.digest(traced(), ("x",), ARGS) == _program_store.digest(traced(), ("x",), ARGS)


def test_a_folder_that_cannot_be_written_skips_the_store(tmp_path, monkeypatch):
    """A file named hypergrad-programs (or an unwritable cache folder) raised out of the search
    after compiling; the program is now simply not stored."""
    blocker = tmp_path / "hypergrad-programs"
    blocker.write_text("not a folder")
    monkeypatch.setattr(_program_store, "directory", lambda: str(blocker))
    executable = jax.jit(lambda a: 2 * a).lower(*ARGS).compile()
    _program_store.store("doubles", executable)  # no FileExistsError
    assert blocker.read_text() == "not a folder" and _program_store.load("doubles") is None


def test_an_existing_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch):
    folder = tmp_path / "shared-cache"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(folder, os.W_OK):  # root writes anywhere: show it the folder a user would see
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(folder)
                            else real(p, mode, **kw))
    before = jax.config.jax_compilation_cache_dir
    try:
        with pytest.raises(ValueError, match=r"path=.*shared-cache'\)+: the folder .* cannot write in it; give a "
                                             r"folder you can write"):
            hg.use_compilation_cache(folder)
        monkeypatch.setenv("HYPERGRAD_COMPILATION_CACHE", str(folder))
        with pytest.raises(ValueError, match=r"HYPERGRAD_COMPILATION_CACHE=.*HYPERGRAD_COMPILATION_CACHE=0"):
            hg.use_compilation_cache()
    finally:
        folder.chmod(stat.S_IRWXU)
    assert jax.config.jax_compilation_cache_dir == before


def test_the_host_cpus_features_enter_the_key(monkeypatch):
    # XLA:CPU compiles for the host's instruction set and refuses a program compiled for features the
    # host lacks, while every CPU's device kind is "cpu": two CPU generations sharing a cache folder got
    # one key, so each failed to load the other's program, compiled it again and overwrote it
    jaxpr = jax.make_jaxpr(lambda x: x * 2)(*ARGS)
    here = _program_store.key(jaxpr, ("test",), ARGS)
    assert here == _program_store.key(jaxpr, ("test",), ARGS)
    assert platform.machine().encode() in _program_store.host_cpu()
    monkeypatch.setattr(_program_store, "host_cpu", lambda: b"('x86_64', [('flags', 'fpu sse sse2')])")
    assert _program_store.key(jaxpr, ("test",), ARGS) != here
