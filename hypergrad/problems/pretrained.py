"""Pretrained source models that ship offline: trained in-process once per machine, cached as `.npz`.

Nothing downloads. `pretrained_digits_mlp(...)` trains `hg.problems.MLP` (flax.nnx) on scikit-learn's
bundled digits 0-4 and caches its state in `cache_dir()` under a name that hashes its whole
configuration (sizes, steps, rate, seed, format version) and what trains it (`trained_by`: the jax
and jaxlib versions and the backend, whose arithmetic can differ; `trained_with`: the flax and optax
versions, whose code initialises and trains the model): a second call with the same configuration in
the same environment loads the file, a new configuration (or a new JAX, flax or optax, another
backend) trains a new model, so a model cached by an older library never stands in for this one's.
Files are plain `.npz` (one array per parameter path plus the configuration as a string) read with
`allow_pickle=False`; a file that cannot be read, or whose configuration, paths, shapes or dtypes
differ, is rebuilt with a warning and never used. Writes go to a temporary file renamed into place, so
two processes that train the same model at once both end with a complete file.

`pretrained_digits_cnn(...)` does the same for a small convolutional network (`hg.problems.cnn.CNN`)
on the 8 x 8 images (pixels scaled to [0, 1]).

`digits_transfer(shots, model=, target=)` is the fine-tuning problem built on them (`hg.problems.finetune`),
with `shots` labelled training examples per target class:

- target "5-9": the source learnt digits 0-4; the target is digits 5-9 (another label set, so a
  fresh head by default);
- target "shifted": the source learnt a fixed stratified quarter of all ten digits (clean); the
  target is the other three quarters, each image moved by `shift` pixels in one of the four
  directions (drawn per image) with Gaussian noise of standard deviation `noise` added: the same
  ten classes in a shifted domain (the source's head is kept by default).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
from flax import nnx

from hypergrad._caches import user_cache_dir
from hypergrad._checks import is_int_at_least, is_number, users_stacklevel
from hypergrad._files import replaced_atomically
from hypergrad._types import Key, PyTree
from hypergrad.problem import Problem
from hypergrad.problems import _data
from hypergrad.problems._losses import cross_entropy, default_dtype
from hypergrad.problems.cnn import CNN
from hypergrad.problems.finetune import finetune, leaf_path
from hypergrad.problems.mlp import MLP, check_widths

__all__ = ["cache_dir", "cached_params", "digits_images", "digits_source_target", "digits_transfer",
           "image_source_target", "load_params", "pretrain_cnn", "pretrain_mlp", "pretrained_digits_cnn",
           "pretrained_digits_mlp", "save_params", "shift_and_noise", "trained_by", "trained_with"]

FORMAT_VERSION = 3
"""Bumped whenever the pretraining recipe changes, so old cache files are never reused (2: Adam's
decays in float32, so the weights no longer depend on `jax_enable_x64`; 3: the digits 0-4 MLP's
inputs standardised with statistics of the source examples alone, `digits_source_target`)."""
CACHE_ENV = "HYPERGRAD_CACHE"
"""Environment variable naming the cache folder (overrides the XDG default)."""
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
TEST_PER_CLASS = 40
"""Held-out target examples per class (digits has 174 to 183 per class)."""
MODELS = ("mlp", "cnn")
TARGETS = ("5-9", "shifted")
SHIFTED_SOURCE = "clean-quarter"
"""The source of the "shifted" target: a fixed stratified quarter of all ten digits, clean."""
SHIFTED_SOURCE_FRACTION = 0.25
IMAGE_SIZE = 8
"""The digits' images are 8 x 8 pixels."""
SHIFT = 1
"""The "shifted" target's default shift, in pixels (`shift_and_noise`)."""
NOISE = 0.2
"""The "shifted" target's default Gaussian noise (`shift_and_noise`)."""
SHIFT_NOISE_READ = {"shift": "moves the 'shifted' target's images only",
                    "noise": "blurs the 'shifted' target's images only"}
"""What `shift` and `noise` change, for the refusals of either given with a target that never reads them."""


