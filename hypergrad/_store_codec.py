"""JSON encodings of the study store: values, hyperparameters, spaces and call fingerprints.

Everything the store writes is numbers and JSON, never pickles, so reading a study file cannot run
code. Floats round-trip exactly (`float.__repr__` is the shortest exact form); non-finite floats,
which JSON lacks, are written as the strings "nan", "inf", "-inf". Arrays keep their dtype and
shape. Objects JSON cannot hold (a function given as a structural option) are written as their
`repr`, and read back as that string unless the space is at hand to map an option index back.

A fingerprint describes a call (strategy, space, objective, key, counts) so that resuming a study
with a different call is refused. Functions are described by qualified name, a hash of their
bytecode and constants (a set constant, such as the `{"mse", "l2"}` of `name in {"mse", "l2"}`, by
its elements sorted: its repr's order follows the process's hash seed), their default arguments (the
user's functions' keyword-only ones too), the values they close over, followed to any depth (an
optax optimiser's learning rate lives in a closure, and
`chain(clip, adamw(warmup_cosine_decay_schedule(...)))` holds its peak rate eight closures down)
and, for the user's own functions, the module-level values their code names (`momentum=MOM`: editing
`MOM` changes results as much as editing the code); a bound method as its function and its object;
an object of the user's own class by its attributes (its default repr shows none) and the functions
its class defines (a callable object's `__call__`), and by its repr too when that is written in C or
when part of its state is not in its attributes (a slotted base, a builtin or C base such as `float`
or `Decimal`: the repr is then all that shows it; else a repr written in Python is made from those
attributes, and may print a set in the hash seed's order); a JAX pytree node that none of these
describe (a flax `nnx.Param`) node by node, by its auxiliary data and its children; an object
described by its repr (an installed package's, whose attributes are caches and handles) by that
text with the sets it holds printed sorted (a set of strings prints in the hash seed's order), a
repr over 200 characters by its start and the SHA-1 of the whole; a set by its elements in the
order of their descriptions (its repr's order depends on the process's hash seed); a mapping by its
entries sorted by key, a key other than a string by its type and description ("int:1", so `{1: a,
"1": b}` keeps both entries; a string key holding ":" as 'str:"int:1"'); arrays by dtype, shape and
a SHA-1 of their bytes; memory addresses never enter, so a fingerprint is the same in every process
running the same code. The functions and objects of this library, the standard library and installed
packages are described by code (and repr) alone: their module-level state is caches and counters
that change as they run, and their code is their version. Cycles are cut where an object recurs on
its own path; a description of more than `_NODES` objects is refused (`identity` raises `TooLarge`),
never cut short: a cut would let calls that differ past it pass as equal.

A fingerprint's space lists its entries in the space's order (every format did), and a resumed call
must give them in that order (`space_reordering`): the order fixes the grid's enumeration and the
random draws. A `Choice`'s options are there as `encode_value` stores them, except an option that
value cannot hold (a function, an object: its label is only a name, `<function <lambda>>`), which is
described by `identity`, code and all: editing a function option's body is another call.

Fingerprints carry `FINGERPRINT_FORMAT`. Those stored before it are compared in their own terms
(`identity(..., format=)`, `describe_space(..., format=)`, `in_format`): a study stored then still
resumes, with the weaker check it was stored under (format 5: a pytree node by its treedef's text,
its auxiliary data by their `str`, and reprs cut to 200 characters, the sets in them in the hash
seed's order; format 4: that, and a mapping's keys by their `str`, so
keys of one `str` were one entry, and the user's objects by their repr too; format 3: that, and set
constants in code by their repr, a Choice's function and object options by their label,
keyword-only defaults left out, tune's `init=` as given rather than as the starts made of it;
format 2: that, and closures followed 6 in a row, methods and callable objects by name and repr, sets by
repr; format 1: that, without globals and attributes either).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import re
import site
import sys
import sysconfig
import types
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hypergrad.space import Choice, Space

__all__ = ["encode_value", "decode_value", "encode_hparams", "decode_hparams", "describe_space", "identity",
           "first_difference", "space_reordering", "in_format", "FINGERPRINT_FORMAT", "TooLarge"]

FINGERPRINT_FORMAT = 6
"""6: a JAX pytree node by its auxiliary data and children, each by `identity` (format 5: its treedef's text,
which prints auxiliary data by its `str`), the sets an object described by its repr holds printed sorted in that
repr, a repr longer than `_REPR_CHARS` also by its SHA-1 (format 5: cut there);
5: a mapping's keys other than strings by their type and description (`{1: a, "1": b}` was one entry), an
object of the user's class whose `__repr__` is written in Python by its attributes and class code without the
repr (which may print a set in the hash seed's order) when its state is all in those attributes (no slots, no
builtin or C base: else the repr stays), a string key holding ":" as "str:<JSON>", a JAX pytree node otherwise
described by its repr (a flax Variable: a few printed values of its arrays) by its treedef and leaves (arrays
hashed whole);
4: set constants in code by their sorted elements, a Choice's function and object options by their code,
the user's functions' keyword-only defaults, tune's `init=` hyperparameters as the starts made of them
(`hypergrad.tune`; a resumed study of format 3 or older with hg.ES or hg.PES and resample_key=False is
refused: `hypergrad.store`);
3: closures followed to any depth, methods and callable objects by their code, sets sorted;
2: functions' globals and plain objects' attributes described; 1 (no "format" field): neither."""

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_DEPTH = 6  # format 2 only: function closures it followed in a row (kept to compare studies stored then)
_NODES = 20_000  # objects one fingerprint describes at most
_REPR_CHARS = 200  # a repr's characters kept as text (from format 6, a longer one also by its SHA-1)
_SET_SEARCH = 2_000  # objects `_sets_within` visits at most under one object described by its repr
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made at run time (a class statement's), not a builtin type
_PLAIN_SIZE = type("Plain", (), {}).__basicsize__  # an instance of a class statement's class, state in __dict__


class TooLarge(ValueError):
    """A description would visit more than `_NODES` objects: refused rather than cut short."""


def _float(x: float) -> Any:
    return x if math.isfinite(x) else repr(x)


@functools.cache
def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name  # slow enough in numpy 2 (a few microseconds) to matter for every trial


def _same_signs(flat: np.ndarray) -> bool:
    """Whether every element of the float (or complex) `flat` has the sign bits of the first: equal
    values can differ there (0.0 == -0.0), and a repeated-value encoding would lose it."""
    try:
        parts = (flat.real, flat.imag) if flat.dtype.kind == "c" else (flat,)
        return all(bool((np.signbit(p) == np.signbit(p[0])).all()) for p in parts)
    except TypeError:  # not a number with a sign (an integer dtype numpy cannot signbit is never signed zero)
        return True


def _array(a: np.ndarray) -> dict[str, Any]:
    """{"dtype", "shape", "data": flat list}, or {"dtype", "shape", "fill": value} for an array of
    one repeated value (a schedule searched as a constant: T times less to encode and store)."""
    flat = a.reshape(-1)
    spec: dict[str, Any] = {"dtype": _dtype_name(a.dtype), "shape": list(a.shape)}
    if flat.size > 1 and (flat == flat[0]).all() and _same_signs(flat):
        value = flat[0].item()
        spec["fill"] = _float(value) if isinstance(value, float) else value
        return spec
    data = flat.tolist()
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        data = [_float(float(x)) for x in data]
    spec["data"] = data
    return spec


def encode_value(value: Any) -> Any:
    """A JSON-safe, exactly invertible form of an array, number, string, tuple, list or dict;
    anything else becomes {"repr": ...} (read back as that string)."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return {"array": _array(np.asarray(value))}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple):
        return {"tuple": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode_value(v) for k, v in value.items()}}
    return {"repr": _ADDRESS.sub("", repr(value))}


