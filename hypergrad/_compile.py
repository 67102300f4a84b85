"""A cache of compiled programs, with compile counts and times, for reuse across calls.

`jax.jit` caches too, but it neither reports how long compilation took nor hands back the
compiled executable (for its memory analysis). Strategies therefore compile ahead of time through
`compiled(...)`: the first call with a given (tag, static configuration, argument shapes and
dtypes) lowers and compiles; later calls with new values reuse the executable and compile nothing.

A tag is `(name, owner, *static)`, the owner being the objective (or family) the program belongs
to. Programs are held per owner in a weak dictionary, so the cache never keeps an objective (and
its data) alive: when the user drops it, its programs go too. At most `MAX_ENTRIES` programs are
held in all, the least recently used dropped first; `hg.clear_caches()` empties the cache,
`hypergrad._caches.forget(owner)` one owner's programs.
Nothing of the values the user's functions read outside their arguments (globals, closures) is in
a key, as in `jax.jit`'s: a stored study checks them itself (`hypergrad.store.studying`, through
`programs_made`).

Objectives that are one program on different data (the scikit-learn front end builds a new
objective for every fit) share their programs by naming one owner (`share_programs`).

Large arrays a program's function closes over (a fine-tuning problem's pretrained weights, a frozen
embedding) are passed to its executable as arguments, not embedded in it as constants
(`hoisting`, `HOISTED_BYTES`): embedded, every program held a copy of them in its text and its
executable, each compilation copied them through XLA (hundreds of megabytes of program text for
tens of megabytes of weights, seconds more per compilation), and each persistent-cache entry
stored them again. The numbers computed are the same.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import linecache
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jaxlib
import numpy as np
from jax.extend import core as jcore

from hypergrad import _caches, _program_store

__all__ = ["cached", "compiled", "lower", "naming_missing_hparams", "missing_key_message", "shaped_hparams_message",
           "scalar_indexed_message", "stats", "signature", "MAX_ENTRIES",
           "HOISTED_BYTES", "hoisting", "large_constants", "placeless", "Program",
           "QUICK_COMPILE", "FUSION_EMITTERS_REMOVED", "quick_compile_options", "quick_xla_flags",
           "jaxlib_version_tuple", "refuse_disabled_jit", "TRACE_SETTINGS", "trace_settings", "strongly_typed",
           "share_programs", "is_traced", "check_hashable", "programs_made", "note_trace", "on_new_program",
           "count_as_family"]

MAX_ENTRIES = 256
"""Most compiled programs held at once (all owners together)."""

HOISTED_BYTES = 1 << 16
"""Arrays larger than this (in bytes) that a compiled program's function closes over are passed to
its executable as arguments rather than embedded in it as constants (`hoisting`); smaller ones stay
constants, which XLA may fold."""

FUSION_EMITTERS_REMOVED = (0, 11, 1)
"""The first jaxlib whose XLA no longer has the `xla_cpu_use_fusion_emitters` option (nor the older
fusion code generator it chose): passed there, as a compile option or in `XLA_FLAGS`, it is refused
("No such compile option"; an unknown `XLA_FLAGS` flag aborts the process)."""


def jaxlib_version_tuple(version: str = jaxlib.__version__) -> tuple[int, ...]:
    """(major, minor, patch) of a jaxlib version string ("0.12.1", "0.11.1.dev20260101"); the
    installed jaxlib's by default."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"jaxlib version {version!r} is not of the form major.minor.patch")
    return tuple(int(part) for part in found.groups())


def quick_compile_options(version: str = jaxlib.__version__) -> dict:
    """XLA's quick options (`QUICK_COMPILE`) for jaxlib `version` (the installed one by default): LLVM's
    optimisations off everywhere, and XLA:CPU's older fusion code generator where that jaxlib's XLA
    still has it (before `FUSION_EMITTERS_REMOVED`), so only options that XLA accepts are passed and
    the programs of the jaxlibs that have the option are compiled as before. Cost: a string match."""
    options: dict = {"xla_backend_optimization_level": 0}
    if jaxlib_version_tuple(version) < FUSION_EMITTERS_REMOVED:
        options["xla_cpu_use_fusion_emitters"] = False
    return options


def quick_xla_flags(options: dict | None = None) -> str:
    """`options` (`QUICK_COMPILE` by default) as an `XLA_FLAGS` value, "--name=value" each, booleans
    lower-case: for a process (a test run, its child processes) that compiles everything quickly.
    Set it before JAX starts its backend (importing jax or hypergrad does not)."""
    options = QUICK_COMPILE if options is None else options
    return " ".join(f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
                    for name, value in options.items())


QUICK_COMPILE = quick_compile_options()
"""XLA options that compile a program several times faster and run it several times slower:
LLVM's optimisations off, and XLA:CPU's older fusion code generator where the installed jaxlib
still has it (`quick_compile_options`). For programs whose compilation, not their run, is their
cost (a small fit, a one-off check)."""


