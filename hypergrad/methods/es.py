"""Zero-order hypergradients: evolution strategies (ES) and persistent evolution strategies (PES).

Neither method differentiates the training loop: they train with perturbed hyperparameters and
correlate the change of the validation loss with the perturbation. They need only forward runs,
so they apply to losses that are not differentiable (accuracies, discrete steps) or whose exact
gradient is useless because training is chaotic (long unrolls, large learning rates).

Perturbation coordinates. The method receives constrained hyperparameters (a learning rate of 0.1,
a weight decay of 1e-4), whose scales differ by orders of magnitude. With `relative=True` (the
default) hyperparameter `h` is perturbed additively by a step proportional to its own size,

    h + sigma * D e,    D = diag(|h|)  (1 where h == 0),    e ~ N(0, I),

so sigma is a *fraction* of each value (sigma = 0.01 moves a learning rate of 0.1 by about 0.001
and a weight decay of 1e-4 by about 1e-6): one sigma suits every hyperparameter, and a positive
value changes sign only when |e| > 1/sigma (100 standard deviations for sigma = 0.01, that is
never). Perturbing in the unconstrained coordinates of a `Space` would also keep bounds, but the
method does not see the space; a relative step is what a log-scale perturbation is to first order.
With `relative=False`, D = I and sigma is an absolute step in every coordinate.

What is estimated. With D held fixed at the current h, the Gaussian-smoothed loss is

    F(h) = E_e[ L(h + sigma D e) ],

and since h + sigma D e ~ N(h, sigma^2 D^2), its exact gradient is (Stein's lemma)

    grad F(h) = E_e[ D^-1 e L(h + sigma D e) ] / sigma
              = E_e[ D^-1 e (L(h + sigma D e) - L(h - sigma D e)) ] / (2 sigma)   (antithetic)
              = E_e[ D^-1 e (L(h + sigma D e) - L(h)) ] / sigma                     (baseline).

The estimators below are Monte Carlo means of these expressions, so they are unbiased for grad F.
Relative to the true gradient, a Taylor expansion gives grad F - grad L = (sigma^2 / 2)
grad tr(D^2 hess L) + O(sigma^4): a bias of O(sigma^2) (in units of the relative step).

Randomness. `differentiate(loop, hparams, key, noise_key=None)` receives the training key, which
must keep producing the same initialisation and minibatches, and the key the perturbations are
drawn from, by default `perturbation_key(key)` = `fold_in(key, PERTURBATION_STREAM)` (what
`hg.hypergradient` uses). The noise of sample i in window k comes from
`fold_in(fold_in(noise_key, i), k)` (ES is window 0): estimates are replayable, do not depend on
the chunk size, and PES with one window uses exactly ES's noise. Every perturbed run trains with
the same key as the unperturbed one (common random numbers), so minibatch noise cancels in the
differences.

Across outer steps. The estimate is random (`random_estimate = True`), and `hg.tune`,
`hg.hybrid_search` and `HypergradSearchCV` draw fresh noise at every outer step while the
training key stays fixed (`hypergrad.outer.step_noise_key`): step 0 uses `perturbation_key(key)`,
so a tune's first step is `hg.hypergradient(objective, h0, key, method=...)`, and step s > 0
`fold_in(perturbation_key(key), s)`; with `resample_key=True` each step's own training key gives
its noise. Were the noise the same at every step, every estimate would lie in the span of the same
n directions D e_i and the outer optimiser would descend a fixed random projection of the
gradient, its errors never averaging out. The tuners of one population share a step's noise
(they sit at different hyperparameters), as they share its training key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad._indexing import known_unread_names
from hypergrad._types import HParams, Key, PyTree
from hypergrad.methods.base import PERTURBATION_STREAM, Method, perturbation_key
from hypergrad.loop import Loop
from hypergrad._checks import is_int_at_least

__all__ = ["ES", "PES", "PERTURBATION_STREAM"]

# -- validation of the fields --------------------------------------------------------------------
def _check_sigma(cls: str, sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"{cls}(sigma={sigma!r}) must be a positive finite number, e.g. sigma=0.01 (a 1% "
                         "perturbation of each hyperparameter with relative=True)")
    return float(sigma)


def _check_int(cls: str, name: str, value: Any, hint: str, *, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if not is_int_at_least(value):
        raise ValueError(f"{cls}({name}={value!r}) must be a positive int{' or None' if optional else ''}; {hint}")
    return int(value)


def _check_bool(cls: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{cls}({name}={value!r}) must be True or False")
    return bool(value)


# -- shared pieces -------------------------------------------------------------------------------
def _noise_key(key: Key, noise_key: Key | None) -> Key:
    """The key the perturbations are drawn from: `noise_key`, or by default the training key's."""
    return perturbation_key(key) if noise_key is None else noise_key


