"""Forward-mode hypergradients: tangents carried along the training loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._checks import is_int_at_least
from hypergrad._types import HParams, Key
from hypergrad.loop import Loop
from hypergrad.methods.base import Method

__all__ = ["Forward"]


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """How one hyperparameter maps to tangent directions (static, from its shape)."""

    name: str
    shape: tuple[int, ...]
    lengths: tuple[int, ...] | None  # block lengths along `axis` when shared, else None
    axis: int = 0  # the axis shared in blocks (see `_shared_axis`)

    @property
    def directions(self) -> int:
        return int(np.prod(self.coordinate_shape, dtype=np.int64))

    @property
    def coordinate_shape(self) -> tuple[int, ...]:
        """Shape of this hyperparameter's coordinates: its own shape, or that shape with the
        shared axis cut to the number of blocks."""
        if self.lengths is None:
            return self.shape
        return self.shape[:self.axis] + (len(self.lengths),) + self.shape[self.axis + 1:]

    def spread(self, x: jax.Array) -> jax.Array:
        """Each block's entry of `x` (shaped `coordinate_shape`) repeated over its elements."""
        return jnp.repeat(x, np.asarray(self.lengths, np.int64), axis=self.axis,
                          total_repeat_length=self.shape[self.axis])

    def describe(self) -> str:
        """How many directions this hyperparameter takes, and why, for the max_directions refusal."""
        if self.lengths is None:
            return f"{self.name}: {self.directions}"
        return (f"{self.name}: {self.directions} ({len(self.lengths)} blocks along axis {self.axis} "
                f"of shape {self.shape})")


def _shared_axis(shape: tuple[int, ...], num_steps: int) -> int:
    """The axis `blocks=` shares: the first axis of length `num_steps` (a schedule's steps, also
    on the last axis of a per-group schedule of shape (groups, T)), else the leading axis."""
    return next((i for i, n in enumerate(shape) if n == num_steps), 0)


def _block_lengths(n: int, blocks: int) -> tuple[int, ...]:
    """Lengths of `min(blocks, n)` contiguous blocks covering n elements, as `np.array_split`:
    the first n % blocks blocks are one longer than the rest. An empty axis (n = 0) has no blocks."""
    blocks = min(blocks, n)
    if blocks == 0:
        return ()
    size, extra = divmod(n, blocks)
    return tuple(size + 1 if b < extra else size for b in range(blocks))