@dataclasses.dataclass
class CompileStats:
    """Counts of compilations (cache misses) and the seconds they took, since import."""

    compilations: int = 0
    seconds: float = 0.0
    traces: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class _WeakProgramCache:
    """Executables keyed by (owner, rest of the key), weakly on the owner; least recently used
    evicted beyond `MAX_ENTRIES`. An owner that cannot be weakly referenced is held strongly.
    Thread-safe: one lock around each look-up, insertion and clear (never around a compilation),
    so `hg.clear_caches()` or an eviction on another thread makes a look-up miss, not raise."""

    def __init__(self):
        self._weak: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> {rest: executable}
        self._strong: dict = {}
        self._order: collections.OrderedDict = collections.OrderedDict()  # (owner ref, rest) -> None
        self._lock = threading.RLock()

    def _table(self, owner: Any, create: bool) -> dict | None:
        try:
            table = self._weak.get(owner)
            if table is None and create:
                table = self._weak[owner] = {}
        except TypeError:  # not weakly referenceable (a plain tuple or string tag)
            table = self._strong.get(owner)
            if table is None and create:
                table = self._strong[owner] = {}
        return table

    @staticmethod
    def _ref(owner: Any) -> Any:
        try:
            return weakref.ref(owner)
        except TypeError:
            return owner

    def get(self, owner: Any, rest: Hashable) -> Any | None:
        with self._lock:
            table = self._table(owner, create=False)
            if table is None or rest not in table:
                return None
            self._order.move_to_end((self._ref(owner), rest))
            return table[rest]

    def put(self, owner: Any, rest: Hashable, executable: Any) -> None:
        with self._lock:
            self._table(owner, create=True)[rest] = executable
            self._order[(self._ref(owner), rest)] = None
            while len(self._order) > MAX_ENTRIES:
                (ref, old), _ = self._order.popitem(last=False)
                holder = ref() if isinstance(ref, weakref.ref) else ref
                table = None if holder is None else self._table(holder, create=False)
                if table is not None:
                    table.pop(old, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(t) for t in self._weak.values()) + sum(len(t) for t in self._strong.values())

    def clear(self) -> None:
        with self._lock:
            self._weak.clear()
            self._strong.clear()
            self._order.clear()

    def drop(self, owner: Any) -> None:
        """Empties `owner`'s programs (and its places in the eviction order); every other owner's stay."""
        with self._lock:
            try:
                if self._weak.pop(owner, None) is None:
                    return
            except TypeError:  # not weakly referenceable: held strongly
                if self._strong.pop(owner, None) is None:
                    return
            for key in [key for key in self._order if key[0] is owner
                        or (isinstance(key[0], weakref.ref) and key[0]() is owner)]:
                del self._order[key]


def _split(tag: Hashable, args: tuple) -> tuple[Any, Hashable]:
    """(owner, rest): the owner is `tag[1]` of a `(name, owner, *static)` tag (or the owner it shares
    programs with, `share_programs`), else the tag itself."""
    if isinstance(tag, tuple) and len(tag) > 1:
        return _shared_owner(tag[1]), (tag[0], *tag[2:], signature(args))
    return tag, (signature(args),)


_cache = _WeakProgramCache()
stats = CompileStats()
_caches.register(_cache.clear)
_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> the owner its programs live under
_caches.register(_shared.clear)


@_caches.register_owner
def _drop_programs(owner: Any) -> None:
    """`hypergrad._caches.forget(owner)`: `owner`'s programs go, and those it shares (`share_programs`:
    the same program as the objectives sharing them, so stale for them too); the sharing itself stays."""
    _cache.drop(_shared_owner(owner))
    _cache.drop(owner)


_made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tag owner -> programs compiled for it
_families: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # objective -> WeakSet of families it counts for
_made_lock = threading.Lock()
_new_program_hooks: list[Callable[[Any], None]] = []


def programs_made(owner: Any) -> int:
    """How many programs `compiled` has compiled (or loaded) for `owner`, a tag's owner (`tag[1]`,
    before `share_programs`), and traces kept for it that compiled nothing (`note_trace`), or for
    an objective counted as `owner`'s (`count_as_family`: an
    `hg.Structured` family's are those of the objectives it built), since import: a count that only
    grows (`hg.clear_caches()` and `hypergrad._caches.forget` leave it),
    so a caller that noted it can tell whether a program was made since (`hypergrad.store` does, to
    know under which objective, as described, an objective's programs were traced). 0 for an owner
    that cannot be weakly referenced (never counted). Cost: one dictionary look-up."""
    try:
        with _made_lock:
            return _made.get(owner, 0)
    except TypeError:
        return 0


