"""A multilayer perceptron classifier written with flax.nnx, on a bundled data set.

The problem's parameters are the `nnx.Param` state of the model: `init(key)` builds the module
with `nnx.Rngs(key)` and splits off its Params; the losses merge them back with the (static)
graph definition and the rest of the state, held fixed. This is also the recipe for using any
flax.nnx model of your own with hypergrad (`nnx_problem`; `hypergrad.loop.NNX_RECIPE`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.errors import TraceContextError

from hypergrad._checks import is_int_at_least, is_number
from hypergrad.loop import NO_STATE_CHANNEL, flax_message, rng_draw_refusal
from hypergrad.problem import Problem
from hypergrad.problems import _data
from hypergrad.problems._labels import check_class_labels, check_pair
from hypergrad.problems._matmul import affine as _affine
from hypergrad.problems._losses import accuracy, cross_entropy, default_dtype, l2_penalty

__all__ = ["FeatureMajorDense", "MLP", "affine", "corrupted_examples", "flip_labels", "mlp_classifier",
           "noisy_mlp_classifier", "nnx_problem"]

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid}


class FeatureMajorDense(nnx.Module):
    """A dense layer on feature-major activations: `kernel @ x + bias`, x of shape (in, batch).

    The same function as `nnx.Linear` (kernel stored (out, in), as in PyTorch's Linear; the same
    LeCun-normal initialisation over fan-in and zero bias), laid out for searches that vmap many
    trials over one minibatch. Under `jax.vmap` over trials the kernels gain a leading trial axis
    (trials, out, in) while the minibatch is shared, so the first layer and its weight gradient are
    single matrix products over all trials' units at once ((trials * out, in) @ (in, batch)), the
    activations come out as (trials, out, batch) with no transposes, and the later layers are
    batched products whose batch axis already leads. With `nnx.Linear`'s (batch, features) layout
    XLA instead transposes the activations and their gradients (and the first kernel) between
    every layer, every step: on the digits MLP that layout ran a vmapped search at about 0.6x this
    one's speed (benchmarks/RESULTS.md).
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        init = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
        self.kernel = nnx.Param(init(rngs.params(), (out_features, in_features), dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return affine(self.kernel[...], self.bias[...], x)


def affine(kernel: jax.Array, bias: jax.Array, x: jax.Array) -> jax.Array:
    """`kernel @ x + bias[:, None]` for feature-major `x` (in, batch), with derivatives of every
    order that are plain (untransposed) matrix products.

    Autodiff of `kernel @ x` would give the kernel's gradient as `g @ x.T` and the input's as
    `kernel.T @ g`. XLA folds those transposes into the products, and XLA:CPU runs the folded
    (transposed-operand) small batched products of a vmapped search 2-3x slower than plain ones;
    it also sums the bias gradient with a slow row reduction. Here (`_matmul.affine`, a primitive
    with its own transpose rule) the kernel's and the bias's gradient are one canonical product
    `g @ copy([x; 1].T)` and the input's `copy(kernel.T) @ g`, where the copies are transposes
    XLA cannot fold away (`optimization_barrier`); and because those products are themselves
    `_matmul.matmul` primitives whose transposes are built the same way, a hypergradient, which
    differentiates them again (reverse over reverse, forward over reverse), also gets only
    canonical products: a `jax.custom_jvp` (this function's earlier form) chose the layouts of the
    first derivative only, and XLA:CPU ran two of each backward step's second-order products on
    its slow transposed-operand path (benchmarks/reverse_widths.md). The copies cost one
    transpose of `x` per layer and step (the shared minibatch for the first layer), and of the
    kernel where the input's gradient is needed. Values and derivatives of every order equal
    those of the plain expression to rounding (tests/test_mlp.py).
    """
    return _affine(kernel, bias, x)


class MLP(nnx.Module):
    """Dense layers with a nonlinearity between them; the last layer outputs logits.

    Maps inputs (batch, features) to logits (batch, classes), or with `class_major=True` to
    (classes, batch). Inside, activations are feature-major (see `FeatureMajorDense`: it makes
    vmapped searches faster); class-major logits also keep the loss's gradient in that layout, so
    the last layer's backward pass needs no transpose either (`mlp_classifier` uses them).
    """

    def __init__(self, sizes: Sequence[int], activation: str, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 class_major: bool = False):
        self.layers = nnx.List([
            FeatureMajorDense(a, b, rngs=rngs, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:])
        ])
        self.activation = activation
        self.class_major = class_major

    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        h = x.T
        for layer in self.layers[:-1]:
            h = act(layer(h))
        logits = self.layers[-1](h)
        return logits if self.class_major else logits.T


def _kernels(state) -> list[jax.Array]:
    """The weight matrices of a model's state (leaves whose path ends in 'kernel')."""
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state)
            if any(getattr(k, "key", None) == "kernel" for k in path)]


