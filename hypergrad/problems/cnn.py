"""A small convolutional network (flax.nnx) for 8 x 8 images, written so vmapped searches stay fast.

`CNN(channels, classes)` maps images (batch, 8, 8, 1) to logits (batch, classes): a 3 x 3
convolution, a 3 x 3 convolution of stride 2 (to 4 x 4), each with zero padding of one pixel on
every side (PyTorch's `padding=1`) and followed by a ReLU, then a dense
head. Its state has three groups in input-to-output order, "conv0", "conv1" and "head"
(`hg.problems.layer_groups`).

The convolutions are `PatchConv`: the 3 x 3 neighbourhoods are gathered once (`patches`, nine
shifted views of the zero-padded input, concatenated along channels) and multiplied by a
(9 * in, out) kernel. Under `jax.vmap` over trials the kernels gain a leading trial axis while the
first layer's patches come from the shared minibatch, so every layer is a batched matrix product.
`nnx.Conv` under the same vmap becomes a grouped convolution that XLA:CPU ran more than ten times
slower on a 32-trial search (benchmarked when this module was written).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["CNN", "PatchConv", "patches"]


def patches(x: jax.Array, stride: int = 1) -> jax.Array:
    """The 3 x 3 neighbourhoods of every `stride`-th pixel of `x` (batch, H, W, C), zero padded by
    one pixel on every side (PyTorch's `padding=1`): shape (batch, ceil(H / stride),
    ceil(W / stride), 9 * C), neighbour-major. At stride 1 that is XLA's and flax's "SAME"; at
    stride 2 on an even size it is not (their "SAME" pads (0, 1), so windows start one pixel later).

    Cost: a copy of 9 * H * W * C / stride^2 values per example; memory the same.
    """
    _, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    views = [padded[:, i:i + height:stride, j:j + width:stride, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(views, axis=-1)


class PatchConv(nnx.Module):
    """A 3 x 3 convolution with zero padding 1 (PyTorch's `padding=1`; "SAME" at stride 1 only, see
    `patches`) as `patches(x, stride) @ kernel + bias`.

    The kernel is stored (9 * in, out) (neighbour-major rows), LeCun-normal over its fan-in
    9 * in, as `nnx.Conv`'s; the bias starts at zero. Cost per example: 9 * in * out multiply-adds
    per output pixel.
    """

    def __init__(self, in_features: int, out_features: int, *, stride: int = 1, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (9 * in_features, out_features), dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype))
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        return patches(x, self.stride) @ self.kernel[...] + self.bias[...]


class CNN(nnx.Module):
    """conv0 (3 x 3, `channels[0]`) -> ReLU -> conv1 (3 x 3, stride 2, `channels[1]`) -> ReLU ->
    head (dense to `classes`), on (batch, size, size, 1) images; logits (batch, classes).

    Cost per example on 8 x 8 digits with channels (8, 16): about 25k multiply-adds (three times
    the 64-64-64 MLP's); 3.6k parameters for 5 classes.
    """

    def __init__(self, channels: Sequence[int] = (8, 16), classes: int = 10, *, size: int = 8,
                 rngs: nnx.Rngs, dtype=jnp.float32):
        c0, c1 = (int(c) for c in channels)
        reduced = -(-size // 2)
        self.conv0 = PatchConv(1, c0, rngs=rngs, dtype=dtype)
        self.conv1 = PatchConv(c0, c1, stride=2, rngs=rngs, dtype=dtype)
        self.head = nnx.Linear(reduced * reduced * c1, classes, rngs=rngs, param_dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.conv0(x))
        h = jax.nn.relu(self.conv1(h))
        return self.head(h.reshape(h.shape[0], -1))
