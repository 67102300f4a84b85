"""Compute accounting: per-step FLOPs of a scanned program, and the FLOPs of one training run.

XLA's cost analysis counts a `while` body once. `hypergrad.compute` compiles the loop fully unrolled
at T=1 and T=2 and extrapolates; these tests check that against hand counts and against XLA's count
of genuinely unrolled programs, and show that the raw count of the rolled loop does not scale with T.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad._compile import flops_of  # noqa: E402
from hypergrad.compute import affine_flops, cached_affine_flops, flops_per_step  # noqa: E402
from hypergrad.search import run_flops  # noqa: E402

N = 16  # the toy scan multiplies (N, N) matrices
K = 5   # inner size of the matmul done once, outside the loop


def toy_program(num_steps, unroll=True, prologue=False):
    """T steps of `x <- 0.5 * (x @ w) + 1` on (N, N) matrices, optionally after one (N,K)@(K,N) matmul."""

    def fn(x, w, a, b):
        if prologue:
            x = x + a @ b

        def body(c, _):
            return 0.5 * (c @ w) + 1.0, None

        return jax.lax.scan(body, x, None, length=num_steps, unroll=unroll)[0]

    return fn


def toy_args():
    key = jax.random.key(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return (jax.random.normal(k1, (N, N)), jax.random.normal(k2, (N, N)),
            jax.random.normal(k3, (N, K)), jax.random.normal(k4, (K, N)))


def xla_flops(fn, args):
    return flops_of(jax.jit(fn).lower(*args).compile())


MATMUL = 2 * N**3          # multiply-adds of one (N,N)@(N,N), counted as 2 FLOPs each
ELEMENTWISE = 2 * N**2     # the scale and the shift, one FLOP per element each


@pytest.mark.parametrize("num_steps", [3, 25])
def test_affine_flops_is_steps_times_per_step_flops(num_steps):
    args = toy_args()
    total = affine_flops(lambda T: toy_program(T), args, num_steps)
    # Per step: one matmul plus a little elementwise work (allow up to 4 FLOPs per element).
    assert num_steps * MATMUL <= total <= num_steps * (MATMUL + 2 * ELEMENTWISE)
    assert total == pytest.approx(num_steps * (MATMUL + ELEMENTWISE), rel=0.02)


def test_flops_per_step_separates_work_outside_the_loop():
    args = toy_args()
    fixed, per_step = flops_per_step(lambda T: toy_program(T, prologue=True), args)
    prologue = 2 * N * K * N + N**2  # the (N,K)@(K,N) matmul and the add
    assert fixed == pytest.approx(prologue, rel=0.02)
    assert per_step == pytest.approx(MATMUL + ELEMENTWISE, rel=0.02)


@pytest.mark.parametrize("num_steps", [4, 7])
def test_affine_flops_equals_xla_count_of_the_unrolled_program(num_steps):
    """Exact for affine work: matches XLA's own count of the program written out step by step."""
    args = toy_args()
    build = lambda T: toy_program(T, prologue=True)  # noqa: E731
    unrolled = xla_flops(build(num_steps), args)
    assert affine_flops(build, args, num_steps) == pytest.approx(unrolled, rel=1e-9)


def test_raw_xla_count_of_rolled_scan_does_not_scale_with_steps():
    args = toy_args()
    rolled = {T: xla_flops(toy_program(T, unroll=1), args) for T in (5, 40)}
    accounted = {T: affine_flops(lambda s: toy_program(s), args, T) for T in (5, 40)}
    # XLA counts the loop body once: 8x the steps, (nearly) the same raw count ...
    assert rolled[40] == pytest.approx(rolled[5], rel=0.01)
    assert rolled[40] < 2 * MATMUL
    # ... while the accounted count scales with the steps and differs from the raw one.
    assert accounted[40] == pytest.approx(8 * accounted[5], rel=1e-9)
    assert accounted[40] > 30 * rolled[40]


def test_cached_affine_flops_builds_once_per_tag_and_shapes():
    args = toy_args()
    built = []

    def build(T):
        built.append(T)
        return toy_program(T)

    tag = ("test-compute-cache", object())
    first = cached_affine_flops(tag, build, args, 10)
    assert sorted(built) == [1, 2]
    assert cached_affine_flops(tag, build, args, 10) == first
    assert sorted(built) == [1, 2]  # nothing rebuilt for the same tag and shapes
    # Another horizon is another cache entry, from the same affine extrapolation.
    assert cached_affine_flops(tag, build, args, 20) == pytest.approx(2 * first, rel=1e-9)


# -- the FLOPs of one training run of ridge regression --------------------------------------------
@pytest.fixture(scope="module")
def ridge_setup():
    problem = hg.problems.ridge(num_examples=200, num_features=50, seed=0)  # 120/40/40 examples
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(1e-3)}
    return problem, hparams


def _ridge_objective(problem, num_steps):
    return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=num_steps)


def test_run_flops_of_ridge_matches_hand_count(ridge_setup):
    problem, hparams = ridge_setup
    n, d = problem.train_data[0].shape
    n_val = problem.val_data[0].shape[0]
    n_test = problem.test_data[0].shape[0]
    num_steps = 20
    flops = run_flops(_ridge_objective(problem, num_steps), hparams, jax.random.key(0))
    # Full batch: X @ w forward and X.T @ r backward per step; then one X_val @ w and one
    # X_test @ w to score the trained weights (a run includes scoring on both splits).
    hand = num_steps * (2 * n * d + 2 * n * d) + 2 * n_val * d + 2 * n_test * d
    assert flops == pytest.approx(hand, rel=0.05)


def test_run_flops_grow_by_the_per_step_count(ridge_setup):
    problem, hparams = ridge_setup
    n, d = problem.train_data[0].shape
    key = jax.random.key(0)
    short = run_flops(_ridge_objective(problem, 10), hparams, key)
    long = run_flops(_ridge_objective(problem, 30), hparams, key)
    assert (long - short) / 20 == pytest.approx(4 * n * d, rel=0.05)




def test_flops_beside_work_equal_the_plain_counts_and_run_the_work_once():
    from hypergrad.compute import cached_flops_per_step_beside

    args = toy_args()
    build = lambda T: toy_program(T, prologue=True)  # noqa: E731
    ran = []
    tag = ("test-compute-beside", object())
    counts, result = cached_flops_per_step_beside(tag, build, args, lambda: ran.append(1) or "done")
    assert result == "done" and ran == [1]
    assert counts == pytest.approx(flops_per_step(build, args), rel=1e-12)
    fixed, per_step = counts
    assert per_step >= MATMUL and fixed >= 2 * N * K * N  # the prologue's matmul is outside the loop
    # cached: the same counts, nothing lowered again, the work still runs
    again, _ = cached_flops_per_step_beside(tag, lambda T: pytest.fail("rebuilt"), args, lambda: ran.append(2))
    assert again == counts and ran == [1, 2]