def nnx_problem(make_model, train_data, val_data, test_data=None, *, batch_size=None, name="nnx-model",
                cv=None, cv_labels=None, cv_seed=0, class_axis: int = -1) -> Problem:
    """An `hg.Problem` for a flax.nnx classifier `make_model(rngs) -> nnx.Module` mapping x to logits.

    Parameters are the model's `nnx.Param` leaves (`nnx.split(model, nnx.Param, ...)`). The rest
    of its state (BatchNorm's running statistics, Dropout's RNG state, counters) is taken from
    `make_model(nnx.Rngs(0))` and held fixed, as eval-mode inference holds it: the training loop
    carries no state that a forward pass updates and hands no per-step dropout key, so the model
    must be in eval mode (`model.eval()` in `make_model`; batch norm then normalises with fixed
    running statistics, the usual practice when fine-tuning, and dropout is off). A model whose
    forward pass would update its state (BatchNorm with use_running_average=False, Dropout not
    deterministic) is refused at construction. The non-Param state must not depend on the key.

    `train_loss` is the cross-entropy plus `0.5 * weight_decay * sum(kernel^2)` over every `kernel`
    when `hparams` has "weight_decay"; `val_loss` is the cross-entropy; "accuracy" is reported.
    `cv`, `cv_labels` and `cv_seed` are passed to `hg.Problem` (k-fold cross-validation over train
    and val pooled). `class_axis` is the axis of the model's logits that holds the classes (-1 for
    (batch, classes); 0 for a model such as `MLP(..., class_major=True)` that returns (classes, batch)).

    Each split is a pair (inputs, labels), the labels integer class indices in [0, classes) of one
    example's logits' shape without `class_axis` ((n,) for logits (n, classes)). Checked at
    construction (`check_class_labels`: the model runs abstractly on one example, nothing
    compiles): -1/+1 labels would train class 1 for -1 with a falsely low loss, 1-based labels
    make every loss NaN.

    Cost: one forward pass of the model per loss, as with its whole state; memory: one copy of the
    fixed state, which every compiled program reads as an argument (an array over 64 KiB:
    `hypergrad._compile.HOISTED_BYTES`) or holds as a constant (a smaller one). Bias: none beyond eval mode's
    (fixed batch statistics, no dropout).

    Raises:
        ValueError: `make_model` returns something other than an nnx.Module (`model.eval()`
            returns None); the model is in train mode; a split that is not a pair; labels that are
            not integers, of shape (n, 1), or outside [0, classes); a `class_axis` that does not
            hold the logits' classes.
    """
    graphdef, params, rest = _split_params(make_model(nnx.Rngs(0)))  # the static structure and fixed state

    def init(key):
        return _split_params(make_model(nnx.Rngs(key)))[1]

    def logits(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    splits = {"train_data": train_data, "val_data": val_data} | ({} if test_data is None else {"test_data": test_data})
    for argname, split in splits.items():
        check_pair(split, argname)
    try:
        check_class_labels({f"{argname}: the labels ({argname}[1])": split[1] for argname, split in splits.items()},
                           train_data[0], logits, params, class_axis, model="the model")
    except TraceContextError as error:  # the forward pass wrote to a Variable of the fixed state
        raise ValueError(_train_mode_message(error)) from None

    def train_loss(params, hparams, batch):
        x, y = batch
        loss = cross_entropy(logits(params, x), y, class_axis)
        if "weight_decay" in hparams:
            loss = loss + sum(l2_penalty(k, hparams["weight_decay"]) for k in _kernels(params))
        return loss

    def val_loss(params, batch):
        x, y = batch
        return cross_entropy(logits(params, x), y, class_axis)

    def acc(params, batch):
        x, y = batch
        return accuracy(logits(params, x), y, class_axis)

    return Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=train_data,
                   val_data=val_data, test_data=test_data, batch_size=batch_size,
                   metrics={"accuracy": acc}, name=name, cv=cv, cv_labels=cv_labels, cv_seed=cv_seed)


