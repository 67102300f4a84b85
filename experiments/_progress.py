"""What a reproduction has measured so far, kept on disk as it goes: the shared form of finetuning's cells.

A reproduction runs for minutes; it is made of units (a seed, a method, a problem's tuner) measured one
after the other, and its page and sidecar are written only at the end. Each unit goes through
`Progress.unit`, which keeps its value in `<out>/<name>.partial.json` (`_claims.write_partial`, replaced
whole after each unit) as soon as it is measured, so a run interrupted near its end (Ctrl-C, a crash, a
killed job) leaves its finished units on disk; the final `_claims.write` removes the file.

Two kinds of experiment:

- resuming (`resume=True`): a unit's value is plain data (numbers, strings, lists, tuples, dicts, numpy
  and jax arrays) that the rest of the run reads as it would read the freshly measured value. The file
  holds each value exactly (`encode`: dtypes, tuples, non-finite numbers and non-string keys kept), so a
  rerun into the same `--out` with the same mode, sizes and environment (hypergrad's commit, the library
  versions, backend and devices, XLA_FLAGS, and the code itself: `code_digest` of hypergrad's and the
  experiments' .py files, so that an uncommitted edit, a file git does not track or a hypergrad installed
  outside a checkout never lets a run resume units measured by other code) reads the kept units back
  instead of measuring them again, and ends with the numbers an uninterrupted run gives (only the seconds
  a unit took are its earlier run's);
- keeping only (`resume=False`): a unit's value is something JSON cannot give back as it was (a
  `hg.Result` that later steps compare, pick from or plot); the file holds `record(value)` (for a
  result, `result_record`: its numbers, best and final trials) for a reader, and a rerun measures
  everything again.

A file the next run cannot resume from (another mode, sizes, environment or code; unreadable, or a unit
`decode` cannot read back; or any file of a keeping-only experiment) is moved aside first
(`_claims.set_aside`: `<name>.partial.previous.json`, `-2`, ...) with a printed line, never overwritten.

Partial file: `_claims.write_partial`'s record, whose "numbers" are {"resume": bool, "identity": {"mode",
"sizes", "environment", "code", "xla_flags"}, "units": [{"key": str, "value": encoded value}, ...]} in the
order measured.

Not an experiment (no `--smoke`): a module the experiments share.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad

import _claims


# -- an exact JSON form of plain data -------------------------------------------------------------
def encode(value: Any) -> Any:
    """`value` as JSON data that `decode` turns back into an equal value of the same types: Python
    numbers (a non-finite float as {"__float__": "nan" | "inf" | "-inf"}), strings, None, lists; tuples,
    numpy arrays and scalars (with their dtype, `dtype_name`: ml_dtypes' bfloat16 and float8 included),
    jax arrays (as numpy, read back as jax arrays) and dicts with keys other than plain strings, each
    tagged. Raises TypeError for anything else (a Result)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and type(value) is float:
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        return {"__scalar__": encode(value.item()), "dtype": dtype_name(value.dtype)}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("an object array cannot be kept exactly")
        return {"__array__": encode(value.tolist()), "dtype": dtype_name(value.dtype), "shape": list(value.shape)}
    if isinstance(value, jax.Array):
        return {"__jax__": encode(np.asarray(value)), "weak": bool(getattr(value, "weak_type", False))}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(f"{type(value).__name__} cannot be kept exactly in JSON")


def dtype_name(dtype: np.dtype) -> str:
    """How `encode` writes a dtype: numpy's `dtype.str` ('<f4') where it names the dtype back, else its
    name (ml_dtypes' bfloat16, float8_*, int4: their `str` is a void '<V2' numpy cannot read back as them);
    `decode` reads either with `jnp.dtype`, which knows ml_dtypes' names."""
    return dtype.str if np.dtype(dtype.str) == dtype else dtype.name


def decode(data: Any) -> Any:
    """The value `encode` wrote."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__float__" in data:
        return float(data["__float__"])
    if "__scalar__" in data:
        return np.dtype(jnp.dtype(data["dtype"])).type(decode(data["__scalar__"]))
    if "__array__" in data:
        return np.array(decode(data["__array__"]), dtype=jnp.dtype(data["dtype"])).reshape(data["shape"])
    if "__jax__" in data:
        array = decode(data["__jax__"])
        if data.get("weak") and array.ndim == 0:  # a Python number's array: weakly typed again
            return jnp.asarray(array.item())
        return jnp.asarray(array)
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k): decode(v) for k, v in data["__dict__"]}
    return {k: decode(v) for k, v in data.items()}


def result_record(value) -> dict[str, Any]:
    """What a keeping-only experiment keeps of a unit that is a `hg.Result` or a (Result, seconds) pair:
    its strategy, compute and seconds, each trial's numbers (value, test value, runs, tuner, state; not
    its settings, so that a search of many shaped trials stays small), and its best and final trials
    whole (`Trial.to_dict()`, settings included)."""
    result, seconds = value if isinstance(value, tuple) else (value, result_seconds(value))
    trials = [{"number": t.number, "value": t.value, "test_value": t.test_value, "runs": t.runs, "tuner": t.tuner,
               "state": t.state} for t in result.trials]
    best = result.best_trial
    return {"strategy": result.strategy, "runs": result.runs, "seconds": seconds, "trials": trials,
            "best": None if best is None else best.to_dict(),
            "final": result.trials[-1].to_dict() if result.trials else None}


def result_seconds(result) -> float:
    """A Result's own seconds: its trials', compilation and set-up."""
    return result.seconds + result.compile_seconds


# -- the record --------------------------------------------------------------------------------------
def folder_digest(folder: str, recursive: bool) -> str:
    """SHA-256 (hex) of the .py files in `folder` (and its subfolders when `recursive`): each file's
    path relative to `folder` and its contents' own digest, in sorted order."""
    digest = hashlib.sha256()
    walk = sorted(os.walk(folder)) if recursive else [(folder, [], sorted(os.listdir(folder)))]
    for here, _, files in walk:
        for name in sorted(files):
            path = os.path.join(here, name)
            if name.endswith(".py") and os.path.isfile(path):
                with open(path, "rb") as f:
                    contents = hashlib.sha256(f.read()).digest()
                digest.update(os.path.relpath(path, folder).encode() + b"\0" + contents)
    return digest.hexdigest()


