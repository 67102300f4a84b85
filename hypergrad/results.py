"""Trials tables, compute accounting in three units, streaming logs, and fair comparison.

Every strategy (`tune`, `random_search`, `grid_search`) returns a `Result`: a table of `Trial`s in
the order they were produced, each with its hyperparameters, validation loss (`value`), test loss,
other scores, and the compute it cost in

- FLOPs, counted from the traced programs (see `hypergrad.accounting` for what is counted);
- wall seconds of execution (each call's set-up, compilation included, is reported separately, per
  result: `Result.compile_seconds`);
- training-run equivalents: FLOPs divided by the FLOPs of one training run (training plus scoring
  the trained parameters on validation and test: one search trial), the unit of `hg.compare`.

`line_up` (behind `hg.compare`) answers "at equal compute, which strategy found the better setting,
and how does its pick do on the test split?". This module is data only: figures and reports sit
above it (`hypergrad.plots`, `hypergrad.report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hypergrad._batching import is_writer
from hypergrad._extras import import_extra
from hypergrad._checks import check_log_apart, check_progress, is_number, shared_outcome
from hypergrad._files import replaced_atomically
from hypergrad._store_codec import decode_value, describe_space, encode_value
from hypergrad.folds import RESERVED_SUFFIX
from hypergrad.space import Choice, Space

__all__ = ["Trial", "Result", "Comparison", "line_up", "line_up_pick", "TrialRecorder", "BY"]

COMPLETE, FAIL, SKIPPED = "complete", "fail", "skipped"
STATES = (COMPLETE, FAIL, SKIPPED)
"""Every `Trial.state` (the library writes these alone; `Trial` refuses any other)."""

BY = ("runs", "seconds", "execution")
"""What `line_up` (`hg.compare`) can line strategies up by: compute in training-run equivalents,
wall seconds with compilation, or the trials' execution seconds alone (`Result.spent`)."""
_BY_WORDS = ("must be 'runs' (equal compute), 'seconds' (equal wall time, compilation included) or 'execution' "
             "(equal execution time, compilation left out)")
_UNIT = {"runs": "training-run equivalents", "seconds": "seconds", "execution": "seconds"}
GRID = "grid"
"""The `Result.strategy` of `grid_search` (a stored grid study's, loaded, too): its trials follow
the grid's order, so `line_up` gives it no pick before its last trial (`line_up_pick`)."""