def _decode_array(spec: Mapping[str, Any]) -> np.ndarray:
    dtype, shape = jnp.dtype(spec["dtype"]), tuple(spec["shape"])
    if "fill" in spec:
        fill = spec["fill"]
        return np.full(shape, _NONFINITE[fill] if isinstance(fill, str) else fill, dtype=dtype)
    data = [_NONFINITE[x] if isinstance(x, str) else x for x in spec["data"]]
    return np.asarray(data, dtype=dtype).reshape(shape)


def decode_value(value: Any) -> Any:
    """The inverse of `encode_value`. Raises ValueError, KeyError or TypeError on a damaged value."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, body), = value.items()
    if kind == "array":
        return _decode_array(body)
    if kind == "float":
        return _NONFINITE[body]
    if kind == "tuple":
        return tuple(decode_value(v) for v in body)
    if kind == "dict":
        return {k: decode_value(v) for k, v in body.items()}
    if kind == "repr":
        return str(body)
    raise ValueError(f"unknown encoding {kind!r}")


def encode_hparams(hparams: Mapping[str, Any], space: Space | None) -> dict[str, Any]:
    """A trial's hyperparameters; a structural choice's option also by its index in the space."""
    out = {}
    for name, value in hparams.items():
        dist = space[name] if space is not None and name in space.names else None
        if isinstance(dist, Choice) and dist.structural:
            index = next((i for i, o in enumerate(dist.options) if o is value or _same(o, value)), None)
            out[name] = {"option": index, "value": encode_value(value)}
        else:
            out[name] = encode_value(value)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def decode_hparams(encoded: Mapping[str, Any], space: Space | None) -> dict[str, Any]:
    """The inverse of `encode_hparams`: a structural option is the space's own object when the space
    is given (and still holds that index), else its stored value."""
    out = {}
    for name, value in encoded.items():
        if isinstance(value, dict) and set(value) == {"option", "value"}:
            dist = space[name] if space is not None and name in space.names else None
            index = value["option"]
            ok = isinstance(dist, Choice) and isinstance(index, int) and 0 <= index < len(dist.options)
            out[name] = dist.options[index] if ok else decode_value(value["value"])
        else:
            out[name] = decode_value(value)
    return out


def describe_space(space: Space, *, format: int | None = None) -> dict[str, Any]:
    """{name: {"type", "lo", "hi", "shape", "independent"} or {"type": "Choice", "options", "structural"}},
    in the space's order (which `space_reordering` compares). A Choice's options are their
    `encode_value` labels (what `Result.to_optuna` reads back from `info["space"]`); for a
    fingerprint (`format` given), from format 4 an option those labels cannot hold (a function, an
    object) is its `identity` instead: its label is its name alone, blind to an edited body.

    Raises:
        TooLarge: (format given) an option's description visits more than `_NODES` objects.
    """
    out = {}
    for name, dist in space.items:
        if isinstance(dist, Choice):
            out[name] = {"type": "Choice", "options": [_option(o, format) for o in dist.options],
                         "structural": bool(dist.structural)}
        else:
            out[name] = {"type": type(dist).__name__, "lo": dist.lo, "hi": dist.hi, "shape": list(dist.shape),
                         "independent": bool(dist.independent)}
    return out


def _option(option: Any, format: int | None) -> Any:
    """A Choice option in `describe_space`: its `encode_value` label, or in a fingerprint of format 4
    on, its `identity` when the label would be a repr (a function's is its name alone)."""
    if format is None or format < 4 or _encodable(option):
        return encode_value(option)
    return identity(option, format=format)


def _encodable(value: Any) -> bool:
    """Whether `encode_value` holds `value` exactly (no part of it written as its repr)."""
    if value is None or isinstance(value, (bool, int, float, str, jax.Array, np.ndarray, np.generic)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_encodable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) for k in value) and all(_encodable(v) for v in value.values())
    return False


