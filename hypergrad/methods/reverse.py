"""Reverse-mode hypergradients through the whole unrolled training loop."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._types import HParams, Key
from hypergrad._checks import check_checkpoint_every
from hypergrad.loop import Loop, LoopState, in_segments, segment_split
from hypergrad.methods.base import Method

__all__ = ["Reverse"]

_STORES = ("steps", "dots", "residuals", "states")


@dataclasses.dataclass(frozen=True)
class Reverse(Method):
    """Exact gradient of the validation loss by reverse mode through all T training steps.

    Maclaurin, Duvenaud & Adams (2015) and Franceschi et al. (2017, "reverse-mode") describe the
    method: `jax.value_and_grad` of the training loop. `store` chooses what the forward pass keeps
    for the backward pass; all four give the same gradient up to rounding:

    - `"steps"` (the default without checkpointing): all minibatch indices are drawn up front
      (vectorised; the same indices as drawing them step by step), and each step runs under
      `jax.checkpoint` saving nothing (`jax.checkpoint_policies.nothing_saveable`): the forward
      pass keeps each step's input state; the backward pass recomputes the step from it and
      differentiates it. Plain autodiff otherwise (forward-differentiable: `jax.jvp` through a
      hypergradient works).
    - `"dots"` (the default with checkpointing): as "steps", with the policy
      `jax.checkpoint_policies.dots_saveable` (and product primitives that declare
      `is_matrix_product`, such as `hg.problems.mlp.FeatureMajorDense`'s): the forward pass also keeps the outputs
      of every matrix product of the step (activations, the gradient), and the backward pass
      recomputes only the elementwise operations.
    - `"residuals"`: plain autodiff of `Loop.run`; JAX keeps every residual of every
      step (activations and their derivatives, parameters, optimiser state, minibatch).
    - `"states"`: a hand-written VJP of the loop (`jax.custom_vjp` over the scan). The forward
      pass is plain training that writes each step's input state, packed into one array per
      dtype (typed PRNG keys in the optimiser state, as optax.noisy_sgd's, in one of their key
      dtype), to a buffer; the backward pass is a reverse scan that reloads the state, recomputes
      the step and applies its VJP (the optimiser's VJP and one Hessian-vector product of the
      training loss). Smallest memory without checkpointing. With `checkpoint_every=k` the VJP
      checkpoints by itself: its forward pass stores each segment's input state and its backward
      pass reruns a segment (storing its k states) before going back through it; so the step may
      close over traced values (`Objective.with_fixed` under jit or vmap). Forward-differentiable
      like the other stores: both rules are plain JAX code, so `jax.jvp` through a hypergradient
      (forward over reverse) works and equals theirs.

    All four see only the loop (`hypergrad.loop.Loop`): `init`, `readout`, and `run` ("residuals")
    or `draw_all` and `update` ("steps", "dots", "states"); cross-validation wraps them
    (`Method.value_and_grad`).

    Cost: one training run forward plus a backward pass holding one Hessian-vector product per step.
    By the FLOP count (`hypergrad.accounting`) about 2.1-2.6 training runs for "residuals", 2.2-3.0
    for "dots" (the recomputed elementwise work) and 3.0-3.5 for "steps" and "states" (each step's
    forward recomputed), on the digits and iris MLPs (`benchmarks/accounting_cost.md`). In time,
    every value a store keeps costs its write and its read back through main memory (and, on a CPU,
    the first touch of fresh pages each call), so which store is fastest depends on the machine:
    on the 2-core CPUs we measure on, "steps", "states" and "dots" trade places by width, within
    about a third (`benchmarks/reverse_widths.md`, which also profiles where the time goes); on a GPU,
    where a step's time follows its number of kernels, "states" was the fastest
    (`benchmarks/RESULTS_gpu.md`).
    Checkpointing recomputes the forward pass once more (about one training run, counted as such),
    a segment at a time; what the store keeps is then kept for one segment (k steps) only, in small
    buffers reused from segment to segment (no fresh pages), which is why "dots" is its default:
    the segment's rerun keeps its products and the backward pass recomputes only elementwise
    operations, about 3.2 training runs by the FLOP count against 4.1 for "steps" (digits MLPs).
    Memory: without checkpointing, linear in T: per step "residuals" keeps every residual, "dots"
    the state, the minibatch and the matrix-product outputs, "steps" and "states" only the state (and
    T minibatch index vectors). With `checkpoint_every=k`, one training state per segment plus one
    segment's stored values: about T/k + k steps, minimised near k = sqrt(T).
    Bias: none; exact up to floating point. Limits: an optimiser whose `jnp.where` guards a division
    or square root (optax.lbfgs(lr, linesearch=None) at its first step, optax.radam's rectification)
    gives NaN hypergradients in every store (lbfgs: in weight decay, not in its learning rate; radam:
    in both) while the loss and `Forward` are finite: reverse mode sends a zero cotangent into the
    branch not taken, whose derivative is infinite, and 0 * inf is NaN. Use `hg.Forward()` there
    (exact). At a kink of the optimiser's update (optax.contrib.dog at learning rate 1.0, whose first
    step moves the parameters by almost exactly its initial distance, where its running maximum
    switches) the gradient is one of the one-sided derivatives, not the average that central
    differences approximate.

    Args:
        checkpoint_every: segment length k for checkpointing, or None to store every step.
        store: "steps", "dots", "residuals" or "states": what the forward pass keeps (above); None
            (the default) is "steps" without checkpointing and "dots" with it.
    """

    checkpoint_every: int | None = None
    store: str | None = None

    def __post_init__(self):
        k = check_checkpoint_every(self.checkpoint_every, "Reverse")  # kept as given: part of a study's identity
        if self.store is None:  # resolved here, so equal methods compare (and cache) equal
            object.__setattr__(self, "store", "steps" if k is None else "dots")
        if self.store not in _STORES:
            raise ValueError(f"Reverse(store={self.store!r}) must be one of {_STORES} or None")

    def differentiate(self, loop: Loop, hparams: HParams, key: Key):
        run = _RUNS[self.store]

        def loss(h):
            state = run(loop, loop.init(h, key), h, self.checkpoint_every)
            return loop.readout(state, h)

        return jax.value_and_grad(loss, has_aux=True)(hparams)


# -- the loop of each store, from `state` through all of `loop.num_steps` ---------------------------
def _run_residuals(loop: Loop, state: LoopState, hparams: HParams, checkpoint_every: int | None) -> LoopState:
    """Plain autodiff of `Loop.run`: JAX keeps every residual of every step."""
    return loop.run(state, hparams, 0, loop.num_steps, checkpoint_every=checkpoint_every)


def _rematerialised(policy, loop: Loop, state: LoopState, hparams: HParams, checkpoint_every: int | None
                    ) -> LoopState:
    """`Loop.run` with the same result; each step rematerialised, saving what `policy` saves
    (nothing: "steps"; matrix-product outputs: "dots"). Every step's minibatch is drawn up front
    (`Loop.draw_all`, vectorised in blocks)."""
    num_steps = loop.num_steps
    indices = loop.draw_all(state, jnp.arange(num_steps))

    def step(s, idx):
        return loop.update(s, hparams, idx)

    # Every saved value costs a dynamic-update-slice per step, its bytes through memory and its
    # pages' first touch, which on a CPU weighs more than recomputing the step ("steps") or its
    # elementwise operations ("dots"). In a rolled scan XLA cannot
    # merge the backward pass's recomputation with the forward pass (they are separate loops), so
    # the optimisation barrier `prevent_cse` puts on the step's inputs only costs copies (one per
    # state leaf and step; without them Reverse() ran 1-2% faster on the digits MLP, with bitwise
    # the same gradient). Fully unrolled (unroll=True), both passes are one straight-line program,
    # where XLA would merge them and keep alive what rematerialisation meant to recompute: the
    # barrier stays there.
    rolled = loop.unroll is not True and int(loop.unroll) < num_steps
    step = jax.checkpoint(step, policy=policy, prevent_cse=not rolled)

    def run(s, idx, length):
        xs = jnp.zeros((length, 0)) if idx is None else idx  # full batch: nothing to scan over
        return jax.lax.scan(lambda c, x: (step(c, None if idx is None else x), None), s, xs,
                            unroll=loop.unroll)[0]

    return in_segments(run, state, indices, num_steps, checkpoint_every, loop.unroll)


def _run_states(loop: Loop, state: LoopState, hparams: HParams, checkpoint_every: int | None) -> LoopState:
    """`Loop.run` with the same result, differentiated by `_loop` (see `Reverse`). The data key,
    constant through training and not differentiable, is held out of the stored states.

    Checkpointing is part of `_loop`'s own VJP (one custom VJP over all T steps, storing each
    segment's input state), not `in_segments`' `jax.checkpoint` around a custom VJP per segment:
    a custom VJP under `jax.checkpoint` whose step closes over a traced value (an objective built
    inside `jit`, `Objective.with_fixed` of a traced value, as `hybrid_search` holds a numeric
    Choice) failed to lower ("No constant handler for type: DynamicJaxprTracer")."""
    indices = loop.draw_all(state, jnp.arange(loop.num_steps))
    out = _loop(loop, state._replace(data_key=None), hparams, indices, loop.num_steps, checkpoint_every)
    return out._replace(data_key=state.data_key)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_cotangent(x):
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _dtype_groups(leaves) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault(jnp.result_type(leaf).name, []).append(i)
    return groups


def _buffers(tree, n: int) -> dict[str, jax.Array]:
    """One (n, size) buffer per dtype of the leaves of `tree`: n packed copies of it. Each buffer
    takes its dtype from a leaf, not from the dtype's name, which numpy cannot read back for a
    typed PRNG key (`key<fry>`: optax.noisy_sgd's state); a key buffer holds keys."""
    leaves = jax.tree.leaves(tree)
    return {dt: jnp.zeros((n, sum(int(np.size(leaves[i])) for i in ids)), jnp.result_type(leaves[ids[0]]))
            for dt, ids in _dtype_groups(leaves).items()}


def _put(buffers, tree, t):
    # One concatenation and one dynamic-update-slice per dtype: on a CPU, a stacked output per
    # leaf (what scan's `ys` would give) costs several microseconds per leaf and step.
    leaves = jax.tree.leaves(tree)
    out = {}
    for dt, ids in _dtype_groups(leaves).items():
        row = jnp.concatenate([jnp.ravel(leaves[i]) for i in ids])
        out[dt] = jax.lax.dynamic_update_index_in_dim(buffers[dt], row, t, 0)
    return out


def _get(buffers, like, t):
    leaves, treedef = jax.tree.flatten(like)
    out = [None] * len(leaves)
    for dt, ids in _dtype_groups(leaves).items():
        row = jax.lax.dynamic_index_in_dim(buffers[dt], t, 0, keepdims=False)
        offset = 0
        for i in ids:
            size = int(np.size(leaves[i]))
            out[i] = row[offset:offset + size].reshape(np.shape(leaves[i]))
            offset += size
    return jax.tree.unflatten(treedef, out)


def _steps(loop: Loop, state: LoopState, hparams: HParams, indices, start, length: int) -> LoopState:
    """Training steps `start, ..., start + length - 1` (`start` may be traced) on the minibatches
    `indices` (None: full batch)."""
    def body(s, t):
        return loop.update(s, hparams, None if indices is None else indices[t]), None

    return jax.lax.scan(body, state, start + jnp.arange(length), unroll=loop.unroll)[0]


def _steps_storing(loop: Loop, state: LoopState, hparams: HParams, indices, start, length: int):
    """`_steps`, also writing each step's input state to row i (step start + i) of `_buffers`:
    (final state, buffers)."""
    def body(carry, i):
        s, buffers = carry
        new = loop.update(s, hparams, None if indices is None else indices[start + i])
        return (new, _put(buffers, s, i)), None

    return jax.lax.scan(body, (state, _buffers(state, length)), jnp.arange(length), unroll=loop.unroll)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _loop(loop, state, hparams, indices, num_steps, checkpoint_every):
    """`num_steps` training steps (`loop.update`) on the minibatches `indices` (None: full batch).
    With `checkpoint_every=k` the VJP's forward pass stores the input state of every segment of k
    steps only, and its backward pass reruns a segment (storing its k states) before going back
    through it, as `in_segments` would under `jax.checkpoint`."""
    return _steps(loop, state, hparams, indices, 0, num_steps)


def _loop_fwd(loop, state, hparams, indices, num_steps, checkpoint_every):
    # Zero-size arrays carry the state's structure, shapes and dtypes to the backward rule.
    template = jax.tree.map(lambda x: jnp.zeros((0,) + jnp.shape(x), jnp.result_type(x)), state)
    if checkpoint_every is None:  # every step's input state
        final, stored = _steps_storing(loop, state, hparams, indices, 0, num_steps)
        return final, (stored, template, hparams, loop, indices)
    k, num_segments, remainder = segment_split(num_steps, checkpoint_every)

    def segment(carry, j):  # every segment's input state
        s, starts = carry
        return (_steps(loop, s, hparams, indices, j * k, k), _put(starts, s, j)), None

    init = (state, _buffers(state, num_segments + (remainder > 0)))
    final, starts = jax.lax.scan(segment, init, jnp.arange(num_segments), unroll=loop.unroll)[0]
    if remainder:
        starts = _put(starts, final, num_segments)
        final = _steps(loop, final, hparams, indices, num_segments * k, remainder)
    return final, (starts, template, hparams, loop, indices)


def _loop_bwd(num_steps, checkpoint_every, residuals, ct_final):
    stored, template, hparams, loop, indices = residuals
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), template)
    leaves, treedef = jax.tree.flatten(like)
    is_float = [_is_float(leaf) for leaf in leaves]

    def whole(floats):
        # The cotangent of a whole state: float0 zeros for integer leaves (step counts).
        it = iter(floats)
        return jax.tree.unflatten(treedef, [next(it) if f else _zero_cotangent(leaf)
                                            for leaf, f in zip(leaves, is_float)])

    def floats_of(ct_state):
        return [leaf for leaf, f in zip(jax.tree.leaves(ct_state), is_float) if f]

    def back(ct, states, start, length):
        """The cotangent pulled back through steps start + length - 1, ..., start, whose input
        states are the rows of `states`."""
        def body(carry, i):
            ct_floats, ct_h = carry
            s = _get(states, like, i)
            idx = None if indices is None else indices[start + i]
            # Recompute step start + i and pull the cotangent of its output state back through
            # it: the optimiser's VJP and one Hessian-vector product of the minibatch training loss.
            _, vjp = jax.vjp(lambda s_, h_: loop.update(s_, h_, idx), s, hparams)
            ct_s, ct_h_t = vjp(whole(ct_floats))
            return (floats_of(ct_s), jax.tree.map(jnp.add, ct_h, ct_h_t)), None

        return jax.lax.scan(body, ct, jnp.arange(length), reverse=True, unroll=loop.unroll)[0]

    ct = (floats_of(ct_final), jax.tree.map(jnp.zeros_like, hparams))
    if checkpoint_every is None:
        ct = back(ct, stored, 0, num_steps)
    else:
        k, num_segments, remainder = segment_split(num_steps, checkpoint_every)

        def rerun(j, start, length):  # segment j's input states, recomputed from its first
            return _steps_storing(loop, _get(stored, like, j), hparams, indices, start, length)[1]

        if remainder:
            start = num_segments * k
            ct = back(ct, rerun(num_segments, start, remainder), start, remainder)
        ct = jax.lax.scan(lambda c, j: (back(c, rerun(j, j * k, k), j * k, k), None), ct,
                          jnp.arange(num_segments), reverse=True, unroll=loop.unroll)[0]
    ct_floats, ct_h = ct
    return None, whole(ct_floats), ct_h, None


_loop.defvjp(_loop_fwd, _loop_bwd)


def _dots_saveable(prim, *args, **params) -> bool:
    """`jax.checkpoint_policies.dots_saveable`, and primitives that say they are matrix products
    (`prim.is_matrix_product`: `hg.problems.mlp.FeatureMajorDense`'s, whose derivatives keep plain
    layouts)."""
    return jax.checkpoint_policies.dots_saveable(prim, *args, **params) or getattr(prim, "is_matrix_product", False)


_RUNS = {"residuals": _run_residuals, "states": _run_states,
         "steps": functools.partial(_rematerialised, jax.checkpoint_policies.nothing_saveable),
         "dots": functools.partial(_rematerialised, _dots_saveable)}