def _noise(noise_key: Key, sample: jax.Array, window: jax.Array | int, hparams: HParams) -> HParams:
    """Standard normal noise shaped like `hparams` for `sample` in `window` (ES: window 0).

    One draw of all elements at once (then split by leaf): a single threefry computation per
    program keeps compilation short.
    """
    key = jax.random.fold_in(jax.random.fold_in(noise_key, sample), window)
    leaves, treedef = jax.tree.flatten(hparams)
    if not leaves:
        return hparams
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.result_type(*leaves))
    pieces = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
    return treedef.unflatten([p.reshape(jnp.shape(x)).astype(jnp.result_type(x)) for p, x in zip(pieces, leaves)])


def _working_dtype(dtype) -> np.dtype:
    """The dtype a hyperparameter is perturbed in: its own, or float32 for a narrower float
    (bfloat16, float16), whose spacing (2^-8 relative for bfloat16) would round a small step away."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def _widen(hparams: HParams) -> HParams:
    """`hparams` with every float leaf narrower than float32 cast to float32 (exactly: no rounding);
    the other leaves as they are."""
    def widen(h):
        dtype = _working_dtype(jnp.result_type(h))
        return h if dtype == jnp.result_type(h) else jnp.asarray(h).astype(dtype)

    return jax.tree.map(widen, hparams)


def _is_narrow(hparams: HParams) -> bool:
    return any(_working_dtype(jnp.result_type(h)) != jnp.result_type(h) for h in jax.tree.leaves(hparams))


def _baseline(loop: Loop, wide: HParams, value: jax.Array, key: Key, narrow: bool, antithetic: bool):
    """L(h) for the one-sided estimate: `value` unless the hyperparameters were widened, where the
    perturbed runs read float32 hyperparameters and the baseline must too (a run at the narrow
    ones rounds differently, and that difference over sigma would bias the estimate)."""
    if antithetic or not narrow:
        return value
    return loop.val_loss(loop.train(wide, key).params, wide)


def _scale(hparams: HParams, relative: bool) -> HParams:
    """D of the module docstring: |h| (1 where h == 0) for relative steps, else 1."""
    if not relative:
        return jax.tree.map(jnp.ones_like, hparams)
    return jax.tree.map(lambda h: jnp.where(h != 0, jnp.abs(h), jnp.ones_like(h)), hparams)


def _signs(antithetic: bool, dtype) -> jax.Array:
    return jnp.asarray([1.0, -1.0] if antithetic else [1.0], dtype)


def _perturb(hparams: HParams, scale: HParams, noise: HParams, sigma: float, signs: jax.Array) -> HParams:
    """Hyperparameters h + s sigma D e for each sign s, stacked on a leading axis."""
    def one(h, d, e):
        step = sigma * d * e
        return h[None] + signs.astype(h.dtype).reshape((-1,) + (1,) * h.ndim) * step[None]

    return jax.tree.map(one, hparams, scale, noise)


def _weight(losses: jax.Array, value: jax.Array, sigma: float, antithetic: bool) -> jax.Array:
    """The finite difference that multiplies the noise: (L+ - L-)/(2 sigma) or (L+ - L)/sigma."""
    losses = losses.astype(_working_dtype(losses.dtype))  # a bfloat16 loss: divide in float32
    if antithetic:
        return (losses[0] - losses[1]) / (2 * sigma)
    return (losses[0] - value.astype(losses.dtype)) / sigma


def _map_samples(fn: Callable[[jax.Array], PyTree], num_samples: int, chunk: int | None) -> PyTree:
    """fn over samples 0..n-1, vmapped, `chunk` samples at a time (None: all at once)."""
    samples = jnp.arange(num_samples)
    if chunk is None or chunk >= num_samples:
        return jax.vmap(fn)(samples)
    return jax.lax.map(fn, samples, batch_size=chunk)


def _estimate(contributions: HParams, scale: HParams, hparams: HParams) -> HParams:
    """Mean over samples of the weighted noise, mapped back from e-coordinates by D^-1, in each
    hyperparameter's own dtype (formed in the working dtype, cast once at the end)."""
    return jax.tree.map(lambda c, d, h: (jnp.mean(c, axis=0) / d).astype(jnp.result_type(h)),
                        contributions, scale, hparams)