def _code_hash(code: types.CodeType, format: int = FINGERPRINT_FORMAT) -> str:
    """SHA-1 (16 hex digits) of a code object's bytecode, names and constants (nested code hashed;
    from format 4, set constants by their elements sorted, `_constant`)."""
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_hash(const, format).encode())
        else:
            parts.append((_constant(const) if format >= 4 else repr(const)).encode())
    return hashlib.sha1(b"|".join(parts)).hexdigest()[:16]


def _constant(const: Any) -> str:
    """A code constant's repr, with the elements of a frozenset (`x in {"a", "b"}` compiles to one),
    also inside a tuple, sorted: a frozenset's own order follows the hash seed, which differs
    between processes unless PYTHONHASHSEED is set. Equal to `repr(const)` for any constant holding
    no frozenset, so those hash as in format 3."""
    if isinstance(const, frozenset) and const:
        return "frozenset({" + ", ".join(sorted(_constant(c) for c in const)) + "})"
    if type(const) is tuple:
        return "(" + ", ".join(_constant(c) for c in const) + ("," if len(const) == 1 else "") + ")"
    return repr(const)


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names a code object (and the code nested in it: its lambdas) may read as globals, sorted:
    `co_names` holds global and attribute names alike, so an attribute that shares a global's name
    is described too (one more value; never one less)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _function(fn: types.FunctionType, depth: float, seen: _Seen) -> dict[str, Any]:
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(identity(cell.cell_contents, depth - 1, seen))
        except ValueError:  # an empty cell (a closure variable not yet bound)
            cells.append(None)
    described = {"function": fn.__qualname__, "code": _code_hash(fn.__code__, seen.format), "closure": cells,
                 "defaults": identity(fn.__defaults__, depth - 1, seen)}
    if not _is_library(fn):
        # The module-level values the code reads (`momentum=MOM`): editing one changes the results
        # as much as editing the code. A library's functions are described by their code only: its
        # globals are caches and counters that change as it runs (and its code is its version).
        module = fn.__globals__
        described["globals"] = {name: identity(module[name], depth - 1, seen)
                                for name in _global_names(fn.__code__) if name in module}
        if fn.__kwdefaults__ and seen.format >= 4:  # `*, scale=2.0`: held beside the code, as defaults are
            described["kwdefaults"] = identity(fn.__kwdefaults__, depth - 1, seen)
    return described