def note_trace(owner: Any) -> None:
    """Counts a trace kept for `owner` that compiled nothing (a FLOP count of `hypergrad.accounting`)
    as a program made for it (`programs_made`, `on_new_program`): it was made from the values
    `owner`'s functions read then, as a compiled program is, so a caller that watches `owner`'s
    programs (`hypergrad.store`) must learn of it too. Cost: one dictionary update and the hooks."""
    _count_program(("trace", owner))


def on_new_program(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """Registers `hook(owner)`, called after `compiled` made a program for `owner` (`tag[1]`) and
    counted it (`programs_made`), outside the cache's lock, then once for each family `owner` counts
    for (`count_as_family`); returns it (usable as a decorator)."""
    _new_program_hooks.append(hook)
    return hook


def count_as_family(objective: Any, family: Any, counted: bool = True) -> None:
    """Counts `objective`'s programs as `family`'s too (`programs_made`, `on_new_program`), those made
    before included, or (`counted=False`) no longer: a `hg.Structured` family's programs are those of
    the objectives it built. Both held weakly. Cost: a dictionary look-up."""
    with _made_lock:
        families = _families.get(objective)
        if not counted:
            if families is not None:
                families.discard(family)
            return
        if families is None:
            families = _families[objective] = weakref.WeakSet()
        if family not in families:
            families.add(family)
            _made[family] = _made.get(family, 0) + _made.get(objective, 0)


def _count_program(tag: Hashable) -> None:
    owner = tag[1] if isinstance(tag, tuple) and len(tag) > 1 else None
    try:
        with _made_lock:
            owners = [owner, *_families.get(owner, ())]
            for counted in owners:
                _made[counted] = _made.get(counted, 0) + 1
    except TypeError:  # no owner, or one not weakly referenceable: not counted
        return
    for counted in owners:
        for hook in _new_program_hooks:
            hook(counted)


def share_programs(owner: Any, shared: Any) -> None:
    """Keeps `owner`'s programs under `shared` (weakly, as any owner): objectives that are one
    program on different data, such as the scikit-learn front end's fits of one estimator
    structure and data shape, name one `shared` object and compile once. The caller vouches that
    at equal tags and argument types their programs are the same, their data read only through
    the arguments; it keeps `shared` alive as long as the programs are worth keeping (each
    owner holds it too). `owner` is held weakly; `hg.clear_caches()` forgets the sharing."""
    _shared[owner] = shared


def _shared_owner(owner: Any) -> Any:
    try:
        return _shared.get(owner, owner)
    except TypeError:  # not weakly referenceable or not hashable: never shared
        return owner


_TOP_LEVEL = jcore.get_opaque_trace_state()
"""JAX's trace state outside every transformation (the one evaluation trace)."""


def is_traced(tree: Any) -> bool:
    """Whether `tree` holds a tracer or this call runs under a JAX transformation (jit, vmap,
    grad): a function may then close over traced values that a compiled program cannot take
    (`jax.vmap(lambda m: hypergradient(objective.with_fixed({"lr_mult": m}), hparams, key))` with
    concrete hparams), so it is traced inline instead of compiled."""
    return (jcore.get_opaque_trace_state() != _TOP_LEVEL
            or any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree)))


def refuse_disabled_jit() -> None:
    """`ValueError` naming `jax_disable_jit` while it is on (`jax.config.update("jax_disable_jit",
    True)`, `JAX_DISABLE_JIT=1` or a `with jax.disable_jit():` block around the call): hypergrad runs
    programs compiled ahead of time, which JAX cannot run with jit disabled (its "Disable jit is not
    supported in the AOT path", raised only when the program is called, after its trace and
    compilation). Called before every lowering or compilation (`compiled`, `cached`, `lower`,
    `compile_jitted`), so the refusal comes before that work, and as the first check of every
    strategy (`random_search`, `grid_search`, `tune`, `hybrid_search`, `optuna_search`), whose
    other checks and draws would otherwise run op by op first. Cost: one read of a setting."""
    if jax.config.jax_disable_jit:
        raise ValueError(
            "jax_disable_jit is on, and hypergrad runs programs compiled ahead of time, which JAX cannot run "
            "with jit disabled. Turn it off (jax.config.update('jax_disable_jit', False), or unset "
            "JAX_DISABLE_JIT) for hypergrad's calls, and scope it to your own code instead: "
            "`with jax.disable_jit(): objective(hparams, key)` runs your objective op by op (or debug inside "
            "compiled code with jax.debug.print / jax.debug.breakpoint)")


