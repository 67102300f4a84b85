"""Loop: the narrow, immutable training loop an `Objective` hands to hypergradient methods.

A method sees one training run on one training set through four pieces, and nothing else of the
objective or its problem (as optimistix's adjoints see only the function they differentiate):

    state = loop.init(hparams, key)            # initial parameters, optimiser state, data key
    state = loop.step(state, hparams, t)       # training step t: minibatch t drawn inside
    value, scores = loop.readout(state, hparams)   # validation loss and every score
    loop.num_steps

`loop.run(state, hparams, start, length)` advances many steps at once (drawing minibatches in
blocks, the fast way), `loop.train(hparams, key)` is init then run over all steps. Methods that
exploit the structure of training read a little more, each piece a pure function:

- `draw(state, ts)` and `update(state, hparams, minibatch)`: step t is `update(state, hparams,
  draw(state, t))`; reverse mode draws every step's minibatch up front and replays `update`.
- `train_loss(params, hparams, minibatch)` (None: the whole training set), `val_loss(params,
  hparams)` and `optimizer(hparams)`: for implicit differentiation (stationarity of the training
  loss) and reversible learning (SGD with momentum reversed exactly).

A loop is built for one training set: cross-validation is a wrapper around methods that builds one
loop per fold and vmaps (`hypergrad.folds`), so no method knows about folds. A `Loop` is a pytree
whose leaves are the data splits, so it can be passed through `jax.custom_vjp`, `vmap` and `jit`
like any argument.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.errors import TraceContextError

from hypergrad._checks import check_checkpoint_every
from hypergrad._types import HParams, Key, Params, PyTree, Scalar

__all__ = ["Loop", "LoopState", "DRAW_BLOCK", "NNX_RECIPE", "NO_STATE_CHANNEL", "check_no_keys",
           "state_update_refusal", "rng_draw_refusal", "in_package", "flax_message", "RNG_DRAW_RECIPE", "check_something_trains",
           "in_segments", "segment_split", "optimizer_update", "optimizer_step", "check_shapes_kept",
           "float_leaves", "overridden", "with_float_leaves", "trained_problem"]

DRAW_BLOCK = 32
"""Training steps whose minibatch indices are drawn at once (`Loop.run` and `Loop.draw`)."""

_TRAINED: contextvars.ContextVar[Any] = contextvars.ContextVar("hypergrad_trained_problem", default=None)


def trained_problem() -> Any:
    """The problem whose training loop is building its optimiser now (while `Loop.optimizer` calls
    `optimizer(hparams)`), else None: a transformation built there can check itself against the
    problem it will train, rather than guess it from the parameters it is handed."""
    return _TRAINED.get()


class LoopState(NamedTuple):
    """The carry of the training loop: parameters, optimiser state and the key minibatches are
    drawn from (it never changes during training; `update` leaves it as it finds it)."""

    params: Params
    opt_state: optax.OptState
    data_key: Key | None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Loop:
    """The training loop of one objective on one training set (see the module docstring).

    Args:
        problem: the `hg.Problem` (its loss functions, metrics and minibatch rule are read; its
            stored data are not: `data` is).
        optimizer_fn: `hparams -> optax.GradientTransformation`.
        num_steps: T.
        unroll: `lax.scan`'s unroll for the loops this class runs.
        data: `{"train", "val"[, "test"]}` of ONE training set (a fold's, under cross-validation).
    """

    problem: Any = dataclasses.field(metadata=dict(static=True))
    optimizer_fn: Callable[[HParams], optax.GradientTransformation] = dataclasses.field(
        metadata=dict(static=True))
    num_steps: int = dataclasses.field(metadata=dict(static=True))
    unroll: int | bool = dataclasses.field(metadata=dict(static=True))
    data: Mapping[str, PyTree]

    # -- the contract -------------------------------------------------------------------------
    def init(self, hparams: HParams, key: Key) -> LoopState:
        """Initial parameters and optimiser state; `key` splits into the initialisation key and
        the data key of every minibatch.

        Raises:
            ValueError: the parameters hold a PRNG key, which no optimiser can update, or a
                floating-point flax.nnx variable that is not a Param (BatchNorm's statistics),
                which training would move as a weight (`check_no_keys`); or no floating-point leaf
                (`check_something_trains`), so nothing would train. Checked when the loop is
                traced, before anything compiles.
        """
        init_key, data_key = jax.random.split(key)
        params = self.problem.initial_params(init_key, hparams)
        check_no_keys(params)
        check_something_trains(params)
        return LoopState(params, self.optimizer(hparams).init(params), data_key)

    def step(self, state: LoopState, hparams: HParams, t: jax.Array) -> LoopState:
        """Training step `t`: minibatch `t` (batch t of the data key's epoch stream), one update."""
        return self.update(state, hparams, self.draw(state, t))

    def readout(self, state: LoopState, hparams: HParams) -> tuple[Scalar, dict[str, Scalar]]:
        """(validation loss, scores): `{"val_loss", "val_<metric>", "test_loss", ...}` of the
        trained parameters on this training set's validation (and test) split; `ValueError`
        while traced for a flax.nnx model in train mode (`train_loss`)."""
        with _refusing_state_updates("Problem(val_loss=...) or one of its metrics"):
            scores = self.problem.scores(state.params, self.data, hparams)
        return scores["val_loss"], scores

    # -- running many steps ---------------------------------------------------------------------
    def run(self, state: LoopState, hparams: HParams, start: int, length: int, *,
            checkpoint_every: int | None = None) -> LoopState:
        """Steps `start, ..., start + length - 1` from `state`, the same as `step` one by one.

        Minibatches are drawn in blocks of `DRAW_BLOCK` steps (a scan over blocks draws each
        block's indices at once, then scans its steps): one vectorised draw per block instead of
        one per step, and memory stays flat in T (one block's draw lives at a time).
        With `checkpoint_every=k` the steps run in segments of k under `jax.checkpoint`
        (`in_segments`): reverse mode then stores one state per segment; anything but a positive
        int or None is refused (`ValueError`) before anything is traced.
        """
        checkpoint_every = check_checkpoint_every(checkpoint_every, "Loop.run")
        xs = start + jnp.arange(length)

        def steps_of(s, selectors):
            return jax.lax.scan(lambda c, sel: (self.update(c, hparams, sel), None), s, selectors,
                                unroll=self.unroll)[0]

        def scan(s, ts, n):
            blocks, remainder = divmod(n, DRAW_BLOCK)
            if self.problem.batch_size is None or blocks == 0:  # nothing to draw, or under a block
                return jax.lax.scan(lambda c, t: (self.step(c, hparams, t), None), s, ts, length=n,
                                    unroll=self.unroll)[0]
            head = ts[:blocks * DRAW_BLOCK].reshape(blocks, DRAW_BLOCK)
            s = jax.lax.scan(lambda c, block: (steps_of(c, self.draw(c, block)), None), s, head,
                             unroll=self.unroll)[0]
            if remainder:
                s = steps_of(s, self.draw(s, ts[blocks * DRAW_BLOCK:]))
            return s

        return in_segments(scan, state, xs, length, checkpoint_every, self.unroll)

    def train(self, hparams: HParams, key: Key, *, checkpoint_every: int | None = None) -> LoopState:
        """`init`, then all `num_steps` steps (`checkpoint_every` as `run`'s)."""
        checkpoint_every = check_checkpoint_every(checkpoint_every, "Loop.train")
        return self.run(self.init(hparams, key), hparams, 0, self.num_steps, checkpoint_every=checkpoint_every)

    # -- structure, for methods that exploit it -----------------------------------------------------
    def draw(self, state: LoopState, t: jax.Array) -> jax.Array | None:
        """The minibatch of step(s) `t` as indices into the training set (leading axes of `t`
        kept), or None for full batch. Depends only on the data key and `t`."""
        return self.problem.batch_indices(state.data_key, t)

    def draw_all(self, state: LoopState, ts: jax.Array) -> jax.Array | None:
        """`draw` of every step in `ts`, vectorised `DRAW_BLOCK` steps at a time."""
        if self.problem.batch_size is None:
            return None
        return jax.lax.map(lambda t: self.draw(state, t), ts, batch_size=min(DRAW_BLOCK, int(ts.shape[0])))

    def update(self, state: LoopState, hparams: HParams, minibatch: jax.Array | None) -> LoopState:
        """One optimiser step on `minibatch` (indices from `draw`; None: the whole training set).

        Optimisers that take extra arguments (`optax.GradientTransformationExtraArgs`, which every
        `optax.chain` is) receive the minibatch training loss as `value=` (plateau rules read it).

        Dtypes: every leaf of the new parameters and optimiser state is cast back to the dtype of
        the same leaf of `state` (so to the dtypes `init` gave), whatever the hyperparameters' dtype:
        float32 parameters train in float32 under float64 hyperparameters, where optax's momentum
        would otherwise come back promoted to float64.

        Parameters that are not floating point (integer or boolean leaves: counters, masks, token
        ids) are held constant: the gradient is taken with respect to the floating-point leaves
        only, the optimiser is handed zeros for the others (in the trained leaves' floating-point
        dtype: integer zeros break transforms that combine leaves, such as
        `optax.clip_by_global_norm`), and their new value is their old one whatever the optimiser
        returns (weight decay included).
        """
        params = state.params
        trained = [_is_inexact(leaf) for leaf in jax.tree.leaves(params)]

        def loss_of(floats):
            return self.train_loss(_merged(params, floats, trained), hparams, minibatch)

        loss, float_grads = jax.value_and_grad(loss_of)(_inexact_leaves(params, trained))
        new_params, opt_state = optimizer_step(self.optimizer(hparams), params, state.opt_state, float_grads, loss,
                                               hparams=hparams)
        return state._replace(params=new_params, opt_state=opt_state)

    def train_loss(self, params: Params, hparams: HParams, minibatch: jax.Array | None) -> Scalar:
        """The training loss on `minibatch` (None: the whole training set).

        Raises:
            ValueError: while traced (at the first training step's trace, before anything
                compiles), unless the user's `train_loss` returns a scalar; or when it calls a
                flax.nnx model in train mode (BatchNorm with use_running_average=False, Dropout
                not deterministic), whose forward pass writes to model state it closes over and
                fails with flax's `TraceContextError`: the loop has no channel for that state or
                a per-step dropout key (`NO_STATE_CHANNEL`); the message gives `NNX_RECIPE`.
        """
        batch = self.problem.gather(self.data["train"], minibatch)
        with _refusing_state_updates("Problem(train_loss=...)"):
            return self.problem.training_loss(params, hparams, batch)

    def val_loss(self, params: Params, hparams: HParams) -> Scalar:
        """The validation loss of `params` (the value `readout` returns, as a function of params);
        `ValueError` while traced for a flax.nnx model in train mode (`train_loss`)."""
        with _refusing_state_updates("Problem(val_loss=...)"):
            return self.problem.validation_loss(params, hparams, self.data["val"])

    def optimizer(self, hparams: HParams) -> optax.GradientTransformation:
        """The objective's optax optimiser at `hparams`; `ValueError` if it returned anything else.
        While `optimizer(hparams)` runs, `trained_problem()` is this loop's problem.

        Raises:
            TypeError: the function failed on the hparams dict with a `TypeError` of its own (not
                JAX's): most often a constructor such as `my_sgd(learning_rate)` passed where a
                function of the dict belongs; names `Objective(optimizer=...)` and the lambda form.
            ValueError: (while traced, before anything compiles) an optax function the optimiser
                was built with tests a traced hyperparameter in Python (`if peak_value == 0.0` in
                `optax.warmup_cosine_decay_schedule`, also `sgdr_schedule` and
                `exponential_decay(decay_rate=...)`), so that argument cannot be a hyperparameter;
                names the hyperparameter and the workaround (`_python_branch_refusal`). A Python `if`
                in the function itself stays JAX's own error, which points at the user's line.
        """
        trained = _TRAINED.set(self.problem)
        try:
            opt = self.optimizer_fn(hparams)
        except TypeError as err:
            if isinstance(err, jax.errors.JAXTypeError):  # a traced value used as a Python one
                refusal = _python_branch_refusal(err, hparams)
                if refusal is None:  # not inside optax: JAX's own words point at the user's line
                    raise
                raise ValueError(refusal) from err
            raise TypeError(
                f"Objective(optimizer=...) raised TypeError when called with the hparams dict ({err}); it must "
                "be a function of that dict returning an optax optimiser, e.g. lambda h: optax.sgd(h['lr']), "
                "not a constructor that takes the learning rate itself") from err
        finally:
            _TRAINED.reset(trained)
        if not isinstance(opt, optax.GradientTransformation):
            hint = (f" (a {type(opt).__name__} wrapper: return its .gradient_transformation())"
                    if callable(getattr(opt, "gradient_transformation", None)) else "")
            raise ValueError(
                f"optimizer(hparams) returned {type(opt).__name__}; it must return an "
                f"optax.GradientTransformation such as optax.sgd(...){hint}"
            )
        return opt


def _python_branch_refusal(error: TypeError, hparams: HParams) -> str | None:
    """The refusal of an optimiser whose optax constructor used a traced hyperparameter as a Python
    value (JAX's `ConcretizationTypeError`, `TracerBoolConversionError` or
    `TracerIntegerConversionError` in `error`, raised in optax's own code: `if peak_value == 0.0`
    in `warmup_cosine_decay_schedule`), naming the hyperparameter JAX's message names, the optax
    function the user called and the line that tests it; None for any other error (one raised in the
    user's own code, whose line JAX's message already shows). Reads the traceback only."""
    if not isinstance(error, (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError)):
        return None
    frames = _frames_outside_jax(error)
    if not frames or not in_package(frames[-1].filename, optax):  # raised in the user's own code
        return None
    called = _outermost_of_innermost_run(frames, optax).name
    depends = re.search(r"depends on the values? of the arguments? (.*?)\.(?:\s|$)", str(error))
    named = [name for name in hparams if depends and f"[{name!r}]" in depends.group(1)]
    which = " and ".join(f"hparams[{name!r}]" for name in named) or "a traced hyperparameter"
    example = named[0] if named else "lr"
    tested = _traced_arguments(error, frames[-1].name)
    here = ""  # what fits the argument tested, where scaling a unit schedule would change the optimiser
    if "decay_rate" in tested:
        here = (f" Here it is {frames[-1].name}'s decay_rate: write the schedule as arithmetic on the step, e.g. "
                f"lambda s: init_value * h[{example!r}] ** (s / transition_steps) (transition_begin and staircase "
                "aside).")
    return (f"Objective(optimizer=...): optax's {called} tests {which} in Python "
            f"({(frames[-1].line or '').strip()!r}, in {frames[-1].name}), so that argument cannot be a "
            "hyperparameter: hyperparameters are traced arrays, never Python numbers, so that a new value never "
            f"recompiles.{here} A tuned peak or initial value is a unit schedule scaled by the hyperparameter, e.g. "
            f"for a warm-up/cosine peak lambda s: h[{example!r}] * optax.schedules.warmup_cosine_decay_schedule(0.0, "
            "1.0, W, T)(s); for another argument write the schedule as arithmetic on the step (jnp.where for a "
            "branch), or hold that argument at a Python constant")


def _traced_arguments(error: BaseException, function: str) -> list[str]:
    """The arguments of the innermost call of optax's `function` in `error`'s traceback that held
    traced values (`decay_rate` of `exponential_decay`); [] where that call's frame is not found.
    Reads the traceback's frames only."""
    found: list[str] = []
    tb = error.__traceback__
    while tb is not None:
        code, values = tb.tb_frame.f_code, tb.tb_frame.f_locals
        if code.co_name == function and in_package(code.co_filename, optax):
            names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            found = [name for name in names if any(isinstance(leaf, jax.core.Tracer)
                                                   for leaf in jax.tree.leaves(values.get(name)))]
        tb = tb.tb_next
    return found


def _outermost_of_innermost_run(frames: list, package: Any) -> Any:
    """The outermost frame of the innermost run of `frames` in `package` (the last frame is in it):
    the function of `package` the user's code called (`warmup_cosine_decay_schedule`, whether the
    optimiser's constructor or, at update time, the user's learning-rate function called it)."""
    first = len(frames) - 1
    while first > 0 and in_package(frames[first - 1].filename, package):
        first -= 1
    return frames[first]


def _raised_in(error: BaseException, package: Any) -> bool:
    """Whether the innermost frame of `error`'s traceback outside JAX's own code is in `package`
    (a module object: optax), so that `package` raised it (or used a traced value as a Python one)."""
    frames = _frames_outside_jax(error)
    return bool(frames) and in_package(frames[-1].filename, package)


def _frames_outside_jax(error: BaseException) -> list:
    """The frames of `error`'s traceback outside JAX's own code, outermost first."""
    return [f for f in traceback.extract_tb(error.__traceback__) if not in_package(f.filename, jax)]


def in_package(filename: str, package: Any) -> bool:
    """Whether `filename` is a source file of `package` (a module object: jax, optax)."""
    return os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(package.__file__)) + os.sep)


def overridden(loop: Loop, names: tuple[str, ...]) -> list[str]:
    """Those of `names` (methods of `Loop`) that `type(loop)` overrides: what a method that replaces
    or assumes the plain loop's step (`hg.Implicit`, `hg.Reversible`) refuses. Reads the type only."""
    return [name for name in names if getattr(type(loop), name) is not getattr(Loop, name)]


def optimizer_update(opt: optax.GradientTransformation, grads: PyTree, opt_state: Any, params: PyTree,
                     loss: Any) -> tuple[PyTree, Any]:
    """`opt.update` as the training loop calls it: optimisers that take extra arguments
    (`optax.GradientTransformationExtraArgs`, which every `optax.chain` is) receive the minibatch
    training loss as `value=` (plateau rules read it).

    Raises:
        ValueError: (while traced, before anything compiles) for an optimiser whose update needs
            more, such as a line search's `value_fn=` (`optax.lbfgs()`'s default zoom line search).
    """
    try:
        if isinstance(opt, optax.GradientTransformationExtraArgs):
            return opt.update(grads, opt_state, params, value=loss)
        return opt.update(grads, opt_state, params)
    except TypeError as err:
        if "required keyword-only argument" not in str(err):
            raise
        raise ValueError(f"the optimiser's update needs arguments a training step cannot give ({err}); each step "
                         "gives it the gradients, state and parameters, and the minibatch loss as value=, never "
                         "value_fn= or grad= (a line search evaluating the loss as a function): use e.g. "
                         "optax.sgd(lr, momentum), or optax.lbfgs(lr, linesearch=None) with a fixed "
                         "learning rate, differentiated with method=hg.Forward() (reverse mode is NaN through "
                         "its jnp.where-guarded division)") from err


_STEP_GIVES = ("each training step gives the optimiser the gradient of the minibatch loss, its state, the "
              "parameters as the plain pytree Problem(init=...) returns, and (to an optax.chain or other "
              "GradientTransformationExtraArgs) the minibatch loss as value=")
"""What `optimizer_step` hands the inner optimiser (`_step_cannot_drive` quotes it)."""


def _step_cannot_drive(error: Exception, params: PyTree) -> str | None:
    """The refusal of an inner optimiser whose update raised `error` because it needs more than a
    training step gives it (`_STEP_GIVES`), or None for any other error (left as raised). Matched
    narrowly, on what each such optimiser asks for:

    - an AttributeError on the very params pytree the step passed (`error.obj is params`): the
      optimiser reads its params as a wrapper (`optax.lookahead`'s LookaheadParams, fast and slow);
    - a ValueError raised in optax asking for `obj_fn` (`optax.contrib.sophia`'s Hutchinson estimate calls the
      loss as a function of the params);
    - a ValueError raised in optax asking for a batch dimension (`optax.contrib.dpsgd` clips per-example
      gradients).
    """
    if isinstance(error, AttributeError) and getattr(error, "obj", None) is params:
        needs = (f"reads its params as a wrapper with the attribute {error.name!r} (optax.lookahead's "
                 "LookaheadParams of fast and slow copies)")
        instead = "use the optimiser it wraps alone, e.g. optax.sgd(lr, momentum)"
    elif isinstance(error, ValueError) and _raised_in(error, optax) and "obj_fn" in str(error):
        needs = ("needs obj_fn=, the loss as a function of the params (optax.contrib.sophia's Hutchinson "
                 "estimate of the Hessian diagonal), which a step never gives")
        instead = "use e.g. optax.adam(lr)"
    elif isinstance(error, ValueError) and _raised_in(error, optax) and "batch dimension" in str(error):
        needs = ("needs per-example gradients with a leading batch axis (optax.contrib.dpsgd clips each "
                 "example's gradient), and a step gives the gradient of the minibatch's mean loss")
        instead = ("use e.g. optax.chain(optax.clip_by_global_norm(c), optax.sgd(lr)), which clips the mean "
                   "gradient (not differentially private)")
    else:
        return None
    return (f"Objective(optimizer=...): this optimiser's update failed in a training step "
            f"({type(error).__name__}: {error}): it {needs}; {_STEP_GIVES}. Instead, {instead}")


_SAME_DTYPES = re.compile(r"lax\.\w+ requires arguments to have the same dtypes, got (\w+), (\w+)\.")
"""JAX's TypeError for a lax operation (`lax.select`) handed arrays of two dtypes: it never promotes."""


def _mixed_float_refusal(error: Exception, params: PyTree, hparams: HParams | None) -> str | None:
    """The refusal of an optax function whose update failed on float parameters narrower than the
    hyperparameters: hypergrad hands the optimiser every hyperparameter as a strongly typed array of the
    default float (float64 in float64 mode; one argument type per program), and a lax operation in optax
    that does not promote then meets a float32 update (`optax.clip_by_global_norm(h['clip'])` selects
    between `t` and `t / norm * max_norm`, float64). None for any other error (left as raised). Matched
    narrowly: a TypeError raised in optax with JAX's same-dtypes message naming two different floating
    dtypes, the narrower a dtype of a floating-point leaf of `params` and the wider that of a
    hyperparameter in `hparams`. Reads the message and the traceback only."""
    match = _SAME_DTYPES.match(str(error))
    if not isinstance(error, TypeError) or match is None or not hparams or not _raised_in(error, optax):
        return None
    try:
        dtypes = [jnp.dtype(name) for name in match.groups()]
    except TypeError:  # not a dtype's name
        return None
    if dtypes[0] == dtypes[1] or not all(jnp.issubdtype(d, jnp.floating) for d in dtypes):
        return None
    narrow, wide = sorted(dtypes, key=lambda d: jnp.finfo(d).bits)
    if (narrow not in {jnp.result_type(leaf) for leaf in float_leaves(params)}
            or wide not in {jnp.result_type(leaf) for leaf in jax.tree.leaves(hparams)}):
        return None
    frame = _frames_outside_jax(error)[-1]
    called = _optax_function(error)
    named = _hparams_on_traceback(error, hparams)
    which = " and ".join(f"hparams[{name!r}]" for name in named) or f"a {wide} hyperparameter"
    cast = f"h[{named[0]!r}].astype(jnp.{narrow})" if named else ""
    example = (f"optax.{called}({cast})" if cast and hasattr(optax, called) else cast
               or f"x.astype(jnp.{narrow}) for the value x it hands optax's {called}")
    return (f"Objective(optimizer=...): optax's {called} failed in a training step (TypeError: {match.group(0)}) "
            f"because the parameters are {narrow} while the hyperparameters are {wide}: hypergrad hands the "
            f"optimiser every hyperparameter as a {wide} array (one type for every value, so that a new value "
            f"never recompiles), and {(frame.line or '').strip()!r} (in {frame.name}) combines {which} with the "
            f"{narrow} updates without promoting. Cast the hyperparameter to the parameters' dtype inside the "
            f"optimizer function, e.g. {example}, or make the parameters {wide} (Problem(init=...) returning "
            f"{wide} arrays)")


def _optax_function(error: BaseException) -> str:
    """The public optax function whose code raised `error`: the outermost name of the innermost optax
    frame's qualified name (`clip_by_global_norm` for its update's `clip_fn`)."""
    name = ""
    tb = error.__traceback__
    while tb is not None:
        if in_package(tb.tb_frame.f_code.co_filename, optax):
            name = tb.tb_frame.f_code.co_qualname.split(".")[0]
        tb = tb.tb_next
    return name


def _hparams_on_traceback(error: BaseException, hparams: HParams) -> list[str]:
    """The names of the hyperparameters whose very values (by identity) are local variables of optax's
    frames on `error`'s traceback (`max_norm` in `clip_by_global_norm`: the `h['clip']` it was given);
    [] when the optimiser handed optax something computed from them. Reads the traceback's frames only."""
    found: list[str] = []
    tb = error.__traceback__
    while tb is not None:
        if in_package(tb.tb_frame.f_code.co_filename, optax):
            values = list(tb.tb_frame.f_locals.values())
            found += [name for name, h in hparams.items()
                      if name not in found and any(v is h for v in values)]
        tb = tb.tb_next
    return found


def check_something_trains(params: PyTree) -> None:
    """Refuses parameters with no floating-point leaf: integer and boolean leaves are held constant
    (`Loop.update`), so training would change nothing and every setting would score the same, with
    a hypergradient of exactly zero. Reads only dtypes, so it costs nothing when traced.

    Raises:
        ValueError: naming `Problem(init=...)`, the dtypes it returned and the fix.
    """
    leaves = jax.tree.leaves(params)
    if any(_is_inexact(leaf) for leaf in leaves):
        return
    dtypes = ", ".join(sorted({str(jnp.result_type(leaf)) for leaf in leaves})) or "no leaves at all"
    raise ValueError(
        f"Problem(init=...) returned parameters with no floating-point leaf ({dtypes}): training holds integer "
        "and boolean leaves constant, so nothing would be trained and every setting would score the same; "
        "create the trained parameters as floats (jnp.zeros(3), not jnp.zeros(3, int); or x.astype(float))")


def float_leaves(params: PyTree) -> list:
    """The floating-point leaves of `params`, in leaf order: the leaves training changes."""
    return [leaf for leaf in jax.tree.leaves(params) if _is_inexact(leaf)]


def with_float_leaves(params: PyTree, floats: list) -> PyTree:
    """`params` with its floating-point leaves replaced by `floats` (in `float_leaves` order) and its
    other leaves (integer, boolean: those training holds constant) as they are."""
    return _merged(params, floats, [_is_inexact(leaf) for leaf in jax.tree.leaves(params)])


def optimizer_step(opt: optax.GradientTransformation, params: PyTree, opt_state: Any, float_grads: list,
                   loss: Any, hparams: HParams | None = None) -> tuple[PyTree, Any]:
    """(new params, new optimiser state) of one step of `opt` as the training loop takes it
    (`Loop.update`), given the gradients of the floating-point leaves of `params` (`float_leaves`
    order) and the training loss: the other leaves get zero gradients (in the trained leaves'
    floating-point dtype) and keep their value, and every leaf of the result is cast back to the
    dtype of the same leaf of `params` or `opt_state`. Whoever steps an optimiser outside the loop
    (the schedule-length check) takes this step, so it accepts exactly the dtypes training does.

    Raises:
        ValueError: (while traced, before anything compiles) naming `Objective(optimizer=...)`, for an
            optimiser that needs more than a step gives it (`_step_cannot_drive`: optax.lookahead,
            optax.contrib.sophia, optax.contrib.dpsgd), chained from optax's own error; or for an optax
            function that tests a traced hyperparameter in Python at update time (a schedule built
            inside the learning-rate function: `_python_branch_refusal`, as `Loop.optimizer` refuses
            one built with the optimiser); or for an optax function that combines a hyperparameter
            of `hparams` with narrower parameters' updates in an operation that does not promote
            (`_mixed_float_refusal`: float32 parameters under float64 hyperparameters in
            `optax.clip_by_global_norm(h['clip'])`'s select), naming the fix; or for an update that
            changes the shape of a parameter or optimiser-state leaf (a rate of shape (1,) broadcasts a
            scalar parameter to (1,)), which the training loop's scan cannot carry (`check_shapes_kept`,
            naming the leaf, its shapes and, from `hparams` when given, the hyperparameters that could
            have broadcast it).
    """
    trained = [_is_inexact(leaf) for leaf in jax.tree.leaves(params)]
    zero = jnp.result_type(*float_grads) if float_grads else jnp.result_type(float)
    grads = _merged(params, float_grads, trained, others=lambda leaf: jnp.zeros(jnp.shape(leaf), zero))
    try:
        updates, new_state = optimizer_update(opt, grads, opt_state, params, loss)
    except (AttributeError, ValueError, TypeError) as err:  # JAX's TypeError: a schedule built at update time
        refusal = (_step_cannot_drive(err, params) or _python_branch_refusal(err, {})
                   or _mixed_float_refusal(err, params, hparams))
        if refusal is None:  # not optax's: JAX's own words point at the user's line
            raise
        raise ValueError(refusal) from err
    new_params = optax.apply_updates(params, updates)
    new_params = _merged(params, _inexact_leaves(new_params, trained), trained)
    check_shapes_kept(new_params, params, "parameter", hparams)
    check_shapes_kept(new_state, opt_state, "optimiser-state leaf", hparams)
    return _cast_like(new_params, params), _cast_like(new_state, opt_state)


def check_shapes_kept(new: PyTree, old: PyTree, what: str, hparams: HParams | None = None) -> None:
    """Refuses a training step whose result `new` has a leaf of another shape than the same leaf of
    `old` (the training loop's carry must keep its shapes; JAX's scan would otherwise fail with a
    carry-type `TypeError` naming neither the cause nor the fix). Nothing when the structures differ
    (the scan names that). Reads shapes only: costs nothing at run time.

    Raises:
        ValueError: naming the leaf (`what` and its path), its old and new shapes, the non-scalar
            hyperparameters of `hparams` whose shape broadcast with the old one gives the new one
            (the likely cause, e.g. `hparams['lr']` of shape (1,)), and the fix.
    """
    if jax.tree.structure(new) != jax.tree.structure(old):
        return
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(new), jax.tree.leaves(old)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(_shape_change_message(what, jax.tree_util.keystr(path), jnp.shape(b), jnp.shape(a),
                                                   hparams))


def _shape_change_message(what: str, path: str, old: tuple, new: tuple, hparams: HParams | None) -> str:
    """`check_shapes_kept`'s message for the leaf at `path` whose shape went from `old` to `new`: the
    hyperparameters whose shape broadcasts the old one to the new one named as the likely cause, or,
    when none does, the optimiser itself."""
    suspects = [name for name, v in (hparams or {}).items()
                if jnp.ndim(v) > 0 and _broadcasts_to(old, jnp.shape(v), new)]
    head = (f"Objective(optimizer=...): a training step changed the shape of {what} {path} from {old} to {new}, "
            "which training cannot carry (each step must keep every parameter's and the optimiser state's shape).")
    if not suspects:
        return (f"{head} No hyperparameter's shape explains it: the optimiser's update itself returns another "
                "shape for this leaf. Check the optimiser (or a transform in its chain) keeps each leaf's shape; a "
                "hyperparameter of shape (1,) where a scalar is meant does this too (give a scalar)")
    named = " or ".join(f"hparams[{name!r}] of shape {jnp.shape(hparams[name])}" for name in suspects)
    return (f"{head} A hyperparameter of another shape was used where a scalar was expected (most likely "
            f"{named}), and broadcasting spread it over the leaf. Give a scalar (jnp.asarray(0.1), or an hg.Space "
            "leaf without shape=), or, for a per-step schedule of num_steps entries, index it by the step: "
            f"optax.sgd(lambda step: h[{suspects[0]!r}][step])")


def _broadcasts_to(old: tuple, other: tuple, new: tuple) -> bool:
    try:
        return jnp.broadcast_shapes(old, other) == new
    except ValueError:
        return False


NO_STATE_CHANNEL = ("the training loss is a pure function of (params, hparams, batch): the loop carries no state "
                    "that a forward pass updates (BatchNorm's running statistics) and hands the model no per-step "
                    "dropout key")
"""Why a flax.nnx model must run in eval mode under hypergrad (the refusals quote it)."""

NNX_RECIPE = ("call model.eval() first (BatchNorm(use_running_average=True), Dropout(deterministic=True): batch "
              "norm then uses its running statistics, held fixed, and dropout is off), then train the Params only: "
              "graphdef, params, rest = nnx.split(model, nnx.Param, ...), with apply = "
              "nnx.merge(graphdef, params, rest)(x) (rest stays fixed)")
"""How to hand hypergrad a flax.nnx model (the refusals quote it; `hg.problems.nnx_problem` does it)."""


@contextlib.contextmanager
def _refusing_state_updates(what: str) -> Iterator[None]:
    """Turns flax's `TraceContextError`, raised while the user's function `what` is traced, into a
    `ValueError` saying why and naming the fix (`state_update_refusal`). Any other error passes
    through unchanged. Costs nothing at run time."""
    try:
        yield
    except TraceContextError as error:
        raise ValueError(state_update_refusal(what, error)) from None


def state_update_refusal(what: str, error: TraceContextError) -> str:
    """The refusal of the user's function `what`, whose flax.nnx model updated its state while traced
    (flax's `error` names what): a model in train mode writes to the state its function closes over
    (BatchNorm's running statistics, Dropout's RNG count), which a traced training step cannot do;
    a layer that draws random numbers in eval mode too gets `rng_draw_refusal`'s message."""
    drawn = rng_draw_refusal(what, error)
    if drawn is not None:
        return drawn
    return (f"{what} updates a flax.nnx model's state (flax: {flax_message(error)!r}), as a model in train mode does "
            "(BatchNorm with use_running_average=False updates its running statistics, Dropout that is not "
            f"deterministic draws from its RNG); hypergrad cannot carry that: {NO_STATE_CHANNEL}. For a "
            f"flax.nnx model, {NNX_RECIPE}")


RNG_DRAW_RECIPE = ("The usual cause in eval mode is nnx.RNN called without initial_carry=: it draws a key from its "
                   "cell's rngs to build the initial carry, even the default all-zero one. "
                   "Pass the carry yourself, rnn(x, initial_carry=carry), with carry zeros in the dtype the cell "
                   "computes in (its parameters' dtype; for an LSTMCell the pair (c, h), each of shape (batch, "
                   "hidden_features)), or hand the layer fixed rngs made inside the forward pass, outside the "
                   "model's state: rnn(x, rngs=nnx.Rngs(0)) (the carry then takes the cell's param_dtype)")
"""How to stop a layer in eval mode drawing from a flax.nnx model's RNG state (`rng_draw_refusal` quotes it)."""


def flax_message(error: TraceContextError) -> str:
    """Flax's own words in `error`, without its link to the docs ("Cannot mutate BatchStat from a
    different trace level")."""
    return str(error.args[0] if error.args else error).split(" (https")[0]


def rng_draw_refusal(what: str, error: TraceContextError) -> str | None:
    """The refusal of the user's function `what` whose flax.nnx model drew random numbers from its
    RNG state while traced (flax's `error` names an RngCount or RngKey) in a layer other than
    Dropout: a draw that eval mode does not stop (nnx.RNN without `initial_carry`), so the advice
    to call `model.eval()` would be wrong. None for any other update (BatchNorm's statistics,
    Dropout's draws: train mode, `state_update_refusal`'s message)."""
    flax_says = flax_message(error)
    if re.search(r"\bRng(Count|Key)\b", flax_says) is None:
        return None
    layer, method = _drawing_layer(error)
    if isinstance(layer, nnx.Dropout):
        return None
    where = (f", in {type(layer).__name__}.{method}, which model.eval() does not stop" if layer is not None
             else ", as Dropout does in train mode (call model.eval() for it) and some layers do in eval mode too")
    return (f"{what} draws random numbers from a flax.nnx model's RNG state (flax: {flax_says!r}){where}; "
            f"hypergrad cannot carry that: {NO_STATE_CHANNEL}. {RNG_DRAW_RECIPE}")


def _drawing_layer(error: TraceContextError) -> tuple[nnx.Module | None, str]:
    """The innermost flax.nnx Module on `error`'s traceback and the name of its method there: the
    layer that drew (LSTMCell, initialize_carry), or (None, "") when no Module frame is left."""
    found: tuple[nnx.Module | None, str] = (None, "")
    frame = error.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        if isinstance(owner, nnx.Module):
            found = (owner, frame.tb_frame.f_code.co_name)
        frame = frame.tb_next
    return found


def check_no_keys(params: PyTree, argname: str = "the parameter pytree") -> None:
    """Refuses a parameter pytree holding a PRNG key (an nnx model's RNG state, e.g. Dropout's,
    from `nnx.split(model)`): optax cannot add to or multiply a key, so every optimiser failed on it
    with a TypeError deep inside. Refuses as well a floating-point flax.nnx Variable that is not an
    `nnx.Param` (BatchNorm's running mean and variance, `nnx.BatchStat`): the loop trains every
    floating-point leaf, so the statistics were moved by the optimiser and its weight decay as if
    they were weights (NaN once a decay drove a variance negative) while the running-average
    update of a forward pass was lost. Integer leaves (counters) are fine: training holds them
    constant.

    Raises:
        ValueError: naming the leaf's path and the fix (`NNX_RECIPE`: eval mode, split the model's
            Params from the rest).
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            raise ValueError(
                f"{argname} holds a PRNG key at {jax.tree_util.keystr(path)!r} (an nnx model's RNG state, e.g. "
                f"Dropout's), which no optimiser can update; {NNX_RECIPE}; or drop the key from the pytree")
    for path, variable in _nnx_variables(params):
        if not isinstance(variable, nnx.Param) and any(_is_inexact(v) for v in jax.tree.leaves(variable)):
            raise ValueError(
                f"{argname} holds an nnx.{type(variable).__name__} at {jax.tree_util.keystr(path)!r}, model state "
                "that is not an nnx.Param (BatchNorm's running statistics), which training would move as if it "
                f"were a weight; {NO_STATE_CHANNEL}. To hold it fixed, {NNX_RECIPE}")


def _nnx_variables(tree: PyTree) -> list[tuple[Any, nnx.Variable]]:
    """(path, variable) of every flax.nnx Variable in `tree` (an `nnx.State` keeps its Variables)."""
    pairs = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [(path, leaf) for path, leaf in pairs if isinstance(leaf, nnx.Variable)]


def _is_inexact(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _inexact_leaves(tree: PyTree, trained: list[bool]) -> list:
    return [leaf for leaf, t in zip(jax.tree.leaves(tree), trained) if t]


def _merged(tree: PyTree, floats: list, trained: list[bool], others: Callable = lambda leaf: leaf) -> PyTree:
    """`tree` with its floating-point leaves (those `trained` marks) replaced by `floats`, and
    `others(leaf)` for the rest."""
    leaves, treedef = jax.tree.flatten(tree)
    it = iter(floats)
    return jax.tree.unflatten(treedef, [next(it) if t else others(leaf) for leaf, t in zip(leaves, trained)])


def _cast_like(new: PyTree, old: PyTree) -> PyTree:
    """`new` with every array leaf cast to the dtype of the same leaf of `old` (the training
    loop's carry keeps its dtypes); `new` unchanged if the two differ in structure (the scan
    then names the mismatch)."""
    if jax.tree.structure(new) != jax.tree.structure(old):
        return new

    def cast(a, b):
        if hasattr(a, "dtype") and hasattr(b, "dtype") and a.dtype != b.dtype:
            return jnp.asarray(a).astype(b.dtype)
        return a

    return jax.tree.map(cast, new, old)


def in_segments(run: Callable, state: Any, xs: PyTree, num_steps: int, checkpoint_every: int | None,
                unroll: int | bool = 1) -> Any:
    """`run(state, xs, num_steps)`, or with `checkpoint_every=k` the same steps as a scan over
    segments of k, each under `jax.checkpoint` (plus a checkpointed remainder): autodiff of the
    outer scan stores each segment's input state, and the backward pass reruns a segment (storing
    what `run` keeps for its k steps) before differentiating it.

    Args:
        run: `(state, xs_of_steps, length) -> state`, the loop over `length` steps.
        xs: per-step inputs with a leading axis of `num_steps` (step numbers, minibatch indices).
    """
    if checkpoint_every is None:
        return run(state, xs, num_steps)
    k, num_segments, remainder = segment_split(num_steps, checkpoint_every)
    split = num_segments * k
    head = jax.tree.map(lambda a: a[:split].reshape((num_segments, k) + a.shape[1:]), xs)
    segment = jax.checkpoint(lambda s, seg: (run(s, seg, k), None))
    state = jax.lax.scan(segment, state, head, length=num_segments, unroll=unroll)[0]
    if remainder:
        tail = jax.tree.map(lambda a: a[split:], xs)
        state = jax.checkpoint(lambda s, x: run(s, x, remainder))(state, tail)
    return state


def segment_split(num_steps: int, checkpoint_every: int | None) -> tuple[int, int, int]:
    """(k, number of whole segments of k steps, remainder): how `in_segments` splits `num_steps`
    (k = min(checkpoint_every, num_steps); one segment of all steps when `checkpoint_every` is None)."""
    k = num_steps if checkpoint_every is None else min(checkpoint_every, num_steps)
    return (k,) + divmod(num_steps, k)