def _zero_unread(objective: Any, hparams: HParams, grads: HParams) -> HParams:
    """`grads` with an exact 0 (of each leaf's shape and dtype) for every hyperparameter the objective
    never reads (`known_unread_names`: its true derivative is 0, so the Monte Carlo noise of its
    coordinate, mean zero, is dropped without bias; the other coordinates are untouched). Cost: the
    names' look-up at trace time (one trace of the objective the first time, none when its checks or
    a search traced it at these shapes), nothing in the compiled program but the zeros."""
    unread = set(known_unread_names(objective, hparams))
    if not unread:
        return grads
    return jax.tree_util.tree_map_with_path(
        lambda path, g: jnp.zeros_like(g) if jax.tree_util.keystr(path).strip("[]") in unread else g, grads)


def _window_unroll(loop: Loop) -> int | bool:
    # A fully unrolled objective (unroll=True) unrolls the window loop too.
    return True if loop.unroll is True else 1


# -- ES ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ES(Method):
    """Evolution-strategies estimate of the hypergradient (Gaussian smoothing).

    Salimans, Ho, Chen, Sidor & Sutskever (2017), "Evolution strategies as a scalable alternative
    to reinforcement learning"; as a hypergradient baseline in Vicol, Metz & Sohl-Dickstein (2021).
    Each sample draws e ~ N(0, I) shaped like the hyperparameters, trains at h + sigma D e (and at
    h - sigma D e when antithetic) and contributes D^-1 e times the finite difference of the
    validation loss; see the module docstring for D (relative steps) and the derivation.

        antithetic:  g = mean_i D^-1 e_i (L(h + sigma D e_i) - L(h - sigma D e_i)) / (2 sigma)
        otherwise:   g = mean_i D^-1 e_i (L(h + sigma D e_i) - L(h)) / sigma

    The value and scores returned are those of an unperturbed training run at `hparams` (so they
    equal `objective(hparams, key)`); without antithetic pairs that run is also the baseline L(h).

    Cost: 2 * num_samples + 1 training runs with antithetic pairs, num_samples + 1 without; no
    backward pass. Counted FLOPs (`hypergrad.accounting`) are a little less, because the vmapped
    perturbed runs compute once for all of them what depends on the key alone (the minibatch
    draw, and the initialisation when the model reads no hyperparameter), and read only the
    validation loss (no test scores or metrics): on a full-batch problem close to 2n + 1 runs;
    on a minibatch problem each perturbed run is a run less its draw, initialisation and skipped
    scoring, so small models with small batches count noticeably fewer than 2n + 1
    (`benchmarks/accounting_cost.py` counts it). Memory: the perturbed runs of min(chunk, num_samples) samples at once (twice
    that many runs when antithetic, vmapped), plus the unperturbed run; nothing grows with T.
    Bias: none for the gradient of the smoothed loss E[L(h + sigma D e)]; O(sigma^2) relative to
    the true gradient. Variance, to first order in sigma, for P hyperparameter elements and n
    samples: the error of the estimate scaled elementwise by D is a vector whose norm is about
    |D grad L| sqrt((P + 1) / n) (root mean square); element j's own error has standard deviation
    sqrt((|D grad L|^2 + (D_j grad_j L)^2) / n) / D_j, between |D grad L| / (D_j sqrt(n)) and
    sqrt(2) times that (the noise covariance of one sample is |a|^2 I + a a^T, a = D grad L). Every
    element's error grows with the gradient's norm over all P elements, so the sample count must
    grow with the number of hyperparameters; a per-step schedule of T values needs n >> T.
    A hyperparameter the objective never reads (`hg.hypergradient` warns of it) gets an exact 0,
    not the mean-zero noise of its coordinate: its true derivative, and that of the smoothed loss,
    is 0, so this is unbiased and removes that noise (the names come from one trace of the objective
    per objective and hyperparameter shapes, shared with its checks; `differentiate` on a loop alone
    does not know them and returns the raw estimate).
    A diverged perturbed run makes the estimate non-finite (`tune` then skips the step).
    Low precision: bfloat16 or float16 hyperparameters, whose spacing would round a small step
    sigma D e back to h (L+ == L-, a zero estimate), are cast exactly to float32, perturbed and
    trained there (so the runs compute with float32 hyperparameters) and the estimate is cast back
    to their dtype, unbiased as above; without antithetic pairs that costs one more training run,
    a float32 baseline. A loss computed in bfloat16 is itself rounded to its spacing: sigma must
    move it by more than that, or the differences are rounding.

    Noise. `hg.hypergradient(objective, h, key)` draws it from `fold_in(key, PERTURBATION_STREAM)`:
    the same key, the same estimate. `hg.tune` (populations too), `hg.hybrid_search` and
    `HypergradSearchCV` draw fresh noise at every outer step while training with the same key (the
    module docstring, "Across outer steps"): the first step's estimate is `hg.hypergradient`'s, and
    the steps' errors are independent, so they average out along the descent instead of all lying
    in the span of the same n directions. The noise is one draw over the hyperparameters' elements
    in the order of their sorted names, split by name: a hyperparameter's noise depends on the
    sizes of those whose names sort before it, so adding one whose name sorts earlier (even one
    the objective never reads, whose estimate is still exactly 0) or renaming one changes the other
    estimates for the same key, as a new draw would (unbiased either way); the space's order does not.

    Derivatives of the result: plain autodiff, so jax.grad, jacfwd, jacrev or jvp through
    `hg.hypergradient` with this method are exact derivatives of what it returns, at reverse or
    forward mode's cost and memory through all 2 * num_samples + 1 runs: the value's gradient is
    the objective's exact gradient (not this estimate: the value is the unperturbed run), and the
    grads' Jacobian is that of the estimate as a function of `hparams` (the noise held fixed by the
    key; with relative steps D moves with `hparams` too), a noisy quantity, not the objective's
    Hessian. For second-order hyper-derivatives use `hg.Reverse()` or `hg.Forward()`.

    Args:
        sigma: perturbation size: a fraction of each value with `relative=True` (e.g. 0.01),
            else an absolute step.
        num_samples: number of noise draws n (pairs when antithetic).
        antithetic: evaluate +e and -e for each draw (cancels the even-order terms and the
            constant; recommended).
        relative: perturb each hyperparameter in proportion to its magnitude (default), or by an
            absolute sigma.
        chunk: evaluate this many samples at a time (a `lax.map` over vmapped chunks) to bound
            memory; None evaluates all samples in one vmap.
    """

    random_estimate: ClassVar[bool] = True

    sigma: float
    num_samples: int
    antithetic: bool = True
    relative: bool = True
    chunk: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "sigma", _check_sigma("ES", self.sigma))
        object.__setattr__(self, "num_samples", _check_int(
            "ES", "num_samples", self.num_samples, "the number of noise draws, e.g. num_samples=16"))
        object.__setattr__(self, "antithetic", _check_bool("ES", "antithetic", self.antithetic))
        object.__setattr__(self, "relative", _check_bool("ES", "relative", self.relative))
        object.__setattr__(self, "chunk", _check_int(
            "ES", "chunk", self.chunk, "samples evaluated at once (memory bound), or None for all",
            optional=True))

    def value_and_grad(self, objective: Any, hparams: HParams, key: Key, data: Any, noise_key: Key | None = None,
                       check_fold: Callable[[Any], Any] | None = None):
        """`Method.value_and_grad`, with an exact 0 for each hyperparameter the objective never reads
        (`_zero_unread`)."""
        out, grads = super().value_and_grad(objective, hparams, key, data, noise_key, check_fold)
        return out, _zero_unread(objective, hparams, grads)

    def differentiate(self, loop: Loop, hparams: HParams, key: Key, noise_key: Key | None = None):
        value, scores = loop.readout(loop.train(hparams, key), hparams)
        noise_key = _noise_key(key, noise_key)
        wide = _widen(hparams)  # bfloat16/float16 hyperparameters are perturbed in float32
        baseline = _baseline(loop, wide, value, key, _is_narrow(hparams), self.antithetic)
        scale = _scale(wide, self.relative)
        signs = _signs(self.antithetic, jnp.result_type(value))

        def loss(h):  # the validation loss only (scores would compute the test loss too)
            return loop.val_loss(loop.train(h, key).params, h)

        def sample(i):
            noise = _noise(noise_key, i, 0, wide)
            losses = jax.vmap(loss)(_perturb(wide, scale, noise, self.sigma, signs))
            weight = _weight(losses, baseline, self.sigma, self.antithetic)
            return jax.tree.map(lambda e: weight.astype(e.dtype) * e, noise)

        contributions = _map_samples(sample, self.num_samples, self.chunk)
        return (value, scores), _estimate(contributions, scale, hparams)