# JAX's settings that change what a trace computes or how it is lowered: those JAX's own `jax.jit`
# keys its trace cache on (its trace context, as of jax 0.10 and 0.12: `jax._src.config.
# trace_context_names()`, less the context managers, which `jax.config` does not name; checked by
# tests/test_jax_settings.py), plus the default PRNG implementation (a raw uint32 key is read through
# it). `_program_store` keys on the whole of `jax.config` instead (the store holds programs across JAX
# versions and settings, so it errs on the side of a miss); the list here keeps a logging or
# cache-folder setting from dropping the programs held in memory.
_KNOWN_TRACE_SETTINGS = (
    "jax_enable_x64", "jax_threefry_partitionable", "jax_default_prng_impl", "jax_numpy_dtype_promotion",
    "jax_numpy_rank_promotion", "jax_default_matmul_precision", "jax_explicit_x64_dtypes", "jax_default_device",
    "jax_disable_jit", "jax_random_seed_offset", "jax_threefry_gpu_kernel_lowering", "jax_softmax_custom_jvp",
    "jax_high_dynamic_range_gumbel", "jax_use_direct_linearize", "jax_use_simplified_jaxpr_constants",
    "jax_embedded_constants_max_bytes", "jax_debug_key_reuse", "jax_check_static_indices", "jax_scan3",
    "jax_remat3", "jax_custom_vjp3", "jax_remove_size_one_mesh_axis_from_type", "check_vma", "jax_auto_pcast",
    "jax_allow_f16_reductions", "jax_error_checking_behavior_nan", "jax_error_checking_behavior_divide",
    "jax_error_checking_behavior_oob", "jax_hlo_source_file_canonicalization_regex", "jax_enable_pgle",
    "jax_pgle_profiling_runs", "jax_use_emit_pipeline_primitive", "eager_constant_folding", "jax_no_execution",
    "jax_mutable_array_checks", "jax_xla_profile_version", "jax_use_shardy_partitioner",
    "jax_ragged_dot_use_gpu_pallas_triton_lowering", "jax_pallas_enable_debug_checks", "jax_pallas_use_mosaic_gpu",
    # new in jax 0.11/0.12: random draws, special functions' lowerings and derivatives, collectives
    "jax_random_normal_mode", "jax_legacy_random_uniform", "jax_accurate_erf_inv", "jax_tanh_sech_jvp",
    "jax_accurate_logistic", "jax_accurate_default_erfc", "jax_use_hlo_logistic_lowering", "jax_custom_jvp3",
    "jax_remat_barrier_no_cotangents", "jax_raise_on_ppermute_sort_diff", "jax_no_collectives", "jax_partitioning",
)

TRACE_SETTINGS = tuple(name for name in _KNOWN_TRACE_SETTINGS if name in jax.config.values)
"""Names of the JAX settings (`jax.config`) that a compiled program is keyed on besides its arguments:
those this JAX has, in the order of `trace_settings()`'s values."""


def trace_settings() -> tuple:
    """The values of `TRACE_SETTINGS` in force now (a `with jax.threefry_partitionable(...)` block's
    too), in that order. Part of every in-memory program key (`signature`): a program traced under
    `jax_enable_x64` off computes in float32, one traced under another `jax_threefry_partitionable`
    (or, on jax 0.12, `jax_random_normal_mode`) draws other random numbers, so a call after
    `jax.config.update` gets a program of its own, as `jax.jit` gives it. Cost: one read per setting."""
    return tuple(getattr(jax.config, name) for name in TRACE_SETTINGS)


def signature(args: Any) -> Hashable:
    """The hashable (tree structure, leaf shapes, dtypes and shardings, and JAX's settings that shape a
    trace, `trace_settings()`) of `args`: what a program is compiled for. A compiled program takes
    only the shardings it was compiled for (arguments on another device or mesh were a "compiled for
    input shardings that disagree" error), and computes what the settings in force when it was traced
    made of it (a call under `jax.default_matmul_precision("highest")` reused the default-precision
    program; one after turning `jax_enable_x64` on reused the float32 program, one after flipping
    `jax_threefry_partitionable` the old random draws)."""
    leaves, treedef = jax.tree.flatten(args)
    # an array's own dtype when it has one (result_type walks JAX's type lattice, ~30 us a leaf)
    return treedef, tuple((np.shape(x), x.dtype if isinstance(x, (np.ndarray, jax.Array)) else
                           jax.numpy.result_type(x), x.sharding if isinstance(x, jax.Array) else None)
                          for x in leaves), trace_settings()