@dataclasses.dataclass(frozen=True)
class Forward(Method):
    """Forward-mode hypergradient (Franceschi et al. 2017, "Forward and reverse gradient-based
    hyperparameter optimization"): the tangent d(state)/d(hparams) is carried along the training loop.

    One JVP per scalar hyperparameter direction pushes a tangent through the `lax.scan` of training
    alongside the primal state; the directions are batched with `vmap` (as `jax.jacfwd` over the
    flattened hyperparameters), the primal run is shared, and nothing is stored per step.

    Block sharing (Micaelli & Storkey 2021, "Gradient-based hyperparameter optimization over long
    horizons"): with `blocks=B`, one axis of each shaped hyperparameter (of those named in
    `share`, or all with ndim >= 1) is split into B contiguous blocks (lengths as
    `np.array_split`; B >= the axis length means one element per block), and one tangent direction
    per block and per position along the other axes moves all its elements together. The shared
    axis is the step axis: the first axis whose length is the objective's `num_steps`, so a
    schedule of shape (T,), (T, k) or a per-group schedule (groups, T) (`hypergrad.problems.group_sgd`)
    is shared over its steps. A hyperparameter with no such axis (per-feature weight decay of shape
    (d,)) is shared along its leading axis. The returned gradient is then, at every element of
    a block, the block *mean* of the exact per-element gradient,

        grads[i] = (1 / |b|) * sum_{j in b} dL/dh[j]   for i in block b,

    i.e. the orthogonal projection of the exact gradient onto block-constant vectors. It is NOT the
    per-element gradient, but its inner product with any block-constant perturbation is the exact
    directional derivative (so finite differences along such perturbations agree with it), and its
    block sums equal the block sums of `Reverse`'s gradient. Gradient descent with it keeps a
    block-constant schedule block-constant. Unshared hyperparameters (scalars, and shaped ones
    not in `share`) get their exact gradient.

    Cost: one training run plus N tangent runs, N = the number of directions (scalar
    hyperparameters, or blocks x the size of the other axes for shared ones); each tangent step is the JVP of a
    training step (a Hessian-vector-like product), so (1 + c N) training runs by the FLOP count
    (`hypergrad.accounting`). c is about 1 where the model's arithmetic is the run's cost (its
    linearisation costs about what it does), somewhat above 1 where elementwise work weighs more
    (tiny layers). What does not depend on the hyperparameters, drawing and gathering each
    minibatch, the primal run does once and the N vmapped tangents share (as ES's samples share
    it), so on a minibatch problem whose draw weighs much against a small model c is below 1.
    It suits few hyperparameters and long horizons.
    Memory: the state plus N tangents of it (parameters and optimiser state), independent of T.
    Bias: none; exact up to floating point (for shared hyperparameters: the exact projection above).
    Limits: an optimiser that takes the square root or norm of a state that is exactly 0 at the
    first step (optax.contrib.dadapt_adamw, adopt, dog) gives NaN tangents (the derivative of sqrt at
    0 is infinite, times a zero tangent) while the loss and `Reverse` are finite: use `hg.Reverse()`
    there. Conversely `Forward` is exact through a `jnp.where`-guarded division where reverse mode
    is NaN (optax.lbfgs(lr, linesearch=None), optax.radam): use it there.

    Args:
        blocks: share each shaped hyperparameter's step axis (the first of length `num_steps`,
            else its leading axis) in this many contiguous blocks, or None for one direction per
            element.
        share: names of the hyperparameters to share in blocks (a name or a tuple of names); None
            shares every hyperparameter with ndim >= 1. Needs `blocks`.
        max_directions: refuse (in `check`) to run more JVPs than this; forward mode then costs
            more than reverse mode by far.
    """

    blocks: int | None = None
    share: tuple[str, ...] | None = None
    max_directions: int = 256

    def __post_init__(self):
        if self.blocks is not None and not is_int_at_least(self.blocks):
            raise ValueError(
                f"Forward(blocks={self.blocks!r}) must be an int >= 1 (the number of contiguous blocks "
                "each schedule is shared in, e.g. 10) or None"
            )
        if self.blocks is not None:
            object.__setattr__(self, "blocks", int(self.blocks))
        share = self.share
        if share is not None:
            if isinstance(share, str):
                share = (share,)
            if not isinstance(share, Sequence) or not all(isinstance(n, str) for n in share) or not share:
                raise ValueError(
                    f"Forward(share={self.share!r}) must be a hyperparameter name or a tuple of names, "
                    "e.g. share=('lr',), or None to share every shaped hyperparameter"
                )
            if self.blocks is None:
                raise ValueError(
                    f"Forward(share={self.share!r}) needs blocks=: say how many blocks to share them in, "
                    "e.g. Forward(blocks=10, share=('lr',))"
                )
            object.__setattr__(self, "share", tuple(share))
        if not is_int_at_least(self.max_directions):
            raise ValueError(f"Forward(max_directions={self.max_directions!r}) must be an int >= 1")
        object.__setattr__(self, "max_directions", int(self.max_directions))

    # -- layout: which tangent directions each hyperparameter gets ------------------------------
    def _layout(self, hparams: HParams, num_steps: int) -> tuple[_Leaf, ...]:
        if self.share is not None:
            missing = [n for n in self.share if n not in hparams]
            if missing:
                raise ValueError(
                    f"Forward(share={self.share!r}): {missing} are not hyperparameters; the "
                    f"hyperparameters are {sorted(hparams)}"
                )
            scalars = [n for n in self.share if jnp.ndim(hparams[n]) == 0]
            if scalars:
                raise ValueError(
                    f"Forward(share={self.share!r}): {scalars} are scalars, with no leading axis to share "
                    "in blocks; share only shaped hyperparameters such as a per-step schedule"
                )
        leaves = []
        for name in hparams:  # dict order, as the tangent basis is laid out
            shape = tuple(int(s) for s in jnp.shape(hparams[name]))
            shared = (self.blocks is not None and len(shape) >= 1
                      and (self.share is None or name in self.share))
            if shared:
                axis = _shared_axis(shape, num_steps)
                leaves.append(_Leaf(name, shape, _block_lengths(shape[axis], self.blocks), axis))
            else:
                leaves.append(_Leaf(name, shape, None))
        return tuple(leaves)

    def _check_directions(self, layout: tuple[_Leaf, ...]) -> int:
        total = sum(leaf.directions for leaf in layout)
        if total > self.max_directions:
            detail = ", ".join(leaf.describe() for leaf in layout)
            raise ValueError(
                f"Forward needs {total} JVPs (one per hyperparameter direction; {detail}), more than "
                f"max_directions={self.max_directions}: each costs one to two training runs. "
                f"{self._fewer_directions_hint(layout)}raise max_directions, or use hg.Reverse()"
            )
        return total

    def _fewer_directions_hint(self, layout: tuple[_Leaf, ...]) -> str:
        """What would cut the directions: never blocks= where it is given already."""
        if self.blocks is None:
            return "Set blocks= to share schedules in a few blocks (e.g. Forward(blocks=10)), "
        unshared = [leaf.name for leaf in layout if leaf.lengths is None and leaf.shape]
        more = f"share {unshared} too (share=None shares every shaped hyperparameter), " if unshared else ""
        return f"Use fewer blocks than blocks={self.blocks}, {more}"

    def check_loop(self, loop: Loop, hparams: HParams) -> None:
        self._check_directions(self._layout(hparams, loop.num_steps))

    # -- the hypergradient ------------------------------------------------------------------------
    def differentiate(self, loop: Loop, hparams: HParams, key: Key):
        layout = self._layout(hparams, loop.num_steps)
        total = self._check_directions(layout)

        def value_and_scores(h):
            return loop.readout(loop.train(h, key), h)

        if total == 0:  # no hyperparameter elements: nothing to push forward, every gradient empty
            return value_and_scores(hparams), {leaf.name: jnp.zeros_like(hparams[leaf.name]) for leaf in layout}
        dtype = jnp.result_type(*[hparams[leaf.name] for leaf in layout])
        offsets = np.cumsum([0] + [leaf.directions for leaf in layout])

        def embed(u):
            """hparams + (u spread over the elements): coordinate k moves its element or block."""
            out = {}
            for leaf, start, stop in zip(layout, offsets[:-1], offsets[1:]):
                h = hparams[leaf.name]
                delta = u[start:stop].reshape(leaf.coordinate_shape).astype(jnp.result_type(h))
                if leaf.lengths is not None:  # every element of a block moves with its block's value
                    delta = leaf.spread(delta)
                out[leaf.name] = h + delta
            return out

        def loss(u):
            value, scores = value_and_scores(embed(u))
            return value, (value, scores)

        # jacfwd = vmap over the basis vectors of a JVP through the training scan: tangents travel
        # with the primal state, so memory does not grow with T. The primal does not depend on the
        # tangent and is computed once (vmap leaves it unbatched). At u = 0, embed(u) == hparams.
        # d loss / d u_k is the derivative w.r.t. one element, or w.r.t. a block's common value
        # (the sum over the block of the per-element derivatives).
        jac, (value, scores) = jax.jacfwd(loss, has_aux=True)(jnp.zeros((total,), dtype))
        grads = {}
        for leaf, start, stop in zip(layout, offsets[:-1], offsets[1:]):
            g = jac[start:stop].reshape(leaf.coordinate_shape)
            if leaf.lengths is not None:  # the block mean at every element: the projection (see above)
                sizes = np.asarray(leaf.lengths, np.int64).reshape((-1,) + (1,) * (g.ndim - 1 - leaf.axis))
                g = leaf.spread(g / sizes.astype(g.dtype))
            grads[leaf.name] = g.astype(jnp.result_type(hparams[leaf.name]))
        return (value, scores), grads