# -- PES -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PES(Method):
    """Persistent evolution strategies over windows of the training run.

    Vicol, Metz & Sohl-Dickstein (2021), "Unbiased gradient estimation in unrolled computation
    graphs with persistent evolution strategies" (ICML). The T training steps are split into
    windows of `window` steps (the last one shorter when `window` does not divide T; one window
    when window >= T). Each particle carries its own training state from window to window; at the
    start of window k it draws fresh noise e_k, trains that window at h + s sigma D e_k (s = +1, and
    s = -1 for its antithetic twin, which accumulates the opposite noise) and accumulates
    xi_k = e_1 + ... + e_k. The estimate is the paper's sum over windows of
    xi_k (L_k(+) - L_k(-)) / (2 sigma^2) (written here in units of the standardised noise e), where
    the loss L_k of a window is the part of the objective it completes. Our objective is the
    validation loss at the end of training only, so every L_k but the last is zero and

        g = mean_i D^-1 xi_K,i (L_T(+) - L_T(-)) / (2 sigma),     xi_K = e_1 + ... + e_K.

    Why this is unbiased, and for what. Let the hyperparameters of window k be h + sigma D e_k with
    independent e_k, and F(h) = E[L_T(h + sigma D e_1, ..., h + sigma D e_K)] the loss smoothed by
    noise resampled every window (a validation loss that reads the hyperparameters itself, a
    problem with `model_reads_hparams=True`, reads those of the last window, h + sigma D e_K, as a
    particle's initialisation reads those of the first). By Stein's lemma applied to each window's copy of h,
    dF/dh = sum_k E[D^-1 e_k L_T] / sigma = E[D^-1 xi_K L_T] / sigma: the accumulated noise xi is
    exactly what every window's hyperparameters were perturbed by, including the windows whose
    effect on the final loss persists through the carried state (truncated ES, which would use
    e_K alone, drops those and is biased). So g is unbiased for grad F, and F differs from L by
    O(sigma^2) as for ES. Using the validation loss at the end of every window instead would be
    unbiased for the gradient of the sum of those losses, a different objective; it is not what
    `value` reports, so it is not done. With a single window (window >= T), PES is ES with the
    same noise, sample by sample.

    Within one call PES thus costs the same as ES and pays for per-window smoothing with a larger
    variance: xi_K has K = ceil(T / window) times the variance of one draw, and the noise of the
    windows in which a hyperparameter element has no effect (all but one for an element of a
    per-step schedule) only adds to it. Its purpose is the setting of the paper: the particle
    states persist between windows, so the unroll can be cut into pieces without the bias of
    truncation.

    The value and scores returned are those of an unperturbed training run at `hparams`.

    Noise: as for `ES`, drawn from `fold_in(key, PERTURBATION_STREAM)` by `hg.hypergradient`, and
    afresh at every outer step of `hg.tune`, `hg.hybrid_search` and `HypergradSearchCV` (the
    training key fixed; the first step's estimate is `hg.hypergradient`'s).

    Derivatives of the result: plain autodiff, as for `ES`: the value's gradient is the objective's
    exact gradient, the grads' Jacobian that of this estimate (noise held fixed by the key).

    Cost: 2 * num_samples + 1 training runs with antithetic pairs (num_samples + 1 without), plus
    one noise draw per window; no backward pass. Counted FLOPs are a little less, as for `ES`
    (the particles share the minibatch draw; they read only the validation loss). Memory: the states of the particles of
    min(chunk, num_samples) samples at once (two per sample when antithetic), vmapped; nothing
    grows with T. Bias: none for the gradient of the per-window smoothed loss F; O(sigma^2)
    relative to the true gradient. Low-precision (bfloat16, float16) hyperparameters are perturbed
    and trained in float32 and the estimate cast back, as for `ES`; without antithetic pairs their
    baseline is then a float32 run too: one more training run (num_samples + 2). A hyperparameter
    the objective never reads gets an exact 0, unbiased (its true derivative is 0), as for `ES`.

    Args:
        sigma: perturbation size (a fraction of each value with `relative=True`).
        num_samples: number of particles (antithetic pairs when antithetic).
        window: training steps per window, >= 1.
        antithetic: pair each particle with one carrying the opposite noise (recommended);
            without, the baseline is the unperturbed run: g = mean D^-1 xi (L_T - L(h)) / sigma.
        relative: perturb in proportion to each value (default) or by an absolute sigma.
        chunk: particles (pairs) run at a time, each chunk through all windows; None: all at once.
    """

    random_estimate: ClassVar[bool] = True

    sigma: float
    num_samples: int
    window: int
    antithetic: bool = True
    relative: bool = True
    chunk: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "sigma", _check_sigma("PES", self.sigma))
        object.__setattr__(self, "num_samples", _check_int(
            "PES", "num_samples", self.num_samples, "the number of particles, e.g. num_samples=16"))
        object.__setattr__(self, "window", _check_int(
            "PES", "window", self.window, "the number of training steps per window, e.g. window=10"))
        object.__setattr__(self, "antithetic", _check_bool("PES", "antithetic", self.antithetic))
        object.__setattr__(self, "relative", _check_bool("PES", "relative", self.relative))
        object.__setattr__(self, "chunk", _check_int(
            "PES", "chunk", self.chunk, "particles run at once (memory bound), or None for all", optional=True))

    def value_and_grad(self, objective: Any, hparams: HParams, key: Key, data: Any, noise_key: Key | None = None,
                       check_fold: Callable[[Any], Any] | None = None):
        """`Method.value_and_grad`, with an exact 0 for each hyperparameter the objective never reads
        (`_zero_unread`)."""
        out, grads = super().value_and_grad(objective, hparams, key, data, noise_key, check_fold)
        return out, _zero_unread(objective, hparams, grads)

    def differentiate(self, loop: Loop, hparams: HParams, key: Key, noise_key: Key | None = None):
        value, scores = loop.readout(loop.train(hparams, key), hparams)
        noise_key = _noise_key(key, noise_key)
        given, hparams = hparams, _widen(hparams)  # bfloat16/float16 ones are perturbed in float32
        baseline = _baseline(loop, hparams, value, key, _is_narrow(given), self.antithetic)
        scale = _scale(hparams, self.relative)
        signs = _signs(self.antithetic, jnp.result_type(value))
        # The data key does not depend on the hyperparameters: every particle sees the same batches.
        num_full, remainder = divmod(loop.num_steps, self.window)
        unroll = _window_unroll(loop)

        def sample(i):
            def advance(states, xi, noise, k, length):
                """Window k (`length` steps) at h + s sigma D e_k; xi += e_k."""
                hs = _perturb(hparams, scale, noise, self.sigma, signs)
                states = jax.vmap(lambda state, h: loop.run(state, h, k * self.window, length))(states, hs)
                return states, jax.tree.map(jnp.add, xi, noise)

            # Window 0's hyperparameters also initialise the optimiser state (an optimiser whose
            # state holds a hyperparameter, such as sgd_hd's initial learning rate, sees it there).
            noise = _noise(noise_key, i, 0, hparams)
            states = jax.vmap(lambda h: loop.init(h, key))(
                _perturb(hparams, scale, noise, self.sigma, signs))
            xi = jax.tree.map(jnp.zeros_like, hparams)
            last = noise  # the noise of the last window run so far
            if num_full:
                def body(carry, k):
                    states, xi, noise, _ = carry
                    states, xi = advance(states, xi, noise, k, self.window)
                    # The next window's noise is drawn here, so the program holds one draw in the
                    # loop and one before it (the last iteration's draw feeds the remainder).
                    return (states, xi, _noise(noise_key, i, k + 1, hparams), noise), None

                states, xi, noise, last = jax.lax.scan(body, (states, xi, noise, last),
                                                       jnp.arange(num_full), unroll=unroll)[0]
            if remainder:
                states, xi = advance(states, xi, noise, num_full, remainder)
                last = noise
            # Each particle is scored at the hyperparameters of its last window (a validation loss
            # that reads them, model_reads_hparams=True, depends on them directly); that window's
            # noise is in xi, so the estimate stays unbiased, and with one window it is ES's.
            hs = _perturb(hparams, scale, last, self.sigma, signs)
            losses = jax.vmap(loop.val_loss)(states.params, hs)
            weight = _weight(losses, baseline, self.sigma, self.antithetic)
            return jax.tree.map(lambda x: weight.astype(x.dtype) * x, xi)

        contributions = _map_samples(sample, self.num_samples, self.chunk)
        return (value, scores), _estimate(contributions, scale, given)