def check_hashable(setting: Any, argname: str = "method") -> None:
    """`TypeError` unless `setting`, a static setting that programs and FLOP counts are keyed on, can
    be hashed: raised before anything is traced or compiled, naming the setting and the fix, instead
    of a bare "unhashable type" once the program was compiled (where the cache first hashes its key).
    `argname` says what it is: "method" (the default) for a `method=` strategy object, whose fix is
    a frozen hg.Method dataclass; anything else names another static setting (`compiled`'s tag
    entries), its value and type then given with the general fix. Cost: one `hash`."""
    try:
        hash(setting)
    except TypeError as err:
        if argname == "method":
            raise TypeError(
                f"method={setting!r} cannot be hashed ({err}); hypergrad keys its compiled programs and FLOP "
                f"counts on the method (and its other static settings) by value. Make {type(setting).__name__}, an "
                "hg.Method subclass, a frozen dataclass whose fields are hashable: @dataclasses.dataclass(frozen=True), "
                "with an array or list field stored as a tuple of Python numbers (or passed as a hyperparameter)"
            ) from err
        raise TypeError(
            f"{argname}, {setting!r} (a {type(setting).__name__}), cannot be hashed ({err}); hypergrad keys its "
            "compiled programs on their static settings by value. Give a hashable value: a tuple of Python numbers "
            "for a list or array, a frozen dataclass whose fields are hashable (@dataclasses.dataclass(frozen=True)) "
            "for an object of your own") from err


@contextlib.contextmanager
def naming_missing_hparams(hparams: Mapping | None = None):
    """Turns a `KeyError` raised while tracing an objective into a `ValueError` saying what it most
    often means, a hyperparameter the loss or optimiser read that nobody passed, and what else it
    can be, a missing key in the user's own dicts (a batch or parameter dict): the `KeyError` stays
    chained as its cause, so the traceback shows the line that raised it; a name the dict that line read
    holds close to the missing one (a typo in the space, 'momentm' for 'momentum') is named too
    (`missing_key_message`). So is JAX's `IndexError` for
    an index into a 0-dimensional array, most often a scalar hyperparameter read as a per-step
    schedule (`h["lr"][step]` with `lr` an `hg.Choice`, always a scalar): `scalar_indexed_message`.

    `hparams`, the hyperparameters being traced, when the caller has them: JAX's `TypeError` for
    operands of incompatible shapes ("mul got incompatible shapes for broadcasting: (3,), (8,)"), when
    some hyperparameter is not a scalar, becomes a `TypeError` naming them and their shapes, most often a
    per-step schedule read as a scalar (`shaped_hparams_message`); JAX's error stays chained as its cause.
    Other `TypeError`s, and any without `hparams` or with every hyperparameter a scalar, pass unchanged."""
    try:
        yield
    except KeyError as err:
        raise ValueError(missing_key_message(err)) from err
    except IndexError as err:
        if not _SCALAR_INDEXED.search(str(err)):
            raise
        raise ValueError(scalar_indexed_message(err)) from err
    except TypeError as err:
        shaped = _shaped_hparams(hparams)
        if not shaped or not _INCOMPATIBLE_SHAPES.search(str(err)) or str(err).startswith(_SHAPED_PREFIX):
            raise
        raise TypeError(shaped_hparams_message(err, shaped)) from err


# JAX's TypeError for operands whose shapes do not broadcast ("mul got incompatible shapes for broadcasting")
_INCOMPATIBLE_SHAPES = re.compile(r"incompatible shapes")
_SHAPED_PREFIX = "TypeError while tracing the objective with non-scalar hyperparameters"


def _shaped_hparams(hparams: Mapping | None) -> dict[str, tuple]:
    """The hyperparameters of `hparams` that are not scalars: name -> shape (of its one array; of each
    array in a tree of them, as a tuple of shapes). Empty for None."""
    shaped = {}
    for name, value in (hparams or {}).items():
        shapes = [tuple(getattr(leaf, "shape", ())) for leaf in jax.tree.leaves(value)]
        if any(shapes):
            shaped[name] = shapes[0] if len(shapes) == 1 else tuple(shapes)
    return shaped


def shaped_hparams_message(err: TypeError, shaped: Mapping[str, tuple]) -> str:
    """The message of `naming_missing_hparams`' `TypeError` for JAX's shape `TypeError` `err` raised while
    tracing an objective whose hyperparameters `shaped` (name -> shape) are not scalars."""
    names = ", ".join(f"{name!r} of shape {shape}" for name, shape in shaped.items())
    first, said = next(iter(shaped)), str(err).split("\n")[0]  # JAX's words, without its traceback note
    return (f"{_SHAPED_PREFIX} ({names}): {said} A shaped hyperparameter is an array wherever the loss "
            f"or optimiser reads it, so read as a scalar (optax.sgd(h[{first!r}])) it broadcasts against the "
            f"parameters and fails. A per-step schedule must be indexed by the step, e.g. "
            f"optax.sgd(lambda step: h[{first!r}][step]); for one value declare it without shape=. If the shapes "
            "above are not a hyperparameter's, the TypeError above shows the line that mixed them")