def _to_python(value: Any) -> Any:
    """A JSON-safe copy: arrays to (nested) lists, numpy scalars to floats, non-finite to None."""
    if isinstance(value, Mapping):
        return {str(k): _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    array = np.asarray(value) if not isinstance(value, str) else None
    if array is None or array.dtype == object:
        return value
    if array.ndim:  # one pass in numpy: an element at a time costs milliseconds for a schedule
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            array = np.where(np.isfinite(array), array.astype(object), None)
        return array.tolist()
    item = array.item()
    if isinstance(item, float) and not math.isfinite(item):
        return None
    return item


def _host_scalar(value: Any, field: str, owner: str, integer: bool) -> int | float:
    """`value` (a Python number, numpy scalar or 0-d numpy or JAX array) as a Python number: an int
    when `integer`, else an int or float; a TypeError naming `owner(field=...)` for anything else
    (an array of another shape, a bool, a string, None, a float where an integer is asked for)."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0:
        value = np.asarray(value).item()
    if not isinstance(value, bool) and isinstance(value, int if integer else (int, float)):
        return value
    shape = f" of shape {np.shape(value)}" if isinstance(value, (jax.Array, np.ndarray)) else ""
    raise TypeError(f"{owner}({field}={value!r}): give {'an integer' if integer else 'a real number'} (a Python "
                    f"number, numpy scalar or 0-d JAX array), got {type(value).__name__}{shape}")


def _host_float(value: Any, field: str, owner: str = "Trial") -> float:
    """`value` as a Python float (`_host_scalar`)."""
    return float(_host_scalar(value, field, owner, integer=False))


def _host_int(value: Any, field: str, owner: str = "Trial") -> int:
    """`value` as a Python int (`_host_scalar`): an integer, never a float."""
    return int(_host_scalar(value, field, owner, integer=True))


def _finite(value: Any) -> float:
    """A number `_to_python` wrote: null (a non-finite number) reads back as NaN."""
    return math.nan if value is None else float(value)


def _hparam_to_python(value: Any) -> Any:
    """A hyperparameter for JSON: numbers and arrays as `_to_python` writes them, strings as they
    are, and any other structural option (None, a tuple, a list, a dict: what JSON would confuse
    with NaN or an array; a function or other object, which JSON cannot hold) as {"option": its
    encoding}, which `_from_json` reads back (a function or object as its repr string)."""
    if value is None or isinstance(value, (tuple, list, Mapping)):
        return {"option": encode_value(value)}
    if not isinstance(value, str) and np.asarray(value).dtype == object:  # not a number or array
        return {"option": encode_value(value)}
    return _to_python(value)


def _from_json(value: Any) -> Any:
    """A hyperparameter `_hparam_to_python` wrote: numbers and (nested) lists of numbers as numpy
    arrays, null as NaN, {"option": ...} as the structural option it encodes; any other value (a
    structural option's string) as it is."""
    if isinstance(value, dict) and set(value) == {"option"}:
        return decode_value(value["option"])
    if isinstance(value, list):
        items = [_from_json(v) for v in value]
        return np.asarray(items) if items else np.zeros((0,))
    if value is None:
        return np.asarray(math.nan)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.asarray(value)
    return value


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluated setting (or one outer step of a gradient method).

    Converted at construction (`__post_init__`), so a trial a custom outer loop builds from the
    values its programs return is the same data as one a strategy builds: the numbers (`value`,
    each score, `flops`, `seconds`, `run_flops`, `grad_norm`) become Python floats and `number`
    and `tuner` Python ints, whether given as Python numbers, numpy scalars or 0-d JAX arrays (a
    bool, or an array of more than one value, is a TypeError naming the field); a hyperparameter
    given as a JAX array becomes a numpy array of its dtype and shape (a 0-d one a 0-d array, as
    the strategies record a scalar), and any other hyperparameter (a numpy value, a structural
    option such as a string or a tuple) is kept as given. Cost: O(1) a field, plus one copy to
    the host of each JAX array.

    Attributes:
        number: position in the order the strategy produced trials, from 0.
        hparams: constrained hyperparameter values (numpy arrays; structural options as declared).
        value: validation loss (NaN when the trial diverged).
        scores: every score of the trained parameters: val_loss, test_loss, val_/test_ metrics
            (a score given as None stays None).
        state: "complete"; "fail" (non-finite loss: never chosen as best); "skipped" (an outer
            step whose loss was finite but whose hypergradient was not, so no update was made).
            Any other value is a ValueError naming these three, the upper-case spelling of
            `to_dataframe`'s state column included (not mapped: give `state.lower()`).
        flops: FLOPs this trial cost (its share of its compiled program's run).
        seconds: wall seconds of execution attributed to this trial.
        run_flops: FLOPs of one plain training run, the unit of `runs`.
        grad_norm: norm of the hypergradient in unconstrained coordinates (gradient methods only).
        tuner: which tuner of a population (or configuration of `hybrid_search`) took this step;
            None for search trials.
    """

    number: int
    hparams: dict[str, np.ndarray]
    value: float
    scores: dict[str, float]
    state: str
    flops: float
    seconds: float
    run_flops: float
    grad_norm: float | None = None
    tuner: int | None = None

    def __post_init__(self) -> None:
        convert = {"number": _host_int(self.number, "number"), "value": _host_float(self.value, "value"),
                   "flops": _host_float(self.flops, "flops"), "seconds": _host_float(self.seconds, "seconds"),
                   "run_flops": _host_float(self.run_flops, "run_flops"),
                   "grad_norm": None if self.grad_norm is None else _host_float(self.grad_norm, "grad_norm"),
                   "tuner": None if self.tuner is None else _host_int(self.tuner, "tuner")}
        if self.state not in STATES:
            hint = (f" (lower case: {self.state.lower()!r}; to_dataframe's state column writes them in upper case, "
                    "as Optuna does)" if isinstance(self.state, str) and self.state.lower() in STATES else "")
            raise ValueError(f"Trial(state={self.state!r}): give one of {', '.join(map(repr, STATES))}{hint}")
        convert["state"] = str(self.state)
        if not isinstance(self.hparams, Mapping):
            raise TypeError(f"Trial(hparams={self.hparams!r}): give a dict of hyperparameter name -> value")
        if not isinstance(self.scores, Mapping):
            raise TypeError(f"Trial(scores={self.scores!r}): give a dict of score name -> number, e.g. "
                            "{'val_loss': 0.3}")
        convert["hparams"] = {name: np.asarray(v) if isinstance(v, jax.Array) else v
                              for name, v in self.hparams.items()}
        convert["scores"] = {name: None if v is None else _host_float(v, f"scores[{name!r}]")
                             for name, v in self.scores.items()}
        for name, value in convert.items():  # frozen: set once, here
            object.__setattr__(self, name, value)

    @property
    def test_value(self) -> float | None:
        return self.scores.get("test_loss")

    @property
    def runs(self) -> float:
        """Compute in training-run equivalents."""
        return self.flops / self.run_flops if self.run_flops > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: numbers and arrays as (nested) lists, non-finite numbers as None, a
        structural option that JSON would confuse with those (None, a tuple) as {"option": ...}
        (`Result.from_dict` reads every one back)."""
        out = _to_python({
            "number": self.number, "state": self.state, "value": self.value,
            "test_value": self.test_value, "scores": self.scores, "hparams": {},
            "flops": self.flops, "runs": self.runs, "run_flops": self.run_flops, "seconds": self.seconds,
            "grad_norm": self.grad_norm, "tuner": self.tuner,
        })
        out["hparams"] = {str(name): _hparam_to_python(v) for name, v in self.hparams.items()}
        return out


@dataclasses.dataclass(frozen=True)
class Result:
    """The trials of one strategy, with its compute and its best setting.

    Converted at construction, as `Trial` converts its numbers: `trials` becomes a tuple (an
    entry that is not a `Trial` is a TypeError) and `run_flops` and `compile_seconds` Python
    floats, whether given as Python numbers, numpy scalars or 0-d JAX arrays.

    Attributes:
        strategy: a label ("random", "grid", "tune[Reverse(...)]", ...).
        trials: the trials in the order produced.
        run_flops: FLOPs of one plain training run of the objective.
        compile_seconds: seconds spent compiling this strategy's programs in this call (0 when
            every program came from the cache). The call's other one-time seconds are
            `setup_seconds`.
        info: strategy-specific facts (method, chunk size, outer optimiser, ...), JSON-safe;
            `info["setup_seconds"]` (see `setup_seconds`) and `info["setup_seconds_at"]`: pairs of
            [index of a trial, seconds] of compilation and set-up paid right before that trial
            rather than before the first: `random_search(extends=...)`'s continuation; in `tune`,
            the outer step's set-up after a warm-up, a resumed study's set-up after its stored
            trials, and each halving round's narrower program before that round; in
            `hybrid_search`, a resumed study's set-up after its stored trials.
            `random_search`'s `info["objective"]`: the objective's digest
            (`hypergrad.store.objective_digest`), made in the fingerprint format
            `info["objective_format"]` (absent from a Result saved before it was kept: formats 2
            to 5), in which `random_search(extends=...)` compares it with the objective given.

    Which trials a pick ranges over (`best_*`, `best_within`, `curve`, and so `hg.compare`): every
    trial, except in a `tune(..., resample_key=True)` result (`info["resample_key"]` true, with
    `info["final_trials"]`). There each outer step's trial was trained and scored on its own key
    `fold_in(key, step)`: the minimum over those is biased low by the keys' noise, is not
    reproduced by `objective(best_hparams, key)`, and does not compare with a search's trials,
    all scored on `key`. So a pick there ranges only over the trials scored on `key`: the
    warm-up's (`tuner` None) and each live tuner's final iterate (`info["final_trials"]`); before
    the first of them there is no pick, as before any finished trial. A result that does not say
    (no `info["final_trials"]`: saved before tune recorded it) keeps the rule for every trial,
    whatever keys they were scored on; a study read back before its call finished says (`load_study`
    reads `resample_key` from the stored call, and the final iterates committed so far). Deciding which
    trials count costs O(1) a trial.
    """

    strategy: str
    trials: tuple[Trial, ...]
    run_flops: float
    compile_seconds: float
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # converted as `Trial` converts its numbers: Python floats, whatever scalar was given
        if isinstance(self.trials, (str, bytes)) or not isinstance(self.trials, Sequence):
            raise TypeError(f"Result(trials=...): give a sequence of hg.Trial, got {type(self.trials).__name__}")
        trials = tuple(self.trials)
        wrong = next((t for t in trials if not isinstance(t, Trial)), None)
        if wrong is not None:
            raise TypeError(f"Result(trials=...): every entry must be an hg.Trial, got {type(wrong).__name__}")
        object.__setattr__(self, "trials", trials)
        object.__setattr__(self, "run_flops", _host_float(self.run_flops, "run_flops", "Result"))
        object.__setattr__(self, "compile_seconds", _host_float(self.compile_seconds, "compile_seconds", "Result"))

    # -- best setting ---------------------------------------------------------------------------
    @property
    def best_trial(self) -> Trial | None:
        """The trial with the lowest finite validation loss; failed trials are never chosen, nor, in
        a `resample_key` tune, a step's trial scored on its own key (see the class docstring: the
        pick is among the trials scored on the call's key). None when there is no such trial."""
        can_pick = pickable(self.info)
        ok = [t for t in self.trials if can_pick(t)]
        return min(ok, key=lambda t: t.value) if ok else None

    @property
    def best_hparams(self) -> dict[str, np.ndarray] | None:
        best = self.best_trial
        return None if best is None else best.hparams

    @property
    def best_value(self) -> float:
        best = self.best_trial
        return float("inf") if best is None else best.value

    @property
    def best_test_value(self) -> float | None:
        best = self.best_trial
        return None if best is None else best.test_value

    # -- compute --------------------------------------------------------------------------------
    @property
    def flops(self) -> float:
        return float(sum(t.flops for t in self.trials))

    @property
    def runs(self) -> float:
        """Compute in training-run equivalents: the sum of the trials' `runs`, each in its own
        trial's unit (a grouped structural search counts each trial against its configuration's
        run; `run_flops` is then their mean); `flops / run_flops` when every trial has this unit."""
        if all(t.run_flops == self.run_flops for t in self.trials):
            return self.flops / self.run_flops if self.run_flops > 0 else float("nan")
        return float(sum(t.runs for t in self.trials))

    @property
    def seconds(self) -> float:
        return float(sum(t.seconds for t in self.trials))

    @property
    def setup_seconds(self) -> float:
        """The call's one-time seconds besides compilation and the trials' execution: tracing and
        differentiating programs, FLOP counting, checks, sampling, the host's bookkeeping
        (`info["setup_seconds"]`, 0 when absent), so that `compile_seconds + setup_seconds +
        seconds` is the call's wall time."""
        return float(self.info.get("setup_seconds", 0.0))

    @property
    def num_failed(self) -> int:
        return sum(t.state == FAIL for t in self.trials)

    def spent(self, by: str = "runs") -> np.ndarray:
        """Cumulative cost after each trial: training-run equivalents (`by="runs"`), wall seconds
        (`by="seconds"`: the call's wall time: its compilation and set-up seconds
        (`compile_seconds + setup_seconds`), paid before its first trial except the parts
        `info["setup_seconds_at"]` places later, plus each trial's execution seconds), or execution seconds alone (`by="execution"`: the trials'
        seconds, compilation left out, so a warm or cold compilation cache changes nothing)."""
        if by == "runs":
            return np.cumsum([t.runs for t in self.trials])
        if by == "seconds":
            seconds = np.array([t.seconds for t in self.trials], dtype=np.float64)
            later = 0.0
            for index, paid in self.info.get("setup_seconds_at", ()):  # set-up paid before trial `index`
                if int(index) < len(seconds):
                    seconds[int(index)] += float(paid)
                    later += float(paid)
            return (self.compile_seconds + self.setup_seconds - later) + np.cumsum(seconds)
        if by == "execution":
            return np.cumsum([t.seconds for t in self.trials], dtype=np.float64)
        raise ValueError(f"by={by!r} {_BY_WORDS}")

    def best_within(self, budget: float, by: str = "runs") -> Trial | None:
        """The best trial among those finished within `budget` training-run equivalents (or wall
        seconds with `by="seconds"`, execution seconds with `by="execution"`; see `spent`), chosen
        as `best_trial` chooses (in a `resample_key` tune, among the trials scored on the call's
        key: see the class docstring); None when none finished within the budget, or none that
        can be picked did. Literal: the trials in the order they ran, so of a `grid_search` cut
        before its last trial it is the best of one corner of the grid (`Space.grid` varies the
        space's first entry slowest), not what a smaller grid would find; `line_up` (`hg.compare`)
        gives such a grid no pick (`line_up_pick`).

        Raises:
            ValueError: for a budget that is not a positive number, or an unknown `by`.
        """
        if not (is_number(budget) and budget > 0):
            unit = _UNIT.get(by, "")
            raise ValueError(f"best_within(budget={budget!r}): give a positive budget in {unit or 'its unit'}, "
                             "e.g. budget=10")
        best, can_pick = None, pickable(self.info)
        for trial, spent in zip(self.trials, self.spent(by)):
            if spent > budget * (1 + 1e-9):
                break
            if can_pick(trial) and (best is None or trial.value < best.value):
                best = trial
        return best

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(cumulative training-run equivalents, best validation loss so far) after each trial: the
        value of `best_within` at each trial's cost (inf before the first trial it can pick; in a
        `resample_key` tune, the steps' trials on their own keys are never picked: see the class
        docstring). Of a grid search, in its grid's order: before its last trial, the best of a
        corner of the grid (`best_within`)."""
        runs = np.cumsum([t.runs for t in self.trials])
        can_pick = pickable(self.info)
        values = np.array([t.value if can_pick(t) else np.inf for t in self.trials])
        return runs, np.minimum.accumulate(values) if len(values) else values

    # -- export ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        best = self.best_trial
        summary = _to_python({
            "strategy": self.strategy, "run_flops": self.run_flops, "flops": self.flops, "runs": self.runs,
            "seconds": self.seconds, "compile_seconds": self.compile_seconds, "info": self.info,
        })
        # each trial's dict is JSON-safe already: not walked again, value by value
        return {**summary, "best": None if best is None else best.to_dict(),
                "trials": [t.to_dict() for t in self.trials]}

    def to_dataframe(self):
        """A pandas DataFrame with Optuna-style columns.

        Columns: `number, value, params_<name>, duration, state` (as `study.trials_dataframe()`),
        then `test_value`, `runs`, `flops`, `grad_norm`, `tuner` (gradient methods: which tuner of
        the population took the step; pandas' nullable Int64, missing for search trials, such as a
        population's warm-up) and `user_attrs_<score>` for other scores.
        A shaped hyperparameter's column holds its array: a CSV (`to_csv`) writes an array over
        1000 values as numpy's shortened text ('[0.1 0.1 ... 1.]'), so save a Result whole
        (`Result.save`) or such columns as lists.
        """
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("to_dataframe needs pandas: pip install 'hypergrad[pandas]'") from err
        rows = []
        for t in self.trials:
            row = {"number": t.number, "value": t.value}
            for name, value in t.hparams.items():
                row[f"params_{name}"] = _param_value(value)  # structural options (strings, tuples) as is
            row["duration"] = pd.to_timedelta(t.seconds, unit="s")
            row["state"] = t.state.upper()
            row["test_value"] = t.test_value
            row["runs"], row["flops"], row["grad_norm"], row["tuner"] = t.runs, t.flops, t.grad_norm, t.tuner
            for name, value in t.scores.items():
                if name not in ("val_loss", "test_loss"):
                    row[f"user_attrs_{name}"] = value
            rows.append(row)
        frame = pd.DataFrame(rows)
        if rows:  # integer ids, missing (<NA>) for search trials: None among ints would make them floats
            frame["tuner"] = pd.array([t.tuner for t in self.trials], dtype="Int64")
        return frame

    def cv_results(self, metric: str | None = None) -> dict[str, Any]:
        """The trials in the dict format of scikit-learn's `RandomizedSearchCV.cv_results_`.

        Scores follow scikit-learn's convention, higher is better: with `metric=None`,
        `val_accuracy` when the trials have it, else minus `val_loss`; `metric="loss"` gives minus
        `val_loss`; any other name m gives `val_<m>`. On a cross-validated problem the mean is
        the k-fold mean and `split<i>_test_score` holds fold i's score; without cv the standard
        deviation is 0 and there are no split columns. ("test" in these keys is scikit-learn's
        name for the held-out fold, i.e. hypergrad's validation scores, not its test split.)

        Args:
            metric: None, "loss", or the name of a reported metric (e.g. "accuracy").

        Returns:
            `{"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time",
            "param_<name>", "params", "split<i>_test_score", "mean_test_score", "std_test_score",
            "rank_test_score"}`: numpy arrays with one entry per trial, except `params` (a list of
            dicts). `param_<name>` are masked arrays as scikit-learn's: numeric when every trial
            has a scalar number there, else of dtype object (masked where a trial lacks the
            hyperparameter) holding Python numbers for scalars, arrays for shaped
            hyperparameters and any other object (a string, a tuple) as is. `rank_test_score` is int32, 1 for the
            best, ties sharing the smallest rank; failed trials (non-finite score or state "fail")
            get NaN scores and tie for last, as in scikit-learn. The trials that cannot be the
            pick (`best_trial`'s rule, `pickable`: in a `tune(resample_key=True)` result the
            steps' trials scored on their own keys, biased low; see the class docstring) keep
            their scores but rank after every trial that can, among themselves by score, and
            before the failed ones: rank 1 is the pick's when ranked by the loss (`metric="loss"`, or
            None where no accuracy is reported), as
            scikit-learn's `best_index_` is its `argmin`. `mean_fit_time` is a trial's
            wall seconds divided by the number of folds (the folds train together, so
            `std_fit_time` is 0), and scoring runs inside the same program: its time is part of
            the fit time and `mean_score_time` is 0. A result with no trials (e.g. a study loaded
            before its first chunk was stored) gives these keys with 0 entries, whatever `metric`.
        """
        trials = self.trials
        key, sign = _cv_metric(trials, metric)
        num_folds = _fold_count(trials, key)

        def score(t: Trial, name: str) -> float:
            value = t.scores.get(name, float("nan"))
            value = float("nan") if value is None else sign * float(value)
            return value if t.state != FAIL and math.isfinite(value) else float("nan")

        n = len(trials)
        out: dict[str, Any] = {
            "mean_fit_time": np.array([t.seconds / max(num_folds, 1) for t in trials], dtype=np.float64),
            "std_fit_time": np.zeros(n), "mean_score_time": np.zeros(n), "std_score_time": np.zeros(n),
        }
        params = [{name: _param_value(value) for name, value in t.hparams.items()} for t in trials]
        out.update(_param_columns(trials, params))
        out["params"] = params
        splits = np.array([[score(t, f"{key}_fold{i}") for i in range(num_folds)] for t in trials],
                          dtype=np.float64).reshape(n, num_folds)
        for i in range(num_folds):
            out[f"split{i}_test_score"] = splits[:, i]
        mean = np.array([score(t, key) for t in trials], dtype=np.float64)
        std = np.array([abs(score(t, f"{key}_std")) if num_folds and f"{key}_std" in t.scores else 0.0
                        for t in trials])
        out["mean_test_score"] = mean
        out["std_test_score"] = np.where(np.isnan(mean), np.nan, std)
        can_pick = pickable(self.info)
        out["rank_test_score"] = _ranked_after(mean, np.array([can_pick(t) for t in trials], dtype=bool))
        return out

    def to_optuna(self, storage_url: str, study_name: str, *, space: Space | None = None) -> Any:
        """Writes the trials into an Optuna storage as a new minimising study, so optuna-dashboard and
        Optuna's plots show it; returns the `optuna.Study`.

        Each trial becomes a finished Optuna trial in order: its value is the validation loss (a
        failed trial has state FAIL and no value); every other trial is COMPLETE, so Optuna's plots
        and samplers see every value. A trial that cannot be the pick (`best_trial`'s rule: in a
        `tune(resample_key=True)` result a step's trial scored on its own key, biased low; see the
        class docstring) is COMPLETE too, with the user attribute `pickable` False (True on the
        others): Optuna's `study.best_trial`, the lowest COMPLETE value, may then be such a trial,
        not this result's pick, whose number the study's user attribute `best_trial` holds (absent
        when the result has none). Scalar hyperparameters, and shaped ones holding one value (a constant
        schedule), are params, with the space's distributions when `space` is given or
        `info["space"]` describes it (a study of `storage=` does), and else the range of
        the values seen (a `LogUniform` axis then is a linear range, which `hg.optuna_search` and
        Optuna's `suggest_float(..., log=True)` refuse to continue: pass `space`). A shaped range
        of the space with `independent=True` is one param per element, named as
        `hg.optuna_search` asks for them (lr[0], lr[1], ...: `optuna_element_names`), over the
        space's range, so a continued `optuna_search(study=)` learns from them; without a space to
        say so it is a param only when it holds one value. A `Choice` of the
        space is a categorical param over all its options in declared order (`optuna_choices`:
        numbers as declared, any other option by its `str`, memory addresses left out, the labels
        `hg.optuna_search` asks with); without a space, over the values seen. A trial's option is
        found by identity, then by equality with its types (`space=` gives the options themselves),
        then by its label (a loaded Result holds a function or object as its label). Every shaped
        hyperparameter is also the user attribute `hparam_<name>` (a list), and the scores, trial
        number, state, tuner, runs, FLOPs, seconds and grad_norm are user attributes (non-finite
        numbers as None). Cost: one Optuna `add_trials` of all trials, which an RDB storage (SQLite)
        writes trial by trial with each trial's user attributes (a schedule's every value): linear in
        the trials and, for thousands of trials, much longer than the search that made them.

        All or nothing: an error or a Ctrl-C (any exception) while the trials are written deletes
        the study this call created and re-raises, so the same call can be made again; only a kill
        that stops the process itself (or a storage that refuses the deletion too) leaves part of
        the study, which the next call then refuses as an existing `study_name`.

        Args:
            storage_url: an Optuna storage, e.g. "sqlite:///optuna.db".
            study_name: a name not yet in that storage.
            space: the `hg.Space` the trials were searched over, used instead of `info["space"]`
                (default: `info["space"]`, if any).

        Raises:
            ImportError: optuna is not installed.
            TypeError: `space` is not an `hg.Space`.
            ValueError: `study_name` already exists in `storage_url`, `storage_url` is a path
                (a string with no "://"), `space` names other hyperparameters than the trials, a
                trial's option is known only by a label two options share, or, with no Choice to
                match them by, two different values of a hyperparameter share a label, or two hyperparameters
                give the same param ("lr[0]" beside an independent "lr": `check_optuna_names`), or
                `storage_url` is "sqlite:///PATH" of a hypergrad study store (`storage=`'s file: give Optuna
                a file of its own); before anything is written.
        """
        if isinstance(storage_url, (str, os.PathLike)) and "://" not in os.fspath(storage_url):
            raise ValueError(f"to_optuna: storage_url={os.fspath(storage_url)!r} is a path, not an Optuna storage URL; "
                             f"give 'sqlite:///{os.fspath(storage_url)}'")
        if _is_study_store_url(storage_url):
            raise ValueError(f"to_optuna: storage_url={storage_url!r} is hypergrad's own study store (the file "
                             "storage= writes; Optuna's tables would clash with its own; nothing was "
                             "written to it); give Optuna a SQLite file of its own, e.g. 'sqlite:///optuna.db'")
        described = (self.info.get("space") or {}) if space is None else _described_space(space, self.trials)
        optuna = import_extra("optuna", "to_optuna", "optuna")  # its first import keeps no frame of ours alive
        options = {} if space is None else {name: d.options for name, d in space.items if isinstance(d, Choice)}
        distributions, params = _optuna_columns(optuna, self.trials, described, options)
        can_pick = pickable(self.info)
        trials = [_optuna_trial(optuna, t, p, distributions, can_pick(t)) for t, p in zip(self.trials, params)]
        study = _new_optuna_study(optuna, storage_url, study_name, trials)
        if self.best_trial is not None:
            study.set_user_attr("best_trial", self.best_trial.number)
        return study

    def save(self, path: str | os.PathLike) -> None:
        """Writes `to_dict()` as JSON (`Result.load` reads it back): to a new file beside `path`,
        then renamed over it, so an error (or a kill) part-way leaves an earlier file whole."""
        text = json.dumps(self.to_dict(), indent=1)
        with replaced_atomically(path) as f:
            f.write(text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """The Result a `save` wrote (`from_dict` of its JSON). A file of another kind is a
        `ValueError` naming it; for `hypergrad compare`'s results.json, one of whose entries is a
        Result, it names `from_dict` and the entry."""
        with open(path) as f:
            data = json.load(f)
        return cls._read(data, f" in Result.load({os.fspath(path)!r}); give a file Result.save wrote (to read one "
                               "result of hypergrad compare's results.json, give its entry to Result.from_dict: "
                               "Result.from_dict(json.load(f)['results'][name]))")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """The Result `to_dict` described, as far as JSON holds it: `from_dict(r.to_dict()).to_dict()
        == r.to_dict()`, and every trial's value, scores, compute and tuner are the same numbers.

        What JSON loses: hyperparameters come back as numpy arrays of numpy's default dtypes
        (float64, int64: a float32 run's values are exact, their dtype is not; a numeric
        structural option as a 0-d array), and a non-finite number (written as null) as NaN, an infinite one included (a
        non-finite `grad_norm` as None, as a search trial's); a function or other object option, written as
        its repr, comes back as that string, which a second `to_dict` writes as a string option. Each
        trial keeps its own `run_flops` (its
        configuration's run in a grouped structural search); a trial written without one (before
        trials recorded it) takes the Result's.
        Also reads a result of `hypergrad compare`'s results.json (`["results"][name]`).
        """
        return cls._read(data, "; give what Result.save wrote, or one entry of results.json's 'results'")

    @classmethod
    def _read(cls, data: Mapping[str, Any], advice: str) -> Result:
        """`from_dict`'s reading, refusing data that is not a Result's with a `ValueError` ending in
        `advice` (where the caller, `from_dict` or `load`, read it and what to give instead)."""
        try:
            unit = _finite(data["run_flops"])
            trials = tuple(
                Trial(number=int(t["number"]), hparams={k: _from_json(v) for k, v in t["hparams"].items()},
                      value=_finite(t["value"]), scores={k: _finite(v) for k, v in t["scores"].items()},
                      state=str(t["state"]), flops=_finite(t["flops"]), seconds=_finite(t["seconds"]),
                      run_flops=unit if t.get("run_flops") is None else _finite(t["run_flops"]),
                      grad_norm=None if t.get("grad_norm") is None else float(t["grad_norm"]), tuner=t.get("tuner"))
                for t in data["trials"])
            return cls(str(data["strategy"]), trials, unit, _finite(data["compile_seconds"]),
                       dict(data.get("info") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Result.from_dict: not a Result's to_dict() ({type(err).__name__}: {err})"
                             f"{advice}") from err

    def summary(self) -> str:
        best = self.best_trial
        pick = "none" if best is None else f"val {best.value:.4g}, test {_fmt(best.test_value)}"
        return (f"{self.strategy}: {len(self.trials)} trials ({self.num_failed} failed), "
                f"{self.runs:.1f} runs, {self.seconds:.1f}s + {self.compile_seconds:.1f}s compile; best {pick}")


def pickable(info: Mapping[str, Any]) -> Callable[[Trial], bool]:
    """Whether a trial of a result with this `info` can be its pick (`Result`'s docstring): a
    finished trial with a finite value that, in a `tune(resample_key=True)` result naming its
    final iterates, was scored on the call's key (a warm-up trial, tuner None, or a final iterate).
    A result with no `final_trials` (an older one) lets every finished finite trial be picked."""
    if info.get("resample_key") and info.get("final_trials") is not None:
        on_key = frozenset(int(n) for n in info["final_trials"])
        return lambda t: (t.state != FAIL and math.isfinite(t.value)
                          and (t.tuner is None or t.number in on_key))
    return lambda t: t.state != FAIL and math.isfinite(t.value)


def with_setup(result: Result, began: float) -> Result:
    """`result` with its `setup_seconds` raised to the seconds since `began` (a `time.perf_counter()`
    reading at the call's entry) that neither its compilation nor its trials' execution account
    for: every one-time cost outside a timed program (tracing and differentiating a step, FLOP
    counting, checks, sampling), so that `spent("seconds")` ends at the call's wall time. They are
    charged before the first trial, as compilation is (the host's bookkeeping between chunks too:
    an upper bound for early trials). Never lowered: a resumed study's stored trials ran in an
    earlier call, and their seconds are not this call's."""
    untimed = time.perf_counter() - began - result.seconds - result.compile_seconds
    if untimed <= result.setup_seconds:
        return result
    return dataclasses.replace(result, info={**result.info, "setup_seconds": untimed})


def _described_space(space: Any, trials: Sequence[Trial]) -> dict[str, Any]:
    """`describe_space(space)` for `Result.to_optuna(space=)`; TypeError or ValueError unless it is
    an `hg.Space` over the trials' hyperparameters."""
    if not isinstance(space, Space):
        raise TypeError(f"to_optuna: space= must be an hg.Space (the one the trials were searched over), got "
                        f"{type(space).__name__}")
    names = list(dict.fromkeys(name for t in trials for name in t.hparams))
    if trials and set(space.names) != set(names):
        raise ValueError(f"to_optuna: space= names {sorted(space.names)} but the trials hold {sorted(names)}; "
                         "give the space the trials were searched over")
    return describe_space(space)


def optuna_choices(options: Sequence[Any]) -> list[Any]:
    """The Optuna categorical choices of a Choice's options, in the options' order: a number as
    declared (a Python int or float of its kind), any other option by its `str` with memory
    addresses left out (a function is "<function f>" in every process and in a stored study, as the
    store writes it); when two such labels are equal, every option as "index:label". Shared by
    `Result.to_optuna` and `hg.optuna_search`, so a study written by one is continued by the other."""
    choices = [_declared(o) if is_number(o) else _label(o) for o in options]
    if len(set(choices)) == len(choices):
        return choices
    return [f"{i}:{c}" for i, c in enumerate(choices)]


def _label(value: Any) -> str:
    """`str` of a non-numeric value as the store reads it back (no memory addresses)."""
    return str(decode_value(encode_value(value)))


def _optuna_param(value: Any, declared: Sequence[tuple[Any, Any]] = ()) -> Any:
    """A hyperparameter as an Optuna param value: a float for numbers (a constant shaped one by its
    value), the `_label` of any other option; None when it has no single value (a varying schedule).
    A value that is one of a Choice's options (`declared`: (option, its `optuna_choices` choice)
    pairs) is that option's choice: a number equal to the option in its own dtype, or else at the
    precision the trial ran in (`_matched_option`: a loaded Result's float64 copy of a float32
    value), is the option as declared, type included (0.1, not float32's 0.10000000149011612;
    Choice([1, 2, 4])'s 2, not 2.0), and any other value is matched by `_labelled_choice`, so Optuna
    sees the space's categories."""
    if isinstance(value, (np.ndarray, np.generic)):
        if value.size == 0 or not (value == value.reshape(-1)[0]).all():
            return None
        first = value.reshape(-1)[0]
        choice = _matched_option(first, [(o, c) for o, c in declared if is_number(o)])
        if choice is not None:
            return choice
        value = first.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _labelled_choice(value, [(o, c) for o, c in declared if not is_number(o)])
    for option, choice in declared:  # a number kept as a Python number
        if is_number(option) and option == value:
            return choice
    return float(value)


_SHARED_LABEL = ("to_optuna: {label!r} is the label of {what}, which only the options themselves tell apart: "
                 "export the Result the search returned (not one loaded from a file, where they are their labels) "
                 "with space= (the hg.Space searched over)")


def _check_labels_tell_apart(name: str, values: Sequence[Any]) -> None:
    """ValueError when two of a hyperparameter's non-numeric `values` that differ (neither the same
    object nor equal with the same types) share a label, with no Choice options to match them by:
    Optuna would see one category for both."""
    by_label: dict[str, Any] = {}
    for value in values:
        if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
            continue
        label = _label(value)
        seen = by_label.setdefault(label, value)
        if seen is not value and not _same_data(seen, value):
            raise ValueError(_SHARED_LABEL.format(label=label, what=f"two different values of {name!r}"))


def _is_shaped(value: Any) -> bool:
    """Whether `value` is an array of one or more axes (a shaped hyperparameter); a Choice option
    numpy cannot make one array of (a tuple holding an array and a number) is not."""
    try:
        return np.ndim(value) > 0
    except ValueError:
        return False


def _same_data(a: Any, b: Any) -> bool:
    """`_same_typed`, also for values a loaded Result holds as separate copies of one option: arrays
    equal in dtype, shape and elements, NaN equal to NaN, tuples, lists and dicts of such values."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_data(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (type(a) is type(b) and list(a) == list(b)
                and all(_same_data(a[k], b[k]) for k in a))
    if isinstance(a, float) and type(a) is type(b) and math.isnan(a) and math.isnan(b):
        return True
    return _same_typed(a, b)


def _labelled_choice(value: Any, declared: Sequence[tuple[Any, Any]]) -> Any:
    """The choice of the non-numeric option `value` is (`declared`: (option, choice) pairs): the
    option that is `value`, else one equal to it with the same types (a tuple (1, 2) is not the
    string "(1, 2)"), else, for a loaded Result or a described space (options held as labels), the
    one option with `value`'s label; `value`'s label when none has it. Two options sharing a label
    (two functions whose reprs agree) cannot be told apart by it: ValueError, rather than exporting
    every trial as the first."""
    for same in (lambda o: o is value, lambda o: _same_typed(o, value)):
        match = [c for o, c in declared if same(o)]
        if match:
            return match[0]
    label = _label(value)
    match = [c for o, c in declared if _label(o) == label]
    if len(match) > 1:
        raise ValueError(_SHARED_LABEL.format(label=label, what=f"the options {match}"))
    return match[0] if match else label


def _same_typed(a: Any, b: Any) -> bool:
    """`a == b` with the same types, tuples looked into (1 == 1.0 == True, but not as options)."""
    if isinstance(a, tuple):
        return (type(b) is type(a) and len(a) == len(b)
                and all(_same_typed(x, y) for x, y in zip(a, b)))
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # an object whose == does not give one bool
        return False


def _matched_option(first: np.generic, numeric: Sequence[tuple[Any, Any]]) -> Any:
    """The choice of the first of the `numeric` (option, choice) pairs whose option equals the
    number `first` in first's dtype; failing that, for a float `first`, of the first option equal to
    it once rounded to a narrower float dtype the trial may have run in (float32, the dtype of
    Python-number options without x64, or the dtype of the options given as numpy floats), widest
    first: `Result.load` and `Result.from_dict` hold float64 copies of float32 values, and
    0.0010000000474974513 is Choice([0.0, 1e-3])'s 1e-3 run in float32. The exact match comes first,
    so an option is never taken for another it only equals when rounded. None when none matches."""
    if first.dtype.kind not in "iuf":
        return None
    for option, choice in numeric:
        if np.asarray(option, first.dtype) == first:
            return choice
    if first.dtype.kind != "f":
        return None
    given = {np.asarray(o).dtype for o, _ in numeric if isinstance(o, np.floating)}
    narrower = sorted({d for d in (np.dtype(np.float32), *given) if d.itemsize < first.dtype.itemsize},
                      key=lambda d: (-d.itemsize, d.name))  # a fixed order at equal sizes
    with np.errstate(over="ignore"):  # an int option beyond float16's range is inf there: no match
        for dtype in narrower:
            for option, choice in numeric:
                if np.asarray(option, dtype) == first:
                    return choice
    return None


def _declared(option: Any) -> int | float:
    """A numeric Choice option as Optuna holds it: a Python int or float of its declared kind."""
    return option.item() if isinstance(option, np.generic) else option


def _described_options(desc: Mapping[str, Any]) -> list[Any]:
    """A described Choice's options (`describe_space`'s encoding read back; a numpy scalar option is
    a numpy scalar again, not a 0-d array), or [] for any other axis."""
    if desc.get("type") != "Choice":
        return []
    options = [decode_value(o) for o in desc["options"]]
    return [o[()] if isinstance(o, np.ndarray) and o.ndim == 0 and o.dtype.kind in "iuf" else o for o in options]


def _optuna_columns(optuna: Any, trials: Sequence[Trial], space: Mapping[str, Any],
                    choices: Mapping[str, Sequence[Any]] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Optuna distributions of the params `_optuna_param` gives, and each trial's params: the
    described space's bounds and every option of its Choices in declared order (then any value seen
    that is not an option), or else the range (or set) of the values seen. `choices`: a Choice's
    options themselves by name (from `to_optuna(space=)`), matched by identity and equality before
    the described options' labels."""
    distributions, params = {}, [{} for _ in trials]
    names = list(dict.fromkeys(name for t in trials for name in t.hparams))
    check_optuna_names({name: optuna_element_names(name, space[name]["shape"])
                        if _independent_shaped(space.get(name, {})) else [name] for name in names})
    for name in names:
        desc = space.get(name, {})
        if _independent_shaped(desc):
            _element_columns(optuna, name, desc, trials, distributions, params)
            continue
        options = list((choices or {}).get(name, ())) or _described_options(desc)
        declared = list(zip(options, optuna_choices(options)))
        if not declared:  # matched by label alone: distinct values must have distinct labels
            _check_labels_tell_apart(name, [t.hparams[name] for t in trials if name in t.hparams])
        column = [_optuna_param(t.hparams[name], declared) if name in t.hparams else None for t in trials]
        values = [v for v in column if v is not None]
        if not values:
            continue
        if desc.get("type") in ("Uniform", "LogUniform") and not desc.get("independent"):
            distributions[name] = optuna.distributions.FloatDistribution(
                min([desc["lo"], *values]), max([desc["hi"], *values]), log=desc["type"] == "LogUniform")
        elif all(isinstance(v, float) for v in values) and desc.get("type") != "Choice":
            distributions[name] = optuna.distributions.FloatDistribution(min(values), max(values))
        else:
            choices = dict.fromkeys([*(c for _, c in declared), *values])
            distributions[name] = optuna.distributions.CategoricalDistribution(list(choices))
        for row, v in zip(params, column):
            if v is not None:
                row[name] = v
    return distributions, params


def optuna_element_names(name: str, shape: Sequence[int]) -> list[str]:
    """Optuna parameter names of an independent shaped hyperparameter's elements, in C order:
    lr[0], lr[1], ... (lr[0,1] for two axes). Shared by `hg.optuna_search`, which asks for them,
    and `Result.to_optuna`, which writes them, so a study written by one is continued by the other."""
    shape = tuple(int(n) for n in shape)
    return [f"{name}[{','.join(str(i) for i in np.unravel_index(flat, shape))}]"
            for flat in range(math.prod(shape))]


def check_optuna_names(params: Mapping[str, Sequence[str]]) -> None:
    """`ValueError` naming both hyperparameters and the fix when two of them give the same Optuna
    param name: `params` maps each hyperparameter to its params (its own name, or its elements'
    `optuna_element_names` for an independent shaped range), so "lr[0]" beside an independent "lr"
    of two or more elements is refused instead of one overwriting the other (one value trained for
    both, or one dropped from an export). Shared by `hg.optuna_search` and `Result.to_optuna`."""
    owner = {}
    for name, names in params.items():
        for param in names:
            other = owner.setdefault(param, name)
            if other != name:
                raise ValueError(
                    f"hyperparameters {other!r} and {name!r} both give the Optuna param {param!r} (an independent "
                    "shaped range's elements are the params name[0], name[1], ...: optuna_element_names), so one "
                    "would overwrite the other in Optuna; rename one of them")


def _independent_shaped(desc: Mapping[str, Any]) -> bool:
    """Whether a `describe_space` entry is a float range with independent elements (a shape)."""
    return desc.get("type") in ("Uniform", "LogUniform") and bool(desc.get("independent")) and bool(desc.get("shape"))


def _element_columns(optuna: Any, name: str, desc: Mapping[str, Any], trials: Sequence[Trial],
                     distributions: dict[str, Any], params: list[dict[str, Any]]) -> None:
    """An independent shaped hyperparameter's elements as params `optuna_element_names` (what
    `hg.optuna_search` asks for), each over the space's range (widened to any value outside it),
    for the trials whose value has the described shape and is finite; into `distributions` and
    `params`."""
    shape = tuple(desc["shape"])
    names = optuna_element_names(name, shape)
    rows = [(row, np.asarray(t.hparams[name], dtype=np.float64).reshape(-1))
            for t, row in zip(trials, params) if name in t.hparams and np.shape(t.hparams[name]) == shape]
    rows = [(row, flat) for row, flat in rows if np.isfinite(flat).all()]
    if not rows:
        return
    values = np.concatenate([flat for _, flat in rows])
    lo, hi = min(float(desc["lo"]), float(values.min())), max(float(desc["hi"]), float(values.max()))
    dist = optuna.distributions.FloatDistribution(lo, hi, log=desc["type"] == "LogUniform")
    distributions.update({n: dist for n in names})
    for row, flat in rows:
        row.update({n: float(v) for n, v in zip(names, flat)})


def _is_study_store_url(storage_url: Any) -> bool:
    """Whether `storage_url` ("sqlite:///PATH", a driver or query too) names an existing file that is
    a hypergrad study store (`storage=`): a `meta` table whose format row is 'hypergrad-study-store N',
    as store.py recognises its files. Two reads, no write; any other URL, a missing file or one SQLite
    cannot read is left to Optuna."""
    match = re.fullmatch(r"sqlite(?:\+\w+)?:///([^?]+)(?:\?.*)?", storage_url if isinstance(storage_url, str) else "")
    if match is None or not os.path.isfile(match.group(1)):
        return False
    try:
        conn = sqlite3.connect(match.group(1))  # not mode=ro: that would leave a WAL file's -wal and -shm behind
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
                return False
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None and str(row[0]).startswith("hypergrad-study-store ")


def _new_optuna_study(optuna: Any, storage_url: Any, study_name: str, trials: Sequence[Any]) -> Any:
    """A new minimising Optuna study `study_name` in `storage_url` holding `trials`, or none: on any
    exception (KeyboardInterrupt too) after it was created, the study is deleted and the exception
    re-raised (a failed deletion is noted on it). ValueError if the name is already taken."""
    try:
        study = optuna.create_study(storage=storage_url, study_name=study_name, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError as err:
        raise ValueError(f"to_optuna: study_name={study_name!r} already exists in {storage_url} (an earlier "
                         "export, or one killed part-way, may have left it); give a new name, or delete it with "
                         f"optuna.delete_study(study_name={study_name!r}, storage={storage_url!r})") from err
    try:
        study.add_trials(trials)
    except BaseException as err:
        try:
            optuna.delete_study(study_name=study_name, storage=storage_url)
        except Exception as cleanup:  # noqa: BLE001 - the export's own error is the one to raise
            err.add_note(f"to_optuna: could not delete the partial study {study_name!r} ({cleanup!r}); "
                         f"delete it with optuna.delete_study(study_name={study_name!r}, storage={storage_url!r})")
        raise
    return study


def _optuna_trial(optuna: Any, t: Trial, params: Mapping[str, Any], distributions: Mapping[str, Any],
                  can_pick: bool = True) -> Any:
    """One finished Optuna trial of `t` with its `params` (see `Result.to_optuna`): FAIL when it
    failed, else COMPLETE; its user attribute `pickable` is `can_pick` (`pickable`) for a finished one."""
    attrs = {f"hparam_{name}": _to_python(v) for name, v in t.hparams.items() if _is_shaped(v)}
    attrs.update({name: _to_python(v) for name, v in t.scores.items()})
    attrs.update(_to_python({"number": t.number, "state": t.state, "tuner": t.tuner, "runs": t.runs,
                             "flops": t.flops, "seconds": t.seconds, "grad_norm": t.grad_norm}))
    failed = t.state == FAIL or not math.isfinite(t.value)
    attrs["pickable"] = bool(can_pick and not failed)
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
        value=None if failed else float(t.value), params=dict(params),
        distributions={name: distributions[name] for name in params}, user_attrs=attrs)


def _cv_metric(trials: Sequence[Trial], metric: str | None) -> tuple[str, float]:
    """(score key "val_<metric>", sign making higher better) of `Result.cv_results(metric)`."""
    reported = {name[4:] for t in trials for name in t.scores if name.startswith("val_")}
    available = sorted(name for name in reported  # not another score's std or fold (a metric "pred_std" is offered)
                       if not ((suffix := RESERVED_SUFFIX.search(name)) and name[:suffix.start()] in reported))
    if not trials and (metric is None or isinstance(metric, str)):  # nothing reported, nothing to refuse
        metric = metric or "loss"
        return f"val_{metric}", -1.0 if metric == "loss" else 1.0
    if metric is None:
        metric = "accuracy" if "accuracy" in available else "loss"
    if not isinstance(metric, str) or metric not in available:
        raise ValueError(f"cv_results(metric={metric!r}): the trials report {available}; pass one of "
                         "them, or None for accuracy when reported and loss otherwise")
    return f"val_{metric}", -1.0 if metric == "loss" else 1.0


def _fold_count(trials: Sequence[Trial], key: str) -> int:
    """The number of cross-validation folds behind score `key` of `Result.cv_results`, 0 without cv.
    Read from the names `hypergrad.folds.aggregate_scores` writes (`<key>_std`, `<key>_fold<i>`),
    and trusted only where the scores are what it writes: every trial holding one of these holds
    them all, and, where all are finite, `key` is the folds' mean and `<key>_std` their population
    standard deviation (to 2% of the largest, loose enough for bfloat16 aggregates). A Result made
    before `hg.Problem` refused metric names with these suffixes (and saved, then loaded) may hold a
    metric named so; its scores are not taken for folds. Cost: Python arithmetic per trial."""
    k = 0
    while any(f"{key}_fold{k}" in t.scores for t in trials):
        k += 1
    names = [key, f"{key}_std", *(f"{key}_fold{i}" for i in range(k))]
    for t in trials:
        held = [name in t.scores for name in names[1:]]
        if not any(held):
            continue
        if not k or not all(held) or key not in t.scores:
            return 0
        values = np.array([np.nan if t.scores[n] is None else float(t.scores[n]) for n in names])
        if not np.isfinite(values).all():
            continue
        folds, tol = values[2:], 2e-2 * np.abs(values).max()
        if abs(folds.mean() - values[0]) > tol or abs(folds.std() - values[1]) > tol:
            return 0
    return k


def _param_columns(trials: Sequence[Trial], params: list[dict[str, Any]]) -> dict[str, np.ma.MaskedArray]:
    """scikit-learn's `param_<name>` masked columns, one entry per trial."""
    n = len(trials)
    columns = {}
    for name in dict.fromkeys(name for t in trials for name in t.hparams):
        values = [p[name] for p in params if name in p]
        if len(values) == n and all(isinstance(v, (bool, int, float)) for v in values):
            # numbers for every trial: a numeric column, as scikit-learn >= 1.5
            column = np.ma.MaskedArray(np.array(values), mask=np.zeros(n, dtype=bool))
        else:
            column = np.ma.masked_all((n,), dtype=object)
            for i, p in enumerate(params):
                if name in p:
                    column[i] = p[name]
        columns[f"param_{name}"] = column
    return columns


def _param_value(value: Any) -> Any:
    """A trial's hyperparameter value for `cv_results`: Python scalars for 0-d numbers, arrays for
    shaped numeric values, any other object (a string, a tuple of layer widths) unchanged."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _ranked_after(scores: np.ndarray, first: np.ndarray) -> np.ndarray:
    """`_min_rank` of `scores` (higher is better; NaN tie for last), except that the non-NaN
    scores where `first` is False rank after every non-NaN one where it is True (among
    themselves by `_min_rank`), and before the NaN ones."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = ~np.isnan(scores)
    ahead = first & finite
    later = (ahead.sum() + _min_rank(np.where(ahead, np.nan, scores))).astype(np.int32)
    return np.where(ahead, _min_rank(np.where(ahead, scores, np.nan)),
                    np.where(finite, later, finite.sum() + 1)).astype(np.int32)


def _min_rank(scores: np.ndarray) -> np.ndarray:
    """Ranks for "higher is better", ties sharing the smallest rank (scipy's rankdata(-x, "min"));
    NaN scores tie for last, and all-NaN gives all ones, as scikit-learn's `cv_results_`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or np.isnan(scores).all():
        return np.ones(scores.shape, dtype=np.int32)
    filled = np.where(np.isnan(scores), np.nanmin(scores) - 1, scores)
    greater = filled.size - np.searchsorted(np.sort(filled), filled, side="right")
    return (1 + greater).astype(np.int32)


def _fmt(value: Any, digits: int = 4) -> str:
    """A number for a table or a line; "-" for None (nothing there: no pick, no score). A number
    that is there prints as it is, inf and nan included (a pick whose test loss diverged)."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _logged_numbers(log: str | os.PathLike, strategy: str, study: str, identity: Mapping[str, Any] | None
                    ) -> set[int]:
    """The trial numbers a JSON-lines log holds for `strategy` in `study` (nothing for a missing
    file; a line that is not a record, such as one cut short by a kill, is passed over). A record
    that names its study's identity (`hypergrad.store.StudyWriter.identity`: file and creation
    time) counts only when it is `identity`; one that does not (written before records named it)
    counts by the study's name alone, as it did then."""
    numbers = set()
    with contextlib.suppress(FileNotFoundError), open(log) as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (isinstance(record, dict) and record.get("strategy") == strategy and record.get("study") == study
                    and isinstance(record.get("number"), int) and _same_study(record, identity)):
                numbers.add(record["number"])
    return numbers


def _appending(log: str | os.PathLike):
    """`log` opened to append to, its last line ended first when a kill or a full disk cut it short
    (its fragment stays unreadable; every record after it is a line of its own). Cost: one read of
    the file's last byte."""
    f = open(log, "a")
    try:
        if f.tell() > 0:  # append mode starts at the end
            with open(log, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    f.write("\n")
                    f.flush()
    except BaseException:
        f.close()
        raise
    return f


def _same_study(record: Mapping[str, Any], identity: Mapping[str, Any] | None) -> bool:
    """Whether a log record of a study of this name is of the study `identity` names: always for a
    record that names no identity (an older log's), else when every field of it agrees."""
    if identity is None or not any(field in record for field in identity):
        return True
    return all(record.get(field) == value for field, value in identity.items())


class TrialRecorder:
    """Collects trials as they are produced, appends each to a JSON-lines log, reports progress.

    Nothing a user ran is lost: with `log` set, every trial is on disk (flushed) as soon as its
    program returns, before the next one runs. In a multi-process run (`jax.distributed`) only
    process 0 writes the log (`hypergrad._batching.is_writer`); every process collects the trials,
    and `report` shares process 0's outcome of the chunk's log writes (one all-gather per chunk or
    step, `shared_outcome`): a failed write (a full disk) raises on every process, not on process 0
    alone while the others wait for it in the next chunk's collectives. The same all-gather shares
    the progress callable's outcome: one raising on one process alone (a user's stop) raises on
    every process, after the chunk's trials are committed, so the same call again resumes.

    With a study (`sink`), each record also names it: "study", and "storage" (the file's real path)
    and "study_created" (its creation time), which tell it from a study of the same name in another
    file or a deleted one. The log holds one record per trial of the study across kills and resumes:
    the log runs up to a chunk (or step) ahead of the study's commits (a new study's first records wait
    for its first commit: another process that started the same study at the same moment refuses
    this call there, and its trials are not this study's), so a resumed call recomputes
    the trials of a process killed in between; it reads the log once when it opens (O(log size))
    and leaves out the trials the log already holds for this strategy and study, whose records the
    recomputation repeats (resumes are exact). Another study of the same name (another file, or a
    deleted one made anew) logs all of its own trials; records written before they named the file
    and creation time count for every study of their name.

    A progress line prints running totals (trials, best finite value, training-run equivalents)
    that `report` folds in from the trials collected since its last line, whether `add`, `resume`
    or a strategy extending `trials` directly (a warm-up's, a resumed study's) put them there: each
    trial is folded in once, so a line costs O(trials since the last line), not O(trials so far),
    and a long `tune` or a search in small chunks with `progress` stays linear in its trials.
    Its "best val" ranges over every finished finite trial so far, not `pickable`'s: in a
    `tune(resample_key=True)` call that includes the steps' trials scored on their own keys,
    biased low, which the Result never picks (its `best_value` may be higher). The recorder is not
    told which trials those are: `tune` names the final iterates (`info["final_trials"]`) only
    once they are scored, in the last step.

    Args:
        strategy: label used in progress lines and log records.
        log: path of a JSON-lines file to append to, or None.
        progress: True to print a progress line per batch to stderr, or a callable(str).
        total: the number of trials (or steps) expected, for progress lines.
        sink: a study writer (`hypergrad.store.StudyWriter`) or None: each trial is queued with
            `sink.add` and committed by `report` (one transaction per chunk or step, with the step's
            checkpoint); trials it already holds (`sink.done`) are taken from it, never re-written.
            Its `study` and `resumed` (or those of its `writer`, for a strategy's wrapper) name the
            study in the log's records and say whether to read the log for trials already logged.
    """

    def __init__(self, strategy: str, log: str | os.PathLike | None, progress: Any, total: int, sink: Any = None):
        self.strategy = strategy
        self.trials: list[Trial] = []
        self.total = total
        self._sink = sink
        self._stored = {} if sink is None else sink.done
        self._start = time.perf_counter()
        # running totals of the progress line over trials[:_tallied] (`_tally`)
        self._tallied, self._best, self._runs = 0, None, 0.0
        self._log = None
        writer = getattr(sink, "writer", sink)  # a strategy's wrapper of the study's writer holds it
        check_log_apart(log, None if writer is None else writer.path)
        identity = None if writer is None else writer.identity
        self._study = {} if writer is None else {"study": writer.study, **(identity or {})}
        self._logged: set[int] = set()
        # a new study's records, held until its first commit returns: the study is then this call's (a study of
        # the same name that another process started at the same moment refuses this call at that commit,
        # `hypergrad.store.StudyWriter`, and its trials must not be logged as this call's)
        self._held: list[str] | None = [] if writer is not None and not writer.resumed else None
        # several processes: each report shares process 0's log outcome and every process's progress call's
        # (progress may be given on some processes alone: each report shares the outcome whatever was given)
        self._shares_outcome = jax.process_count() > 1
        self._shares_log = log is not None and self._shares_outcome
        self._log_error: OSError | None = None
        if log is not None and is_writer():  # several processes: process 0 alone writes
            try:
                os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
                if writer is not None and writer.resumed:
                    self._logged = _logged_numbers(log, strategy, writer.study, identity)
                self._log = _appending(log)
            except OSError as err:
                if not self._shares_log:
                    raise
                self._log_error = err  # raised by the first `report`, on every process
        if check_progress(progress) is True:
            self._progress = lambda line: print(line, file=sys.stderr, flush=True)
        elif callable(progress):
            self._progress = progress
        else:
            self._progress = None

    def add(self, trial: Trial) -> None:
        if trial.number in self._stored:  # a resumed study: the stored trial stands
            self.trials.append(self._stored[trial.number])
            return
        self.trials.append(trial)
        if self._log is not None and trial.number not in self._logged and self._log_error is None:
            record = json.dumps({"strategy": self.strategy, **self._study, **trial.to_dict()}) + "\n"
            if self._held is not None:
                self._held.append(record)
            else:
                self._write(record)
        if self._sink is not None:
            self._sink.add(trial)

    def _write(self, record: str) -> None:
        """Appends one log record (one write: whole lines when several processes append to one log)."""
        if self._log is None or self._log_error is not None:
            return
        try:
            self._log.write(record)
            self._log.flush()
        except OSError as err:
            if not self._shares_log:
                raise
            self._log_error = err  # raised by `report`, on every process

    def holds(self, number: int) -> bool:
        """Whether a resumed study already holds trial `number` (`add` then keeps the stored one)."""
        return number in self._stored

    def resume(self, numbers: Sequence[int]) -> bool:
        """True, with their stored trials collected, when the sink already holds every trial in
        `numbers` (a resumed study skips that chunk); False otherwise, collecting nothing."""
        if not numbers or any(n not in self._stored for n in numbers):
            return False
        self.trials.extend(self._stored[n] for n in numbers)
        return True

    def report(self, checkpoint: Any = None) -> None:
        """Commits the queued trials to the sink (with `checkpoint()`, a tune step's state, in the same
        transaction), then prints a progress line."""
        if self._sink is not None:
            self._sink.commit(checkpoint)
            held, self._held = self._held or [], None  # the study is this call's: its held records go out
            for record in held:
                self._write(record)
        error = self._log_error
        if error is None and self._progress is not None:
            self._tally()
            try:  # a user's callable raising on one process alone: raised on every process, below
                self._progress(f"[{self.strategy}] {len(self.trials)}/{self.total}  best val {_fmt(self._best)}  "
                               f"{self._runs:.1f} runs  {time.perf_counter() - self._start:.1f}s")
            except BaseException as err:  # a KeyboardInterrupt too: raised after the others hear of it
                if not self._shares_outcome:
                    raise
                error = err
        if self._shares_outcome:
            shared_outcome(error, "this call")
        if error is not None:
            raise error

    def _tally(self) -> None:
        """Folds the trials collected since the last call into the running best finite value and
        sum of runs, in collection order: the same numbers as a min over every finished finite trial
        so far (not only `pickable`'s: see the class docstring) and a sum over every trial (a strict
        < keeps the first of equal values, as `min` does; the sum adds in the same order)."""
        for trial in self.trials[self._tallied:]:
            if trial.state != FAIL and math.isfinite(trial.value) and (self._best is None or trial.value < self._best):
                self._best = trial.value
            self._runs += trial.runs
        self._tallied = len(self.trials)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# -- comparison ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Strategies lined up at equal compute (or equal wall time, or equal execution time).

    Attributes:
        results: the compared results by name.
        budgets: budgets in training-run equivalents (or seconds when `by` is "seconds" or "execution").
        rows: one dict per (strategy, budget): best validation loss within the budget, the pick's
            test loss and test metrics, the trials it took, the pick's hyperparameters, and
            `note`: why there is no pick though trials finished within the budget (a grid search
            cut before its last trial: "grid incomplete: 8 of 64 points", `line_up_pick`), else None.
        by: "runs" (equal compute), "seconds" (equal wall time, compilation included) or
            "execution" (equal execution time: the trials' seconds, compilation left out).
    """

    results: dict[str, Result]
    budgets: tuple[float, ...]
    rows: tuple[dict[str, Any], ...]
    by: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return _to_python({
            "budgets": self.budgets,
            # the pick's hyperparameters as Result.to_dict writes them: a structural option (a function,
            # a tuple, None) as {"option": its encoding}, not an object JSON cannot hold or confuses
            "rows": [{k: v for k, v in row.items() if k != "hparams"}
                     | {"hparams": None if row["hparams"] is None
                        else {name: _hparam_to_python(v) for name, v in row["hparams"].items()}}
                     for row in self.rows],
            "totals": {name: {"trials": len(r.trials), "failed": r.num_failed, "runs": r.runs,
                              "flops": r.flops, "seconds": r.seconds, "compile_seconds": r.compile_seconds,
                              "setup_seconds": r.setup_seconds,
                              "best_value": r.best_value, "best_test_value": r.best_test_value}
                       for name, r in self.results.items()},
        })

    def to_markdown(self) -> str:
        """Two tables: best validation loss and the pick's test scores at each budget (a row with no
        pick for a reason, `note`, shows "n/a (<note>)" as its best validation loss); totals, whose
        run, compile and set-up seconds add up to each result's wall time (`Result.spent("seconds")`).
        Strategy and metric names are escaped (`\\|`, `\\\\`; a line break as a space), one cell each."""
        metric_names = sorted({k for row in self.rows for k in row["test_scores"] if k != "test_loss"})
        unit = "runs" if self.by == "runs" else "s"
        header = ["strategy", f"budget ({unit})", f"used ({unit})", "trials", "best val loss", "test loss of pick",
                  *[f"{m} of pick" for m in metric_names]]
        lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [_cell(row["strategy"]), _amount(row["budget"]), _amount(row["used"]), str(row["trials"]),
                     f"n/a ({row['note']})" if row.get("note") else _fmt(row["best_value"]),
                     _fmt(row["test_scores"].get("test_loss")),
                     *[_fmt(row["test_scores"].get(m)) for m in metric_names]]
            lines.append("| " + " | ".join(cells) + " |")
        # run s + compile s + setup s: the call's wall time, what `by="seconds"` charges (`Result.spent`)
        lines += ["", "| strategy | trials | failed | compute (runs) | GFLOP | run s | compile s | setup s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in self.results.items():
            lines.append(f"| {_cell(name)} | {len(r.trials)} | {r.num_failed} | {r.runs:.1f} | {r.flops / 1e9:.2f} | "
                         f"{r.seconds:.1f} | {r.compile_seconds:.1f} | {r.setup_seconds:.1f} |")
        return "\n".join(lines)


def _cell(text: str) -> str:
    """`text` as one markdown table cell, shown as written: backslashes and "|" escaped (a "|" would
    start another cell), line breaks as spaces (one would end the row)."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def check_known_cost(result: Result, by: str, what: str, use: str) -> None:
    """Refuses `result` (named `what` in the message) when its cumulative cost by `by` is not finite
    everywhere (a trial's flops, run_flops or seconds NaN or infinite, or run_flops 0): its trials
    have no place on a compute axis, so it cannot be `use`d (lined up, plotted). O(trials)."""
    if not np.all(np.isfinite(result.spent(by))):
        raise ValueError(f"{what} has a non-finite cost by {by!r} (a trial's flops, run_flops or seconds is "
                         "NaN, infinite, or run_flops 0: a Result whose JSON lost them?); it cannot be "
                         f"{use}: drop it or recompute it")


def _amount(x: float) -> str:
    """A budget or an amount spent: one decimal from 1 up (37.5), two significant digits below (0.12)."""
    return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"


def line_up(results: Mapping[str, Result], budgets: Sequence[float] | None = None, *, by: str = "runs"
            ) -> Comparison:
    """Lines strategies up at equal compute: the data of `hg.compare` (`hypergrad.report`), which
    adds figures.

    For each budget (in training-run equivalents) and each strategy: the lowest validation loss
    among the trials that finished within the budget (`Result.best_within`: of a
    `tune(resample_key=True)` result, only among its trials scored on the call's key, the key the
    searches score every trial on), and the test scores of that pick. A grid search has a pick only
    at a budget its last trial finished within: before it, its trials are a corner of its grid, not
    the coarser grid that budget would buy, so the row has none and says so in `note`
    (`line_up_pick`).

    Args:
        results: `{name: Result}`.
        budgets: budgets in training-run equivalents (seconds with `by="seconds"` or "execution");
            default: 1/8, 1/4, 1/2 and all of the largest total any strategy spent (refused when
            every result spent nothing: give budgets, and they line up as rows with no pick). A
            strategy that stopped short of a budget keeps the best it found with what it used (shown
            in the row).
        by: "runs" lines up at equal compute; "seconds" at equal wall time, compilation included;
            "execution" at equal execution time, compilation left out (`Result.spent`).

    Returns:
        a `Comparison` (`to_markdown()`, `to_dict()`).
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("compare(results): give a non-empty dict of name -> Result")
    for name, result in results.items():
        if not isinstance(name, str):
            raise ValueError(f"compare: results' names must be strings (they label the rows, the totals and the "
                             f"figures); got {name!r} ({type(name).__name__!r}): use {{{str(name)!r}: ...}}")
        if not isinstance(result, Result):
            raise ValueError(f"compare: results[{name!r}] is {type(result).__name__}, not an hg Result")
    if by not in BY:
        raise ValueError(f"compare(by={by!r}) {_BY_WORDS}")
    for name, result in results.items():
        check_known_cost(result, by, f"compare: results[{name!r}]", "lined up")
    if budgets is None:
        largest = max(float(r.spent(by)[-1]) if r.trials else 0.0 for r in results.values())
        if not largest > 0:
            # Budgets of 0 are refused when given (a strategy can finish nothing within them): four
            # of them would be a table nobody could ask for. Given budgets, these results line up
            # as rows with no pick.
            raise ValueError(f"compare: every result spent nothing by {by!r} (no trials, e.g. a study stored "
                             "before its first chunk finished, or trials of zero cost), so there is no largest "
                             "total to take the default budgets from; give budgets=[...] "
                             f"in {_UNIT[by]}, or results with trials")
        budgets = tuple(largest * f for f in (0.125, 0.25, 0.5, 1.0))
    else:
        unit = _UNIT[by]
        if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence | np.ndarray) or not all(
                is_number(b) and b > 0 for b in budgets) or not len(budgets):
            raise ValueError(f"compare(budgets={budgets!r}): give a list of positive budgets in {unit}, e.g. "
                             "budgets=[10, 50], or None for fractions of the largest spent")
        budgets = tuple(float(b) for b in budgets)
    rows = []
    for name, result in results.items():
        spent, runs = result.spent(by), result.spent("runs")
        for budget in budgets:
            pick, note = line_up_pick(result, budget, by)
            used = int(np.searchsorted(spent, budget * (1 + 1e-9), side="right"))
            rows.append({
                "strategy": name, "budget": budget, "trials": used,
                "used": float(spent[used - 1]) if used else 0.0,  # in the budget's unit
                "runs_used": float(runs[used - 1]) if used else 0.0,
                "best_value": None if pick is None else pick.value,
                "test_scores": {} if pick is None else {k: v for k, v in pick.scores.items() if k.startswith("test_")},
                "hparams": None if pick is None else pick.hparams,
                "note": note,
            })
    return Comparison(dict(results), budgets, tuple(rows), by)


def line_up_pick(result: Result, budget: float, by: str = "runs") -> tuple[Trial | None, str | None]:
    """(the pick `line_up` gives `result` at `budget`, by `by` as in `Result.spent`; why it has none
    though trials finished within the budget, or None): `Result.best_within`, except that a grid
    search (`strategy` `GRID`) cut before its last trial has no pick, for "grid incomplete: 8 of 64
    points". A grid's trials run in the grid's order, the space's first entry slowest
    (`Space.grid`), so its first eighth all share that entry's lowest value: one corner of the grid,
    not the coarser grid (fewer `points_per_axis`) a user with that budget would run. A grid study
    loaded before it finished (`hg.load_study`) is such a corner as a whole, which this cannot tell.
    Budgets are checked as `best_within` checks them. O(trials)."""
    pick = result.best_within(budget, by)
    finished = int(np.searchsorted(result.spent(by), budget * (1 + 1e-9), side="right"))
    if result.strategy == GRID and 0 < finished < len(result.trials):
        return None, f"grid incomplete: {finished} of {len(result.trials)} points"
    return pick, None
