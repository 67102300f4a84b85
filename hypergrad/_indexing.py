"""Refuses, before anything compiles, an objective that cannot run at the given hyperparameters'
shapes: one whose trace fails (a loss that is not a scalar, a hyperparameter nobody passed), and an
optimiser that indexes a hyperparameter past its end within the training steps: a per-step schedule
shorter than `num_steps` (`hparams["lr"][step]` with 100 entries and 200 steps). JAX clamps an
out-of-bounds index to the last entry, so such a run would silently train its last steps at the last
rate and pile their hypergradient onto it."""

from __future__ import annotations

import contextlib
import contextvars
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from hypergrad import _caches, _compile
from hypergrad._checks import users_stacklevel
from hypergrad._jaxprs import unread_inputs
from hypergrad._types import HParams
from hypergrad.loop import float_leaves, optimizer_step

__all__ = ["check_objective_runs", "check_direct_call", "check_schedules_in_bounds", "unread_hparams", "unread_names",
           "known_unread_names", "warn_unread_hparams", "unread_warned_once", "mark_unread_warned"]

# objective -> the hyperparameter shapes its schedules were checked at
_checked: weakref.WeakKeyDictionary = _caches.register_table(weakref.WeakKeyDictionary())
# per kind of trace ("check": `check_objective_runs`' trace of the objective; "run": a training run's
# trace, `hypergrad.accounting.traced_run`): objective -> {hyperparameter shapes and dtypes: the names
# that trace never reads}
_unread: dict[str, weakref.WeakKeyDictionary] = {"check": weakref.WeakKeyDictionary(),
                                                  "run": weakref.WeakKeyDictionary(),
                                                  "method": weakref.WeakKeyDictionary()}
for _cache in _unread.values():
    _caches.register_table(_cache)
# within `unread_warned_once()`: the sets of unread hyperparameters warned of so far (tuples of names, as
# `warn_unread_hparams` is given them), and the names marked as warned of (`mark_unread_warned`: frozensets,
# each covering every set of its names)
_warned: contextvars.ContextVar[set | None] = contextvars.ContextVar("hypergrad_unread_warned", default=None)


def check_objective_runs(objective: Any, hparams: HParams, trace: Callable[[], Any] | None = None,
                         warn_cached: bool = False) -> None:
    """Traces `objective`'s training and evaluation once at `hparams` (`jax.make_jaxpr`: nothing
    compiled or computed), so that an error the trace raises (a loss or metric that is not a scalar, a
    hyperparameter the optimiser reads that nobody passed) comes before any program is compiled, not
    after the first one; warns of a hyperparameter the objective never reads
    (`warn_unread_hparams`); then `check_schedules_in_bounds`. Cost: one trace of the objective, once
    per objective and hyperparameter shapes, and the schedule check's. `trace`, when given, makes
    that trace instead (a ClosedJaxpr of `loss_and_scores` whose first inputs are `hparams`' leaves):
    a caller that needs the trace anyway hands it on (tune's count of a run). For a caller that
    traces the objective anyway before compiling (a search's counted run),
    `check_schedules_in_bounds` alone. The unread hyperparameters are remembered with the trace
    (`unread_names`): `warn_cached` warns of them again when the trace is found done (a caller that
    warns once per call: `tune`), where a trace found done otherwise says nothing."""
    def traced() -> Any:
        if trace is None:
            return _objective_trace(objective, hparams)
        with _compile.naming_missing_hparams(hparams):
            return trace()

    fresh = []

    def checked(unread: tuple[str, ...]) -> None:  # a new trace: the check is done once it passes
        fresh.append(True)
        warn_unread_hparams(unread)
        check_schedules_in_bounds(objective, hparams)

    unread = unread_names(objective, hparams, traced, kind="check", check=checked)
    if warn_cached and not fresh:
        warn_unread_hparams(unread)