# JAX's IndexError for an index into a 0-dimensional array (a scalar hyperparameter read as h["lr"][step])
_SCALAR_INDEXED = re.compile(r"Too many indices: array is 0-dimensional")
# the folders of code that is not the user's: hypergrad's own, JAX's, installed packages and the standard library
_LIBRARY_DIRS = tuple(os.path.dirname(os.path.dirname(m.__file__)) + os.sep for m in (jax, contextlib)) + (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,)


def scalar_indexed_message(err: IndexError) -> str:
    """The message of `naming_missing_hparams`'s `ValueError` for JAX's `IndexError` `err` (an index
    into a 0-dimensional array): the hyperparameter the user's line indexes (`h["lr"][step]`), named
    when that line shows one, is a scalar, and how to declare a per-step schedule instead."""
    names = _indexed_names(err)
    what = (", ".join(f"hparams[{name!r}]" for name in names) + (" is a scalar" if len(names) == 1 else " are scalars")
            if names else "a hyperparameter it indexes is a scalar")
    return (f"IndexError while tracing the objective ({err}): {what}, but the loss or optimiser indexes it, e.g. "
            "as a per-step schedule (hparams['lr'][step]). An hg.Choice is always a scalar (its options are "
            "numbers, strings or objects, never arrays), and so is an hg.Uniform/LogUniform without "
            "shape=. For per-step values declare an independent range with one entry per step, e.g. "
            "hg.LogUniform(..., shape=(num_steps,)) (or choose among whole schedules with a structural Choice "
            "whose build makes the optimiser), or read the hyperparameter as a scalar. If it is no hyperparameter, "
            "the IndexError above shows the line that indexes a 0-dimensional array")


def _indexed_names(err: BaseException) -> list[str]:
    """The names the user's line that raised `err` (the innermost frame outside hypergrad, JAX,
    installed packages and the standard library) indexes twice, `h["lr"][...]`; empty when none."""
    user = None
    frame = err.__traceback__
    while frame is not None:
        if not frame.tb_frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
            user = frame
        frame = frame.tb_next
    if user is None:
        return []
    line = linecache.getline(user.tb_frame.f_code.co_filename, user.tb_lineno)
    return list(dict.fromkeys(m.group(2) for m in re.finditer(r"\[\s*(['\"])([^'\"]+)\1\s*\]\s*\[", line)))


def missing_key_message(err: KeyError) -> str:
    """The message of `naming_missing_hparams`'s `ValueError` for `err`: with, when the dict the raising
    line read holds a name close to the missing one (`_close_names`), the question whether that was meant."""
    close = _close_names(err)
    hint = f" (did you mean to declare {close[0]!r} as {err.args[0]!r}?)" if close else ""
    return (f"KeyError {err} while tracing the objective. If {err} names a hyperparameter, the objective "
            f"reads hyperparameter {err} that was not given; declare it in the hg.Space (or pass it in "
            f"hparams), or remove it from the optimizer/loss{hint}. Otherwise it is a key missing from a dict of "
            "your own (a batch or parameters): the KeyError above shows the line")


def _close_names(err: KeyError) -> list[str]:
    """The names close to `err`'s missing key (`difflib.get_close_matches`) that the dict read by the line
    that raised `err` holds: the innermost line of its traceback that reads `name["key"]` (a mapping's own
    `__getitem__` may lie inside it), and `name` looked up in that line's frame. Empty when the key is no
    string or no such dict is found."""
    missing = err.args[0] if len(err.args) == 1 else None
    if not isinstance(missing, str):
        return []
    frames, frame = [], err.__traceback__
    while frame is not None:
        frames.append(frame)
        frame = frame.tb_next
    reading = re.compile(r"([A-Za-z_]\w*)\s*\[\s*(['\"])" + re.escape(missing) + r"\2\s*\]")
    for frame in reversed(frames):
        found = reading.search(linecache.getline(frame.tb_frame.f_code.co_filename, frame.tb_lineno))
        if found is not None:
            read = frame.tb_frame.f_locals.get(found.group(1), frame.tb_frame.f_globals.get(found.group(1)))
            names = [name for name in read if isinstance(name, str)] if isinstance(read, Mapping) else []
            return difflib.get_close_matches(missing, [name for name in names if name != missing])
    return []


def strongly_typed(args: Any) -> Any:
    """`args` with every weakly typed leaf (a Python number, `jnp.asarray(0.1)`) as a strongly
    typed abstract value of its dtype (and sharding): what `lower` traces, so that a cached
    program, which `signature` keys without weak types, computes the same whichever kind of
    number its first call passed (a weak float promotes to float32 against float32 parameters, a
    strong float64 does not). A compiled program accepts weak and strong arguments alike."""
    def strong(x):
        if isinstance(x, jax.Array) and getattr(x, "weak_type", False):  # a key array has none
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, (bool, int, float, complex)):
            return jax.ShapeDtypeStruct((), jax.numpy.result_type(x))
        return x

    return jax.tree.map(strong, args)


