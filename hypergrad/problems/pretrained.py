"""Pretrained source models that ship offline: trained in-process once per machine, cached as `.npz`.

Nothing downloads. `pretrained_digits_mlp(...)` trains `hg.problems.MLP` (flax.nnx) on scikit-learn's
bundled digits 0-4 and caches its state in `cache_dir()` under a name that hashes its whole
configuration (sizes, steps, rate, seed, format version): a second call with the same
configuration loads the file, a new configuration trains a new model. Files are plain `.npz`
(one array per parameter path plus the configuration as a string) read with
`allow_pickle=False`; a file that cannot be read, or whose configuration, paths or shapes differ,
is rebuilt with a warning and never used. Writes go to a temporary file renamed into place, so
two processes that train the same model at once both end with a complete file.

`digits_transfer(shots)` is the fine-tuning problem built on it: the pretrained body, a fresh head,
and digits 5-9 with `shots` labelled training examples per class (`hg.problems.finetune`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hypergrad._types import Key, PyTree
from hypergrad.problem import Problem
from hypergrad.problems import _data
from hypergrad.problems._losses import cross_entropy, default_dtype
from hypergrad.problems.finetune import finetune, leaf_path
from hypergrad.problems.mlp import MLP

__all__ = ["cache_dir", "cached_params", "digits_source_target", "digits_transfer", "load_params",
           "pretrain_mlp", "pretrained_digits_mlp", "save_params"]

FORMAT_VERSION = 1
"""Bumped whenever the pretraining recipe changes, so old cache files are never reused."""
CACHE_ENV = "HYPERGRAD_CACHE"
"""Environment variable naming the cache folder (overrides the XDG default)."""
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
TEST_PER_CLASS = 40
"""Held-out target examples per class (digits has 174 to 182 per class)."""


def cache_dir(path: str | os.PathLike | None = None) -> str:
    """The folder pretrained models are cached in: `path` if given, else `$HYPERGRAD_CACHE`, else
    `$XDG_CACHE_HOME/hypergrad/pretrained`, else `~/.cache/hypergrad/pretrained`."""
    if path is not None:
        return os.fspath(path)
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hypergrad", "pretrained")


def _config_text(config: Mapping[str, Any]) -> str:
    return json.dumps({**config, "format": FORMAT_VERSION}, sort_keys=True)


def cache_path(name: str, config: Mapping[str, Any], directory: str | os.PathLike | None = None) -> str:
    """`<cache_dir>/<name>-<16 hex digits of the configuration's SHA-256>.npz`."""
    digest = hashlib.sha256(_config_text(config).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(directory), f"{name}-{digest}.npz")


def save_params(path: str, params: PyTree, config: Mapping[str, Any]) -> None:
    """Writes `params` (any pytree of arrays) and `config` to `path` as `.npz`, atomically."""
    arrays = {f"param:{leaf_path(p)}": np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, config=np.asarray(_config_text(config)), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_params(path: str, template: PyTree, config: Mapping[str, Any]) -> PyTree:
    """The arrays in `path` arranged as `template` (a pytree with the expected paths and shapes).

    Raises:
        ValueError: the file is unreadable, was written for another configuration, or lacks a path
            or holds another shape (the message says which).
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
        leaves.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def cached_params(name: str, config: Mapping[str, Any], template: PyTree, build: Callable[[], PyTree],
                  directory: str | os.PathLike | None = None) -> PyTree:
    """`build()` once per configuration: loaded from the cache when a valid file is there, else
    built, saved and returned. A corrupt or mismatched file is rebuilt with a `UserWarning`."""
    path = cache_path(name, config, directory)
    if os.path.exists(path):
        try:
            return load_params(path, template, config)
        except ValueError as err:
            warnings.warn(f"pretrained cache: {err}; rebuilding it", UserWarning, stacklevel=2)
    params = build()
    save_params(path, params, config)
    return params


def digits_source_target(dtype=np.float32) -> tuple[tuple, tuple]:
    """All of digits, standardised once (the shared preprocessing of source and target), split
    into the source task (digits 0-4) and the target task (digits 5-9, relabelled 0-4)."""
    splits = _data.load("digits", seed=0, dtype=dtype)
    x = np.concatenate([s[0] for s in splits])
    y = np.concatenate([s[1] for s in splits])
    source = np.isin(y, SOURCE_CLASSES)
    return (x[source], y[source]), (x[~source], (y[~source] - len(SOURCE_CLASSES)).astype(np.int32))


def _mlp(sizes: Sequence[int], key: Key | int = 0) -> MLP:
    return MLP(tuple(sizes), "tanh", rngs=nnx.Rngs(key), dtype=jnp.float32, class_major=True)


def pretrain_mlp(config: Mapping[str, Any]) -> nnx.State:
    """Trains `MLP(config["sizes"])` (tanh, float32) on the source digits 0-4: full-batch Adam with
    rate `config["lr"]` for `config["steps"]` steps from `nnx.Rngs(config["seed"])`. Returns its state.

    Cost: `steps` forward-backward passes over about 900 examples (a few seconds on a CPU).
    """
    (x, y), _ = digits_source_target(dtype=np.float32)
    graphdef, state = nnx.split(_mlp(config["sizes"], config["seed"]))
    opt = optax.adam(config["lr"])

    def loss(s):
        return cross_entropy(nnx.merge(graphdef, s)(x), y, 0)

    @jax.jit
    def train(s):
        def step(carry, _):
            s, o = carry
            updates, o = opt.update(jax.grad(loss)(s), o, s)
            return (optax.apply_updates(s, updates), o), None
        return jax.lax.scan(step, (s, opt.init(s)), None, length=config["steps"])[0][0]

    return train(state)


