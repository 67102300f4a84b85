"""Structural choices: hyperparameters that change the program (widths, activations, optimisers).

A structural `hg.Choice` (options such as "relu", (100,) or "adam") cannot be a traced number read
by one fixed program. The search realises it in one of two ways:

- grouping: trials are grouped by their static configuration and each group compiles its own
  program (`family.build(config)` with the option itself in `config`). No compute is wasted;
  every distinct configuration costs a compilation.
- masking: one program serves every option. `config[name]` is a `Masked` marker and the objective
  reads `hparams[name]`, the option's index as a traced int32, and selects with it (for example
  `jax.lax.switch`, or `select_transform` for optimisers). Under `vmap` a traced selection
  computes every branch (and a masked width computes the widest), so compute is wasted, but
  nothing recompiles. A trial's `runs` count runs of the program that trained it (the masked
  one): the waste is in its FLOPs and seconds, not its runs, so a masked and a grouped
  realisation of one family are compared fairly by seconds or FLOPs, not by runs.
  A masked width's extra units are zero and get gradients of exactly 0: an optimiser that
  divides by the square root of a second moment (adam, rmsprop) then has an infinite derivative
  there, and the hypergradient of the chosen optimiser is NaN unless it has optax's `eps_root`
  (`optax.adam(lr, eps_root=1e-16)`; not with float16 parameters, where 1e-16 rounds to 0: see
  the README's Structural `Choice` bullet); `select_transform` keeps an unchosen optimiser's from
  reaching it.

`Structured(build, maskable=...)` declares which choices the family can mask. For each of them the
search decides by measured cost (`plan`), per choice:

    group the choice  iff  N * T * (F_masked - F_exact) / R  >  (K - 1) * G * C

where N is the number of trials (times the runs each costs: `plan(runs_per_row=)`, a hybrid
configuration's share of its budget), T the training steps, F_masked and F_exact the FLOPs of one
training step (`step_flops`: one run counted by `hypergrad.accounting`, per step) with the choice masked and
averaged over its options, R the FLOP/s at which this process's search programs have run so far
(before the first, a measured batch of small matrix products, the typical shape of per-trial
networks), K the options present among the trials, G the number of programs the other grouped
choices already make, and C the seconds each extra program costs: its compilation plus its
compute accounting (one trace; this process's mean so far, or
`DEFAULT_PROGRAM_SECONDS` before the first). R and C are measured by the caller
(`measured_rates()`) and passed to `plan` as `Rates`, so a plan is a function of its arguments:
the same rates give the same decisions. The decisions, their numbers and the rates are stored in
`result.info["structure"]`.

The waste of masking any one choice is at most the whole run with every auto choice masked,
N * T * F_whole / R. Where that bound already costs no more than one extra program, the choice is
masked without pricing its options: one count in all instead of one per option, and the count
of the whole masked run is the one the search then uses for its trials.

The rule is first order: FLOPs stand for time, and the choices are decided one at a time in the
space's order. On 2 CPU cores small batched matrix products run at 5-15% of a large product's
FLOP/s, so R matters more than the FLOP counts; measure with benchmarks/iris_study.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hypergrad import _caches, _compile
from hypergrad._batching import from_process_0
from hypergrad._checks import is_number
from hypergrad._types import HParams, Key
from hypergrad.accounting import matmul_flops_per_second, run_flops
from hypergrad.objective import Objective
from hypergrad.space import Choice, Space

__all__ = ["Masked", "Structured", "Rates", "measured_rates", "plan", "select_transform", "DEFAULT_PROGRAM_SECONDS"]

DEFAULT_PROGRAM_SECONDS = 2.0
"""Seconds per extra program (compilation and accounting) assumed before this process measured one."""

_observed = {"flops": 0.0, "seconds": 0.0, "programs": 0, "program_seconds": 0.0}


@_caches.register
def _forget_observed() -> None:
    """Forgets this process's measured rates (`hg.clear_caches()`): the next plan measures anew."""
    _observed.update(flops=0.0, seconds=0.0, programs=0, program_seconds=0.0)