def lower(fn: Callable | jax.stages.Traced, args: tuple) -> Any:
    """`jax.jit(fn).lower(*args)` at strongly typed arguments (`strongly_typed`), with a missing
    hyperparameter named in a `ValueError` (and `refuse_disabled_jit`'s while `jax_disable_jit` is on);
    `fn` may also be its trace at those arguments (`jax.jit(fn).trace(...)`, from `hoisting`), lowered
    without tracing again."""
    refuse_disabled_jit()
    if isinstance(fn, jax.stages.Traced):
        return fn.lower()
    with naming_missing_hparams():
        return jax.jit(fn).lower(*strongly_typed(args))


def large_constants(closed: Any) -> tuple:
    """The constants of the ClosedJaxpr `closed` (its own `consts`, in their order) larger than
    `HOISTED_BYTES`: the arrays its function closed over that `hoisting` passes as arguments. Arrays
    a nested `jax.jit` closes over stay in that call's jaxpr, and stay constants. Cost: a look at each."""
    def large(value: Any) -> bool:
        if isinstance(value, jax.core.Tracer):  # a traced value: the program cannot be compiled ahead anyway
            return False
        aval = jax.typeof(value)
        if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.extended):  # a PRNG key array: kept as it was
            return False
        return math.prod(aval.shape) * aval.dtype.itemsize > HOISTED_BYTES

    return tuple(value for value in closed.consts if large(value))