def _split_params(model: Any) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, Params, the rest of the state) of `make_model`'s model; a `ValueError` when it
    returned something else (`lambda rngs: Net(rngs).eval()` returns None, as nnx's `eval` does)."""
    if not isinstance(model, nnx.Module):
        raise ValueError(f"nnx_problem(make_model=...): make_model(rngs) returned {type(model).__name__}, not an "
                         "nnx.Module; return the model itself (model.eval() returns None: call it, then return "
                         "the model, e.g. def make_model(rngs): model = Net(rngs); model.eval(); return model)")
    return nnx.split(model, nnx.Param, ...)


def _train_mode_message(error: TraceContextError) -> str:
    """The refusal of a model whose forward pass updates its state (flax's `error` names what); a
    layer that draws random numbers in eval mode too (nnx.RNN without initial_carry) gets
    `rng_draw_refusal`'s message, not the advice to call model.eval()."""
    drawn = rng_draw_refusal("nnx_problem(make_model=...): the model's forward pass", error)
    if drawn is not None:
        return drawn
    what = flax_message(error)  # "Cannot mutate BatchStat from a different trace level"
    return (f"nnx_problem(make_model=...): the model is in train mode: its forward pass updates its state (flax: "
            f"{what!r}; BatchNorm updates its running statistics, Dropout draws from its RNG), which hypergrad "
            f"cannot carry: {NO_STATE_CHANNEL}. Call model.eval() on the model before returning it from make_model "
            "(or build it with BatchNorm(use_running_average=True) and Dropout(deterministic=True)): batch norm "
            "then uses its running statistics, held fixed, dropout is off, and nnx_problem trains the nnx.Param "
            "leaves only")


def mlp_classifier(
    dataset: str = "digits",
    hidden: Sequence[int] = (50,),
    batch_size: int | None = 100,
    *,
    activation: str = "tanh",
    seed: int = 0,
    cv: int | None = None,
) -> Problem:
    """An MLP classifier on a scikit-learn bundled data set ("digits", "iris", "wine", "breast_cancer").

    Args:
        dataset: which bundled set; split 60/20/20 (stratified, seeded) and standardised.
        hidden: widths of the hidden layers.
        batch_size: examples per step (clipped to the training set size), or None for full batch.
        activation: "tanh", "relu", "gelu" or "sigmoid".
        seed: seed of the split (and of the folds under cv).
        cv: None, or k >= 2 for stratified k-fold cross-validation over the train and validation
            splits pooled (80% of the data; the test split stays held out). Each fit then trains
            on n - n // k of the pooled examples and costs k times one fit (see `hg.Problem`).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: choose one of {sorted(_ACTIVATIONS)}")
    hidden = check_widths(hidden)
    if batch_size is not None and not is_int_at_least(batch_size):
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1 (examples per step) or None (full batch)")
    _check_seed(seed, "seed")
    if cv is not None and not is_int_at_least(cv, 2):
        raise ValueError(f"cv={cv!r}: mlp_classifier takes None or k >= 2 folds (explicit folds: build the problem "
                         "with hg.problems.nnx_problem(..., cv=[(train_idx, val_idx), ...]))")
    dtype = np.dtype(default_dtype())
    if dataset not in _data.CLASSIFICATION:
        raise ValueError(f"mlp_classifier(dataset={dataset!r}): choose one of {_data.CLASSIFICATION}")
    splits = _data.load(dataset, seed=seed, dtype=dtype)
    d = splits.train[0].shape[1]
    c = int(max(s[1].max() for s in splits)) + 1
    sizes = (d, *hidden, c)
    labels = None if cv is None else np.concatenate([splits.train[1], splits.val[1]])
    if batch_size is not None:  # clipped to what one fit trains on (Problem.num_train), as documented
        pooled = len(splits.train[1]) + len(splits.val[1])
        batch_size = min(int(batch_size), len(splits.train[1]) if cv is None else pooled - pooled // int(cv))
    return nnx_problem(lambda rngs: MLP(sizes, activation, rngs=rngs, dtype=dtype, class_major=True), splits.train,
                       splits.val, splits.test, batch_size=batch_size,
                       name=f"{dataset}-mlp" + ("" if cv is None else f"-cv{cv}"), cv=cv, cv_labels=labels,
                       cv_seed=seed, class_axis=0)


def check_widths(hidden: Any) -> tuple[int, ...]:
    """`hidden` as a tuple of ints >= 1 (a sequence of layer widths); else a `ValueError`."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence | np.ndarray) or not all(
            is_int_at_least(h) for h in hidden):
        raise ValueError(f"hidden={hidden!r} must be a sequence of layer widths, ints >= 1, e.g. hidden=(50,) "
                         "(or () for none)")
    return tuple(int(h) for h in hidden)


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`labels` with round(fraction * n) of them, chosen at random, moved to another class drawn
    uniformly; and the boolean mask of the flipped ones. Seeded: the same corruption every time.

    Raises:
        ValueError: `fraction` not in [0, 1], `num_classes` not an int >= 2, `seed` not an int >= 0.
    """
    if not (is_number(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r} must be a share of the labels in [0, 1]")
    if not is_int_at_least(num_classes, 2):
        raise ValueError(f"num_classes={num_classes!r} must be an int >= 2 (a flipped label moves to another class)")
    _check_seed(seed, "seed")
    rng = np.random.default_rng(seed)
    n = len(labels)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, int(round(fraction * n)), replace=False)] = True
    shift = rng.integers(1, num_classes, n)  # never 0: a flipped label always changes
    return np.where(flipped, (labels + shift) % num_classes, labels).astype(labels.dtype), flipped


def _check_seed(seed: Any, argname: str) -> None:
    if not is_int_at_least(seed, 0):
        raise ValueError(f"{argname}={seed!r} must be an int >= 0")


def _check_noise(noise: Any) -> None:
    if not (is_number(noise) and 0.0 <= noise < 1.0):
        raise ValueError(f"noise={noise!r} must be a share of training labels in [0, 1)")


def _checked_example_weight(weight: Any, num_train: int) -> jax.Array:
    """`weight` when it holds one weight per training example, shape (num_train,); else a
    `ValueError` at trace time (shapes are static), which `hg.hypergradient`, the searches and `tune`
    raise before compiling. JAX would clamp the example index instead: every example past the end
    would silently share the last weight, and that weight the sum of their hypergradients."""
    shape = np.shape(weight)
    if shape != (num_train,):
        raise ValueError(f"hparams['example_weight'] has shape {shape}; give one weight per training example, "
                         f"shape ({num_train},) for this problem's {num_train} training examples (e.g. "
                         f"hg.Uniform(0.0, 1.0, shape=({num_train},)))")
    return weight


def _num_classes(problem: Problem) -> int:
    return int(max(np.max(np.asarray(s[1])) for s in (problem.train_data, problem.val_data, problem.test_data))) + 1


def _flipped_training_labels(base: Problem, noise: float, noise_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`flip_labels` of `base`'s training labels: (noisy labels, mask of the flipped ones)."""
    return flip_labels(np.asarray(base.train_data[1]), noise, _num_classes(base), noise_seed)


