"""Minibatches by epochs: batch t of a keyed stream of epochs, computed index by index.

The training stream is an endless concatenation of epochs, each a pseudorandom permutation of the
n training examples keyed by the data key and the epoch number. Batch t is stream positions
t*b, ..., t*b + b - 1, so every example is visited exactly once per epoch and nothing is dropped:
when b does not divide n, the batch that straddles an epoch boundary ends epoch e and starts epoch
e + 1 (wrapping rather than dropping keeps every example equally often in training, which matters
to per-example hyperparameters and to small training sets, where n mod b can be a large share;
its cost is that the straddling batch may hold one example twice, once from each epoch).

Each index is computed on its own (no permutation of n is ever materialised), so batch t costs
O(b) work and any method replays step t from (data key, t) alone:

- the epoch's permutation is a Feistel network over Z_a x Z_c, c = 2**k about sqrt(n) and
  a = ceil(n / c) (a mixed-radix Feistel: round r maps (L, R) to (R, (L + F_r(R)) mod a) and the
  next round the same with the moduli swapped; each round is a bijection whatever F_r is), `ROUNDS` rounds of a hash of R xor k_r, the round keys k_r drawn
  from the data key with `jax.random.bits` and mixed with the epoch number;
- cycle walking restricts it to range(n): an index mapped to [n, a*c) is mapped again until it
  lands in range(n) (on the cycle through it, which holds it, so the walk ends). Since
  a*c - n < c, under 2/sqrt(n) of the domain lies outside range(n): almost every index takes one
  pass, a vector of indices one to three.

All arithmetic is on uint32 (no floating point), so the draw is the same under `jax_enable_x64`.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

__all__ = ["ROUNDS", "MAX_PRODUCT", "epoch_batch_indices"]

ROUNDS = 8
"""Feistel rounds of an epoch's permutation; even, so the halves end in their own ranges. Luby and
Rackoff's four rounds make a pseudorandom permutation only for far fewer queries than the square
root of the domain, and an epoch reads every position of a domain whose halves hold only about
sqrt(n) values: with four rounds, stream neighbours (positions j, j + 1) held stored neighbours
(examples i, i + 1) 1.7 to 4.5 times as often as a uniform order does (n = 64 to 1078), and the gap
between them was far from uniform. Eight rounds bring both to within sampling noise of a uniform
permutation for n from about 32 up (`tests/test_sampler.py`), at twice the hashing of four.
Below that (halves of a few values each) the order stays measurably non-uniform, though every
example is still visited once per epoch. Changing it (or anything else of the order) changes every
minibatch run's numbers: bump `hypergrad.store.NUMERICS` with it, so that stored studies and saved
Results of the old order are refused rather than continued (`tests/test_store_compat.py` records
the order that each `NUMERICS` names)."""

MAX_PRODUCT = 2 ** 32
"""n * batch_size must stay below this: positions within an epoch are computed in uint32."""


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser (the 'lowbias32' constants of C. Wellons' hash prospector): every
    input bit flips each output bit with probability close to 1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _below(h: jax.Array, m: int) -> jax.Array:
    """A value in range(m) from the top 16 bits of the hash h (m <= 2**16): multiply and shift,
    which is cheaper than a division and as uniform (to within m / 2**16)."""
    return ((h >> 16) * jnp.uint32(m)) >> 16


def _add_mod(x: jax.Array, y: jax.Array, m: int) -> jax.Array:
    """(x + y) mod m for x, y in range(m), without a division."""
    s = x + y
    return jnp.where(s >= m, s - jnp.uint32(m), s)


def _feistel(left: jax.Array, right: jax.Array, keys: tuple[jax.Array, ...], a: int, bits: int
             ) -> tuple[jax.Array, jax.Array]:
    """A keyed bijection of range(a) x range(2**bits); `keys[r]` is round r's key (broadcast
    against the halves). Round r maps (L, R) to (R, L + F_r(R)) modulo a (r even) or 2**bits (r
    odd), so the halves trade places and ranges every round and are back after an even number.

    Round function F_r(R): (R xor k_r) hashed by a multiply, a shift-xor and a multiply, its top
    bits scaled into range: cheap, and every bit of R and k_r reaches the bits kept.
    """
    for r, k in enumerate(keys):
        h = (right ^ k) * jnp.uint32(0x7FEB352D)
        h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
        if r % 2 == 0:
            left, right = right, _add_mod(left, _below(h, a), a)
        else:  # modulo a power of two: a shift and a mask
            left, right = right, (left + (h >> (32 - bits))) & jnp.uint32(2 ** bits - 1)
    return left, right


def _shape(n: int) -> tuple[int, int]:
    """(a, bits): a*2**bits >= n with 2**bits about sqrt(n) (the smallest power of two whose square
    is at least n) and a = ceil(n / 2**bits), so n <= a * 2**bits < n + 2**bits: under 2 / sqrt(n)
    of the domain lies outside range(n)."""
    bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    return -(-n // 2 ** bits), bits


def _permute(j: jax.Array, keys: tuple[jax.Array, ...], n: int) -> jax.Array:
    """Position j (uint32, < n) of the epoch keyed by `keys`: the cycle-walked Feistel of range(n)."""
    a, bits = _shape(n)

    def feistel(x):
        # One output per pass (the halves recombined): XLA fuses a pass into one loop; carrying
        # the two halves instead would have it compute the rounds once per half.
        left, right = _feistel(x >> bits, x & jnp.uint32(2 ** bits - 1), keys, a, bits)
        return (left << bits) | right

    def walk(x):
        # A lane outside range(n) takes one more pass; a lane inside stays (a fixed point), so each
        # lane's walk is exactly its own.
        return jnp.where(x >= n, feistel(x), x)

    x = feistel(j)
    if a << bits == n:
        return x
    # A few lanes in a hundred leave range(n) once and far fewer twice: one walk step for all, then
    # the loop (whose control costs about a pass) only while some lane is still outside.
    return jax.lax.while_loop(lambda x: jnp.any(x >= n), walk, walk(x))


def _round_keys(base: jax.Array, epoch: jax.Array) -> tuple[jax.Array, ...]:
    """Round keys of `epoch` (any shape): the data key's `ROUNDS` random words, each mixed with the
    epoch (the words come from `jax.random`, so the key's full entropy enters; the mixing only
    makes every epoch's keys differ)."""
    e = _mix(epoch * jnp.uint32(ROUNDS))
    return tuple(_mix(base[r] ^ _mix(e + jnp.uint32(r))) for r in range(ROUNDS))


def epoch_batch_indices(key: jax.Array, step: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Indices (int32) of minibatch `step` in the epoch stream of n examples (module docstring).

    Args:
        key: the data key (any `jax.random` key).
        step: an int array of steps, any shape; the result has shape `step.shape + (batch_size,)`.
        n: training examples, batch_size: examples per batch, 1 <= batch_size <= n.
    """
    # Python ints: a numpy integer is strongly typed and would promote the uint32 arithmetic below
    # to signed ints (negative positions, and a cycle walk that never ends).
    b, n = int(batch_size), int(n)
    step = jnp.asarray(step).astype(jnp.uint32)
    # The first position of batch t is t*b = e*n + r; computed as (t // n)*b epochs plus the split of
    # (t mod n)*b < n*b, so nothing overflows uint32 however long training runs.
    whole, part = step // n, step % n
    epoch = whole * b + part * b // n
    within = jnp.arange(b, dtype=jnp.uint32).reshape((1,) * step.ndim + (b,))  # explicit: rank promotion may be off
    offset = (part * b % n)[..., None] + within
    wraps = offset >= n  # b <= n: a batch spans at most two epochs
    position = jnp.where(wraps, offset - n, offset)

    base = jax.random.bits(key, (ROUNDS,), jnp.uint32)
    this, following = _round_keys(base, epoch[..., None]), _round_keys(base, epoch[..., None] + 1)
    keys = tuple(jnp.where(wraps, k1, k0) for k0, k1 in zip(this, following))
    return _permute(position, keys, n).astype(jnp.int32)