@functools.cache
def code_digest() -> str:
    """SHA-256 (hex) of the code a run's numbers come from, read once per process: every .py file under
    the imported hypergrad package's folder (recursively) and every .py file in the experiments folder
    (this module's). A resume then needs the same code byte for byte, which hypergrad's commit alone
    does not say (any uncommitted change is "+dirty", untracked files are not counted, and outside a
    checkout it is "unknown"). About 80 small files: milliseconds."""
    package = os.path.dirname(os.path.abspath(hypergrad.__file__))
    experiments = os.path.dirname(os.path.abspath(__file__))
    return hashlib.sha256(f"hypergrad {folder_digest(package, True)} experiments "
                          f"{folder_digest(experiments, False)}".encode()).hexdigest()


def identity(smoke: bool, sizes: Any) -> dict[str, Any]:
    """What a kept unit's numbers depend on besides its key: the mode, the experiment's sizes (a
    dataclass or any `encode`-able value), the environment (`_claims.environment` less its start), the
    code (`code_digest`) and the XLA_FLAGS environment variable (None when unset)."""
    if dataclasses.is_dataclass(sizes) and not isinstance(sizes, type):
        sizes = dataclasses.asdict(sizes)
    env = {k: v for k, v in _claims.environment().items() if k != "started_utc"}
    return {"mode": "smoke" if smoke else "full", "sizes": encode(sizes), "environment": env,
            "code": code_digest(), "xla_flags": os.environ.get("XLA_FLAGS")}