def corrupted_examples(dataset: str = "digits", noise: float = 0.3, *, seed: int = 0,
                       noise_seed: int = 0) -> np.ndarray:
    """Which training examples `noisy_mlp_classifier(dataset, noise, seed=seed,
    noise_seed=noise_seed)` gave a flipped label: a boolean mask in training order (the order of
    the example weights), for judging learned weights; training never reads it. The split
    depends only on `dataset` and `seed`, so the model's width and batch size do not matter here.

    Raises:
        ValueError: `noise` not in [0, 1), a seed not an int >= 0 (before any data is loaded).
    """
    _check_noise(noise)
    _check_seed(noise_seed, "noise_seed")
    return _flipped_training_labels(mlp_classifier(dataset, batch_size=None, seed=seed), noise, noise_seed)[1]


def noisy_mlp_classifier(
    dataset: str = "digits",
    noise: float = 0.3,
    hidden: Sequence[int] = (50,),
    batch_size: int | None = 100,
    *,
    activation: str = "tanh",
    seed: int = 0,
    noise_seed: int = 0,
) -> Problem:
    """`mlp_classifier` with a share `noise` of the TRAINING labels flipped to another class (seeded),
    and a weight per training example as an optional hyperparameter: data hyper-cleaning
    (Franceschi et al. 2017). Validation and test labels stay clean.

    Training examples carry their index as a third leaf, `(x, y, index)`, so a minibatch knows which
    weights it reads. With `hparams["example_weight"]` of shape (n_train,) the training loss is
    `mean_i w[index_i] * CE_i` (plus the weight decay as in `mlp_classifier`); without it, the plain
    mean. Weights of another length (the size of another split, say) are a `ValueError` naming the
    length needed, raised when the objective is traced: by `hg.hypergradient`, the searches and `tune`
    before anything compiles. Which labels were corrupted: `flip_labels(y_train, noise, classes, noise_seed)[1]`, the
    same seeded draw (for judging learned weights; training never reads it).
    """
    _check_noise(noise)
    _check_seed(noise_seed, "noise_seed")
    base = mlp_classifier(dataset, hidden, batch_size, activation=activation, seed=seed)
    x = np.asarray(base.train_data[0])
    noisy, _ = _flipped_training_labels(base, noise, noise_seed)
    num_classes = _num_classes(base)
    graphdef, _ = nnx.split(MLP((x.shape[1], *tuple(hidden), num_classes), activation, rngs=nnx.Rngs(0),
                                dtype=x.dtype, class_major=True))

    def train_loss(state, hparams, batch):
        inputs, labels, index = batch
        out = nnx.merge(graphdef, state)(inputs)
        per_example = optax.softmax_cross_entropy_with_integer_labels(out, labels, axis=0)
        if "example_weight" in hparams:
            per_example = _checked_example_weight(hparams["example_weight"], len(noisy))[index] * per_example
        loss = jnp.mean(per_example)
        if "weight_decay" in hparams:
            loss = loss + sum(l2_penalty(k, hparams["weight_decay"]) for k in _kernels(state))
        return loss

    return dataclasses.replace(base, train_data=(x, noisy, np.arange(len(noisy))), train_loss=train_loss,
                               name=f"{dataset}-noisy{int(round(100 * noise))}-mlp")