def check_direct_call(objective: Any, hparams: HParams) -> None:
    """`check_objective_runs` for a direct call of the objective (`objective(hparams, key)`, its
    `evaluate` and `train`), warning of nothing (a direct call never warned of unread hyperparameters;
    the strategies still do, the trace found done): the objective's trace first, so that an error of
    that trace (a loss that is not a scalar) comes before anything compiles, then
    `check_schedules_in_bounds` (a per-step schedule shorter than `num_steps`: a passed one, or one held
    with `with_fixed` beside an array hyperparameter). Cost, once per objective and hyperparameter
    shapes (shared with `hg.hypergradient`'s and `hg.tune`'s check): one trace of the objective and
    the schedule check's; then a look-up."""
    unread_names(objective, hparams, lambda: _objective_trace(objective, hparams), kind="check",
                 check=lambda unread: check_schedules_in_bounds(objective, hparams))


def _objective_trace(objective: Any, hparams: HParams) -> Any:
    """The jaxpr of `objective.loss_and_scores` at `hparams` (traced ones as zeros of their shapes): one
    trace, nothing compiled; a `KeyError` becomes `naming_missing_hparams`' ValueError (and a shaped
    hyperparameter read as a scalar its TypeError naming it)."""
    with _compile.naming_missing_hparams(hparams):
        return jax.make_jaxpr(lambda h, data: objective.loss_and_scores(h, jax.random.key(0), data))(
            _concrete(hparams), objective.problem.data)


def known_unread_names(objective: Any, hparams: HParams) -> tuple[str, ...]:
    """`unread_names` for a caller that needs the names but neither warns nor checks (ES and PES, which
    return an exact 0 for these hyperparameters): the names kept by `check_objective_runs`' trace or a
    search's run when either was made at these shapes and dtypes, else one trace of the objective kept
    in a cache of its own ("method"; not the check's, whose checks and warning must still run). Cost:
    dictionary look-ups, or once per objective and hyperparameter shapes one trace and one jaxpr walk."""
    shapes = _shapes(hparams)
    for kind in ("check", "run"):
        try:
            kept = _unread[kind].get(objective) or {}
        except TypeError:  # an objective that cannot be weakly referenced
            kept = {}
        if shapes in kept:
            return kept[shapes]
    return unread_names(objective, hparams, lambda: _objective_trace(objective, hparams), kind="method")


def check_schedules_in_bounds(objective: Any, hparams: HParams) -> None:
    """`ValueError` when `objective`'s optimiser, stepped `num_steps` times, indexes an array
    hyperparameter out of its bounds (JAX's `checkify` index checks), a passed one or one the
    objective holds (`objective.with_fixed({"lr": schedule})`, which its optimiser closes over) when
    some passed hyperparameter is an array; nothing when every passed one is a scalar. Known gap: a
    schedule held with `with_fixed` beside scalar hyperparameters alone is not checked (checking it
    would compile this probe for every such objective, a sklearn estimator's each fit included).

    Runs the optimiser alone on zero parameters of the model's shapes and dtypes and gradients of
    one, at `hparams` (concrete values; a traced one is replaced by zeros of its shape and dtype),
    stepping as the training loop steps (`hypergrad.loop.optimizer_step`: every leaf cast back to
    its dtype, integer and boolean leaves held), so it accepts exactly the models training does. Cost,
    once per objective and hyperparameter shapes: one small compilation and `num_steps` optimiser
    updates; no training loss or data."""
    if all(np.ndim(v) == 0 for v in jax.tree.leaves(hparams)):
        return
    shapes = _shapes(hparams)
    if _cached(_checked, objective, shapes):
        return
    concrete = _concrete(hparams)
    with _compile.naming_missing_hparams(hparams):  # a shaped hyperparameter read as a scalar named too
        error = _probe(objective, concrete)
    if error is not None:
        def errs_within(steps: int) -> bool:  # the advice's second probe: only on this error's path
            return _probe(objective, concrete, steps) is not None

        raise ValueError(
            f"the optimiser indexes a hyperparameter past its end within num_steps={objective.num_steps} "
            f"training steps ({error}); JAX would silently use the last entry instead. "
            f"{_schedule_advice(error, hparams, objective.num_steps, errs_within)}, or clamp the index yourself "
            "(jnp.minimum(step, n - 1)) if that is what you mean")
    _remember(_checked, objective, shapes)


