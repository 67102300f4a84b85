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
prefix (or a tuple of them); a leaf belongs to the group with the longest prefix it starts with
(whole components). `layer_groups(params)` builds the default: one group per layer (a leaf's path
without its last component, and without a trailing "value" of an nnx Variable).

Group order. Per-group hyperparameters follow the order of `groups`, and `lr_decay` and `freeze`
(`group_rates`) treat the first group as the input side and the last as the output side. The
default groups come in the order of the leaves, and pytrees sort dict keys and the attribute
names of a flax.nnx state: alphabetical, which is input to output only where the names sort that
way ("layers/0", "layers/1", ... of an nnx.List; "conv0", "conv1", "head"; "body", "head"). For
a model with `self.hidden` then `self.classifier` the default order is ("classifier", "hidden"):
give `groups` yourself, from input to output (a dict keeps its order), e.g.
`{"hidden": "hidden", "classifier": "classifier"}`, to `finetune`, and give the optimiser the
problem's own groups: `group_sgd(problem)` (`problem_groups`; `finetune_space` does). An optimiser
whose groups split a `finetune` problem's parameters otherwise (other members, or another order)
is refused (ValueError naming both orders, when the loop is traced, before anything compiles).

Leaves that are not floating point (counters, integer masks) belong to no group: the penalties
skip them and the training loop holds them constant.