def cache_dir(path: str | os.PathLike | None = None) -> str | None:
    """The folder pretrained models are cached in: `path` if given, else `$HYPERGRAD_CACHE`, else
    `$XDG_CACHE_HOME/hypergrad/pretrained`, else `~/.cache/hypergrad/pretrained` (the user cache
    folder of `hypergrad._caches.user_cache_dir`, shared with the compilation cache: a relative
    `$XDG_CACHE_HOME` is ignored). A leading `~` (in `path` or a variable) is the home folder, as in
    a shell. None when a `~` is left that no home folder expands (HOME unset and no password entry,
    or `~user` naming a user this machine does not have): the models are then trained in each
    process and not cached (`cached_params` warns, naming the value that did not expand), never
    written under a folder named `~` in the working directory."""
    if path is not None:
        folder = os.path.expanduser(os.fspath(path))
    elif os.environ.get(CACHE_ENV):
        folder = os.path.expanduser(os.environ[CACHE_ENV])
    else:
        base = user_cache_dir()
        return None if base is None else os.path.join(base, "hypergrad", "pretrained")
    return None if folder.startswith("~") else folder


def trained_by() -> dict[str, str]:
    """What the cache key records of the environment a model is trained in: the jax and jaxlib
    versions and the default backend ("cpu", "gpu", "tpu"). The same recipe trained by another JAX
    or on another backend can give other weights (other kernels, other rounding), so each gets its
    own file. Cost: starts JAX's backend if nothing has (training the model would)."""
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend()}


def trained_with() -> dict[str, str]:
    """The versions of the libraries beside JAX whose code makes a cached model, recorded in the
    cache key beside `trained_by()`'s: flax (nnx's initialisers and `nnx.Rngs` streams draw the
    initial weights) and optax (Adam trains them). Another flax or optax can make other weights from
    the same recipe, so, as with another JAX, each gets its own file."""
    return {"flax": flax.__version__, "optax": optax.__version__}


def _config_text(config: Mapping[str, Any]) -> str:
    return json.dumps({**config, "format": FORMAT_VERSION, "trained_by": {**trained_by(), **trained_with()}},
                      sort_keys=True)


def cache_path(name: str, config: Mapping[str, Any], directory: str | os.PathLike | None = None) -> str | None:
    """`<cache_dir>/<name>-<16 hex digits of the SHA-256 of the configuration, `trained_by()` and
    `trained_with()`>.npz`;
    None when `cache_dir` is None (no home folder)."""
    digest = hashlib.sha256(_config_text(config).encode()).hexdigest()[:16]
    folder = cache_dir(directory)
    return None if folder is None else os.path.join(folder, f"{name}-{digest}.npz")