def _schedule_advice(error: str, hparams: HParams, num_steps: int,
                     errs_within: Callable[[int], bool] | None = None) -> str:
    """What to give instead, from checkify's `error` ("... array of shape (2, 9): index 9 is out of
    bounds for axis 1 ..."): the hyperparameter of that shape, named, with `num_steps` entries along
    that axis, when exactly one has it and it is read once per step; else the general advice for a
    per-step schedule. `errs_within(steps)`, whether the optimiser stepped `steps` times indexes out of
    bounds too: when index i is not reached within i + 1 steps, the array is read less often than once
    per step (a block schedule, h["lr"][step // 4]), and the advice says so, naming the index reached and
    the array's length, instead of prescribing `num_steps` entries."""
    general = (f"Give a per-step schedule num_steps={num_steps} entries (e.g. hg.LogUniform(..., "
               f"shape=({num_steps},)), or that many in the array held with objective.with_fixed)")
    found = re.search(r"array of shape \(([\d, ]*)\).*?for axis (\d+)", error)
    if found is None:
        return general
    shape = tuple(int(n) for n in found.group(1).replace(" ", "").split(",") if n)
    axis = int(found.group(2))
    named = [name for name, value in hparams.items() if np.shape(value) == shape]
    if len(named) != 1 or axis >= len(shape):
        return general
    wanted = tuple(num_steps if i == axis else n for i, n in enumerate(shape))
    reached = re.search(r"index (\d+) is out of bounds", error)
    index = None if reached is None else int(reached.group(1))
    if index is None or errs_within is None or index + 1 >= num_steps or errs_within(index + 1):
        return (f"hparams[{named[0]!r}] has shape {shape} and is read along axis {axis} once per step: give it "
                f"num_steps={num_steps} entries there, shape {wanted} (in a search, its distribution's "
                f"shape={wanted})")
    return (f"hparams[{named[0]!r}] has shape {shape}: index {index} was read along axis {axis}, which has "
            f"{shape[axis]} entries, but not within the first {index + 1} training steps, so it is read less "
            f"often than once per step (a block schedule, such as h[{named[0]!r}][step // 4]; num_steps={num_steps} "
            f"entries would leave the last ones unread): give it as many entries there as the last index it "
            f"reads within the {num_steps} steps, plus one (in a search, in its distribution's shape=)")


def _shapes(hparams: HParams) -> tuple:
    return tuple((name, np.shape(v), str(jnp.result_type(v))) for name, v in sorted(hparams.items()))


def _concrete(hparams: HParams) -> HParams:
    """`hparams` with each traced value replaced by zeros of its shape and dtype."""
    return {name: (np.zeros(np.shape(v), jnp.result_type(v)) if isinstance(v, jax.core.Tracer) else v)
            for name, v in hparams.items()}


def _cached(cache: weakref.WeakKeyDictionary, objective: Any, shapes: tuple) -> bool:
    try:
        return cache.get(objective) == shapes
    except TypeError:  # an objective that cannot be weakly referenced: checked every time
        return False


def unread_names(objective: Any, hparams: HParams, trace: Callable[[], Any], kind: str = "run",
                 check: Callable[[tuple[str, ...]], Any] | None = None) -> tuple[str, ...]:
    """The hyperparameters of `hparams` that `objective`'s trace never reads (`unread_hparams`), kept
    per objective and hyperparameter shapes and dtypes, one cache per `kind` of trace ("run": a
    training run's, `hypergrad.accounting.traced_run`, shared by the searches and `hybrid_search`;
    "check": `check_objective_runs`'); `hg.clear_caches()` empties them. `trace()` (a jaxpr whose first inputs
    are `hparams`' leaves, or a ClosedJaxpr) is called only when they are not kept: an objective that
    cannot be weakly referenced is traced every time. `check`, when given, is called with a new
    trace's names before they are kept: an error it raises keeps nothing, so the next call traces
    and checks again. Cost: a dict look-up, or `trace()` and one walk of its jaxpr."""
    cache, shapes = _unread[kind], _shapes(hparams)
    try:
        kept = cache.setdefault(objective, {})
    except TypeError:  # an objective that cannot be weakly referenced: traced every time
        kept = {}
    if shapes in kept:
        return kept[shapes]
    unread = unread_hparams(trace(), hparams)
    if check is not None:
        check(unread)
    kept[shapes] = unread
    return unread


def _remember(cache: weakref.WeakKeyDictionary, objective: Any, shapes: tuple) -> None:
    try:
        cache[objective] = shapes
    except TypeError:
        pass