# The families that built objectives (`Structured.objective`), weakly: `hg.clear_caches()` empties each one's
# built objectives, so it calls `build` again, which may read a value edited since.
_building: weakref.WeakSet = weakref.WeakSet()
_building_lock = threading.Lock()


def _forget_built(family: Structured) -> list[Objective]:
    """Empties `family`'s built objectives (no longer counted as its programs' owners); returns them."""
    built = list(family._objectives.values())
    family._objectives.clear()
    for objective in built:
        _compile.count_as_family(objective, family, counted=False)
    return built


@_caches.register
def _forget_families() -> None:
    """`hg.clear_caches()`: every family builds its objectives anew."""
    with _building_lock:
        families = list(_building)
        _building.clear()
    for family in families:
        _forget_built(family)


@_caches.register_owner
def _forget_family(owner: Any) -> None:
    """`hypergrad._caches.forget(family)`: the family builds its objectives anew, and each one it had
    built is forgotten (its programs, counts and checks)."""
    if not isinstance(owner, Structured):
        return
    with _building_lock:
        _building.discard(owner)
    for objective in _forget_built(owner):
        _caches.forget(objective)


def record_run(flops: float, seconds: float) -> None:
    """Adds an executed chunk of a search program to this process's measured FLOP rate."""
    _observed["flops"] += flops
    _observed["seconds"] += seconds


def record_program(seconds: float) -> None:
    """Adds the set-up seconds (compilation + accounting) of one search program."""
    _observed["programs"] += 1
    _observed["program_seconds"] += seconds


@dataclasses.dataclass(frozen=True)
class Masked:
    """Stands in `config[name]` for a masked structural choice.

    The objective built from this config reads `hparams[name]`, a traced int32 index into
    `options`, and must select the option inside the program.
    """

    name: str
    options: tuple[Any, ...]


def _typed(option: Any) -> Any:
    """`option` with its types beside its values, tuples and `Masked` markers looked into: Python's
    `==` makes True, 1 and 1.0 one value (and `Masked` markers over them one marker), but a build
    may make another program of each, as `Choice` holds them apart. A numpy scalar counts as the
    Python type of its value (`np.int64(3)` as 3), as `split` reads options back from arrays."""
    if isinstance(option, Masked):
        return Masked, option.name, _typed(option.options)
    if isinstance(option, tuple):
        return tuple, tuple(_typed(o) for o in option)
    kind = type(option.item()) if isinstance(option, np.generic) else type(option)
    return kind, option


def _config_key(config: Mapping[str, Any]) -> tuple:
    """The key a configuration's objective is cached under: its (name, typed option) pairs."""
    return tuple(sorted(((name, _typed(value)) for name, value in config.items()), key=lambda item: item[0]))