def save_params(path: str, params: PyTree, config: Mapping[str, Any]) -> None:
    """Writes `params` (any pytree of arrays) and `config` to `path` as `.npz`, atomically."""
    arrays = {f"param:{leaf_path(p)}": np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with replaced_atomically(path, binary=True) as f:
        np.savez(f, config=np.asarray(_config_text(config)), **arrays)


def load_params(path: str, template: PyTree, config: Mapping[str, Any]) -> PyTree:
    """The arrays in `path` arranged as `template` (a pytree with the expected paths, shapes and
    dtypes: those `save_params` writes for it).

    Raises:
        ValueError: the file is unreadable, was written for another configuration, or lacks a path
            or holds another shape or dtype (the message says which).
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            found = {k: np.array(stored[k]) for k in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    if str(found.get("config", "")) != _config_text(config):
        raise ValueError(f"{path}: written for another configuration")
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for p, like in paths:
        array = found.get(f"param:{leaf_path(p)}")
        if array is None or array.shape != np.shape(like):
            raise ValueError(f"{path}: parameter {leaf_path(p)!r} missing or of another shape")
        expected = np.asarray(like).dtype  # the dtype save_params writes for the template's leaf
        if array.dtype != expected:  # e.g. a float16 file: its weights are not the recipe's
            raise ValueError(f"{path}: parameter {leaf_path(p)!r} is stored as {array.dtype}, not {expected}")
        leaves.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def cached_params(name: str, config: Mapping[str, Any], template: PyTree, build: Callable[[], PyTree],
                  directory: str | os.PathLike | None = None) -> PyTree:
    """`build()` once per configuration: loaded from the cache when a valid file is there, else
    built, saved and returned. A corrupt or mismatched file is rebuilt with a `UserWarning`. Where
    the cache cannot be used (no home folder, so `cache_dir` is None; a folder that cannot be
    created or written: a read-only home, a path under a file), the model built is returned
    uncached, with one `UserWarning` naming the folder and `HYPERGRAD_CACHE`: every process then
    builds it anew (seconds)."""
    path = cache_path(name, config, directory)
    if path is None:
        _warn_uncached(*_unexpanded(directory), directory)
        return build()
    if os.path.exists(path):
        try:
            return load_params(path, template, config)
        except ValueError as err:
            warnings.warn(f"pretrained cache: {err}; rebuilding it", UserWarning, stacklevel=users_stacklevel())
    params = build()
    try:
        save_params(path, params, config)
    except OSError as err:  # a read-only home, a folder under a file: the model is good, only the cache is not
        _warn_uncached(f"{path} cannot be written ({type(err).__name__}: {err.strerror or err})", None, directory)
    return params


def _unexpanded(directory: str | os.PathLike | None) -> tuple[str, str | None]:
    """(why, advice) for a `cache_dir(directory)` of None: the `~` left in `directory` (a problem's
    `cache=`) or in `$HYPERGRAD_CACHE`, where one gave the folder, is named with its cause (no user
    of that name, or no home folder for this user) and the fix is to correct that value (setting
    the variable, the advice for the default folder, would not help where it is the cause); None
    advice is `_warn_uncached`'s default."""
    no_home = "HOME is unset and this user has no password entry"
    if directory is None and not os.environ.get(CACHE_ENV):
        return f"no home folder was found to hold the cache ({no_home}, so '~' cannot be expanded)", None
    named, value = ("cache=", os.fspath(directory)) if directory is not None else (f"{CACHE_ENV}=",
                                                                                   os.environ[CACHE_ENV])
    user = value[1:].split("/", 1)[0]
    cause = f"no user {user!r} exists on this machine" if user else f"no home folder was found ({no_home})"
    fix = "an absolute folder you can write" + (", or '~/...' for one in your own home folder" if user else "")
    advice = f"to keep it, correct {'cache=' if directory is not None else CACHE_ENV}: give {fix}"
    return f"{named}{value!r} cannot be expanded: {cause}, so '~{user}' names no folder", advice


def _warn_uncached(why: str, advice: str | None, directory: str | os.PathLike | None) -> None:
    """Warns that the model is not cached; `HYPERGRAD_CACHE` only names the folder where no `directory`
    (a problem's `cache=`) was given, so with one the advice is another folder, or none. `advice`,
    when given, replaces that default (a value that cannot be expanded is corrected, `_unexpanded`)."""
    if advice is None and directory is None:
        advice = f"set {CACHE_ENV} to a folder you can write to keep it"
    elif advice is None:
        advice = (f"give cache= a folder you can write to keep it, or leave it out for the folder {CACHE_ENV} "
                  "names (or the default one)")
    warnings.warn(f"pretrained cache: {why}; the model trained now is used without being cached, so the next "
                  f"process trains it again ({advice})", UserWarning, stacklevel=users_stacklevel())


def digits_source_target(dtype=np.float32) -> tuple[tuple, tuple]:
    """All of digits (in scikit-learn's order), split into the source task (digits 0-4) and the
    target task (digits 5-9, relabelled 0-4), both standardised with the per-pixel mean and
    standard deviation of the source examples alone (the source model's training set; a pixel
    constant there is only centred): no target image, held-out test images included, enters the
    preprocessing the source model is pretrained with (format 3; before, the statistics came from a
    10-class split of all of digits, target examples among them)."""
    x, y = _data.raw("digits")
    source = np.isin(y, SOURCE_CLASSES)
    mean, std = x[source].mean(axis=0), x[source].std(axis=0)
    x = ((x - mean) / np.where(std > 1e-8, std, 1.0)).astype(dtype)
    return (x[source], y[source]), (x[~source], (y[~source] - len(SOURCE_CLASSES)).astype(np.int32))


def _mlp(sizes: Sequence[int], key: Key | int = 0) -> MLP:
    return MLP(tuple(sizes), "tanh", rngs=nnx.Rngs(key), dtype=jnp.float32, class_major=True)


def _cnn(channels: Sequence[int], classes: int, key: Key | int = 0) -> CNN:
    return CNN(tuple(channels), classes, rngs=nnx.Rngs(key), dtype=jnp.float32)


def digits_images(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as images (N, 8, 8, 1), pixels scaled from 0-16 to [0, 1], and their labels."""
    x, y = _data.raw("digits")
    return (x / 16.0).reshape(-1, 8, 8, 1).astype(dtype), y


def _translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`images` (N, H, W, C) moved by (dy, dx) pixels, zeros entering at the far edge."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return out


def _check_shift_noise(shift: Any, noise: Any, size: int) -> None:
    if not (is_int_at_least(shift, 0) and shift < size):
        raise ValueError(f"shift={shift!r} must be an int of pixels from 0 to {size - 1} (the images are {size} pixels "
                         "wide; a larger move leaves nothing of them)")
    if not (is_number(noise) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise={noise!r} must be a finite standard deviation >= 0 (0: no noise)")


def _check_seed(seed: Any, what: str, argname: str = "seed") -> None:
    if not is_int_at_least(seed, 0):
        raise ValueError(f"{argname}={seed!r} must be an int >= 0 (the seed of {what})")


def _check_recipe(steps: Any, lr: Any, seed: Any, steps_name: str = "steps") -> None:
    """Refuses a pretraining recipe before anything trains (or is cached under its name)."""
    if not is_int_at_least(steps):
        raise ValueError(f"{steps_name}={steps!r} must be an int >= 1 (full-batch Adam steps of pretraining)")
    if not (is_number(lr) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} must be a finite number > 0 (Adam's learning rate for pretraining)")
    _check_seed(seed, "the model's initialisation")


def _check_channels(channels: Any) -> tuple[int, int]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence | np.ndarray) or len(channels) != 2 \
            or not all(is_int_at_least(c) for c in channels):
        raise ValueError(f"channels={channels!r} must be the two convolutions' widths, ints >= 1, e.g. (8, 16)")
    return int(channels[0]), int(channels[1])


def shift_and_noise(images: np.ndarray, *, shift: int = SHIFT, noise: float = NOISE, seed: int = 0) -> np.ndarray:
    """Each image (N, H, W, C) moved by `shift` pixels up, down, left or right (drawn per image from
    `seed`; zeros enter), plus Gaussian noise of standard deviation `noise`. Deterministic in `seed`.

    Raises:
        ValueError: `shift` not an int in [0, min(H, W)), `noise` not finite and >= 0, `seed` not an
            int >= 0.
    """
    _check_shift_noise(shift, noise, min(np.shape(images)[1:3]))
    _check_seed(seed, "the moves and the noise")
    rng = np.random.default_rng(seed)
    moves = rng.integers(0, 4, len(images))
    out = np.zeros_like(images)
    for index, (dy, dx) in enumerate([(shift, 0), (-shift, 0), (0, shift), (0, -shift)]):
        out[moves == index] = _translate(images[moves == index], dy, dx)
    return (out + noise * rng.normal(size=images.shape)).astype(images.dtype)


def _quarter(y: np.ndarray) -> np.ndarray:
    """A fixed stratified `SHIFTED_SOURCE_FRACTION` of the examples (seed 0), as a boolean mask."""
    rng, mask = np.random.default_rng(0), np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        mask[members[:int(round(SHIFTED_SOURCE_FRACTION * len(members)))]] = True
    return mask


def image_source_target(target: str = "5-9", *, shift: int | None = None, noise: float | None = None,
                        dtype=np.float32) -> tuple[tuple, tuple]:
    """The images (`digits_images`) split into (source, target), each (images, labels): for "5-9",
    digits 0-4 and digits 5-9 relabelled 0-4; for "shifted", a fixed stratified quarter of all
    digits (clean) and the other three quarters through `shift_and_noise(shift=, noise=)` (default
    shift 1, noise 0.2). A `shift` or `noise` given with "5-9", whose images are not moved, is a
    `ValueError` (`_unread_shift_noise`), raised before any image is loaded."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r}: choose one of {TARGETS}")
    _unread_shift_noise(target, shift=shift, noise=noise)
    if target == "5-9":
        x, y = digits_images(dtype)
        source = np.isin(y, SOURCE_CLASSES)
        return (x[source], y[source]), (x[~source], (y[~source] - len(SOURCE_CLASSES)).astype(np.int32))
    shift, noise = SHIFT if shift is None else shift, NOISE if noise is None else noise
    _check_shift_noise(shift, noise, IMAGE_SIZE)
    x, y = digits_images(dtype)
    source = _quarter(y)
    return (x[source], y[source]), (shift_and_noise(x[~source], shift=shift, noise=noise), y[~source])


def _unread_shift_noise(target: str, **given: Any) -> None:
    """Refuses, as `digits_transfer` does (`_read_keywords`), `shift` or `noise` given (not None)
    with a target other than "shifted", which never reads them (the same images were built with them
    or without them), naming every one given."""
    unread = [name for name in ("shift", "noise") if given[name] is not None]
    if target == "shifted" or not unread:
        return
    values = ", ".join(f"{name}={given[name]!r}" for name in unread)
    names = " and ".join(unread)
    raise ValueError(f"image_source_target(target={target!r}, {values}): "
                     + " and ".join(f"{name} {SHIFT_NOISE_READ[name]}" for name in unread)
                     + f"; drop {names} for target={target!r}, or use target='shifted'")


def _source_data(config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The pretraining data a configuration names, in its model's input layout."""
    if config["model"] == "mlp" and config["source"] == list(SOURCE_CLASSES):
        return digits_source_target(dtype=np.float32)[0]  # standardised features (source statistics: format 3)
    (x, y), _ = image_source_target("5-9" if config["source"] == list(SOURCE_CLASSES) else "shifted")
    return (x.reshape(len(x), -1), y) if config["model"] == "mlp" else (x, y)


def pretrain_mlp(config: Mapping[str, Any]) -> nnx.State:
    """Trains `MLP(config["sizes"])` (tanh, float32) on its source (digits 0-4, or the clean
    quarter): full-batch Adam with rate `config["lr"]` for `config["steps"]` steps from
    `nnx.Rngs(config["seed"])`. Returns its state.

    Cost: `steps` forward-backward passes over about 900 examples (a few seconds on a CPU).
    """
    x, y = _source_data(config)
    return _train_full_batch(_mlp(config["sizes"], config["seed"]), x, y, config, class_axis=0)


def pretrain_cnn(config: Mapping[str, Any]) -> nnx.State:
    """Trains `CNN(config["channels"], config["classes"])` (float32) on its source images as
    `pretrain_mlp` trains the MLP. Cost: `steps` passes over about 450-900 images, about three
    times the MLP's multiply-adds per example (seconds on a CPU)."""
    x, y = _source_data(config)
    return _train_full_batch(_cnn(config["channels"], config["classes"], config["seed"]), x, y, config,
                             class_axis=-1)


def _train_full_batch(model: nnx.Module, x: np.ndarray, y: np.ndarray, config: Mapping[str, Any],
                      class_axis: int) -> nnx.State:
    graphdef, state = nnx.split(model)
    # Adam's decays as float32 arrays: from Python floats optax computes the bias correction
    # 1 - b^t in the default float, float64 under jax_enable_x64, so the weights (cached under a
    # key that does not name the mode) depended on the mode of whichever process trained them.
    opt = optax.adam(config["lr"], b1=np.float32(0.9), b2=np.float32(0.999))

    def loss(s):
        return cross_entropy(nnx.merge(graphdef, s)(x), y, class_axis)

    @jax.jit
    def train(s):
        def step(carry, _):
            s, o = carry
            updates, o = opt.update(jax.grad(loss)(s), o, s)
            return (optax.apply_updates(s, updates), o), None
        return jax.lax.scan(step, (s, opt.init(s)), None, length=config["steps"])[0][0]

    return train(state)


def _source_config(model: str, source: str, steps: int, lr: float, seed: int) -> dict[str, Any]:
    _check_recipe(steps, lr, seed)
    if source == "0-4":
        return {"model": model, "steps": int(steps), "lr": float(lr), "seed": int(seed),
                "source": list(SOURCE_CLASSES)}
    if source != SHIFTED_SOURCE:
        raise ValueError(f"source={source!r}: choose '0-4' or {SHIFTED_SOURCE!r} (the shifted target's source)")
    return {"model": model, "steps": int(steps), "lr": float(lr), "seed": int(seed), "source": source,
            "inputs": "pixels/16"}


def pretrained_digits_mlp(hidden: Sequence[int] = (64, 64), *, steps: int = 300, lr: float = 3e-3, seed: int = 0,
                          cache: str | os.PathLike | None = None, source: str = "0-4"
                          ) -> tuple[nnx.GraphDef, nnx.State]:
    """An MLP 64 -> hidden -> classes pretrained on its source, from the cache or trained once
    (`pretrain_mlp`).

    Args:
        hidden: hidden widths; steps, lr, seed: the pretraining recipe (all part of the cache key).
        cache: the cache folder (default `cache_dir()`).
        source: "0-4" (digits 0-4, standardised features, 5 classes) or "clean-quarter" (the
            shifted target's source: a quarter of all ten digits, pixels in [0, 1], 10 classes).

    Returns:
        (graphdef, state): `nnx.merge(graphdef, state)` is the pretrained model (float32).
    """
    hidden = check_widths(hidden)
    config = _source_config("mlp", source, steps, lr, seed)
    classes = len(SOURCE_CLASSES) if source == "0-4" else 10
    config.update(sizes=[64, *map(int, hidden), classes], activation="tanh")
    graphdef, template = nnx.split(_mlp(config["sizes"]))
    state = cached_params("digits-mlp", config, template, lambda: pretrain_mlp(config), cache)
    return graphdef, state


def pretrained_digits_cnn(channels: Sequence[int] = (8, 16), *, steps: int = 300, lr: float = 3e-3, seed: int = 0,
                          cache: str | os.PathLike | None = None, source: str = "0-4"
                          ) -> tuple[nnx.GraphDef, nnx.State]:
    """A small CNN (`hg.problems.cnn.CNN`) pretrained on 8 x 8 digit images (pixels in [0, 1]), from
    the cache or trained once (`pretrain_cnn`), as `pretrained_digits_mlp`.

    Args:
        channels: the two convolutions' widths; steps, lr, seed: the recipe (all part of the cache key).
        cache: the cache folder (default `cache_dir()`).
        source: "0-4" (digits 0-4, 5 classes) or "clean-quarter" (a quarter of all ten digits, 10 classes).

    Returns:
        (graphdef, state): `nnx.merge(graphdef, state)` maps images (N, 8, 8, 1) to logits (N, classes).
    """
    channels = _check_channels(channels)
    config = _source_config("cnn", source, steps, lr, seed)
    config.update(channels=list(channels), classes=len(SOURCE_CLASSES) if source == "0-4" else 10)
    graphdef, template = nnx.split(_cnn(config["channels"], config["classes"]))
    state = cached_params("digits-cnn", config, template, lambda: pretrain_cnn(config), cache)
    return graphdef, state


def _few_shot_split(y: np.ndarray, shots: int | str, val_shots: int, seed: int) -> tuple[np.ndarray, ...]:
    """(train, val, test) indices: per class, a seeded permutation whose last `TEST_PER_CLASS` are
    test (the same examples for every `shots`), `val_shots` after the first `shots` validation, and
    the first `shots` training ("all": every example not held out, so classes may differ by a few)."""
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(y, return_counts=True)
    fewest = int(counts.min())
    most = fewest - TEST_PER_CLASS - val_shots  # what every class can give (the limit over all of them)
    if most < 1 or (shots != "all" and not 1 <= shots <= most):
        room = fewest - TEST_PER_CLASS  # shots + val_shots per class, each at least 1
        trained = 1 if shots == "all" else shots
        if most >= 1:
            advice = f"give shots from 1 to {most} (or pass shots='all')"
        elif trained < room:
            advice = f"lower val_shots to at most {room - trained}"
        else:
            advice = f"give shots and val_shots that add up to at most {room}, e.g. shots={room - 1}, val_shots=1"
        raise ValueError(f"shots={shots} with val_shots={val_shots}: the smallest class (label "
                         f"{labels[counts.argmin()]} of the task) has {fewest} examples, {TEST_PER_CLASS} held out "
                         f"for test; {advice}")
    parts: tuple[list, list, list] = ([], [], [])
    for label in labels:
        members = rng.permutation(np.flatnonzero(y == label))
        take = len(members) - TEST_PER_CLASS - val_shots if shots == "all" else shots
        parts[0].append(members[:take])
        parts[1].append(members[take:take + val_shots])
        parts[2].append(members[-TEST_PER_CLASS:])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _fresh_head(prefix: str, init: Callable) -> Callable[[Key, PyTree], PyTree]:
    """`head(key, state)`: `state` with the layer at `prefix` re-initialised: its kernel drawn by
    `init(key, shape, dtype)`, its bias zero."""
    def head(key, state):
        def fresh(path, leaf):
            name = leaf_path(path)
            if not name.startswith(prefix + "/"):
                return leaf
            return init(key, leaf.shape, leaf.dtype) if "/kernel" in name else jnp.zeros_like(leaf)

        return jax.tree_util.tree_map_with_path(fresh, state)

    return head


def _fresh_network(build: Callable[[Key], nnx.Module]) -> Callable[[Key, PyTree], PyTree]:
    """`head(key, state)`: a whole new network `build(key)` (training from scratch), in the
    dtypes of `state`."""
    def head(key, state):
        fresh = nnx.split(build(key))[1]
        return jax.tree.map(lambda new, old: new.astype(old.dtype), fresh, state)

    return head


class _Source(NamedTuple):
    graphdef: nnx.GraphDef
    state: nnx.State
    layers: list[str]        # the groups, input to output; the last is the head
    head_init: Callable      # the head kernel's initialiser
    build: Callable          # key -> a fresh network of the same shape (from scratch)
    class_axis: int


def _source(model: str, target: str, hidden, channels, steps: int, cache) -> _Source:
    source = "0-4" if target == "5-9" else SHIFTED_SOURCE
    classes = len(TARGET_CLASSES) if target == "5-9" else 10
    if model == "mlp":
        graphdef, state = pretrained_digits_mlp(hidden, steps=steps, cache=cache, source=source)
        sizes = [64, *hidden, classes]
        return _Source(graphdef, state, [f"layers/{i}" for i in range(len(hidden) + 1)],
                       jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2), lambda k: _mlp(sizes, k), 0)
    graphdef, state = pretrained_digits_cnn(channels, steps=steps, cache=cache, source=source)
    return _Source(graphdef, state, ["conv0", "conv1", "head"], jax.nn.initializers.lecun_normal(),
                   lambda k: _cnn(channels, classes, k), -1)


def _target_data(model: str, target: str, shift: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    if model == "mlp" and target == "5-9":
        return digits_source_target()[1]  # the standardised features the MLP was pretrained on
    _, (x, y) = image_source_target(target, **({"shift": shift, "noise": noise} if target == "shifted" else {}))
    return (x.reshape(len(x), -1), y) if model == "mlp" else (x, y)


def _read_keywords(model: str, target: str, pretrained: Any, **given: Any) -> tuple[Any, Any, Any, Any]:
    """(hidden, channels, shift, noise) with their defaults; refuses, as `_data.check_synthetic_only`
    does for a named dataset, a keyword that the chosen model, target or `pretrained` never reads
    (each was silently ignored: the same problem was built with it or without it)."""
    unread = {"hidden": (model != "mlp", f"model={model!r}", "shapes the MLP only", "model='mlp'"),
              "channels": (model != "cnn", f"model={model!r}", "shapes the CNN only", "model='cnn'"),
              **{name: (target != "shifted", f"target={target!r}", SHIFT_NOISE_READ[name], "target='shifted'")
                 for name in ("shift", "noise")},
              "fresh_head": (pretrained is False, "pretrained=False", "chooses whether the pretrained head is kept; "
                             "pretrained=False draws the whole network, head included, from the key",
                             "pretrained=True")}
    for name, (ignored, chosen, what, other) in unread.items():
        if ignored and given[name] is not None:
            raise ValueError(f"digits_transfer({chosen}, {name}={given[name]!r}): {name} {what}; drop {name} for "
                             f"{chosen}, or use {other}")
    defaults = {"hidden": (64, 64), "channels": (8, 16), "shift": SHIFT, "noise": NOISE}
    return tuple(defaults[n] if given[n] is None else given[n] for n in ("hidden", "channels", "shift", "noise"))


def _check_transfer(hidden, channels, pretrain_steps, seed, batch_size, shift, noise, fresh_head, pretrained
                    ) -> tuple[tuple[int, ...], tuple[int, int]]:
    """`digits_transfer`'s arguments checked before anything trains: (hidden, channels) as tuples."""
    hidden, channels = check_widths(hidden), _check_channels(channels)
    _check_recipe(pretrain_steps, 3e-3, 0, steps_name="pretrain_steps")
    _check_seed(seed, "the few-shot split")
    if batch_size is not None and not is_int_at_least(batch_size):
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1 (examples per step) or None (full batch)")
    _check_shift_noise(shift, noise, IMAGE_SIZE)
    if not (fresh_head is None or isinstance(fresh_head, bool)) or not isinstance(pretrained, bool):
        raise ValueError(f"fresh_head={fresh_head!r}, pretrained={pretrained!r}: fresh_head is True, False or None "
                         "(the target's default), pretrained True or False")
    return hidden, channels


def digits_transfer(shots: int | str = 10, *, model: str = "mlp", target: str = "5-9", val_shots: int | None = None,
                    hidden: Sequence[int] | None = None, channels: Sequence[int] | None = None,
                    fresh_head: bool | None = None, pretrained: bool = True, seed: int = 0,
                    batch_size: int | None = None, pretrain_steps: int = 300, shift: int | None = None,
                    noise: float | None = None, cache: str | os.PathLike | None = None) -> Problem:
    """Fine-tuning a model pretrained on digits to a target task with `shots` labelled examples per class.

    Args:
        shots: training examples per target class (at most about 100 for "5-9", 60 for "shifted":
            40 of each class are held out for test and `val_shots` for validation), or "all": every
            example of each class not held out (the full-data end of a few-shot study; about 104-112
            per class for "5-9", about 65 for "shifted", with the default `val_shots`).
        model: "mlp" (`pretrained_digits_mlp(hidden)`) or "cnn" (`pretrained_digits_cnn(channels)`).
        target: "5-9" (source digits 0-4) or "shifted" (source: a clean quarter of all digits;
            target: the rest moved by `shift` pixels with Gaussian noise `noise`); module docstring.
        val_shots: validation examples per class (default min(shots, 30)).
        hidden: the MLP's hidden widths (default (64, 64)); refused with model "cnn", which never
            reads it.
        channels: the CNN's two convolution widths (default (8, 16)); refused with model "mlp".
        shift, noise: the "shifted" target's move in pixels (default 1) and the standard deviation
            of its Gaussian noise (default 0.2); refused with target "5-9", whose images are not moved.
        fresh_head: re-initialise the output layer from the key (default: True for "5-9", another
            label set; False for "shifted", the same ten classes); refused with pretrained=False,
            which draws the head from the key anyway.
        pretrained: False draws the whole network from the key instead (the from-scratch baseline;
            every group is then new, so L2-SP reads nothing).
        seed: seed of the few-shot split.
        batch_size: None (full batch) or examples per step.
        pretrain_steps: the source model's training steps (part of its cache key).
        cache: the pretrained model's cache folder (default `cache_dir()`).

    Parameters are the nnx state (float64 when `jax_enable_x64` is on); groups are the layers,
    input to output ("layers/0", ..., "layers/L" for the MLP; "conv0", "conv1", "head" for the
    CNN), the last the head. See `finetune` for the hyperparameters. Cost: the pretrained model's
    first call trains it (seconds); later calls read the cache.

    Raises:
        ValueError: any argument out of its range, or given where the model, target or
            `pretrained` chosen never reads it; checked before the source model is trained.
    """
    if model not in MODELS or target not in TARGETS:
        raise ValueError(f"model={model!r}, target={target!r}: choose model from {MODELS} and target from {TARGETS}")
    hidden, channels, shift, noise = _read_keywords(model, target, pretrained, hidden=hidden, channels=channels,
                                                    shift=shift, noise=noise, fresh_head=fresh_head)
    if not (shots == "all" or (isinstance(shots, (int, np.integer)) and not isinstance(shots, bool) and shots >= 1)):
        raise ValueError(f"shots={shots!r}: pass a positive number of examples per class, or 'all'")
    if val_shots is not None and not is_int_at_least(val_shots):
        raise ValueError(f"val_shots={val_shots!r}: pass a positive number of validation examples per class, or "
                         "None for min(shots, 30)")
    hidden, channels = _check_transfer(hidden, channels, pretrain_steps, seed, batch_size, shift, noise, fresh_head,
                                       pretrained)
    val_shots = (30 if shots == "all" else min(shots, 30)) if val_shots is None else int(val_shots)
    x, y = _target_data(model, target, shift, noise)
    train, val, test = _few_shot_split(y, shots, val_shots, seed)
    if batch_size is not None and batch_size > len(train):  # before pretraining, which takes seconds
        raise ValueError(f"batch_size={batch_size} is larger than the {len(train)} training examples of shots={shots!r}; "
                         f"use batch_size <= {len(train)}, or None for full batch")
    src = _source(model, target, hidden, channels, pretrain_steps, cache)
    fresh_head = target == "5-9" if fresh_head is None else fresh_head
    head, new = (_fresh_head(src.layers[-1], src.head_init), src.layers[-1:]) if fresh_head else (None, [])
    if not pretrained:
        head, new = _fresh_network(src.build), src.layers
    task = tuple((x[i].astype(default_dtype()), y[i]) for i in (train, val, test))
    graphdef = src.graphdef
    kind = "" if (model, target) == ("mlp", "5-9") else f"-{model}-{target}"
    name = f"digits-transfer{kind}-{shots}shot" + ("" if pretrained else "-scratch")
    return finetune(src.state, task, lambda params, inputs: nnx.merge(graphdef, params)(inputs), head=head,
                    new_groups=new, batch_size=batch_size, class_axis=src.class_axis, dtype=default_dtype(),
                    name=name)