def _probe(objective: Any, hparams: HParams, num_steps: int | None = None) -> str | None:
    """checkify's message for the first out-of-bounds index of `num_steps` (default: the objective's)
    optimiser updates, or None (also when the optimiser closes over a value an enclosing transformation
    traces: such a run cannot be compiled on its own, so it is not checked)."""
    loop, length = objective.loop(), objective.num_steps if num_steps is None else num_steps
    shapes = jax.eval_shape(loop.init, hparams, jax.random.key(0)).params

    def run(h):  # everything inside one program: no eager operation compiles one of its own
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        opt = loop.optimizer(h)
        ones = [jnp.ones_like(leaf) for leaf in float_leaves(params)]

        def step(carry, _):  # the training loop's step: its dtypes, integer leaves held constant
            return optimizer_step(opt, *carry, ones, jnp.zeros((), jnp.result_type(float)), hparams=h), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=length)[0][0]

    checked = checkify.checkify(run, errors=checkify.index_checks)
    if _compile.is_traced(hparams) and any(isinstance(c, jax.core.Tracer)
                                           for c in jax.make_jaxpr(checked)(hparams).consts):
        return None
    _compile.refuse_disabled_jit()
    checked = jax.jit(checked)
    error, _ = checked.lower(hparams).compile(_compile.QUICK_COMPILE)(hparams)  # runs once: compile fast
    message = error.get()
    return None if message is None else message.strip().split("\n")[0]


def unread_hparams(traced: Any, hparams: HParams) -> tuple[str, ...]:
    """The names (`jax.tree` key paths, as `'lr'`) of the hyperparameters that `traced`, a jaxpr
    whose first inputs are `hparams`' leaves (in `jax.tree` order), never reads: declared in the
    space but wired into neither the optimiser nor the losses, so a search reports a "best" value
    for it that changes nothing and a gradient method descends a coordinate whose hypergradient is
    exactly 0. Cost: one walk of the jaxpr (`unread_inputs`)."""
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(hparams)]
    return tuple(paths[i].strip("[]") for i in unread_inputs(traced) if i < len(paths))


def warn_unread_hparams(unread: tuple[str, ...]) -> None:
    """Warns (`UserWarning`, at the user's line) of the hyperparameters `unread` (`unread_hparams`)
    names; nothing when it names none. A warning, not an error: a hyperparameter can be read only by
    some configurations of a structured family. Within `unread_warned_once()`, once per set of names."""
    seen = _warned.get()
    if not unread or (seen is not None and _warned_of(unread, seen)):
        return
    if seen is not None:
        seen.add(unread)
    names = ", ".join(unread)
    warnings.warn(f"the objective never reads hyperparameter(s) {names}: tuning or searching them changes "
                  "nothing (their hypergradient is exactly 0). Read them in the optimizer or the loss, or leave "
                  "them out of the search space (the hg.Space, or a scikit-learn search's parameter grid)",
                  UserWarning, stacklevel=users_stacklevel())


def _warned_of(unread: tuple[str, ...], seen: set) -> bool:
    return unread in seen or any(isinstance(named, frozenset) and named.issuperset(unread) for named in seen)


def mark_unread_warned(names: Iterable[str]) -> None:
    """Within the current `unread_warned_once()` block, `warn_unread_hparams` then says nothing of any
    set of unread hyperparameters among `names` (in `unread_hparams`' form: "'momentum'"), as if it had
    warned of each set already: for a caller that named them in its own words. A set naming any other
    hyperparameter is warned of as before. Touches no warning filter and warns nothing. Outside such a
    block, a `RuntimeError`. Cost: one set entry; each later check one subset test per call of this."""
    seen = _warned.get()
    if seen is None:
        raise RuntimeError("mark_unread_warned(names) marks names within an unread_warned_once() block: call it "
                           "inside `with unread_warned_once():`")
    seen.add(frozenset(names))


@contextlib.contextmanager
def unread_warned_once() -> Iterator[None]:
    """Within, `warn_unread_hparams` warns of each set of unread hyperparameters once: for a call
    that meets the objective's trace more than once (`tune` checks its objective, then its warm-up
    searches it), one warning per call. Within another such block, that block's. Cost: a set."""
    token = _warned.set(set()) if _warned.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _warned.reset(token)