@dataclasses.dataclass(frozen=True, eq=False)
class Structured:
    """A family of objectives indexed by structural choices. Hashed by identity.

    Args:
        build: `config -> hg.Objective`, where `config` maps every structural choice of the space
            to its option, or to a `Masked` marker for a masked choice (the objective then reads
            the option index from `hparams[name]`). Built once per configuration and cached, options
            told apart by type as `Choice` does (True, 1 and 1.0 are three configurations).
            `hg.clear_caches()` empties the built objectives (`build` is called again); so does a
            stored call (`storage=`, `study=`) on the family when it was edited since its programs
            were traced (`hypergrad.store.studying`).
        maskable: names of the structural choices `build` can mask.
        mask: how to realise each maskable choice: "auto" (decide by measured cost, see `plan`),
            True (always mask) or False (always group); or a dict name -> one of those.
    """

    build: Callable[[Mapping[str, Any]], Objective]
    maskable: tuple[str, ...] = ()
    mask: Any = "auto"
    _objectives: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not callable(self.build):
            raise ValueError("Structured(build=...) must be a function config -> hg.Objective")
        if isinstance(self.maskable, str) or not isinstance(self.maskable, Iterable) or not all(
                isinstance(name, str) for name in self.maskable):
            raise ValueError(f"maskable={self.maskable!r} must be a tuple of choice names, e.g. ('activation',)")
        object.__setattr__(self, "maskable", tuple(self.maskable))
        # A scalar mode is checked even with nothing maskable: mask=True (or 'sometimes') would
        # otherwise be accepted and every choice grouped, the opposite of what was asked.
        mapping = isinstance(self.mask, Mapping)
        modes = (self.mask if mapping else {name: self.mask for name in self.maskable}).items()
        for where, mode in [(f"mask[{name!r}]", mode) for name, mode in modes] or [("mask", "auto" if mapping else self.mask)]:
            if not (mode is True or mode is False or (isinstance(mode, str) and mode == "auto")):  # not 1, 0
                raise ValueError(f"{where}={mode!r} must be 'auto', True (mask) or False (group)")
        for name in self.mask if mapping else ():
            if name not in self.maskable:
                raise ValueError(f"mask names {name!r}, which is not in maskable={self.maskable}; list the "
                                 f"choices build can mask in maskable=, e.g. maskable=({name!r},)")
        if self.mask is True and not self.maskable:
            raise ValueError("Structured(mask=True) with maskable=() masks nothing; name the choices build can "
                             "mask in maskable=, e.g. maskable=('activation',)")

    def mode(self, name: str) -> Any:
        """'auto', True or False for a maskable choice; False for any other."""
        if name not in self.maskable:
            return False
        return self.mask.get(name, "auto") if isinstance(self.mask, Mapping) else self.mask

    def objective(self, config: Mapping[str, Any]) -> Objective:
        """The objective of one configuration (built once, then cached)."""
        key = _config_key(config)
        if key not in self._objectives:
            objective = self.build(dict(config))
            if not isinstance(objective, Objective):
                raise ValueError(f"Structured.build({dict(config)}) returned {type(objective).__name__}; "
                                 "it must return an hg.Objective")
            # its programs are the family's (a stored study describes the family: `hypergrad.store`)
            _compile.count_as_family(objective, self)
            with _building_lock:
                _building.add(self)
            self._objectives[key] = objective
        return self._objectives[key]

    def split(self, space: Space, hparams: Mapping[str, Any]) -> tuple[Objective, HParams]:
        """(objective, its hparams) for one setting whose structural entries are options, such as
        `result.best_hparams`: every structural choice grouped, the rest passed as hparams."""
        config = {name: _as_option(hparams[name]) for name in space.structural}
        rest = {name: value for name, value in hparams.items() if name not in config}
        return self.objective(config), rest