def pretrained_digits_mlp(hidden: Sequence[int] = (64, 64), *, steps: int = 300, lr: float = 3e-3, seed: int = 0,
                          cache: str | os.PathLike | None = None) -> tuple[nnx.GraphDef, nnx.State]:
    """An MLP 64 -> hidden -> 5 pretrained on digits 0-4, from the cache or trained once (`pretrain_mlp`).

    Args:
        hidden: hidden widths; steps, lr, seed: the pretraining recipe (all part of the cache key).
        cache: the cache folder (default `cache_dir()`).

    Returns:
        (graphdef, state): `nnx.merge(graphdef, state)` is the pretrained model (float32).
    """
    config = {"model": "mlp", "sizes": [64, *map(int, hidden), len(SOURCE_CLASSES)], "activation": "tanh",
              "steps": int(steps), "lr": float(lr), "seed": int(seed), "source": list(SOURCE_CLASSES)}
    graphdef, template = nnx.split(_mlp(config["sizes"]))
    state = cached_params("digits-mlp", config, template, lambda: pretrain_mlp(config), cache)
    return graphdef, state


def _few_shot_split(y: np.ndarray, shots: int, val_shots: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) < shots + val_shots + TEST_PER_CLASS:
            raise ValueError(f"shots={shots} with val_shots={val_shots}: class {label} has {len(members)} examples, "
                             f"{TEST_PER_CLASS} held out for test; lower shots to at most "
                             f"{len(members) - TEST_PER_CLASS - val_shots}")
        parts[0].append(members[:shots])
        parts[1].append(members[shots:shots + val_shots])
        parts[2].append(members[-TEST_PER_CLASS:])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _fresh_head(prefix: str) -> Callable[[Key, PyTree], PyTree]:
    """`head(key, state)`: `state` with the layer at `prefix` re-initialised as a new
    `FeatureMajorDense` (LeCun-normal kernel, zero bias)."""
    init = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)

    def head(key, state):
        def fresh(path, leaf):
            name = leaf_path(path)
            if not name.startswith(prefix + "/"):
                return leaf
            return init(key, leaf.shape, leaf.dtype) if "/kernel" in name else jnp.zeros_like(leaf)

        return jax.tree_util.tree_map_with_path(fresh, state)

    return head


def _fresh_network(sizes: Sequence[int]) -> Callable[[Key, PyTree], PyTree]:
    """`head(key, state)`: a whole new network drawn from `key` (training from scratch), in the
    dtypes of `state`."""
    def head(key, state):
        fresh = nnx.split(_mlp(sizes, key))[1]
        return jax.tree.map(lambda new, old: new.astype(old.dtype), fresh, state)

    return head


def digits_transfer(shots: int = 10, *, val_shots: int | None = None, hidden: Sequence[int] = (64, 64),
                    fresh_head: bool = True, pretrained: bool = True, seed: int = 0, batch_size: int | None = None,
                    pretrain_steps: int = 300, cache: str | os.PathLike | None = None) -> Problem:
    """Fine-tuning from digits 0-4 to digits 5-9 with `shots` labelled examples per class.

    Args:
        shots: training examples per target class (at most about 100: digits has 174-182 per class,
            40 of each held out for test and `val_shots` for validation).
        val_shots: validation examples per class (default min(shots, 30)).
        hidden: the pretrained MLP's hidden widths (`pretrained_digits_mlp`).
        fresh_head: re-initialise the output layer from the key (the source's head is another label set).
        pretrained: False draws the whole network from the key instead (the from-scratch baseline;
            every group is then new, so L2-SP reads nothing).
        seed: seed of the few-shot split.
        batch_size: None (full batch) or examples per step.
        pretrain_steps: the source model's training steps (`pretrained_digits_mlp`; part of its cache key).
        cache: the pretrained model's cache folder (default `cache_dir()`).

    Parameters are the nnx state (float64 when `jax_enable_x64` is on); groups are the layers
    ("layers/0", ..., "layers/L", the last the head). See `finetune` for the hyperparameters.
    """
    val_shots = min(shots, 30) if val_shots is None else val_shots
    _, (x, y) = digits_source_target()
    train, val, test = _few_shot_split(y, shots, val_shots, seed)
    dtype = default_dtype()
    graphdef, state = pretrained_digits_mlp(hidden, steps=pretrain_steps, cache=cache)
    layers = [f"layers/{i}" for i in range(len(hidden) + 1)]
    head, new = (_fresh_head(layers[-1]), layers[-1:]) if fresh_head else (None, [])
    if not pretrained:
        head, new = _fresh_network([64, *hidden, len(TARGET_CLASSES)]), layers
    task = tuple((x[i].astype(dtype), y[i]) for i in (train, val, test))
    return finetune(state, task, lambda params, inputs: nnx.merge(graphdef, params)(inputs), head=head,
                    new_groups=new, batch_size=batch_size, class_axis=0, dtype=dtype,
                    name=f"digits-transfer-{shots}shot" + ("" if pretrained else "-scratch"))