flax.nnx models: fine-tune the `nnx.Param` leaves only and hold the rest of the state fixed, with
the model in eval mode. The training loss is a pure function of (params, hparams, batch): the loop
carries no state that a forward pass updates (BatchNorm's running statistics) and hands the model
no per-step dropout key. So batch norm normalises with the pretrained running statistics, held
fixed (the usual practice when fine-tuning), and dropout is off. `finetune` refuses, at
construction, a `pretrained` holding a PRNG key (Dropout's RNG state, from `nnx.split(model)`)
or a floating-point Variable that is not an `nnx.Param` (an `nnx.BatchStat`, which training would
move as a weight), and an `apply` that updates the model's state (a model in train mode, or a
layer that draws random numbers in eval mode too: `nnx.RNN` called without `initial_carry=` draws
a key for its carry from its cell's rngs, so pass the carry, zeros in the parameters' dtype).

Your own pretrained model (the recipe): load its parameters yourself as any pytree of arrays
(`np.load`, orbax, a converted PyTorch state dict) and write `apply(params, x) -> logits`. For a
flax.nnx model (with BatchNorm, Dropout or neither):

    model.eval()                                         # returns None; fixes BatchNorm and Dropout
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    apply = lambda params, x: nnx.merge(graphdef, params, rest)(x)   # rest: fixed statistics, RNG state

Then

    problem = hg.problems.finetune(params, (train, val, test), apply, head=new_head)
    groups = hg.problems.layer_groups(params)            # finetune's default groups (or give groups=)
    space = hg.Space({"lr": hg.LogUniform(1e-4, 0.3, shape=(len(groups),)),
                      "l2sp": hg.LogUniform(1e-4, 1.0), "warmup": hg.Uniform(0.0, 50.0)})
    objective = hg.Objective(problem, hg.problems.group_sgd(problem), num_steps=200)   # the problem's groups
    tuned = hg.tune(objective, space, key, population=8, warmup=64)

`new_head(key, pretrained) -> params` returns the starting parameters with the head replaced
(same tree structure; the new groups' leaves may change shape, e.g. for a new label set); the
groups it changes are the new ones (no L2-SP reference) unless `new_groups` names them.
`hg.problems.digits_transfer` builds a complete example with a model pretrained offline.
"""

from __future__ import annotations

import functools
import os
import types
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
from flax.errors import TraceContextError

from hypergrad._checks import is_int_at_least, users_stacklevel
from hypergrad._types import HParams, Key, PyTree
from hypergrad.loop import check_no_keys, in_package, state_update_refusal, trained_problem
from hypergrad.problem import Problem
from hypergrad.problems._labels import check_class_labels, check_pair, one_example
from hypergrad.problems._losses import accuracy, cross_entropy

__all__ = ["finetune", "group_sgd", "group_rates", "layer_groups", "group_labels", "group_sq_norms", "leaf_path",
           "problem_groups", "check_groups", "scale_by_group_rate", "warmup_ramp", "freeze_count", "GroupRateState",
           "FREEZE_HAS_NO_GRADIENT"]

Groups = Mapping[str, "str | Sequence[str]"]

NO_GROUP = -1
"""The label `group_labels` gives a leaf that is not floating point (an RNG key, a counter)."""
SPLITS = ("train", "val", "test")

_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""`{train_loss: (its groups, its pretrained floating-point leaves)}` of every live problem `finetune`
built, keyed by the problem's training loss (the function whose penalties count the groups; a
problem `dataclasses.replace` copies keeps it): `problem_groups`, and `scale_by_group_rate` compares
its own groups with them. Weakly keyed: an entry goes with its function, whose closure holds the
same leaves."""

_COPY_DEPTH = 8
"""How deep `_built_under` follows a training loss's closures to the `finetune` problems it calls."""


def _key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_path(path: Sequence[Any]) -> str:
    """A pytree key path as a "/"-joined string ("layers/0/kernel/value")."""
    return "/".join(_key_name(entry) for entry in path)


def _is_float(leaf: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def layer_groups(params: PyTree) -> dict[str, str]:
    """One group per layer, in the order of the leaves: `{prefix: prefix}`, the prefix being a
    floating-point leaf's path without its last component (and without a trailing "value" of an
    nnx Variable). Leaves that are not floating point (RNG keys, counters) make no group.

    The order of the leaves is alphabetical by name (dict keys and nnx attribute names are
    sorted; list indices are numeric), not necessarily from input to output: see "Group order"
    in the module docstring, and give `groups` yourself where the names do not sort that way.
    A flat dict {"w": ..., "b": ...} is one group "" (the whole model); give `groups` yourself
    when the layers are not subtrees.
    """
    groups: dict[str, str] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not _is_float(leaf):
            continue
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
    group names in order. `groups=None` means `layer_groups(params)`. A leaf that is not floating
    point (an RNG key, a counter: training holds it constant) gets `NO_GROUP` (-1).

    Raises:
        ValueError: a leaf matches no group's prefix (the message names the leaf and the groups); a
            group that no floating-point leaf falls into, or a prefix that starts no such leaf's
            path (a misspelt prefix: its group's rate and penalties would change nothing, and the
            leaves meant for it would follow another group's, e.g. a catch-all ''), named with the
            parameters' paths.
    """
    groups = layer_groups(params) if groups is None else groups
    if not groups:
        raise ValueError("groups={}: give at least one group, e.g. {'all': ''} (every parameter)")
    prefixes = _prefixes(groups)

    def label(path, leaf):
        if not _is_float(leaf):
            return NO_GROUP
        index = _group_of(leaf_path(path), prefixes)
        if index is None:
            raise ValueError(f"groups: parameter {leaf_path(path)!r} matches no prefix of {dict(groups)}; "
                             "add a group whose prefix it starts with (prefix '' matches everything)")
        return index

    labels = jax.tree_util.tree_map_with_path(label, params)
    _check_every_group_used(groups, prefixes, labels, params)
    return labels, tuple(groups)


def _check_every_group_used(groups: Groups, prefixes: list[tuple[str, int]], labels: PyTree,
                            params: PyTree) -> None:
    """`ValueError` naming a prefix that starts no floating-point leaf's path of `params` (a typo),
    or a group that no such leaf falls into, with the paths there are."""
    paths = [leaf_path(path) for path, leaf in jax.tree_util.tree_leaves_with_path(params) if _is_float(leaf)]
    names, used = list(groups), set(jax.tree.leaves(labels))
    unused = [(index, f"prefix {prefix!r} starts no floating-point parameter's path") for prefix, index in prefixes
              if not any(prefix == "" or p == prefix or p.startswith(prefix + "/") for p in paths)]
    unused += [(index, f"no parameter falls into it (a longer prefix of another group takes each one "
                f"{groups[names[index]]!r} matches)") for index in range(len(names)) if index not in used]
    if unused:
        index, why = unused[0]
        shown = ", ".join(paths[:12]) + (f", ... ({len(paths)} in all)" if len(paths) > 12 else "")
        raise ValueError(f"groups[{names[index]!r}]: {why}, so its rate and penalties would change nothing "
                         f"and the parameters meant for it would follow another group's; correct the prefix or "
                         f"leave the group out. The parameters' paths: {shown}")


def group_sq_norms(params: PyTree, labels: PyTree, num_groups: int, reference: PyTree | None = None,
                   skip: Sequence[int] = ()) -> jax.Array:
    """`||w_g - ref_g||^2` for every group g (shape (num_groups,)); `reference=None` means zero.
    Groups in `skip` contribute 0 (a fresh head has no pretrained reference), and so do leaves
    labelled `NO_GROUP` (not floating point: RNG keys and counters are not weights).

    Cost: one pass over the parameters (a subtraction, a square and a sum per element).
    """
    weights, groups = jax.tree.leaves(params), jax.tree.leaves(labels)
    references = [None] * len(weights) if reference is None else jax.tree.leaves(reference)
    sums = [jnp.zeros(())] * num_groups
    for w, ref, g in zip(weights, references, groups, strict=True):
        if g in skip or g == NO_GROUP or not _is_float(w):
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
    for a, b, g in zip(jax.tree.leaves(start), jax.tree.leaves(pretrained), jax.tree.leaves(labels)):
        if g not in new and jnp.shape(a) != jnp.shape(b):
            where = "a leaf of no group" if g == NO_GROUP else f"a leaf of group {names[g]!r}"
            raise ValueError(f"head changed {where} from {jnp.shape(b)} to {jnp.shape(a)}; "
                             f"name the head's groups in new_groups (now {[names[i] for i in new]})")


def _check_structure(pretrained, start) -> None:
    if jax.tree.structure(start) != jax.tree.structure(pretrained):
        raise ValueError("head(key, pretrained) must return the pretrained tree with its head replaced "
                         f"(the same structure); got {jax.tree.structure(start)} for "
                         f"{jax.tree.structure(pretrained)}")


def _changed_groups(pretrained, start, labels) -> tuple[int, ...]:
    """The groups in which `start` differs from `pretrained` (a leaf's shape or any value)."""
    changed = set()
    for a, b, g in zip(jax.tree.leaves(start), jax.tree.leaves(pretrained), jax.tree.leaves(labels)):
        if g != NO_GROUP and (jnp.shape(a) != jnp.shape(b)
                              or not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)):
            changed.add(g)
    return tuple(sorted(changed))


def _check_task(task: Any) -> None:
    if isinstance(task, (str, bytes)) or not isinstance(task, Sequence) or len(task) not in (2, 3):
        count = f"has {len(task)} split(s)" if isinstance(task, Sequence) else f"is a {type(task).__name__}"
        raise ValueError(f"task {count}; give (train, val) or (train, val, test), each a pair "
                         "(inputs, integer labels)")
    for i, (name, split) in enumerate(zip(SPLITS, task)):
        check_pair(split, f"task: the {name} split", f"task[{i}]")


def _check_arguments(apply: Any, head: Any, groups: Any, new_groups: Any, dtype: Any) -> None:
    """`TypeError`/`ValueError` naming `finetune`'s argument and the fix, before anything is traced."""
    if not callable(apply):
        raise TypeError(f"finetune(apply={apply!r}) must be a function apply(params, inputs) -> logits, e.g. "
                        "lambda params, x: nnx.merge(graphdef, params)(x)")
    if head is not None and not callable(head):
        raise TypeError(f"finetune(head={head!r}) must be None or a function head(key, pretrained) -> params "
                        "returning the pretrained tree with its head replaced, e.g. "
                        "lambda key, p: {**p, 'head': fresh_head(key)}; name its groups with new_groups=[...]")
    check_groups("finetune", groups)
    if isinstance(new_groups, (str, bytes)):  # was split into its characters
        raise TypeError(f"finetune(new_groups={new_groups!r}) must be a list of group names, e.g. "
                        f"new_groups=[{new_groups!r}]")
    if dtype is not None:
        try:
            floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ValueError(f"finetune(dtype={getattr(dtype, '__name__', None) or repr(dtype)}) must be a floating-point "
                             "dtype (the floating leaves of pretrained are cast to it), e.g. dtype=jnp.float64, "
                             "or None to keep them as they are")
        _check_dtype_enabled(jnp.dtype(dtype))


def _check_dtype_enabled(dtype: np.dtype) -> None:
    """`ValueError` naming `finetune(dtype=...)` and the fix when JAX would narrow `dtype` (float64
    with jax_enable_x64 off is float32): the parameters and a derivative check would silently be
    float32, with JAX's generic warning once per leaf."""
    enabled = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if enabled != dtype:
        raise ValueError(f"finetune(dtype={dtype.name}): JAX has 64-bit floats off (jax_enable_x64), so the parameters "
                         f"would be {enabled.name}, not {dtype.name}; turn them on first, "
                         "jax.config.update('jax_enable_x64', True) at the start of the program (or the environment "
                         f"variable JAX_ENABLE_X64=1), or pass dtype=jnp.{enabled.name}")


def check_groups(where: str, groups: Any) -> None:
    """`TypeError` naming `where(groups=...)` and the fix unless `groups` is None or a mapping from
    each group's name to a path prefix (a str) or a list or tuple of them."""
    if groups is None:
        return
    if not isinstance(groups, Mapping):
        example = ({str(g): str(g) for g in groups} if isinstance(groups, (list, tuple)) and groups
                   else {"body": "body", "head": "head"})
        raise TypeError(f"{where}(groups={groups!r}) must be a mapping {{group name: path prefix or prefixes}}, "
                        f"from input to output, e.g. groups={example}")
    for name, prefixes in groups.items():
        several = isinstance(prefixes, (Sequence, set, frozenset)) and not isinstance(prefixes, (str, bytes))
        if not (isinstance(prefixes, str) or (several and all(isinstance(p, str) for p in prefixes))):
            raise TypeError(f"{where}(groups=...): groups[{name!r}]={prefixes!r} must be a path prefix (a str, "
                            f"e.g. {{{name!r}: {str(name)!r}}}) or a tuple of them, e.g. {{{name!r}: ('a', 'b')}}")


def _check_something_floats(pretrained: PyTree) -> None:
    """`ValueError` naming `pretrained` when it holds no floating-point leaf (nothing would train)."""
    leaves = jax.tree.leaves(pretrained)
    if not any(_is_float(leaf) for leaf in leaves):
        dtypes = sorted({str(jnp.result_type(leaf)) for leaf in leaves})
        raise ValueError(f"finetune(pretrained=...) holds no floating-point leaf ({len(leaves)} leaves, dtypes "
                         f"{dtypes}), so nothing would train; pass the model's floating-point parameters, e.g. "
                         "nnx.split(model, nnx.Param, ...)[1] of a flax.nnx model")


def _start(pretrained, head, labels, names, new_groups) -> tuple[PyTree, tuple[int, ...]]:
    """(the starting parameters, concrete or abstract; the indices of the new groups)."""
    if head is None:
        return pretrained, _new_indices(names, new_groups)
    if new_groups is not None:
        start = jax.eval_shape(head, jax.random.key(0), pretrained)
        _check_structure(pretrained, start)
        return start, _new_indices(names, new_groups)
    start = head(jax.random.key(0), pretrained)  # eagerly, once: which groups does it re-initialise?
    _check_structure(pretrained, start)
    return start, _changed_groups(pretrained, start, labels)


def finetune(pretrained: PyTree, task: Sequence[Any], apply: Callable[[PyTree, Any], jax.Array], *,
             groups: Groups | None = None, head: Callable[[Key, PyTree], PyTree] | None = None,
             new_groups: Sequence[str] | None = None, batch_size: int | None = None, class_axis: int = -1,
             dtype: Any = None, name: str = "finetune") -> Problem:
    """A classification `hg.Problem` that starts from pretrained parameters.

    Args:
        pretrained: any pytree of arrays (a flax.nnx state, nested dicts). `init(key)` returns it
            exactly (as jax arrays; cast to `dtype` when given) or, with `head`, `head(key, it)`.
            Integer leaves (counters) are held constant by training and belong to no group; a PRNG
            key (an nnx model's RNG state: Dropout's) and a floating-point nnx Variable that is not
            a Param (BatchNorm's statistics) are refused: for a flax.nnx model call `model.eval()`,
            pass the Params only, `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`,
            with `apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)` (module docstring).
        task: `(train, val)` or `(train, val, test)`, each `(inputs, integer labels)`, labels in
            [0, classes) (checked at construction).
        apply: `apply(params, inputs) -> logits`, pure: a flax.nnx model in eval mode (one that
            updates its state, in train mode, is refused; module docstring).
        groups: `{name: prefix or prefixes}` from input to output (module docstring); None: one
            group per layer (`layer_groups`), in alphabetical order (module docstring, "Group
            order"). Per-group hyperparameters follow this order. Recorded on the problem
            (`problem_groups`), for `group_sgd(problem)`.
        head: optional `head(key, pretrained) -> params`: the starting point with a fresh head.
        new_groups: the groups `head` re-initialises (no pretrained reference: L2-SP skips them).
            Default with `head`: the groups in which `head(jax.random.key(0), pretrained)`
            changes a leaf (its shape or any value), found by calling it once at construction;
            none without `head`.
        batch_size: examples per step, None for the full training set.
        class_axis: the class axis of the logits (0 for class-major models such as `hg.problems.MLP`).
            Checked at construction against one example's logits (`jax.eval_shape`, nothing runs).
        dtype: cast every floating leaf of `pretrained` to it (e.g. float64 for derivative checks).
            Only the stored parameters are cast: a flax layer whose computation dtype was fixed
            when it was built still computes at that precision (nnx.Embed's dtype defaults to its
            param_dtype, float32; jax.nn.dot_product_attention, nnx.MultiHeadAttention's default,
            takes its softmax in float32), so a float64 derivative check carries float32
            rounding and central differences do not converge. Build such layers with
            `dtype=`/`param_dtype=` of this dtype (and give attention an `attention_fn` whose
            softmax runs in it). `finetune` warns (UserWarning) when `apply`,
            traced once abstractly on one example, casts a float to a narrower one or returns
            narrower logits (a cast of the inputs alone warns as well).
        name: a label for reports.

    Hyperparameters read by `train_loss` (each optional, a scalar or one per group):
    `weight_decay` (towards zero) and `l2sp` (towards `pretrained`); see the module docstring.

    Raises:
        ValueError: a PRNG key or a non-Param nnx Variable in `pretrained`; an `apply` that
            updates a flax.nnx model's state (train mode; nnx.RNN without initial_carry); a task that is not 2 or 3 (inputs, labels) pairs;
            labels that are not integers or not in [0, classes); a `class_axis` that does not hold
            the logits' classes; groups that miss a parameter, or a group (or one of its prefixes)
            that no parameter falls into (a misspelt prefix); a head that changes the tree's
            structure or another group; a `dtype` that is not floating point; a `pretrained` with no
            floating-point leaf.
        TypeError: an `apply` or a `head` that is not callable; `groups` that is not a mapping
            from names to a prefix or a tuple of them (`check_groups`); `new_groups` given as a str.

    Cost: a training step is the model's forward-backward pass plus one pass over the parameters
    per penalty present; construction traces the model once abstractly (twice with `dtype`: the
    narrower-float check) and, with `head` and no `new_groups`, calls `head` once. Memory: one
    copy of `pretrained`, the starting point and the L2-SP reference; compiled programs take its
    arrays as arguments, holding no copy (only leaves of at most 64 KiB are embedded as constants:
    `hypergrad._compile.HOISTED_BYTES`). Bias: none; L2-SP pulls towards the source task.
    """
    _check_task(task)
    _check_arguments(apply, head, groups, new_groups, dtype)
    check_no_keys(pretrained, "pretrained")
    pretrained = jax.tree.map(lambda x: _cast(x, dtype), pretrained)
    _check_something_floats(pretrained)
    labels, names = group_labels(pretrained, groups)
    start, new = _start(pretrained, head, labels, names, new_groups)
    _check_head(pretrained, start, labels, names, new)
    try:
        check_class_labels({f"task: the {name} labels": y for name, (_, y) in zip(SPLITS, task)}, task[0][0], apply,
                           start, class_axis)
    except TraceContextError as error:  # apply wrote to a flax.nnx Variable it closes over
        raise ValueError(state_update_refusal("finetune(apply=...): apply(params, inputs)", error)) from None
    if dtype is not None:
        _warn_narrower_computation(apply, start, task[0][0], dtype)
    start_of = (lambda key: pretrained) if head is None else (lambda key: head(key, pretrained))

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
    problem = Problem(init=start_of, train_loss=train_loss, val_loss=val_loss, train_data=train, val_data=val,
                      test_data=test[0] if test else None, batch_size=batch_size, metrics={"accuracy": acc},
                      name=name)
    recorded = layer_groups(pretrained) if groups is None else dict(groups)
    _BUILT[train_loss] = (recorded, tuple(leaf for leaf in jax.tree.leaves(pretrained) if _is_float(leaf)))
    return problem


def problem_groups(problem: Problem, *, copies: bool = False) -> dict[str, str | Sequence[str]] | None:
    """The groups `finetune` built `problem` with, in their order (a new dict): the `groups` it was
    given, or `layer_groups(pretrained)` for its default; None for a problem `finetune` did not
    build (another constructor's, or, unless `copies`, a copy such as `problem.with_fixed(...)`).
    `group_sgd(problem)` and `finetune_space` read them (with `copies=True`), so that the
    optimiser's rates and the problem's penalties count the same groups.

    Args:
        problem: an `hg.Problem`.
        copies: also give the groups of a problem built on one `finetune` built: a copy
            (`problem.with_fixed(...)`, `objective.with_fixed(...).problem`), or a problem whose
            training loss calls such a problem's (found through its closures). None when it is
            built on none, or on several with other groups.
    """
    if not isinstance(problem, Problem):
        return None
    records = _built_under(problem) if copies else [r for r in [_recorded(problem.train_loss)] if r is not None]
    if not records or any(list(r[0].items()) != list(records[0][0].items()) for r in records):
        return None
    return dict(records[0][0])


def _recorded(fn: Any) -> tuple | None:
    """`_BUILT`'s record of `fn`, a training loss `finetune` made, else None."""
    return _BUILT.get(fn) if isinstance(fn, types.FunctionType) else None


def _built_under(problem: Problem) -> list[tuple[dict, tuple]]:
    """The records `(groups, pretrained floating-point leaves)` of the problems `finetune` built
    whose training loss `problem`'s is or calls: its own; a copy's original (`Problem.with_fixed`
    wraps the original's train_loss in a function closing over the original problem); a problem of
    your own whose loss adds to one's. Found through the closures of `problem.train_loss`
    (functions, partials, bound methods and problems, `_COPY_DEPTH` deep; what a function reads as
    a global is not seen). Empty for a problem built on none. Cost: a walk over those closures."""
    found, seen, todo = [], set(), [(problem.train_loss, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or depth > _COPY_DEPTH:
            continue
        seen.add(id(obj))
        record = _recorded(obj)
        if record is not None:
            found.append(record)
        elif isinstance(obj, Problem):
            todo.append((obj.train_loss, depth + 1))
        elif isinstance(obj, functools.partial):
            todo.extend((inner, depth + 1) for inner in (obj.func, *obj.args, *obj.keywords.values()))
        elif isinstance(obj, types.MethodType):
            todo.extend([(obj.__func__, depth + 1), (obj.__self__, depth + 1)])
        elif isinstance(obj, types.FunctionType):
            todo.extend((_cell_contents(cell), depth + 1) for cell in obj.__closure__ or ())
    return found


def _cell_contents(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a closure variable not yet bound)
        return None


def _cast(x: Any, dtype: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(dtype) if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating) else x


def _warn_narrower_computation(apply: Callable[[PyTree, Any], jax.Array], params: PyTree, inputs: Any,
                               dtype: Any) -> None:
    """Warns when `apply`, traced once abstractly on one example and the parameters cast to `dtype`,
    casts a floating-point value to a narrower float or returns one: a flax layer whose computation
    dtype was fixed at construction (nnx.Embed's defaults to its float32 param_dtype, attention's
    softmax) still computes at that precision, so a float64 derivative check carries float32
    rounding and central differences do not converge. A cast of the inputs alone warns as well."""
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if not jnp.issubdtype(dtype, jnp.floating):
        return
    one = jax.tree.map(one_example, inputs)
    closed = jax.make_jaxpr(apply)(params, one)
    where = _narrowing_casts(closed.jaxpr, dtype)
    outputs = {str(aval.dtype) for aval in closed.out_avals if _narrower(aval.dtype, dtype)}
    if not where and not outputs:
        return
    found = "; ".join(([f"casts to {', '.join(sorted(set(where.values())))} in {', '.join(where)}"] if where else [])
                      + ([f"returns {', '.join(sorted(outputs))} logits"] if outputs else []))
    name = dtype.name
    attention = any("attention" in caller.lower() for caller in where)
    warnings.warn(f"finetune(dtype={name}): apply(params, inputs) computes in a narrower float although its "
                  f"parameters are cast to {name} ({found}): a flax layer's computation dtype is fixed when it is "
                  f"built (nnx.Embed's defaults to its param_dtype, float32), so derivative checks in {name} carry "
                  f"its rounding and finite differences do not converge. Build the layers with dtype=jnp.{name} and "
                  f"param_dtype=jnp.{name} (e.g. nnx.Embed(..., dtype=jnp.{name}, param_dtype=jnp.{name}))"
                  + (ATTENTION_ADVICE.format(dtype=name) if attention else ""),
                  UserWarning, stacklevel=users_stacklevel())


ATTENTION_ADVICE = ("; nnx.MultiHeadAttention's default attention at dropout_rate=0 (jax.nn.dot_product_attention) "
                    "computes its softmax in float32 whatever the dtype: give it an attention_fn whose softmax runs "
                    "in {dtype}, e.g. weights = flax.nnx.nn.attention.dot_product_attention_weights(query, key, "
                    "bias, mask), then jnp.einsum('...hqk,...khd->...qhd', weights, value)")
"""The part of `_warn_narrower_computation`'s warning for an attention layer that casts."""


def _narrower(candidate: Any, dtype: np.dtype) -> bool:
    return bool(jnp.issubdtype(candidate, jnp.floating)) and jnp.dtype(candidate).itemsize < dtype.itemsize


def _narrowing_casts(jaxpr: jax_core.Jaxpr, dtype: np.dtype) -> dict[str, str]:
    """`{where: to dtype}` of every cast of a float to a float narrower than `dtype` in `jaxpr` and
    the jaxprs inside it; where is the layer's method (`_caller`)."""
    found = {}
    for eqn in jaxpr.eqns:
        if (eqn.primitive.name == "convert_element_type" and _narrower(eqn.params["new_dtype"], dtype)
                and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)):
            found.setdefault(_caller(eqn), jnp.dtype(eqn.params["new_dtype"]).name)
    for inner in jax_core.subjaxprs(jaxpr):
        for where, to in _narrowing_casts(inner, dtype).items():
            found.setdefault(where, to)
    return found


def _caller(eqn: jax_core.JaxprEqn) -> str:
    """Who made `eqn`: the innermost flax method on its traceback ("Embed.__call__"), else the
    innermost line outside jax ("model.py:12"), else "apply"."""
    frames = [] if eqn.source_info.traceback is None else eqn.source_info.traceback.frames
    outside_jax = [f for f in frames if not in_package(f.file_name, jax)]
    in_flax = [f for f in outside_jax if in_package(f.file_name, flax) and _is_method(f.function_name)]
    if in_flax:
        return in_flax[0].function_name
    return f"{os.path.basename(outside_jax[0].file_name)}:{outside_jax[0].line_num}" if outside_jax else "apply"


def _is_method(qualname: str) -> bool:
    """Whether a frame's qualified name is a class's method ("Embed.__call__", not a closure's
    "promote_dtype.<locals>.<genexpr>")."""
    return "." in qualname and "<" not in qualname


def _new_indices(names: tuple[str, ...], new_groups: Sequence[str] | None) -> tuple[int, ...]:
    if new_groups is None:
        return ()
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
        groups: as in `finetune` (None: one group per layer of the updates' tree). `init` refuses
            (`ValueError`) `groups` that split the parameters otherwise than the problem being
            trained does, when `finetune` built it (or it is a copy of one, `problem.with_fixed`):
            the training loop's problem (`hypergrad.loop.trained_problem()` while it builds the optimiser).
            Built outside a loop, it is checked against every problem `finetune` built whose
            pretrained leaves the parameters hold.

    Groups are read from `params` when the update is handed them (the training loop does), else
    from `updates`: a parameter that is not floating point (an RNG key, a counter) then belongs to
    no group, as in `finetune`, although the loop hands it a floating-point zero update, and its
    update passes through unchanged (the loop holds such parameters constant).

    A group whose rate is exactly 0 gets an update of (signed) zero: its parameters stay bitwise
    unchanged. Cost: one multiply per parameter; state: one int32 counter.
    """
    problem = trained_problem()  # the problem whose training loop builds this optimiser (None outside one)

    def init(params):
        _check_problem_groups(params, groups, problem)
        # the rates' checks (group_rates': momentum, shapes) before any other transformation's update reads
        # hparams; abstractly, so nothing enters the program
        jax.eval_shape(lambda: rates(jnp.zeros([], jnp.int32), len(group_labels(params, groups)[1])))
        return GroupRateState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        labels, names = group_labels(updates if params is None else params, groups)
        step_rates = rates(state.count, len(names))
        updates = jax.tree.map(lambda u, g: u if g == NO_GROUP else (-step_rates[g]).astype(u.dtype) * u,
                               updates, labels)
        return updates, GroupRateState(state.count + 1)

    return optax.GradientTransformation(init, update)


def _check_problem_groups(params: PyTree, groups: Groups | None, problem: Problem | None) -> None:
    """`ValueError` when `groups` split `params` otherwise than the problem being trained does (other
    members, or the same in another order): the rates' `lr[i]`, `freeze` and `lr_decay` would then
    count other groups than the penalties' `l2sp[i]` and `weight_decay[i]`. The problem being trained
    is `problem` (the training loop's: `trained_problem()`), followed to the problems `finetune`
    built that its training loss is (`_built_under`: a `with_fixed` copy's original). Where it is not
    known (an optimiser built outside a training loop) or built on none of them, every problem
    `finetune` built whose pretrained leaves `params` hold is checked, and all must agree: a guess
    from the arrays refuses rather than accepts. Cost: at trace time only."""
    records = [] if problem is None else _built_under(problem)
    by_arrays = not records
    if by_arrays:
        ids = {id(leaf) for leaf in jax.tree.leaves(params)}
        records = [record for record in list(_BUILT.values()) if any(id(leaf) in ids for leaf in record[1])]
    if not records:
        return
    labels, names = group_labels(params, groups)
    mine = jax.tree.leaves(labels)
    for recorded, _ in records:
        if jax.tree.leaves(group_labels(params, recorded)[0]) != mine:
            raise ValueError(_groups_refusal(names, groups is None, recorded, len(records) if by_arrays else 0))


def _groups_refusal(names: tuple[str, ...], default: bool, recorded: dict, guessed_from: int) -> str:
    """`_check_problem_groups`' message: the optimiser's groups `names`, the problem's `recorded`; and
    when the problem was guessed from the arrays of `guessed_from` > 1 problems, why all must match."""
    why = ("" if guessed_from < 2 else
           f" (the problem being trained is not known here, as the optimiser was built outside hg.Objective's "
           f"training loop, and these parameters hold the pretrained arrays of {guessed_from} problems "
           "hg.problems.finetune built: the groups of every one must match)")
    return (f"group_sgd's groups, in order {list(names)}"
            f"{' (the default, layer_groups(params): alphabetical)' if default else ''}, are not the groups "
            f"hg.problems.finetune built the problem with, in order {list(recorded)} ({dict(recorded)}){why}: "
            "lr[i], freeze and lr_decay would act on other layers than l2sp[i] and weight_decay[i]. Give the "
            "optimiser the problem's groups, hg.problems.group_sgd(problem), or the same groups dict, input to "
            "output, to finetune(groups=...) and group_sgd(groups)")


def group_rates(hparams: HParams, step: jax.Array, num_groups: int, *, lr: float = 0.01, warmup: float = 0.0,
                lr_decay: float = 1.0, num_steps: int | None = None, cosine: bool = False) -> jax.Array:
    """The learning rate of every group at `step`, shape (num_groups,), read from `hparams`
    (the keyword arguments are the defaults of keys that are absent; a concrete default is
    checked by `check_rate_defaults`: `lr`, `warmup` and `lr_decay` finite and >= 0, `cosine` a
    bool, `num_steps` an int >= 1 with `cosine` and None without; a value in `hparams` is traced
    and not checked):

    - `lr`: a scalar (one rate), (G,) (one per group) or (G, T) (a schedule per group, T at least
      the objective's `num_steps`: a shorter one is refused before compiling, as a plain per-step
      schedule is);
    - `lr_decay`: layer-wise decay xi: group g is scaled by xi^(G - 1 - g) (the last group, the
      output side, keeps the full rate);
    - `warmup`: the ramp length in steps (`warmup_ramp`), real-valued;
    - `freeze`: the number of first groups whose rate is 0, a whole number in [0, num_groups]
      (`freeze_count`). It has no hypergradient: the rates are a step function of it, so a
      gradient method that differentiates it is refused (ValueError at trace time, before
      compiling), not handed a gradient of 0 that would never move it. Search it as an
      `hg.Choice` (`hg.random_search`, `hg.grid_search`, or `hg.hybrid_search`, which searches the
      choice and tunes the continuous hyperparameters by gradient), or hold it with
      `Objective.with_fixed({"freeze": k})`;

    Groups are counted in the order of `groups`, which these two read as input to output: the
    default groups are alphabetical (module docstring, "Group order"), so give `groups` in
    input-to-output order where the layer names do not sort that way.
    - cosine decay to zero over `num_steps` when `cosine`.

    `momentum` is not read here, but checked: `hparams["momentum"]` must be a scalar (`group_sgd`'s
    momentum trace takes one decay for every parameter; a vector would broadcast against each
    parameter's last axis, or fail to); a momentum per group belongs in `group_sgd(base=...)` under
    another name.

    Raises:
        ValueError: a keyword default out of its range (`check_rate_defaults`), or a
            `hparams["momentum"]` that is not a scalar, at trace time (`scale_by_group_rate`'s
            `init` runs these checks before any update).
    """
    num_steps = check_rate_defaults("group_rates", lr=lr, warmup=warmup, lr_decay=lr_decay, num_steps=num_steps,
                                    cosine=cosine)
    if "momentum" in hparams and jnp.ndim(hparams["momentum"]) != 0:
        raise ValueError(f"hparams['momentum'] has shape {jnp.shape(hparams['momentum'])}; group_sgd's momentum "
                         "trace takes one decay for every group, a scalar (a vector would broadcast against each "
                         "parameter's last axis, or fail to): give a scalar, or for a momentum per group write the "
                         "trace in group_sgd(base=...) and read it there under another name, e.g. "
                         "hparams['group_momentum']")
    base = _rates_at(jnp.asarray(hparams.get("lr", lr)), step, num_groups)
    depth = jnp.arange(num_groups - 1, -1, -1)
    rate = base * jnp.asarray(hparams.get("lr_decay", lr_decay)) ** depth
    rate = rate * warmup_ramp(step, hparams.get("warmup", warmup))
    if "freeze" in hparams:
        rate = jnp.where(jnp.arange(num_groups) >= freeze_count(hparams["freeze"], num_groups), rate, 0.0)
    if cosine:
        rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step, num_steps) / num_steps))
    return rate


FREEZE_HAS_NO_GRADIENT = (
    "hparams['freeze'] (the number of lowest parameter groups held still) has no hypergradient: the rates are a "
    "step function of it, so its gradient is 0 wherever it is defined and a gradient method would never move it. "
    "Search it as hg.Choice([0, 1, ...]) with hg.random_search or hg.grid_search, or with hg.hybrid_search, which "
    "searches the choice and tunes the continuous hyperparameters by gradient; or hold it fixed with "
    "objective.with_fixed({'freeze': k}) and differentiate the rest")


@jax.custom_jvp
def _refusing_derivatives(freeze: jax.Array) -> jax.Array:
    """`freeze` itself; differentiating it raises FREEZE_HAS_NO_GRADIENT at trace time."""
    return freeze


@_refusing_derivatives.defjvp
def _refusing_derivatives_jvp(primals, tangents):  # called only when `freeze` is differentiated
    del primals, tangents
    raise ValueError(FREEZE_HAS_NO_GRADIENT)


def freeze_count(freeze: Any, num_groups: int) -> jax.Array:
    """`hparams["freeze"]` as an array, checked: a concrete value (one held with
    `Objective.with_fixed`, or given to `group_rates` directly) must be a whole number in
    [0, num_groups]. A traced one (a value in the hparams handed to the objective or a method,
    which trace them, or a searched `hg.Choice`) cannot be checked before compiling: below 0 it
    freezes no group, above num_groups every group. Differentiating it is refused
    (`FREEZE_HAS_NO_GRADIENT`). Cost: none at run time (one comparison per group per step).

    Raises:
        ValueError: a concrete `freeze` that is not a whole number in [0, num_groups].
    """
    if not isinstance(freeze, jax.core.Tracer):
        value = np.asarray(freeze)
        real = jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)  # no bool; bf16
        whole = value.ndim == 0 and real and np.isfinite(value) and float(value) == int(value)
        if not (whole and 0 <= value <= num_groups):
            raise ValueError(f"hparams['freeze']={freeze!r}: give the number of lowest parameter groups to hold "
                             f"still, a whole number from 0 (train every group) to {num_groups} (there are "
                             f"{num_groups} groups)")
    return _refusing_derivatives(jnp.asarray(freeze))


def _rates_at(lr: jax.Array, step: jax.Array, num_groups: int) -> jax.Array:
    """`lr`'s rates at `step`, shape (num_groups,): `lr` itself, or column `step` of a per-group
    schedule (num_groups, T). The column is read unclamped, as a plain schedule's `lr[step]` is, so
    that the library's bounds check (`checkify`'s index checks, run by `hg.hypergradient`, the
    searches and `tune` before compiling) refuses a schedule shorter than the training run; read
    past its end outside that check, JAX holds the last column."""
    if lr.ndim == 2:
        if lr.shape[0] != num_groups:
            raise ValueError(f"hparams['lr'] has shape {lr.shape}; a schedule per group has one row per "
                             f"parameter group and one column per step, shape ({num_groups}, num_steps)"
                             + (" (transpose it)" if lr.shape[1] == num_groups else ""))
        lr = lr[:, step]
    return _per_group(lr, num_groups, "lr")


def check_rate_defaults(where: str, *, lr: Any, warmup: Any, lr_decay: Any, num_steps: Any, cosine: Any
                        ) -> int | None:
    """Refuses `group_rates`' keyword defaults out of their range, naming `where` (the caller), the
    argument and the fix: `lr`, `warmup` and `lr_decay` must be finite and >= 0 (a negative rate,
    or a negative decay raised to an odd power, is gradient ascent; a NaN `num_steps` horizon was
    silent), `cosine` True or False, `num_steps` an int >= 1 with `cosine` (the horizon of the
    decay) and None without it (it is read by nothing else). A traced default is not checked.
    Returns `num_steps` as a Python int (or None). Cost: a few host comparisons."""
    for name, value, what in (("lr", lr, "a learning rate; 0 holds a group still"),
                              ("warmup", warmup, "the warm-up length in steps; 0: none"),
                              ("lr_decay", lr_decay, "the layer-wise decay of the rates; 1: none")):
        check_nonnegative(where, name, value, what)
    if not isinstance(cosine, (bool, np.bool_)):
        raise ValueError(f"{where}(cosine={cosine!r}) must be True or False (cosine decay of the rates)")
    if cosine and not is_int_at_least(num_steps):
        raise ValueError(f"{where}(cosine=True) needs num_steps, the horizon of the decay, as an int >= 1; "
                         f"got {num_steps!r}")
    if not cosine and num_steps is not None:
        raise ValueError(f"{where}(num_steps={num_steps!r}) is read only with cosine=True (the horizon of the cosine "
                         "decay); drop num_steps, or pass cosine=True")
    return int(num_steps) if cosine else None  # a numpy int as the Python int it equals


def check_nonnegative(where: str, name: str, value: Any, what: str, upper: float | None = None) -> None:
    """`ValueError` naming `where(name=value)` unless the concrete `value` (a number or an array,
    every element) is real, finite, >= 0 and below `upper` if given; a traced one passes."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        array = None if isinstance(value, (bool, str, bytes)) or value is None else np.asarray(value)
    except (ValueError, TypeError):  # a ragged list
        array = None
    # jnp.issubdtype, as np.issubdtype(bfloat16, np.floating) is False; bool and complex are not real numbers
    real = array is not None and (jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating))
    if not (real and np.all(np.isfinite(array)) and np.all(array >= 0) and (upper is None or np.all(array < upper))):
        bound = ">= 0" if upper is None else f"in [0, {upper:g})"
        raise ValueError(f"{where}({name}={value!r}) must be a finite number {bound} ({what})")


def group_sgd(groups: Groups | None = None, *, lr: float = 0.01, momentum: float | None = None, warmup: float = 0.0,
              lr_decay: float = 1.0, num_steps: int | None = None, cosine: bool = False,
              base: Callable[[HParams], optax.GradientTransformation] | None = None
              ) -> Callable[[HParams], optax.GradientTransformation]:
    """An `optimizer(hparams)` for `hg.Objective`: SGD with momentum (`hparams["momentum"]`, default
    `momentum`) whose step size is one rate per parameter group (`group_rates`).

    Args:
        groups: as in `finetune` (None: one group per layer), or the problem `finetune` built (or a
            copy of it, `problem.with_fixed(...)`), whose groups it then takes
            (`problem_groups(problem, copies=True)`). Groups that split the trained problem's
            parameters otherwise than its own are refused when the loop is traced (`ValueError`).
        lr, warmup, lr_decay: defaults for the hyperparameters absent from `hparams`, finite and >= 0.
        momentum: the default of `hparams["momentum"]`, in [0, 1) (None: 0.9). Refused with `base`,
            which replaces the momentum trace and so would never read it (put a trace in `base`).
        num_steps, cosine: cosine decay to zero over `num_steps` (an int >= 1, needed when
            `cosine`, refused without it: nothing else reads it).
        base: `hparams -> transformation` applied before the rates instead of the momentum trace
            (e.g. `lambda h: optax.scale_by_adam()` for per-group Adam).

    Cost: the base transformation plus one multiply per parameter per step. Memory: the base's
    state (one momentum buffer) and a counter. Bias: none.

    Raises:
        ValueError: a default out of its range (`check_rate_defaults`), `momentum` outside [0, 1),
            `momentum` given with `base`, or a problem `finetune` did not build; all at construction,
            before anything compiles. Groups other than the problem's, or a `hparams["momentum"]`
            that is not a scalar (`group_rates`): when the loop is traced.
        TypeError: `groups` neither None, a problem nor a mapping of prefixes (`check_groups`).
    """
    num_steps = check_rate_defaults("group_sgd", lr=lr, warmup=warmup, lr_decay=lr_decay, num_steps=num_steps,
                                    cosine=cosine)
    if isinstance(groups, Problem):
        groups = _groups_of(groups)
    check_groups("group_sgd", groups)
    if base is not None and momentum is not None:
        raise ValueError(f"group_sgd(momentum={momentum!r}, base=...): base replaces the momentum trace, so momentum "
                         "would never be read; drop momentum, or chain the trace in base, e.g. "
                         "lambda h: optax.chain(optax.trace(decay=0.5), ...)")
    momentum = 0.9 if momentum is None else momentum
    check_nonnegative("group_sgd", "momentum", momentum, "the momentum trace's decay", upper=1.0)

    def optimizer(hparams):
        def rates(step, num_groups):
            return group_rates(hparams, step, num_groups, lr=lr, warmup=warmup, lr_decay=lr_decay,
                               num_steps=num_steps, cosine=cosine)

        first = optax.trace(decay=hparams.get("momentum", momentum)) if base is None else base(hparams)
        return optax.chain(first, scale_by_group_rate(rates, groups))

    return optimizer


def _groups_of(problem: Problem) -> dict[str, str | Sequence[str]]:
    """`problem_groups(problem, copies=True)`, or a `ValueError` with the fix for a problem built on no
    problem `finetune` built (or on several, with other groups)."""
    groups = problem_groups(problem, copies=True)
    if groups is None:
        several = len(_built_under(problem)) > 1
        raise ValueError(f"group_sgd(problem): the problem {problem.name!r} "
                         + ("is built on several problems hg.problems.finetune built, with other groups"
                            if several else "was not built by hg.problems.finetune (nor is it a copy of one)")
                         + ", so it records no groups; pass the groups themselves: the dict given to "
                         "finetune(groups=...), or one group per layer, hg.problems.layer_groups("
                         "problem.initial_params(jax.random.key(0), {}))")
    return groups