def _as_option(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    return tuple(value) if isinstance(value, list) else value


def check_family(objective: Any, space: Space) -> None:
    """Raises `ValueError` unless `objective` can evaluate the structural choices of `space`."""
    structural = space.structural
    if structural and not isinstance(objective, Structured):
        # numbers marked structural=True need another fix than options that are not numbers
        numeric = [name for name in structural if all(is_number(o) for o in space[name].options)]
        others = [name for name in structural if name not in numeric]
        family = "pass an hg.Structured(build=lambda config: hg.Objective(...)) family instead of one objective"
        reasons = []
        if others:
            reasons.append(f"the space's structural choices {others} change the program (their options are not "
                           f"numbers); {family}, or encode the options as numbers the objective reads")
        if numeric:
            reasons.append(f"the space's choices {numeric} have numbers as options but were made structural "
                           "(Choice(..., structural=True): each option its own program), which one objective "
                           f"cannot evaluate; drop structural=True to trace the numbers into one program, or "
                           f"{family}")
        raise ValueError("; and ".join(reasons))
    if isinstance(objective, Structured):
        unknown = [name for name in objective.maskable if name not in structural]
        if unknown:
            raise ValueError(f"Structured(maskable={objective.maskable}) names {unknown}, which are not "
                             f"structural choices of the space {list(structural)}")


# -- the cost model -------------------------------------------------------------------------------
@functools.cache
def small_matmul_flops_per_second() -> float:
    """FLOP/s of a batch of 128 small float32 products (96 x 16 @ 16 x 128), measured once."""
    return matmul_flops_per_second(96, 16, 128, batch=128, repeats=10)


_caches.register(small_matmul_flops_per_second.cache_clear)


def flop_rate_estimate() -> float:
    """FLOP/s of this process's search programs so far, else of a batch of small products."""
    if _observed["seconds"] > 0.5:
        return _observed["flops"] / _observed["seconds"]
    return small_matmul_flops_per_second()


def program_seconds_estimate() -> float:
    """Mean set-up seconds (compile + accounting) of this process's search programs, or the default."""
    if _observed["programs"] == 0:
        return DEFAULT_PROGRAM_SECONDS
    return _observed["program_seconds"] / _observed["programs"]


@dataclasses.dataclass(frozen=True)
class Rates:
    """The measured rates a plan decides from (R and C of the module docstring).

    Attributes:
        flops_per_second: FLOP/s at which search programs run.
        program_seconds: set-up seconds (compilation and accounting) of one extra program.
    """

    flops_per_second: float
    program_seconds: float

    def __post_init__(self):
        for name in ("flops_per_second", "program_seconds"):
            value = getattr(self, name)
            if not (is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"Rates({name}={value!r}) must be a finite number > 0")

    def to_array(self) -> np.ndarray:
        """(flops_per_second, program_seconds) as float64: how a study stores the rates and
        processes share them (`from_array` reads it back)."""
        return np.asarray([self.flops_per_second, self.program_seconds], dtype=np.float64)

    @classmethod
    def from_array(cls, values: Any) -> Rates:
        """The rates `to_array` wrote (any array-like of their two numbers)."""
        return cls(*(float(v) for v in np.asarray(values, dtype=np.float64).reshape(2)))

    def of_process_0(self) -> Rates:
        """Process 0's rates on every process (these in a lone process): what every process plans
        with, so that all run the same programs."""
        return Rates.from_array(from_process_0(self.to_array()))


def measured_rates() -> Rates:
    """This process's rates so far (`flop_rate_estimate`, `program_seconds_estimate`): what the
    searches measure and pass to `plan`."""
    return Rates(flop_rate_estimate(), program_seconds_estimate())


def step_flops(objective: Objective, hparams: HParams, key: Key) -> float:
    """FLOPs of one training step of one fit: one training run and its scoring, counted by
    `hypergrad.accounting.run_flops` (traced, never compiled; cached per objective), over the
    run's steps (`num_steps` x folds). Initialisation and scoring ride along as their share per
    step (a few percent at the horizons searched). A search that then runs the same objective
    (every auto choice masked, the usual outcome) finds its trials' FLOPs already counted.
    """
    return run_flops(objective, hparams, key) / _fit_steps(objective)


@dataclasses.dataclass(frozen=True)
class Decision:
    """How one maskable structural choice is realised, and the numbers that decided it."""

    name: str
    masked: bool
    reason: str
    waste_seconds: float = float("nan")
    extra_compile_seconds: float = float("nan")
    flops_masked: float = float("nan")
    flops_exact: float = float("nan")
    flops_per_second: float = float("nan")
    program_seconds: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"decision": "mask" if self.masked else "group", **dataclasses.asdict(self)}


def _example_hparams(space: Space, settings: Mapping[str, Any], config: Mapping[str, Any]) -> HParams:
    """One trial's hparams for an objective built from `config` (masked choices as indices)."""
    out = {}
    for name in space.names:
        if name in config and not isinstance(config[name], Masked):
            continue
        # continuous hyperparameters absent from the settings (hg.hybrid_search) sit at the centre
        out[name] = jnp.asarray(np.asarray(settings[name])[0]) if name in settings else space[name].centre
    return out