class Progress:
    """One run's units, kept in `<out>/<name>.partial.json` as each is measured (module docstring).

    `Progress(args, name, sizes, resume=...)` reads back (resume=True) or sets aside an earlier run's
    file; `unit(key, measure, ...)` returns a unit's value, measured now or read back; `note()` is the
    sentence a page adds when units were read back ('' otherwise)."""

    def __init__(self, args, name: str, sizes: Any, *, resume: bool):
        self.out, self.name, self.smoke, self.resume = args.out, name, bool(args.smoke), resume
        self.began = time.perf_counter()
        self.identity = identity(self.smoke, sizes)
        self.kept: dict[str, Any] = {}   # key -> encoded value, in the order measured or read back
        # key -> encoded value of an earlier run this one resumes, and key -> that value decoded
        self.earlier, self.decoded = self._earlier()
        self.resumed: list[str] = []

    def _earlier(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The units of an earlier, interrupted run this run can resume from, encoded and decoded; any
        other file (one whose units do not all decode included) is set aside (with a printed line) so that
        this run's writes never replace it."""
        path = _claims.partial_path(self.out, self.name)
        try:
            record = _claims.read_partial(self.out, self.name)
            if record is None:
                return {}, {}
            numbers = record["numbers"]
            if not self.resume:
                why = "this experiment measures every unit again (its units are not plain numbers)"
            elif not numbers.get("resume") or json.dumps(numbers.get("identity"), sort_keys=True) != json.dumps(
                    self.identity, sort_keys=True):
                why = "it was measured with another mode, other sizes, another environment or other code"
            else:
                units = {str(u["key"]): u["value"] for u in numbers["units"]}
                decoded = {key: decode(value) for key, value in units.items()}  # a unit it cannot read: set aside
                if units:
                    print(f"[{self.name}] resuming: {len(units)} unit{'s' if len(units) > 1 else ''} measured by an "
                          f"interrupted run with the same sizes and environment ({path}): read back, not measured "
                          "again", flush=True)
                return units, decoded
        except Exception as error:  # any file this run cannot read back is set aside, not fatal
            why = f"it cannot be read back ({type(error).__name__}: {error})"
        print(f"[{self.name}] {path}: an earlier run's partial results; {why}: moved to {_claims.set_aside(path)}",
              flush=True)
        return {}, {}

    def unit(self, key: str, measure: Callable[[], Any], record: Callable[[Any], Any] | None = None) -> Any:
        """The value of unit `key`: read back from the earlier run when this one resumes it, else
        `measure()`, then kept (the whole file rewritten: one JSON dump of every unit so far). A resuming
        experiment keeps `encode(value)` and reads it back with `decode`; a keeping-only one keeps
        `record(value)` (JSON data, e.g. `result_record`; default `encode(value)`) and never reads it back."""
        if key in self.kept:
            raise ValueError(f"unit {key!r} measured twice in one run")
        if key in self.earlier:
            self.kept[key] = self.earlier[key]
            self.resumed.append(key)
            self._write()
            return self.decoded[key]
        value = measure()
        self.kept[key] = encode(value) if self.resume or record is None else record(value)
        self._write()
        return value

    def _write(self) -> None:
        """The file: this run's units, then the earlier run's not reached yet (so a second interruption
        while resuming loses none of them)."""
        units = {**self.kept, **{k: v for k, v in self.earlier.items() if k not in self.kept}}
        numbers = {"resume": self.resume, "identity": self.identity,
                   "units": [{"key": k, "value": v} for k, v in units.items()]}
        _claims.write_partial(self.out, self.name, numbers, seconds=time.perf_counter() - self.began,
                              smoke=self.smoke)

    def note(self) -> str:
        """'\\n\\n' and one sentence naming the units read back from an interrupted run, for the page; ''
        when every unit was measured by this run (the page is then what it always was)."""
        if not self.resumed:
            return ""
        return (f"\n\n{len(self.resumed)} of this run's {len(self.kept)} units ({', '.join(self.resumed)}) were "
                f"measured by an earlier, interrupted run with the same sizes and environment and read back from "
                f"{self.name}.partial.json; their seconds are that run's, and the wall time counts only this run.")
