"""Minibatches by epochs (`hypergrad/_sampler.py`, `Problem.batch_indices`): every example exactly
once per epoch, batch t a pure function of (data key, t) replayed alike by every path of the loop,
the same under float32 and float64, and equal to the documented construction written out here."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _sampler
from hypergrad.loop import DRAW_BLOCK

M32 = 2**32 - 1


def _problem(n, batch_size, **overrides):
    x = jnp.arange(n, dtype=jnp.float64)
    kwargs = dict(init=lambda key: {"w": jnp.zeros(())},
                  train_loss=lambda p, h, batch: jnp.mean((batch[0] * p["w"] - batch[1]) ** 2),
                  val_loss=lambda p, batch: jnp.mean((batch[0] * p["w"] - batch[1]) ** 2),
                  train_data=(x, 2.0 * x), val_data=(x[:2], x[:2]), batch_size=batch_size)
    kwargs.update(overrides)
    return hg.Problem(**kwargs)


def _stream(problem, key, num_batches):
    """The concatenated indices of batches 0, ..., num_batches - 1, drawn in one compiled program (as
    the training loop draws them; op by op, every (n, b) of the sweep below compiled each operation
    again: twice the time)."""
    return np.asarray(_compiled_draw(problem)(key, jnp.arange(num_batches))).reshape(-1)


_DRAWS = {}


def _compiled_draw(problem):
    """`problem.batch_indices` under one jit per problem, so every key reuses its program."""
    if id(problem) not in _DRAWS:
        _DRAWS[id(problem)] = (problem, jax.jit(problem.batch_indices))
    return _DRAWS[id(problem)][1]


# -- every example once per epoch -------------------------------------------------------------------
CASES = [(n, b) for n in (1, 2, 3, 5, 8, 17, 64, 100, 127, 1078) for b in sorted({1, 2, 3, 7, 16, n // 3, n - 1, n})
         if 1 <= b <= n]


@pytest.mark.parametrize("n,b", CASES)
def test_every_example_exactly_once_per_epoch(n, b):
    """A seeded sweep over sizes, batch sizes and keys: the stream of batches, cut into runs of n,
    is a permutation of range(n) in each of the first epochs (nothing dropped, nothing repeated)."""
    problem = _problem(n, b)
    epochs = 3
    for seed in (0, 1, 12345):
        stream = _stream(problem, jax.random.key(seed), math.ceil(epochs * n / b) + 1)
        for e in range(epochs):
            np.testing.assert_array_equal(np.sort(stream[e * n:(e + 1) * n]), np.arange(n), err_msg=f"epoch {e}")


def test_epochs_are_shuffled_differently_and_keys_matter():
    problem = _problem(100, 10)
    key = jax.random.key(0)
    stream = _stream(problem, key, 30)
    epochs = stream.reshape(3, 100)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(100))
    assert not np.array_equal(_stream(problem, jax.random.key(1), 10), epochs[0])
    # a batch of distinct examples whenever it lies inside one epoch
    for batch in stream.reshape(30, 10):
        assert len(set(batch.tolist())) == 10


def test_positions_spread_over_the_epoch():
    """Each example's position in an epoch is spread over the whole epoch (over many keys): a
    pseudorandom order, not a few fixed rotations. Chi-square of positions in 10 bins."""
    n, keys = 50, 400
    problem = _problem(n, n)
    # keys 0..399, drawn in one vmapped program (400 eager draws took about 50 s)
    draw = jax.jit(jax.vmap(lambda seed: problem.batch_indices(jax.random.key(seed), jnp.arange(1)).reshape(-1)))
    orders = np.asarray(draw(jnp.arange(keys)))  # (keys, n)
    position = np.argsort(orders, axis=1)  # position[k, i]: where example i sits under key k
    counts = np.stack([np.bincount(position[:, i] * 10 // n, minlength=10) for i in range(n)])
    expected = keys / 10
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=1)  # 9 degrees of freedom per example
    assert np.median(chi2) < 15, np.median(chi2)  # 9 on average; 21.7 is its 1% tail


@pytest.mark.parametrize("n", [100, 1078])
def test_stream_neighbours_are_as_independent_as_in_a_uniform_order(n):
    """Over many keys, positions j and j + 1 of an epoch hold stored neighbours (examples i, i + 1)
    as often as in a uniform random order (1 / (n - 1)), and the gap between the first two examples
    (mod n) is uniform. Four Feistel rounds failed both: neighbours 2.6 (n = 100) and 4.5 (n = 1078)
    times too often, chi-square per degree of freedom 5.6 (n = 100)."""
    keys = 4000
    problem = _problem(n, n)
    draw = jax.jit(jax.vmap(lambda seed: problem.batch_indices(jax.random.key(seed), jnp.arange(1)).reshape(-1)))
    orders = np.asarray(draw(jnp.arange(keys)))  # (keys, n): epoch 0's order under each key
    neighbours = np.mean(orders[:, 1:] == orders[:, :-1] + 1) * (n - 1)  # 1 for a uniform order
    assert abs(neighbours - 1) < 0.1, neighbours  # its sampling error: about 0.016 (n = 100), 0.016 (1078)
    gaps = np.bincount((orders[:, 1] - orders[:, 0]) % n, minlength=n)[1:]  # n - 1 cells, keys / (n - 1) each
    expected = keys / (n - 1)
    chi2_per_dof = ((gaps - expected) ** 2 / expected).sum() / (n - 2)
    assert chi2_per_dof < 1.5, chi2_per_dof  # 1 on average; its 1% tail is about 1.35 (n = 100), 1.1 (1078)


def test_a_partial_last_batch_wraps_into_the_next_epoch():
    """n = 10, b = 4: batch 2 holds positions 8, 9 of epoch 0 and 0, 1 of epoch 1."""
    problem = _problem(10, 4)
    key = jax.random.key(3)
    stream = _stream(problem, key, 5)  # 20 positions: epochs 0 and 1
    np.testing.assert_array_equal(np.asarray(problem.batch_indices(key, 2)), stream[8:12])
    assert sorted(stream[:10]) == sorted(stream[10:]) == list(range(10))


# -- the documented construction, written out -------------------------------------------------------
def _mix(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _reference(key, t, n, b):
    """Batch t from the module docstring: positions t*b... of the epoch stream; each position's
    epoch keys, a Feistel over range(a) x range(2**bits), cycle-walked into range(n)."""
    base = [int(w) for w in np.asarray(jax.random.bits(key, (_sampler.ROUNDS,), jnp.uint32))]
    bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    a = -(-n // 2**bits)

    def feistel(x, keys):
        left, right = x >> bits, x & (2**bits - 1)
        for r, k in enumerate(keys):
            h = ((right ^ k) * 0x7FEB352D) & M32
            h = ((h ^ (h >> 15)) * 0x846CA68B) & M32
            if r % 2 == 0:
                left, right = right, (left + (((h >> 16) * a) >> 16)) % a
            else:
                left, right = right, (left + (h >> (32 - bits))) % 2**bits
        return (left << bits) | right

    out = []
    for p in range(t * b, t * b + b):
        epoch, j = divmod(p, n)
        e = _mix((epoch * _sampler.ROUNDS) & M32)
        keys = [_mix(base[r] ^ _mix((e + r) & M32)) for r in range(_sampler.ROUNDS)]
        x = feistel(j, keys)
        while x >= n:
            x = feistel(x, keys)
        out.append(x)
    return out


@pytest.mark.parametrize("n,b,steps", [(20, 5, (0, 1, 13)), (1078, 100, (0, 10, 11, 199, 10**7 + 3)),
                                       (97, 16, (5, 6, 7)), (64, 8, (0, 8))])
def test_batch_t_is_the_documented_construction(n, b, steps):
    """Pins the draw: equal to the construction written out in plain integers (so also the same
    under float64, which the tests run in, as under float32 below), far into training too (step
    10**7 + 3 at b = 100 is past position 2**32)."""
    problem = _problem(n, b)
    key = jax.random.key(7)
    for t in steps:
        assert np.asarray(problem.batch_indices(key, t)).tolist() == _reference(key, t, n, b), t


def test_numpy_integer_sizes_draw_what_python_ints_draw():
    """`epoch_batch_indices` takes n and batch_size as numpy integers too (a strongly typed int64
    once promoted its uint32 arithmetic to signed ints: negative indices, a walk that never ended)."""
    key, steps = jax.random.key(5), jnp.arange(9)
    expected = _sampler.epoch_batch_indices(key, steps, 20, 7)
    for n, b in ((np.int64(20), np.int64(7)), (np.int32(20), np.int32(7))):
        np.testing.assert_array_equal(_sampler.epoch_batch_indices(key, steps, n, b), expected)


def test_the_draw_is_the_same_under_float32():
    """A fresh process without jax_enable_x64 draws what this (float64) process draws."""
    problem = _problem(1078, 100)
    here = np.asarray(problem.batch_indices(jax.random.key(11), jnp.arange(40))).tolist()
    code = ("import jax, jax.numpy as jnp, hypergrad as hg\n"
            "assert not jax.config.jax_enable_x64\n"
            "x = jnp.arange(1078.0)\n"
            "p = hg.Problem(init=lambda k: 0., train_loss=lambda p, h, b: 0., val_loss=lambda p, b: 0.,\n"
            "               train_data=(x, x), val_data=(x, x), batch_size=100)\n"
            "print(p.batch_indices(jax.random.key(11), jnp.arange(40)).tolist())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(proc.stdout.strip().splitlines()[-1]) == here


def test_too_many_positions_for_uint32_are_refused():
    x = jnp.zeros((2**16 + 1, 1), jnp.float32)
    with pytest.raises(ValueError, match=r"batch_size=65536 times the 65537 training examples must be below 2\*\*32"):
        _problem(2**16 + 1, 2**16, train_data=(x, x), val_data=(x[:2], x[:2]))  # splits of one example shape


# -- one draw for every path of the loop ------------------------------------------------------------
def test_step_run_draw_and_draw_all_replay_the_same_indices():
    """`Loop.draw` one step at a time, in blocks (`Loop.run`'s way), and `Loop.draw_all` (Reverse's
    up-front draw) give the same indices; `Loop.run` trains on them exactly as `Loop.step` one by
    one does."""
    problem = _problem(37, 5)
    T = 2 * DRAW_BLOCK + 9
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=T)
    loop = objective.loop()
    hparams = {"lr": jnp.asarray(1e-3)}
    state = loop.init(hparams, jax.random.key(4))
    # one step at a time, each a compiled call on a traced t (T eager steps of op-by-op dispatch took ~25 s)
    draw, step = jax.jit(loop.draw), jax.jit(loop.step)
    one_by_one = np.stack([np.asarray(draw(state, jnp.asarray(t))) for t in range(T)])
    ts = jnp.arange(T)
    np.testing.assert_array_equal(np.asarray(loop.draw_all(state, ts)), one_by_one)
    np.testing.assert_array_equal(np.asarray(loop.draw(state, ts[:DRAW_BLOCK].reshape(4, -1))).reshape(DRAW_BLOCK, -1),
                                  one_by_one[:DRAW_BLOCK])
    stepped = state
    for t in range(T):
        stepped = step(stepped, hparams, jnp.asarray(t))
    ran = jax.jit(lambda s: loop.run(s, hparams, 0, T))(state)
    np.testing.assert_array_equal(np.asarray(ran.params["w"]), np.asarray(stepped.params["w"]))


def test_reversible_draws_what_the_loop_draws():
    """Reversible (its per-step draw, replayed backwards) and Reverse (the up-front draw) give the
    same hypergradient on a minibatch problem with a partial last batch and several epochs; they
    agree only if both trained on the same minibatches."""
    problem = _problem(37, 7, train_loss=lambda p, h, batch: jnp.mean((0.05 * batch[0] * p["w"] - 1.0) ** 2))
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=20)
    hparams = {"lr": jnp.asarray(0.3), "momentum": jnp.asarray(0.5)}
    key = jax.random.key(2)
    value_r, grad_r = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    value_v, grad_v = hg.hypergradient(objective, hparams, key, method=hg.Reversible())
    assert float(value_v) == pytest.approx(float(value_r), rel=1e-9)
    for name in hparams:
        assert abs(float(grad_r[name])) > 0
        np.testing.assert_allclose(grad_v[name], grad_r[name], rtol=1e-6)


def test_the_draw_broadcasts_explicitly_so_rank_promotion_raise_works():
    """A user's `jax_numpy_rank_promotion="raise"`: steps of any shape draw what they draw without it
    (the within-batch offsets were added to the first positions by implicit rank promotion)."""
    key, steps = jax.random.key(2), jnp.arange(6).reshape(2, 3)
    expected = _sampler.epoch_batch_indices(key, steps, 20, 7)
    with jax.numpy_rank_promotion("raise"):
        np.testing.assert_array_equal(_sampler.epoch_batch_indices(key, steps, 20, 7), expected)
        np.testing.assert_array_equal(_sampler.epoch_batch_indices(key, 4, 20, 7), expected[1, 1])