def _fit_steps(objective: Objective) -> int:
    """Training steps of one trial: `num_steps` per fit, times the folds under cv."""
    return objective.num_steps * getattr(objective.problem, "num_folds", 1)


def plan(family: Structured, space: Space, settings: Mapping[str, Any], key: Key, *,
         rates: Rates, runs_per_row: float = 1.0) -> dict[str, Decision]:
    """Decides, per maskable structural choice, whether to mask it or group by it (module docstring).

    A function of its arguments: the same family, settings and `rates` give the same decisions.

    Args:
        family: the structured family.
        space: the space the settings come from.
        settings: option indices and values, leading trial axis.
        key: training key (shapes only).
        rates: the measured FLOP rate and seconds per extra program (`measured_rates()`), recorded
            in every auto decision.
        runs_per_row: training runs each row of `settings` costs: 1 for a search trial; a hybrid
            configuration's share of its budget (its hypergradients, several runs each), whose
            masking waste is that many runs' (N in the module docstring's rule counts runs).

    Cost: one count (`hypergrad.accounting`: a trace, no compilation) of the run with every auto
    choice masked; for each choice whose bound exceeds its extra compile, one more count with it
    masked and one per option.
    """
    if not isinstance(rates, Rates):
        raise ValueError(f"plan(rates={rates!r}) must be a structure.Rates, e.g. structure.measured_rates()")
    if not (is_number(runs_per_row) and 0 < runs_per_row < math.inf):
        raise ValueError(f"plan(runs_per_row={runs_per_row!r}) must be a positive, finite number of training runs")
    structural = space.structural
    num = (len(np.asarray(settings[structural[0]])) if structural else 0) * runs_per_row
    present = {name: np.unique(np.asarray(settings[name])) for name in structural}
    decisions = _declared_decisions(family, structural)
    # Programs made by the choices that are always grouped.
    groups = math.prod(len(present[n]) for n in structural if family.mode(n) is False)
    auto = [n for n in structural if family.mode(n) == "auto"]
    if not auto:
        return decisions
    # Held as the search holds them: a mask=True choice masked (its options all computed), the
    # grouped ones at an option present. Holding mask=True at an option priced the others' waste
    # against a smaller network than the one searched, and built a program the search never ran.
    first = {n: Masked(n, space[n].options) if family.mode(n) is True else space[n].option(int(present[n][0]))
             for n in structural}
    several = [n for n in auto if len(present[n]) > 1]
    bound, f_whole = _whole_run_bound(family, space, settings, key, first, several, num, rates)
    for name in auto:
        decisions[name] = _auto_decision(family, space, settings, key, name, present[name], first, num,
                                         (bound, f_whole), groups, rates)
        if not decisions[name].masked:
            groups *= len(present[name])
    return decisions


def _declared_decisions(family: Structured, structural: tuple[str, ...]) -> dict[str, Decision]:
    """The decisions the family fixes itself (mask=True, mask=False, or not maskable)."""
    decisions = {}
    for name in structural:
        mode = family.mode(name)
        if mode is True:
            decisions[name] = Decision(name, True, "mask=True")
        elif mode is False and name in family.maskable:
            decisions[name] = Decision(name, False, "mask=False")
        elif mode is False:
            decisions[name] = Decision(name, False, "not maskable")
    return decisions


def _whole_run_bound(family: Structured, space: Space, settings: Mapping[str, Any], key: Key, first: dict,
                     several: list[str], num: int, rates: Rates) -> tuple[float | None, float | None]:
    """(seconds, step FLOPs) of the whole run with every choice in `several` masked, or (None, None)
    when there is none. It bounds the waste of masking any one of them: where even that costs less
    than one more program, the choice is masked without pricing each option."""
    if not several:
        return None, None
    whole_config = {**first, **{n: Masked(n, space[n].options) for n in several}}
    whole_objective = family.objective(whole_config)
    f_whole = step_flops(whole_objective, _example_hparams(space, settings, whole_config), key)
    return num * _fit_steps(whole_objective) * f_whole / rates.flops_per_second, f_whole


