"""Fine-tuning a pretrained model: per-group learning rates, L2-SP, warm-up and freezing as
differentiable hyperparameters.

`finetune(pretrained, task, apply)` is an `hg.Problem` whose `init` returns the pretrained
parameters (optionally with a fresh head drawn from the key) and whose training loss adds the two
penalties fine-tuning research tunes, both read from `hparams`:

    weight_decay   0.5 * wd * ||w||^2              plain decay towards zero, every parameter
    l2sp           0.5 * alpha * ||w - w_pre||^2   decay towards the pretrained weights (L2-SP,
                                                   Li et al. 2018), every pretrained parameter

Each may be a scalar or one value per parameter group. `group_sgd(...)` is the matching optimiser:
SGD with momentum whose step size is one rate per group (discriminative rates, Howard & Ruder 2018),
with layer-wise decay as a one-number special case, a smooth warm-up of real-valued length,
optional cosine decay, and freezing the lowest groups (rate exactly zero: bitwise frozen). Every
entry is a traced hyperparameter, so gradient methods differentiate all of them.

Parameter groups. A leaf's path is its pytree key path joined by "/" ("layers/0/kernel/value"
for a flax.nnx state, "body/dense1/w" for nested dicts). `groups` maps a group name to a path
prefix (or a tuple of them), ordered from the input to the output; a leaf belongs to the group
with the longest prefix it starts with (whole components). `layer_groups(params)` builds the
default: one group per layer (a leaf's path without its last component, and without a trailing
"value" of an nnx Variable).

Your own pretrained model (the recipe): load its parameters yourself as any pytree of arrays
(`np.load`, orbax, a flax.nnx model's `nnx.split(model)[1]`, a converted PyTorch state dict) and
write `apply(params, x) -> logits` (for nnx: `nnx.merge(graphdef, params)(x)`). Then

    problem = hg.problems.finetune(params, (train, val, test), apply, head=new_head)
    groups = hg.problems.layer_groups(params)            # or your own {name: prefix}
    space = hg.Space({"lr": hg.LogUniform(1e-4, 0.3, shape=(len(groups),)),
                      "l2sp": hg.LogUniform(1e-4, 1.0), "warmup": hg.Uniform(0.0, 50.0)})
    objective = hg.Objective(problem, hg.problems.group_sgd(groups), num_steps=200)
    tuned = hg.tune(objective, space, key, population=8, warmup=64)

`new_head(key, pretrained) -> params` returns the starting parameters with the head replaced
(same tree structure; the new groups' leaves may change shape, e.g. for a new label set).
`hg.problems.digits_transfer` builds a complete example with a model pretrained offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hypergrad._types import HParams, Key, PyTree
from hypergrad.problem import Problem
from hypergrad.problems._losses import accuracy, cross_entropy

__all__ = ["finetune", "group_sgd", "group_rates", "layer_groups", "group_labels", "group_sq_norms", "leaf_path",
           "scale_by_group_rate", "warmup_ramp", "GroupRateState"]

Groups = Mapping[str, "str | Sequence[str]"]


def _key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_path(path: Sequence[Any]) -> str:
    """A pytree key path as a "/"-joined string ("layers/0/kernel/value")."""
    return "/".join(_key_name(entry) for entry in path)


def layer_groups(params: PyTree) -> dict[str, str]:
    """One group per layer, in the order of the leaves: `{prefix: prefix}`, the prefix being a
    leaf's path without its last component (and without a trailing "value" of an nnx Variable).

    A flat dict {"w": ..., "b": ...} is one group "" (the whole model); give `groups` yourself
    when the layers are not subtrees.
    """
    groups: dict[str, str] = {}
    for path, _ in jax.tree_util.tree_leaves_with_path(params):
        parts = leaf_path(path).split("/")
        if len(parts) > 1 and parts[-1] == "value":
            parts = parts[:-1]
        prefix = "/".join(parts[:-1])
        groups.setdefault(prefix, prefix)
    return groups


def _prefixes(groups: Groups) -> list[tuple[str, int]]:
    out = []
    for index, (name, prefixes) in enumerate(groups.items()):
        for prefix in (prefixes,) if isinstance(prefixes, str) else tuple(prefixes):
            out.append((prefix.strip("/"), index))
    return out


def _group_of(path: str, prefixes: list[tuple[str, int]]) -> int | None:
    best, best_len = None, -1
    for prefix, index in prefixes:
        if (prefix == "" or path == prefix or path.startswith(prefix + "/")) and len(prefix) > best_len:
            best, best_len = index, len(prefix)
    return best


def group_labels(params: PyTree, groups: Groups | None = None) -> tuple[PyTree, tuple[str, ...]]:
    """The group index of every leaf (a pytree of Python ints with `params`' structure) and the
    group names in order. `groups=None` means `layer_groups(params)`.

    Raises:
        ValueError: a leaf matches no group's prefix (the message names the leaf and the groups).
    """
    groups = layer_groups(params) if groups is None else groups
    if not groups:
        raise ValueError("groups={}: give at least one group, e.g. {'all': ''} (every parameter)")
    prefixes = _prefixes(groups)

    def label(path, _):
        index = _group_of(leaf_path(path), prefixes)
        if index is None:
            raise ValueError(f"groups: parameter {leaf_path(path)!r} matches no prefix of {dict(groups)}; "
                             "add a group whose prefix it starts with (prefix '' matches everything)")
        return index

    return jax.tree_util.tree_map_with_path(label, params), tuple(groups)


def group_sq_norms(params: PyTree, labels: PyTree, num_groups: int, reference: PyTree | None = None,
                   skip: Sequence[int] = ()) -> jax.Array:
    """`||w_g - ref_g||^2` for every group g (shape (num_groups,)); `reference=None` means zero.
    Groups in `skip` contribute 0 (a fresh head has no pretrained reference).

    Cost: one pass over the parameters (a subtraction, a square and a sum per element).
    """
    weights, groups = jax.tree.leaves(params), jax.tree.leaves(labels)
    references = [None] * len(weights) if reference is None else jax.tree.leaves(reference)
    sums = [jnp.zeros(())] * num_groups
    for w, ref, g in zip(weights, references, groups, strict=True):
        if g in skip:
            continue
        diff = w if ref is None else w - ref
        sums[g] = sums[g] + jnp.sum(jnp.square(diff))
    return jnp.stack(sums)


def _per_group(value: Any, num_groups: int, name: str) -> jax.Array:
    value = jnp.asarray(value)
    if value.ndim == 0:
        return jnp.broadcast_to(value, (num_groups,))
    if value.shape != (num_groups,):
        raise ValueError(f"hparams[{name!r}] has shape {value.shape}; give a scalar or one value per "
                         f"parameter group, shape ({num_groups},)")
    return value


def _penalty(params, hparams, labels, num_groups, reference, new):
    """0.5 * sum_g (wd_g ||w_g||^2 + alpha_g ||w_g - w_pre_g||^2), the hparams that are present."""
    total = jnp.zeros(())
    if "weight_decay" in hparams:
        wd = _per_group(hparams["weight_decay"], num_groups, "weight_decay")
        total = total + 0.5 * jnp.sum(wd * group_sq_norms(params, labels, num_groups))
    if "l2sp" in hparams:
        alpha = _per_group(hparams["l2sp"], num_groups, "l2sp")
        total = total + 0.5 * jnp.sum(alpha * group_sq_norms(params, labels, num_groups, reference, new))
    return total


def _check_head(pretrained, start, labels, names, new) -> None:
    if jax.tree.structure(start) != jax.tree.structure(pretrained):
        raise ValueError("head(key, pretrained) must return the pretrained tree with its head replaced "
                         f"(the same structure); got {jax.tree.structure(start)} for "
                         f"{jax.tree.structure(pretrained)}")
    for a, b, g in zip(jax.tree.leaves(start), jax.tree.leaves(pretrained), jax.tree.leaves(labels)):
        if g not in new and jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"head changed a leaf of group {names[g]!r} from {jnp.shape(b)} to {jnp.shape(a)}; "
                             f"name the head's groups in new_groups (now {[names[i] for i in new]})")


def finetune(pretrained: PyTree, task: Sequence[Any], apply: Callable[[PyTree, Any], jax.Array], *,
             groups: Groups | None = None, head: Callable[[Key, PyTree], PyTree] | None = None,
             new_groups: Sequence[str] | None = None, batch_size: int | None = None, class_axis: int = -1,
             dtype: Any = None, name: str = "finetune") -> Problem:
    """A classification `hg.Problem` that starts from pretrained parameters.

    Args:
        pretrained: any pytree of arrays (a flax.nnx state, nested dicts). `init(key)` returns it
            exactly (as jax arrays; cast to `dtype` when given) or, with `head`, `head(key, it)`.
        task: `(train, val)` or `(train, val, test)`, each `(inputs, integer labels)`.
        apply: `apply(params, inputs) -> logits`, pure.
        groups: `{name: prefix or prefixes}` from input to output (module docstring); None: one
            group per layer (`layer_groups`). Per-group hyperparameters follow this order.
        head: optional `head(key, pretrained) -> params`: the starting point with a fresh head.
        new_groups: the groups `head` re-initialises (no pretrained reference: L2-SP skips them);
            default the last group when `head` is given, none otherwise.
        batch_size: examples per step, None for the full training set.
        class_axis: the class axis of the logits (0 for class-major models such as `hg.problems.MLP`).
        dtype: cast every floating leaf of `pretrained` to it (e.g. float64 for derivative checks).
        name: a label for reports.

    Hyperparameters read by `train_loss` (each optional, a scalar or one per group):
    `weight_decay` (towards zero) and `l2sp` (towards `pretrained`); see the module docstring.

    Cost: a training step is the model's forward-backward pass plus one pass over the parameters
    per penalty present. Memory: one copy of `pretrained`, held as the L2-SP reference (captured
    as a constant of every compiled program). Bias: none; L2-SP pulls towards the source task.
    """
    pretrained = jax.tree.map(lambda x: _cast(x, dtype), pretrained)
    labels, names = group_labels(pretrained, groups)
    new = _new_indices(names, new_groups, head is not None)
    start_of = (lambda key: pretrained) if head is None else (lambda key: head(key, pretrained))
    _check_head(pretrained, jax.eval_shape(start_of, jax.random.key(0)), labels, names, new)

    def train_loss(params, hparams, batch):
        x, y = batch
        loss = cross_entropy(apply(params, x), y, class_axis)
        return loss + _penalty(params, hparams, labels, len(names), pretrained, new)

    def val_loss(params, batch):
        x, y = batch
        return cross_entropy(apply(params, x), y, class_axis)

    def acc(params, batch):
        x, y = batch
        return accuracy(apply(params, x), y, class_axis)

    train, val, *test = task
    return Problem(init=start_of, train_loss=train_loss, val_loss=val_loss, train_data=train, val_data=val,
                   test_data=test[0] if test else None, batch_size=batch_size, metrics={"accuracy": acc},
                   name=name)


def _cast(x: Any, dtype: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(dtype) if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating) else x


def _new_indices(names: tuple[str, ...], new_groups: Sequence[str] | None, has_head: bool) -> tuple[int, ...]:
    if new_groups is None:
        return (len(names) - 1,) if has_head else ()
    unknown = [g for g in new_groups if g not in names]
    if unknown:
        raise ValueError(f"new_groups={list(new_groups)}: {unknown} are not groups; choose from {list(names)}")
    return tuple(names.index(g) for g in new_groups)


def warmup_ramp(step: jax.Array, length: jax.Array) -> jax.Array:
    """The warm-up factor of step `step` (0-based) for a ramp of real `length` steps, in (0, 1].

    With r = min(1, (step + 1) / length) the factor is r * (2 - r): it rises from about 2/length
    and meets 1 with zero slope at step length - 1, so it is continuously differentiable in
    `length` (a linear ramp's kink would make the hypergradient jump whenever `length` crosses an
    integer). `length <= 1` means no warm-up (factor 1 from the first step).
    """
    t1 = jnp.asarray(step, jnp.result_type(float)) + 1.0
    r = t1 / jnp.maximum(length, t1)  # = min(1, t1 / length) for length > 0, finite gradients at 0
    return r * (2.0 - r)


class GroupRateState(NamedTuple):
    """The step count of `scale_by_group_rate`."""

    count: jax.Array


def scale_by_group_rate(rates: Callable[[jax.Array, int], jax.Array],
                        groups: Groups | None = None) -> optax.GradientTransformation:
    """Multiplies each group's updates by minus its rate: `u <- -rates(count, G)[g] * u`.

    Args:
        rates: `(step, num_groups) -> (num_groups,)` rates of this step (traced hyperparameters).
        groups: as in `finetune` (None: one group per layer of the updates' tree).

    A group whose rate is exactly 0 gets an update of (signed) zero: its parameters stay bitwise
    unchanged. Cost: one multiply per parameter; state: one int32 counter.
    """
    def init(params):
        del params
        return GroupRateState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        labels, names = group_labels(updates, groups)
        step_rates = rates(state.count, len(names))
        updates = jax.tree.map(lambda u, g: (-step_rates[g]).astype(u.dtype) * u, updates, labels)
        return updates, GroupRateState(state.count + 1)

    return optax.GradientTransformation(init, update)


def group_rates(hparams: HParams, step: jax.Array, num_groups: int, *, lr: float = 0.01, warmup: float = 0.0,
                lr_decay: float = 1.0, num_steps: int | None = None, cosine: bool = False) -> jax.Array:
    """The learning rate of every group at `step`, shape (num_groups,), read from `hparams`
    (the keyword arguments are the defaults of keys that are absent):

    - `lr`: a scalar (one rate), (G,) (one per group) or (G, T) (a schedule per group);
    - `lr_decay`: layer-wise decay xi: group g (0 = input side) is scaled by xi^(G - 1 - g);
    - `warmup`: the ramp length in steps (`warmup_ramp`), real-valued;
    - `freeze`: the number of lowest groups whose rate is 0 (a `Choice` for the baselines);
    - cosine decay to zero over `num_steps` when `cosine`.
    """
    base = jnp.asarray(hparams.get("lr", lr))
    if base.ndim == 2:
        base = base[:, jnp.minimum(step, base.shape[1] - 1)]
    base = _per_group(base, num_groups, "lr")
    depth = jnp.arange(num_groups - 1, -1, -1)
    rate = base * jnp.asarray(hparams.get("lr_decay", lr_decay)) ** depth
    rate = rate * warmup_ramp(step, hparams.get("warmup", warmup))
    if "freeze" in hparams:
        rate = jnp.where(jnp.arange(num_groups) >= hparams["freeze"], rate, 0.0)
    if cosine:
        rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step, num_steps) / num_steps))
    return rate


def group_sgd(groups: Groups | None = None, *, lr: float = 0.01, momentum: float = 0.9, warmup: float = 0.0,
              lr_decay: float = 1.0, num_steps: int | None = None, cosine: bool = False,
              base: Callable[[HParams], optax.GradientTransformation] | None = None
              ) -> Callable[[HParams], optax.GradientTransformation]:
    """An `optimizer(hparams)` for `hg.Objective`: SGD with momentum (`hparams["momentum"]`, default
    `momentum`) whose step size is one rate per parameter group (`group_rates`).

    Args:
        groups: as in `finetune` (None: one group per layer).
        lr, momentum, warmup, lr_decay: defaults for the hyperparameters absent from `hparams`.
        num_steps, cosine: cosine decay to zero over `num_steps` (needed when `cosine`).
        base: `hparams -> transformation` applied before the rates instead of the momentum trace
            (e.g. `lambda h: optax.scale_by_adam()` for per-group Adam).

    Cost: the base transformation plus one multiply per parameter per step. Memory: the base's
    state (one momentum buffer) and a counter. Bias: none.
    """
    if cosine and not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"group_sgd(cosine=True) needs num_steps, the horizon of the decay; got {num_steps!r}")

    def optimizer(hparams):
        def rates(step, num_groups):
            return group_rates(hparams, step, num_groups, lr=lr, warmup=warmup, lr_decay=lr_decay,
                               num_steps=num_steps, cosine=cosine)

        first = optax.trace(decay=hparams.get("momentum", momentum)) if base is None else base(hparams)
        return optax.chain(first, scale_by_group_rate(rates, groups))

    return optimizer