def _is_library(fn: types.FunctionType) -> bool:
    return _installed(fn.__module__ if isinstance(fn.__module__, str) else "")


@functools.lru_cache(maxsize=None)
def _installed(module_name: str) -> bool:
    """Whether a module is this library, the standard library or an installed package (a file
    under site-packages), not the user's own code (`__main__`, a notebook, a script's modules)."""
    top = module_name.partition(".")[0]
    if top in (__name__.partition(".")[0], "builtins") or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(module_name) or sys.modules.get(top)
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and os.path.realpath(path).startswith(_INSTALLED)


_INSTALLED = tuple(sorted({os.path.realpath(p) + os.sep for p in [
    *site.getsitepackages(), site.getusersitepackages(),
    *(sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib"))]}))


@dataclasses.dataclass(frozen=True)
class _Seen:
    """The objects on the path being described (against cycles), a shared count of the nodes left
    to describe (against blow-up) and the format being written."""

    path: frozenset = frozenset()
    left: list = dataclasses.field(default_factory=lambda: [_NODES])
    format: int = FINGERPRINT_FORMAT

    def enter(self, obj: Any) -> _Seen | None:
        """The state inside `obj`; None when `obj` is on its own path (a cycle), or, in format 2,
        past the node bound (it described the rest by type); `TooLarge` past the bound since."""
        if id(obj) in self.path:
            return None
        if self.left[0] <= 0:
            if self.format >= 3:
                raise TooLarge(f"describing it visits more than {_NODES} objects")
            return None
        self.left[0] -= 1
        return _Seen(self.path | {id(obj)}, self.left, self.format)


def identity(obj: Any, depth: float | None = None, seen: _Seen | None = None, *,
             format: int = FINGERPRINT_FORMAT) -> Any:
    """A JSON description of `obj` for fingerprints, the same in every process (see the module
    docstring), in fingerprint format `format`. Containers, dataclasses and named tuples are
    followed whole, function closures to any depth (format 2: `depth` in a row, 6 by default);
    an object recurring on its own path is described by type. Cost: linear in what it visits;
    arrays are hashed (their bytes read once).

    Raises:
        TooLarge: (format 3) more than `_NODES` objects would be visited.
    """
    seen = _Seen(format=format) if seen is None else seen
    if depth is None:
        depth = _DEPTH if seen.format < 3 else math.inf
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        if isinstance(obj, jax.Array) and jnp.issubdtype(obj.dtype, jax.dtypes.prng_key):
            obj = jax.random.key_data(obj)
        a = np.ascontiguousarray(np.asarray(obj))
        return {"array": a.dtype.name, "shape": list(a.shape), "sha1": hashlib.sha1(a.tobytes()).hexdigest()}
    inner = seen.enter(obj)
    if depth <= 0 or inner is None:
        return {"type": type(obj).__qualname__}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return [identity(v, depth, inner) for v in obj]
    if isinstance(obj, Mapping):
        return _mapping(obj, depth, inner)
    if isinstance(obj, types.FunctionType):
        return _function(obj, depth, inner)
    if isinstance(obj, functools.partial):
        return {"partial": identity(obj.func, depth, inner), "args": identity(obj.args, depth, inner),
                "keywords": identity(obj.keywords, depth, inner)}
    if isinstance(obj, types.MethodType):
        if inner.format < 3:
            return {"method": obj.__func__.__qualname__, "self": identity(obj.__self__, depth - 1, inner)}
        # the function as any other (its code, closure and the globals it reads) and its object
        return {"method": identity(obj.__func__, depth, inner), "self": identity(obj.__self__, depth, inner)}
    if isinstance(obj, (set, frozenset)) and inner.format >= 3:
        # sorted by the elements' descriptions: a set's own order (its repr's) follows the hash seed
        elements = [identity(v, depth, inner) for v in obj]
        return {type(obj).__name__: sorted(elements, key=lambda e: json.dumps(e, sort_keys=True, default=str))}
    return _object(obj, depth, inner)


def _mapping(obj: Mapping, depth: float, seen: _Seen) -> dict[str, Any]:
    """A mapping's entries sorted by key: a string key as itself; from format 5 any other key by its
    type and `identity` ("int:1"), so that `{1: a, "1": b}` keeps both entries and an object key is
    described without its memory address (format 4 and before: every key by its `str`, so keys of
    one `str` collapsed into one entry). From format 5, keys described alike (two objects with equal
    attributes) are kept apart as "key", "key#1", ... in the mapping's order."""
    if seen.format < 5:
        return {str(k): identity(v, depth, seen) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    entries = sorted(((_mapping_key(k, depth, seen), v) for k, v in obj.items()), key=lambda kv: kv[0])
    described: dict[str, Any] = {}
    for key, value in entries:  # a stable sort: keys described alike stay in the mapping's order
        repeat, name = 0, key
        while name in described:
            repeat += 1
            name = f"{key}#{repeat}"
        described[name] = identity(value, depth, seen)
    return described


def _mapping_key(key: Any, depth: float, seen: _Seen) -> str:
    """A mapping key in a description (format 5 on): a string as itself (as in every format), any
    other key as "<type>:<its identity as JSON>"."""
    if isinstance(key, str):  # one holding ":" as "str:<JSON>", apart from another type's key ("int:1")
        return str(key) if ":" not in key else f"str:{json.dumps(key)}"
    return f"{type(key).__qualname__}:{json.dumps(identity(key, depth, seen), sort_keys=True, default=str)}"


def _object(obj: Any, depth: float, seen: _Seen) -> Any:
    """Dataclasses and named tuples field by field; modules and classes by name; else the repr.
    An object of the user's own class also by the functions its class defines (format 3)."""
    name = type(obj).__qualname__
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": name, **{f.name: identity(getattr(obj, f.name), depth, seen)
                                 for f in dataclasses.fields(obj) if not f.name.startswith("_")},
                **_class_code(obj, depth, seen)}
    if hasattr(obj, "_fields"):  # a NamedTuple (optax's GradientTransformation)
        return {"type": name, **{f: identity(getattr(obj, f), depth, seen) for f in obj._fields},
                **_class_code(obj, depth, seen)}
    if isinstance(obj, types.ModuleType):
        return {"module": obj.__name__}
    if isinstance(obj, type):
        return {"class": obj.__qualname__}
    if callable(obj) and hasattr(obj, "__wrapped__"):  # a jitted or wrapped function
        return {"wrapped": identity(obj.__wrapped__, depth - 1, seen)}
    fields = _instance_fields(obj, seen.format)
    if not fields and seen.format >= 5:
        tree = _pytree(obj, depth, seen) if seen.format < 6 else _pytree_node(obj, depth, seen)
        if tree is not None:
            return {"type": name, **tree, **_class_code(obj, depth, seen)}
    described: dict[str, Any] = {"type": name}
    if not (fields and seen.format >= 5 and _python_repr(obj) and _state_in_attributes(type(obj))):
        described["repr"] = _repr_text(obj, seen.format)
    if fields:  # a plain object's repr rarely shows its values (`<Config object>`): its attributes do
        described["fields"] = {k: identity(v, depth, seen) for k, v in sorted(fields.items())}
    described.update(_class_code(obj, depth, seen))
    return described


def _python_repr(obj: Any) -> bool:
    """Whether `type(obj).__repr__` is written in Python (the user's class's own, or a Python base
    class's, such as scikit-learn's `BaseEstimator`): then (format 5 on) an object whose attributes
    are described (`_instance_fields`: the user's own class) and hold all its state
    (`_state_in_attributes`) leaves its repr out. That repr is made
    by code (described by `_class_code` when it is the user's, by its version when a package's) from
    those attributes, and as text it may follow the hash seed (a set attribute printed in the set's
    own order), which made the same call's fingerprint differ between two processes. A repr written
    in C (object's, or a builtin base type's, which may show state that no attribute holds) stays."""
    return isinstance(getattr(type(obj), "__repr__", None), types.FunctionType)


def _state_in_attributes(cls: type) -> bool:
    """Whether an instance of `cls` keeps all its state in its `__dict__` (its attributes), so that
    (format 5 on) a Python-written repr may be left out: no `__slots__` holding values anywhere in
    its MRO (a slotted base, such as `fractions.Fraction`'s, keeps them outside `__dict__`), and no
    base but `object` that is not a pure-Python class (a builtin or C base, `float` or
    `decimal.Decimal`, keeps its value in the instance's C layout). Else the repr is the only
    description of that state, and stays."""
    for base in cls.__mro__[:-1]:
        if _value_slots(base):
            return False
        if not base.__flags__ & _HEAP_TYPE:  # a builtin (static) type
            return False
    return cls.__basicsize__ <= _PLAIN_SIZE and not cls.__itemsize__  # no C fields (a C heap type's)


def _value_slots(cls: type) -> tuple[str, ...]:
    """The `__slots__` that `cls` itself declares to hold values (`__dict__` and `__weakref__` left out)."""
    slots = vars(cls).get("__slots__", ())
    return tuple(slot for slot in ((slots,) if isinstance(slots, str) else slots)
                 if slot not in ("__dict__", "__weakref__"))


def _pytree(obj: Any, depth: float, seen: _Seen) -> dict[str, Any] | None:
    """(format 5 only; `_pytree_node` from format 6) A registered JAX pytree node that no branch of `identity` follows (a flax
    Variable such as `nnx.Param`, another library's node) by its tree structure and its leaves'
    descriptions (arrays hashed whole, as plain arrays are): its repr prints a few leading values of
    its arrays, blind to the rest. None for a leaf (an object JAX does not flatten). Cost: one
    flatten, then the leaves' descriptions."""
    try:
        leaves, treedef = jax.tree_util.tree_flatten(obj)
    except Exception:  # noqa: BLE001 - a node whose flatten fails is described as any other object
        return None
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf: `obj` itself
        return None
    return {"pytree": _ADDRESS.sub("", str(treedef)), "leaves": [identity(leaf, depth, seen) for leaf in leaves]}


def _pytree_node(obj: Any, depth: float, seen: _Seen) -> dict[str, Any] | None:
    """(format 6 on) A registered JAX pytree node that no branch of `identity` follows, one level at
    a time: its auxiliary data (`treedef.node_data()`: a flax Variable's metadata, another node's
    static fields) and its children, each by `identity` (a nested node the same way, arrays hashed
    whole). Format 5 described the node's whole treedef as text (`_pytree`), which prints auxiliary
    data by its `str`: `1` and `"1"`, or two objects whose repr omits their state (an address,
    removed) were alike, and a set printed in the hash seed's order. None for a leaf (an object JAX
    does not flatten). Cost: one one-level flatten per node, then the descriptions."""
    try:
        children, treedef = jax.tree_util.tree_flatten(obj, is_leaf=lambda x: x is not obj)
        _, aux = treedef.node_data()
    except Exception:  # noqa: BLE001 - a node whose flatten fails is described as any other object
        return None
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf: `obj` itself
        return None
    return {"aux": identity(aux, depth, seen), "children": [identity(child, depth, seen) for child in children]}


def _repr_text(obj: Any, format: int) -> str:
    """`repr(obj)` for a description, memory addresses removed ("" when the repr raises). Format 5
    and before: cut to `_REPR_CHARS` characters, so two objects whose reprs differ past them were
    alike. From format 6: a longer repr is its first `_REPR_CHARS` characters and the SHA-1 of the
    whole; and the sets `obj` holds (`_sets_within`) printed in it are printed with their elements
    sorted (a set of strings prints in the hash seed's order, so an installed package's object,
    described by its repr alone, gave the same call other fingerprints in other processes). A set
    the repr prints that `obj` does not hold (one made as it prints) keeps its own order. Cost: the
    repr, and a walk of at most `_SET_SEARCH` objects under `obj`."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not stop a search: the type and fields
        text = ""
    if format < 6:
        return _ADDRESS.sub("", text)[:_REPR_CHARS]
    try:
        printed = [(repr(held), held) for held in _sets_within(obj) if len(held) > 1]  # each printed once
        for shown, held in sorted(printed, key=lambda p: -len(p[0])):  # an outer set before the sets in it
            if shown in text:
                text = text.replace(shown, _sorted_repr(held))
    except Exception:  # noqa: BLE001 - an attribute or element that cannot be read or printed: the text as printed
        pass
    text = _ADDRESS.sub("", text)
    if len(text) <= _REPR_CHARS:
        return text
    return f"{text[:_REPR_CHARS]}... sha1:{hashlib.sha1(text.encode('utf-8', 'replace')).hexdigest()}"


def _sets_within(obj: Any) -> list[set | frozenset]:
    """The sets and frozensets reachable from `obj` through its attributes (`__dict__` and slots),
    lists, tuples, dicts and sets, visiting at most `_SET_SEARCH` objects (a cache of thousands of
    entries is not walked whole)."""
    found, stack, visited, left = [], [obj], set(), _SET_SEARCH
    while stack and left > 0:
        item = stack.pop()
        if id(item) in visited or item is None or isinstance(item, (bool, int, float, complex, str, bytes)):
            continue
        visited.add(id(item))
        left -= 1
        if isinstance(item, (set, frozenset)):
            found.append(item)
        stack.extend(itertools.islice(_held(item), left))
    return found


def _held(item: Any) -> Iterator[Any]:
    """The values `item` holds, for `_sets_within`: a container's elements (a dict's keys and
    values), else its attributes' values (a type, a module or a function is not entered)."""
    if isinstance(item, (list, tuple, set, frozenset)):
        return iter(item)
    if type(item) is dict:
        return itertools.chain.from_iterable(item.items())
    if isinstance(item, (type, types.ModuleType, types.FunctionType, types.MethodType, jax.Array, np.ndarray)):
        return iter(())
    values = list(getattr(item, "__dict__", {}).values()) if isinstance(getattr(item, "__dict__", None), dict) else []
    for cls in type(item).__mro__:
        values.extend(getattr(item, slot, None) for slot in _value_slots(cls))
    return iter(values)


def _sorted_repr(value: Any) -> str:
    """A set's or frozenset's repr with its elements sorted by their own such repr (a tuple's and a
    nested set's elements likewise), addresses removed: the same whatever order the set iterates in."""
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted(_sorted_repr(v) for v in value))
        if type(value) is set:
            return "{" + inner + "}" if value else "set()"
        return f"{type(value).__name__}({{{inner}}})" if value else f"{type(value).__name__}()"
    if type(value) is tuple:
        return "(" + ", ".join(_sorted_repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return _ADDRESS.sub("", repr(value))


def _class_code(obj: Any, depth: float, seen: _Seen) -> dict[str, Any]:
    """{"methods": {qualified name: description}} of the functions (methods, static and class
    methods, properties' getters) that the user's own classes in `type(obj)`'s MRO define, in
    format 3; else {}. A callable object's `__call__`, or a method it calls, is code as much as a
    function's: editing it changes results."""
    if seen.format < 3:
        return {}
    methods = {}
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "")
        if not isinstance(module, str) or _installed(module):
            continue
        for attr, value in sorted(vars(cls).items()):
            fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else \
                value.fget if isinstance(value, property) else value
            if isinstance(fn, types.FunctionType):  # (a name shadowed by a subclass's keeps the one that runs)
                methods.setdefault(f"{cls.__qualname__}.{attr}", identity(fn, depth, seen))
    return {"methods": methods} if methods else {}


def _instance_fields(obj: Any, version: int = FINGERPRINT_FORMAT) -> dict[str, Any]:
    """The instance attributes of a plain object of the user's own class, or (format 3) of an
    installed package's class that keeps object's repr (optax's `inject_hyperparams` holds the
    schedule in such an object: its repr shows nothing); else {} (an installed package's objects
    otherwise carry caches and handles, and their repr describes them)."""
    cls = type(obj)
    module = getattr(cls, "__module__", "")
    if not isinstance(module, str) or (_installed(module) and (version < 3 or cls.__repr__ is not object.__repr__)):
        return {}
    try:
        fields = vars(obj)
    except TypeError:  # no __dict__ (__slots__): the repr alone
        return {}
    return {k: v for k, v in fields.items() if isinstance(k, str) and not k.startswith("__")}


def first_difference(stored: Any, given: Any, path: str = "") -> str | None:
    """The dotted path of the first place two JSON descriptions differ, or None when equal. Dicts
    are compared by key, in any order: a fingerprint's space in another order is `space_reordering`'s."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in list(stored) + [k for k in given if k not in stored]:
            if key not in stored or key not in given:
                return f"{path}.{key}".lstrip(".")
            found = first_difference(stored[key], given[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(stored, list) and isinstance(given, list):
        if len(stored) != len(given):
            return path.lstrip(".") or "(whole)"
        for i, (a, b) in enumerate(zip(stored, given)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if stored == given else (path.lstrip(".") or "(whole)")


def space_reordering(stored: Any, given: Any) -> tuple[list[str], list[str]] | None:
    """(the stored order, the given order) of two fingerprints' spaces (`describe_space`: its names
    in the space's order, as every fingerprint format stored them) when they list the same entries
    in another order, else None. The order fixes the grid's enumeration and each entry's random
    draws, so such a call is not the stored one: a resumed grid would run some points twice and skip
    others, a resumed random search would mix two orders' draws."""
    spaces = [f.get("space") if isinstance(f, dict) else None for f in (stored, given)]
    if not all(isinstance(space, dict) for space in spaces):
        return None
    order, given_order = (list(space) for space in spaces)
    return (order, given_order) if order != given_order and sorted(order) == sorted(given_order) else None


def in_format(description: Any, version: int) -> Any:
    """`description` (made by `identity` in format 2) as format `version` would have made it: for
    format 1, without functions' "globals" and objects' "fields". (Format 3's descriptions differ
    from 2's in what `identity(..., format=2)` follows: they are made again, not converted.)"""
    if version >= 2:
        return description
    if isinstance(description, list):
        return [in_format(v, version) for v in description]
    if not isinstance(description, dict):
        return description
    drop = ("globals",) if {"function", "code"} <= description.keys() else \
        ("fields",) if {"type", "repr"} <= description.keys() else ()
    return {k: in_format(v, version) for k, v in description.items() if k not in drop}