def _auto_decision(family: Structured, space: Space, settings: Mapping[str, Any], key: Key, name: str,
                   options: np.ndarray, first: dict, num: int, whole: tuple, groups: int, rates: Rates
                   ) -> Decision:
    """Mask or group one auto choice with `options` present: by the whole run's bound when it is
    below the extra compile, else by pricing the masked step against the options' mean."""
    measured = {"flops_per_second": rates.flops_per_second, "program_seconds": rates.program_seconds}
    if len(options) == 1:
        return Decision(name, False, "one option present", **measured)
    bound, f_whole = whole
    extra = (len(options) - 1) * groups * rates.program_seconds
    if bound <= extra:
        return Decision(name, True, f"waste at most {bound:.3g}s (the whole masked run) <= extra compile {extra:.3g}s",
                        bound, extra, f_whole, **measured)
    dist: Choice = space[name]
    masked_config = {**first, name: Masked(name, dist.options)}
    masked_objective = family.objective(masked_config)
    f_masked = step_flops(masked_objective, _example_hparams(space, settings, masked_config), key)
    counts = [(np.asarray(settings[name]) == i).sum() for i in options]
    exact = []
    for i in options:
        config = {**first, name: dist.option(int(i))}
        exact.append(step_flops(family.objective(config), _example_hparams(space, settings, config), key))
    f_exact = float(np.average(exact, weights=counts))
    waste = num * _fit_steps(masked_objective) * max(f_masked - f_exact, 0.0) / rates.flops_per_second
    masked = waste <= extra
    return Decision(name, masked, f"waste {waste:.3g}s {'<=' if masked else '>'} extra compile {extra:.3g}s",
                    waste, extra, f_masked, f_exact, **measured)


def group_rows(space: Space, settings: Mapping[str, Any], decisions: Mapping[str, Decision]
               ) -> list[tuple[dict, np.ndarray]]:
    """(config, trial rows) per program: trials grouped by the options of their grouped choices."""
    grouped = [name for name in space.structural if not decisions[name].masked]
    masked = {name: Masked(name, space[name].options) for name in space.structural if decisions[name].masked}
    num = len(np.asarray(next(iter(settings.values()))))
    keys = np.stack([np.asarray(settings[name]) for name in grouped], axis=1) if grouped else np.zeros((num, 0))
    out = []
    for combo in np.unique(keys, axis=0):
        rows = np.flatnonzero(np.all(keys == combo, axis=1))
        config = {name: space[name].option(int(i)) for name, i in zip(grouped, combo)} | masked
        out.append((config, rows))
    return out