def hoisting(fn: Callable, args: tuple, constants: tuple | None = None) -> tuple[Any, tuple]:
    """(`program`, `constants`): `fn` traced once at `args` (strongly typed, `strongly_typed`), and the
    large arrays it closes over, `large_constants` of its trace, as device arrays; or, when
    `constants` is given, those (the program then takes all of them: the ones its trace holds are
    read from the argument, the others go unread, and any other array stays a constant).

    `program` is `program(constants, *args)`, computing what `fn(*args)` computes (its trace
    replayed, the same operations) with those arrays read from its first argument: compiled, it
    holds no copy of them, and its text stays the size of its operations. With no such array it is
    the trace itself (`lower` takes it as it is: the program is the one `jax.jit(fn)` makes), called
    as `program(*args)`. A missing hyperparameter is named in a `ValueError` (`naming_missing_hparams`).
    Cost: one trace of `fn` (as lowering it costs), and, with constants, a replay of its outermost
    equations (a loop's body is not replayed, but bound whole)."""
    with naming_missing_hparams():
        traced = jax.jit(fn).trace(*strongly_typed(args))
    closed = traced.jaxpr
    chosen = large_constants(closed) if constants is None else tuple(constants)
    if not chosen:
        return traced, ()
    position = {id(value): i for i, value in enumerate(chosen)}
    where = [position.get(id(value)) for value in closed.consts]

    def program(values, *rest):
        consts = [value if i is None else values[i] for value, i in zip(closed.consts, where)]
        outs = jcore.jaxpr_as_fun(jcore.ClosedJaxpr(closed.jaxpr, consts))(*jax.tree.leaves(rest))
        return jax.tree.unflatten(traced.out_tree, outs)

    program.__name__ = program.__qualname__ = getattr(fn, "__name__", "program")  # the program's name in XLA
    return program, tuple(jax.device_put(value) for value in chosen)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A compiled program (`executable`) that takes the large arrays its function closed over as its
    first argument (`hoisting`), with those arrays (`constants`, placed as it takes them): called as
    the function it was compiled from, `program(*args)`, it passes them first. Its other public
    attributes are the executable's (`memory_analysis()`, whose arguments include the constants,
    `cost_analysis()`, `as_text()`). Hashed and weakly referenced by identity, as an executable is."""

    executable: Any
    constants: tuple = dataclasses.field(repr=False)  # megabytes of arrays: left out of the repr

    def __call__(self, *args: Any) -> Any:
        return self.executable(self.constants, *args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("executable", "constants"):  # never the executable's own internals
            raise AttributeError(name)
        return getattr(self.executable, name)


def placeless(constants: tuple) -> tuple:
    """`constants` as abstract values of their shapes and dtypes, with no placement: what a program
    that takes them first (`hoisting`) is lowered at, so that the compiler decides where it reads
    them (as it did when they were embedded constants) and `_taking` places them there. Lowered at
    the arrays themselves, one committed to a single device (a checkpoint restore's weights,
    `jax.device_put(w, device)`) was refused beside arguments sharded over several devices (the
    searches'), and one split over devices changed the program."""
    return tuple(jax.ShapeDtypeStruct(value.shape, value.dtype) for value in constants)


def _taking(executable: Any, constants: tuple) -> Any:
    """`executable`, or, when it takes `constants` first, a `Program` holding them placed where it
    reads them (its input shardings: once, not at every call)."""
    if not constants:
        return executable
    placed = jax.device_put(constants, executable.input_shardings[0][0])
    return Program(executable, tuple(placed))


def cached(tag: Hashable, args: tuple) -> Any | None:
    """The program `compiled(tag, ..., args)` would return without compiling, or None; `TypeError`
    for a static part of `tag` that cannot be hashed, as `compiled` refuses it; `refuse_disabled_jit`'s
    `ValueError` while `jax_disable_jit` is on."""
    refuse_disabled_jit()
    _check_static(tag)
    return _cache.get(*_split(tag, args))


def _check_static(tag: Hashable, static_names: tuple[str, ...] | None = None) -> None:
    """`check_hashable` of each static part of a `(name, owner, *static)` tag, named by
    `static_names` (`compiled`), else as a static setting of the program `name`."""
    names = tuple(static_names or ())
    for position, setting in enumerate(tag[2:] if isinstance(tag, tuple) else ()):
        check_hashable(setting, names[position] if position < len(names) else
                       f"a static setting of the {tag[0]!r} program")


def compiled(tag: Hashable, make_fn: Callable[[], Callable], args: tuple,
             before_compile: Callable[[], Any] | None = None, jaxpr: Any = None,
             static_names: tuple[str, ...] | None = None) -> tuple[Any, float]:
    """The compiled program for `tag` at the shapes of `args`, and the seconds spent compiling now.

    Args:
        tag: hashable identity of the program, `(name, owner, *static)`, e.g.
            ("hypergradient", objective, method); the cache holds the owner weakly.
        make_fn: builds the Python function to jit; called only on a cache miss.
        args: example arguments (values are ignored; shapes and dtypes key the cache).
        before_compile: called after lowering, right before XLA compiles (which releases the
            GIL): where a caller starts work on another thread to overlap the compilation.
        jaxpr: the ClosedJaxpr `make_fn()` is a function of (with `tag`'s static parts and the
            arguments' types), if any: with the persistent cache on, the program is then looked up
            in, and once compiled written to, `hypergrad._program_store`, so a later process loads
            it without making and lowering it; such a program takes `jaxpr`'s large constants
            (`large_constants`) as arguments, so that a loaded one knows them.
        static_names: what each of `tag`'s static parts is, for the refusal of one that cannot be
            hashed (`check_hashable`'s `argname`: "method" for a `method=` strategy object); None:
            each is described as a static setting of the program `tag[0]`, with its value and type.

    Returns:
        (executable, seconds): call the executable as `executable(*args)` (a `Program` when it takes
        the large arrays its function closes over as arguments: `hoisting`); seconds is 0.0 when
        the program came from the cache.
    """
    refuse_disabled_jit()  # JAX cannot run the program: refused before its trace and compilation
    _check_static(tag, static_names)
    owner, rest = _split(tag, args)
    executable = _cache.get(owner, rest)
    if executable is not None:
        return executable, 0.0
    start = time.perf_counter()
    stored = given = None
    if jaxpr is not None and _program_store.directory() is not None:
        stored = _program_store.key(jaxpr, (tag[0], *tag[2:]) if isinstance(tag, tuple) else tag, args)
        # a stored program takes `jaxpr`'s large constants: known when it is loaded, without making it
        given = None if stored is None else large_constants(jaxpr)
    taken = [given or ()]  # the constants the executable takes first (`hoisting`)

    def compile_now():
        program, taken[0] = hoisting(make_fn(), args, given)
        lowered = lower(program, (placeless(taken[0]), *args) if taken[0] else args)
        if before_compile is not None:
            before_compile()
        return lowered.compile()

    executable = _taking(_program_store.load_or_compile(stored, compile_now), taken[0])
    seconds = time.perf_counter() - start
    stats.compilations += 1
    stats.seconds += seconds
    stats.traces[tag[0] if isinstance(tag, tuple) else tag] += 1
    _cache.put(owner, rest, executable)
    _count_program(tag)
    return executable, seconds


def compile_jitted(jitted: Any, args: tuple, tag: Hashable) -> Any:
    """`jitted.lower(*args).compile()` for a `jax.jit`-wrapped function, through
    `hypergrad._program_store` when the persistent cache is on: traced (the store's key is its
    jaxpr, with `tag` and the arguments' types), then loaded, or lowered, compiled and stored.
    Cost on a hit: the trace and a load, no lowering. `refuse_disabled_jit` first."""
    refuse_disabled_jit()
    if _program_store.directory() is None:
        return jitted.lower(*args).compile()
    traced = jitted.trace(*args)
    return _program_store.load_or_compile(_program_store.key(traced.jaxpr, tag, args),
                                          lambda: traced.lower().compile())