# -- masking helpers ------------------------------------------------------------------------------
def select_transform(index: Any, transforms: tuple[optax.GradientTransformation, ...]
                     ) -> optax.GradientTransformationExtraArgs:
    """An optax transformation applying `transforms[index]`.

    Every transformation's state is kept (memory: all their states); only the chosen one's
    advances. Derivatives flow through the chosen transformation only, including those of the
    hyperparameters the others close over (an unchosen adam's b2), so an unchosen transformation's
    infinite partial (adam's square root of a zero second moment, where a masked unit's gradient
    is exactly 0) never makes the hypergradient 0 * inf = NaN. How, by what `index` is when the
    update is traced:

    - concrete (a Python or numpy int, or a constant array, as `Objective.with_fixed` of a
      constant gives): the transformation is chosen in Python, and the program is the chosen
      one's alone (cost: its update only). An index outside [0, len(transforms)) or not an
      integer is refused with a ValueError.
    - traced and not batched (a held choice under `jit`): `lax.switch` runs the chosen branch
      only, forward and backward (the transpose of a switch is a switch on the same index; cost:
      the chosen update only).
    - batched (rows of a `vmap`: a masked structural search, a hybrid search's configurations):
      JAX turns the switch into a selection, so every branch runs, forward and backward. Each
      branch then reads its operands, the traced values it closes over (hyperparameters) among
      them, as `where(index == i, x, stop_gradient(x))` (JAX's batching rule for a switch), so
      the unchosen branches' partials are selected away, never multiplied by 0 and summed; the
      tests check this in both orders, `vmap` of `grad` (as hybrid search runs it) and `grad` of
      `vmap`. Cost: the sum of the transformations' updates, plus a selection of every operand
      leaf (gradients, every state, params) per branch and of every output leaf: measured, no
      change on the digits MLP, a 25% slower forward run where the optimiser is most of a step
      (3 optimisers on a 3-4-1 network), against selecting only each branch's own inputs.

    Values are the chosen transformation's alone: bit for bit in the tests for a concrete or an
    unbatched index (training loops); under `vmap` XLA may fuse the selection so that the last
    bit differs. A traced index outside [0, len(transforms)) is clamped into it, as `lax.switch`
    does. The chosen optimiser's own derivatives are its own: adam chosen at a zero second moment
    needs optax's `eps_root` (module docstring).
    """
    if not transforms:
        raise ValueError("select_transform(transforms=()): give at least one optax transformation")
    bad = [i for i, t in enumerate(transforms) if not (hasattr(t, "init") and hasattr(t, "update"))]
    if bad:
        raise ValueError(f"select_transform(transforms=...): entry {bad[0]} is {transforms[bad[0]]!r}, not an optax "
                         "transformation; give optax transformations, e.g. (optax.sgd(0.1), optax.adam(0.1))")
    # Extra arguments (value=loss for plateau rules) reach the transformations that take them.
    transforms = tuple(optax.with_extra_args_support(t) for t in transforms)
    chosen = None if isinstance(index, jax.core.Tracer) else _concrete_index(index, len(transforms))

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if chosen is not None:
            new, new_state = transforms[chosen].update(updates, state[chosen], params, **extra_args)
            return new, state[:chosen] + (new_state,) + state[chosen + 1:]
        return _switched(index, transforms, (updates, state, params, extra_args))

    return optax.GradientTransformationExtraArgs(init, update)


def _concrete_index(index: Any, count: int) -> int:
    """`index` as a Python int in [0, count), or a ValueError naming it."""
    value = np.asarray(index)
    integral = jnp.issubdtype(value.dtype, jnp.integer) or (jnp.issubdtype(value.dtype, jnp.floating)  # and bf16
                                                            and value.shape == () and value == np.round(value))
    if value.shape != () or not integral or not 0 <= value < count:
        raise ValueError(f"select_transform(index={index!r}) with {count} transformations: the index must be an "
                         f"integer in [0, {count})")
    return int(value)


def _switched(index: jax.Array, transforms: tuple, inputs: tuple) -> tuple:
    """(update, states) of `transforms[index]` for a traced index, by `lax.switch` (see
    `select_transform`). Each branch advances its own state only and returns every leaf cast to
    the dtype the branches share there, as a switch needs (found by tracing them: no run cost)."""
    def branch(i):
        def run(operands):
            updates, state, params, extra_args = operands
            new, new_state = transforms[i].update(updates, state[i], params, **extra_args)
            return new, state[:i] + (new_state,) + state[i + 1:]
        return run

    branches = [branch(i) for i in range(len(transforms))]
    common = jax.tree.map(lambda *leaves: jnp.result_type(*leaves), *[jax.eval_shape(b, inputs) for b in branches])

    def typed(run):
        return lambda operands: jax.tree.map(lambda x, dtype: jnp.asarray(x).astype(dtype), run(operands), common)

    return jax.lax.switch(index, [typed(b) for b in branches], inputs)
