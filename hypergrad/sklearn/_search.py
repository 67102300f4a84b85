"""scikit-learn's `GridSearchCV` and `RandomizedSearchCV`, with every candidate x fold in one
vmapped hypergrad program, and `HypergradSearchCV`, which descends the continuous parameters.

The classes subclass scikit-learn's own search classes, so their constructors, parameter
validation, `predict`, `predict_proba`, `score`, `classes_` and the rest are scikit-learn's; only
`fit` differs. A fit:

1. draws the candidates with scikit-learn's `ParameterGrid` / `ParameterSampler` (so `params` are
   exactly scikit-learn's under the same `random_state`) and the folds with
   `check_cv(cv, y, classifier=is_classifier(estimator)).split(X, y, groups)`;
2. groups the candidates by the parameters that cannot be traced: preprocessing steps of a
   `Pipeline` and the estimator's fixed parameters (`random_state`, ...). Each group's pipeline
   prefix is fitted per fold on the host;
3. per group, asks the hypergrad estimator for the family of programs fitting it on each fold
   (`HypergradEstimator._family`), stacks the folds of equal sizes into one cross-validated
   problem (`hg.Problem(cv=[(train, val), ...])`) and evaluates every candidate with
   `hypergrad.search.evaluate_settings`: one vmapped program for all candidates x folds (per
   structural configuration the planner groups). Folds of different sizes (KFold on n examples
   not divisible by k) are padded with weight-0 rows to the largest, where the estimator says
   that is exact (`padded_rows`: the linear models, an MLP fitted in full batch), so they too
   share one program; an MLP fitted in minibatches keeps one program per fold size (its epoch
   sampler draws from the n examples, and padding would change which examples share a
   minibatch). Candidates that
   differ only in parameters their fit does not read (`unused_params`: an adam fit's
   `learning_rate`, say) are fitted once (`distinct_fits`), and a parameter the search sets that
   every candidate setting it leaves unread (momentum under solver='adam') is named by the search's
   own key, with the estimator's reason, in one `UserWarning` per fit (`warn_ignored`; hypergrad's
   own unread-hyperparameter warning, which names the estimator's internal name, then says nothing
   of it: `named_already`);
4. reads each fold's score from the program (the scoring is computed inside it: accuracy,
   log-loss, R^2, mean squared error; accuracy read back as the exact fraction scikit-learn
   computes, `exact_fraction`), assembles `cv_results_` with scikit-learn's own
   `_format_results` (same keys and meanings), and refits the best candidate through the
   estimator's own `fit`. A fit whose validation loss is not finite diverged, where scikit-learn's
   fit raises: it is a failed fit as scikit-learn's search counts one (`fits_failed`: its test and
   train scores `error_score` with a `FitFailedWarning`; every fit failed raises scikit-learn's
   "All the N fits failed" `ValueError`). So is every fit on a fold whose training part holds a
   single class, where the classifier's own `fit` refuses it (LogisticRegression's, as
   scikit-learn's) though the program, given the full data's classes, could fit it
   (`refused_folds`; with `error_score="raise"` that error is raised before anything compiles, and
   so is "All the N fits failed" when every fold is refused: `check_a_fold_fits`). An
   MLPClassifier fits a single class, as scikit-learn's does, and predicts it always: such a
   fold's accuracy is that class's share of the scored part, exactly (`fold_scoring`). A fold
   whose training part holds some but not all of the data's classes is fitted on those alone, as
   scikit-learn's classifier fits it (`own_classes`: a binary model for two of three classes), in a
   program of its own number of classes; its validation examples of the other classes are misses.
   With scoring="neg_log_loss", a fold whose scored part's labels are not exactly the classes its fit
   was trained on (a validation part lacking one, or holding one class) is `error_score` with
   scikit-learn's "Scoring failed" `UserWarning`, where scikit-learn's scorer raises; where it
   would instead pair mismatched classes (as many, but others) its number means nothing, and here
   that fold is `error_score` too (`fold_scoring`). A NaN score of a fit that did not fail (R^2 of a
   one-example fold) stays NaN, as scikit-learn's. A fit that ran all its `max_iter` iterations
   without its stopping rule stopping it (an MLP's tol / n_iter_no_change or early stopping, a
   LogisticRegression's tol on the gradient: the
   family's metric "stopped" is 0, read from the same program, `ran_out`) is one where
   scikit-learn's search warns, once per fit: here one `ConvergenceWarning` counts them all
   (`fits_not_converged`), and `search.hypergrad_not_converged_` (candidates x folds) says which.

Anything this path cannot run exactly (an estimator that is not a hypergrad estimator, a callable
or multi-metric `scoring`, an unsupported scoring string (a `refit` string with the single scoring
is read as scikit-learn reads it, by its truth: a non-empty one refits, "" does not), fit parameters such as
`sample_weight`, a candidate that swaps the final estimator) is handed to scikit-learn's own search with a
`UserWarning` naming why, so code never breaks: `sample_weight` runs there fit by fit, through
the estimators' own weighted `fit`; a fit parameter the estimator's `fit` does not take (an MLP's
`coef_init`, say) is a `ValueError` naming it (`check_fit_params`). A setting the
hypergrad estimator itself refuses (its `fit`'s `ValueError`: `Ridge(positive=True)`, an l1
penalty, `solver="lbfgs"`, ...) is refused by the search with that same error before anything
compiles (`check_candidates`), as invalid parameter values are: scikit-learn's search could not fit
it either. The fallback refuses them too, before its first fit (`RefusesCandidates`), where
scikit-learn's search alone would record each such fit as failed; its `UserWarning` comes only
once its fits begin, so no warning that something will run precedes a refusal. Data the
estimator's `fit` refuses (NaN in X, or in a regressor's y) is refused up front with
scikit-learn's message naming X or y (`check_data`). An exception raised on the host while a fold
is built (a Pipeline step's `fit_transform` or `transform`, the estimator's check of the transformed
data: a PCA larger than the data, a "passthrough" step leaving NaN, a category unseen in training)
is handled as scikit-learn's `_fit_and_score` handles it (`built_fold`): on the training part, those
fits failed (`error_score`, counted in the `FitFailedWarning` with the error's traceback, as
scikit-learn summarises it); on the validation part, the fits stand unscored (`error_score`, a
"Scoring failed" `UserWarning`); with `error_score="raise"` the exception itself is raised. The
other candidates and folds are fitted as usual.

Cost: one compilation per structural program the planner makes (and, for a minibatch MLP, per
distinct fold size: KFold on n examples makes at most two; and per number of classes trained on,
where a fold's training part lacks some of the data's, `own_classes`), then candidates x folds fits vmapped
in chunks (padded folds each fit the largest fold's rows: one row more for KFold); the refit
is one more fit. Programs are kept per estimator settings and fold shapes (`shared_family`, and
`cached_program` for the refit), so a second `fit` of the same search, or of another search of the
same kind on data of the same shapes (each outer fold of nested cross-validation, or another
`random_state`: the seed is an argument), compiles nothing. `mean_fit_time` is each candidate's
share of its program's run and compilation per fold (a fit shared by equivalent candidates split
among them); the scoring runs inside the
same program, so `score_time` is 0 (or, with `return_train_score`, the share of the second
program that scores the training folds). Memory: one
chunk of fits (at most 64 candidates x folds) at a time, plus the folds' data stacked (folds x n
examples).

What the stacking asks of `HypergradEstimator._family` (`hypergrad/sklearn/_base.py`'s protocol):
its programs read the data only through the problem (they may depend on the data's shapes, never
on its values), so that the first fold's functions serve every fold of its size, unless one of the
estimator's `_data_baking_params` is true (MLP's `early_stopping`: its held-out split lives inside
the program); then the folds run one program each. Folds of other sizes share it through
`_family(rows=...)` (weight-0 padding, whose losses and scores are weighted means over the real
examples) where `_paddable` says the padded numbers are the unpadded ones to float rounding.
`search.hypergrad_info_` records, per
vmapped evaluation, its programs, plan, compile and run seconds and the planner's decisions.

Several processes (`jax.distributed`): the fits are sharded over every process's devices, so every
process must make the same fit. Before anything compiles, each runs the fit's own checks (its
parameters, the fit parameters, the candidates, the data, the folds) inside one all-gather that
carries each process's refusal (`checked_on_every_process`, `hypergrad._processes.checked_together`),
so a fit refused on one process alone (a bad `param_distributions` there, NaN in its X, an unseeded
draw of a candidate the estimator refuses) is refused on every process: there with its own error,
on the others with that error, naming the process. When no process refused, the same all-gather
compares the fits' descriptions (`fit_description`: training keys, estimator parameters, candidates
as drawn, folds, X, y; made after the checks, with several processes only): a difference is a
`ValueError` on every process naming it, and for an unseeded search the `random_state` to give
(`RandomizedSearchCV(random_state=None)` draws other candidates on each process, an estimator's
`random_state=None` another training key). The refusals after it (a fold training on one class,
`refused_folds` and `check_a_fold_fits`; `fold_scoring`'s) read only what it compared, so every process makes them
alike. The fallback to scikit-learn's search joins the all-gather too (a refusal on another process
stops it; a fit falling back on one process alone differs from the others' described fits); its
fits are not compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import numbers
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import joblib
import numpy as np
import scipy.stats
import sklearn.linear_model
import sklearn.neural_network
from joblib import effective_n_jobs
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as SklearnRandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, indexable
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_array, has_fit_parameter

import hypergrad as hg
from hypergrad import _compile
from hypergrad._checks import users_stacklevel
from hypergrad._indexing import mark_unread_warned, unread_warned_once
from hypergrad._processes import checked_together
from hypergrad._store_codec import identity
from hypergrad.search import evaluate_settings
from hypergrad.sklearn._base import SPARSE_FORMATS, HypergradEstimator, dense, frozen, program_owner
from hypergrad.sklearn._linear import LogisticRegression, logistic_fit_warnings

__all__ = ["GridSearchCV", "RandomizedSearchCV", "HypergradSearchCV", "SCORINGS"]

SCORINGS = {
    "classifier": {None: ("score", 1.0, True), "accuracy": ("accuracy", 1.0, True),
                   "neg_log_loss": ("log_loss", -1.0, False)},
    "regressor": {None: ("score", 1.0, False), "r2": ("r2", 1.0, False),
                  "neg_mean_squared_error": ("neg_mean_squared_error", 1.0, False)},
}
"""Scoring strings computed inside the vmapped program: estimator kind -> scoring -> (the family's
metric, its sign as scikit-learn's scorer reports it (greater is better), whether it counts: a
fraction hits / n of the n scored examples, read back exactly by `exact_fraction`)."""


def exact_fraction(value: float, n: int, of: int | None = None) -> float:
    """A counting score (accuracy) computed inside a program as the mean of n 0/1 hits, as the
    exact fraction hits / n in float64 that scikit-learn's `accuracy_score` computes; hits / `of`
    when the part scored has `of` examples of which the program counted n (the others, of classes
    the fit never saw, are misses: `own_classes`; n = 0, none counted, is 0 hits). In float32
    (x64 off) the program's mean is hits / n rounded to float32 (49/50 reads 0.97999996), so equal
    hit counts would give means that differ in the last digits and rank differently from
    scikit-learn's search; hits = round(value * n) is exact while n < 2^22 (the float32 mean is
    within n * 2^-24 of it). Non-finite values as given."""
    if not np.isfinite(value):
        return float(value)
    return float((np.round(value * n) if n else 0.0) / (n if of is None else of))


class TrainedClasses(NamedTuple):
    """The classes a fold's training part holds (`trained_classes`): `seen`, their codes in
    ascending order; `partial`, whether they are at least two but not every class of the data,
    where scikit-learn's classifier fits a model of those alone (`own_classes`)."""

    seen: np.ndarray
    partial: bool


def trained_classes(train_codes: np.ndarray, n_classes: int) -> TrainedClasses:
    """The classes of the data's `n_classes` that a fold's training part, labels `train_codes`
    (class codes 0..n_classes-1, of any integer dtype), holds, and whether scikit-learn's
    classifier fitted there knows fewer than all but at least two of them (the one test of a
    partial-class fold that `own_classes`, `fold_scoring` and `partial_class_folds` share).
    Cost: one sort of the part's codes. A multilabel indicator (n, labels) holds every label whatever
    its values: scikit-learn's classifier knows them all on any part (`classes_` np.arange(labels))."""
    if np.ndim(train_codes) == 2:
        return TrainedClasses(np.arange(n_classes), False)
    seen = np.unique(train_codes)
    return TrainedClasses(seen, bool(2 <= seen.size < n_classes))


class OwnClasses(NamedTuple):
    """The folds as scikit-learn's classifier fits them (`own_classes`): `pairs`, each fold's
    (train, val) with labels coded among the classes its training part holds; `classes`, those
    classes' labels per fold (None for a regressor); `counted`, how many of each validation part's
    examples the program scores (those of the classes trained on)."""

    pairs: list
    classes: list
    counted: list[int]


def own_classes(pairs: Sequence[tuple], classes: np.ndarray | None) -> OwnClasses:
    """Each fold's labels coded among the classes its training part holds, where that is at least
    two but not every class of the data: scikit-learn's classifier fitted on that part knows only
    those (`classes_`: a binary model for two of three, with one logistic unit, and balanced class
    weights over them), and predicts only those, so a validation example of another class is a
    miss. Its validation part keeps the examples of the classes trained on (the program scores
    them; `exact_fraction` counts the others as misses), or, holding none, the first training
    example stands in for it (a finite loss for a fit that did not diverge, as `fold_failed` reads
    it; its accuracy is 0 whatever, and its log-loss unscorable, `fold_scoring`). A fold training on one class, or on all, is left as it is
    (`fold_scoring` scores the former). Cost: one pass over the folds' labels; a copy of a
    recoded fold."""
    if classes is None:
        return OwnClasses(list(pairs), [None] * len(pairs), [len(val[0]) for _, val in pairs])
    out, labels, counted = [], [], []
    for (x_train, y_train), (x_val, y_val) in pairs:
        y_train, y_val = np.asarray(y_train), np.asarray(y_val)
        seen, partial = trained_classes(y_train, len(classes))
        if not partial:
            out.append(((x_train, y_train), (x_val, y_val)))
            labels.append(classes)
            counted.append(len(y_val))
            continue
        code = np.full(len(classes), -1, np.intp)  # -1: not trained on; signed whatever the codes' dtype
        code[seen] = np.arange(seen.size)
        kept = code[y_val] >= 0
        train = (x_train, code[y_train].astype(y_train.dtype))  # the codes' own dtype, as an unrecoded fold's
        val = (x_val[kept], code[y_val][kept].astype(y_val.dtype))
        out.append((train, val if kept.any() else (x_train[:1], train[1][:1])))
        labels.append(classes[seen])
        counted.append(int(kept.sum()))
    return OwnClasses(out, labels, counted)


# -- what the search runs on: a hypergrad estimator, alone or at the end of a Pipeline -------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """A hypergrad estimator and what sits before it: the Pipeline's other steps (None when the
    estimator is alone) and the prefix of its parameters ("" or "<step>__")."""

    final: HypergradEstimator
    before: Pipeline | None
    prefix: str

    @property
    def traced(self) -> frozenset[str]:
        """The final estimator's parameters one program evaluates at many values."""
        return self.final._structural_params | self.final._continuous_params

    def final_params(self, candidate: Mapping[str, Any]) -> dict[str, Any]:
        """The traced parameters of the final estimator a candidate sets (prefix stripped)."""
        out = {}
        for name, value in candidate.items():
            if name.startswith(self.prefix) and name[len(self.prefix):] in self.traced:
                out[name[len(self.prefix):]] = value
        return out

    def host_params(self, candidate: Mapping[str, Any]) -> dict[str, Any]:
        """The rest: preprocessing and the final estimator's fixed parameters (set on the host)."""
        traced = {self.prefix + name for name in self.final_params(candidate)}
        return {name: value for name, value in candidate.items() if name not in traced}


def target_of(estimator: Any) -> Target | str:
    """The Target of `estimator`, or why the vmapped search cannot run it."""
    if isinstance(estimator, HypergradEstimator):
        return Target(estimator, None, "")
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], HypergradEstimator):
        name, final = estimator.steps[-1]
        before = Pipeline(estimator.steps[:-1]) if len(estimator.steps) > 1 else None
        return Target(final, before, name + "__")
    return (f"{type(estimator).__name__} is not a hypergrad.sklearn estimator (nor a Pipeline ending in one), "
            "so its fits cannot be vmapped")


def metric_of(estimator: Any, scoring: Any) -> tuple[str, float, bool] | str:
    """(the family's metric, sign, counts) for `scoring` (`SCORINGS`), or why it is not computed
    inside the program."""
    if callable(scoring) or isinstance(scoring, (list, tuple, set, dict)):
        return ("a callable or multi-metric scoring runs on the host, fit by fit; give one of the strings "
                f"{sorted(s for s in SCORINGS['classifier'] | SCORINGS['regressor'] if s)} to keep it vmapped")
    kind = "classifier" if is_classifier(estimator) else "regressor"
    if scoring not in SCORINGS[kind]:
        return (f"scoring={scoring!r} is not computed inside the vmapped program for a {kind}; those that are: "
                f"{[s for s in SCORINGS[kind] if s]}")
    return SCORINGS[kind][scoring]


def unsupported(search: Any, params: Mapping[str, Any]) -> str | None:
    """Why `search.fit` must fall back to scikit-learn's own search, or None."""
    target = target_of(search.estimator)
    if isinstance(target, str):
        return target
    metric = metric_of(search.estimator, search.scoring)
    if isinstance(metric, str):
        return metric
    extra = sorted(set(params) - {"groups"})
    if extra:
        return f"fit parameters {extra} are not passed to the vmapped fits"
    if not (isinstance(search.refit, (bool, str)) or callable(search.refit)):
        return f"refit={search.refit!r} is not a bool, a string or a callable"
    return None


def untraceable_values(target: Target, candidates: Sequence[Mapping[str, Any]]) -> str | None:
    """Why candidates cannot share one program because a continuous parameter they vary is not a
    single number (Ridge's per-target `alpha` array, which `Ridge.fit` and scikit-learn's search
    take), or None: a traced parameter is one number per candidate."""
    for candidate in candidates:
        for name, value in target.final_params(candidate).items():
            if name in target.final._continuous_params and np.ndim(value) > 0:
                return (f"{target.prefix}{name}={value!r} is not a single number, and the vmapped search traces one "
                        f"number per candidate for {name!r}")
    return None


def check_fit_params(search: Any, params: Mapping[str, Any]) -> None:
    """A `ValueError` naming a fit parameter (besides `groups`) that the hypergrad estimator's own
    `fit` does not take (an MLP's `coef_init`, say): scikit-learn's search, which the others
    fall back to, passes each to every fit, which would fail one by one. For a Pipeline, the
    `<final step>__<name>` parameters are checked against the final estimator; the other steps' are
    left to the Pipeline."""
    target = target_of(search.estimator)
    if isinstance(target, str):
        return
    for full in sorted(set(params) - {"groups"}):
        if target.prefix and not full.startswith(target.prefix):
            continue
        name = full[len(target.prefix):]
        if not has_fit_parameter(target.final, name):
            counterpart = sklearn_counterpart(target.final)
            advice = (f"drop {full}, or use scikit-learn's own estimator, whose fit takes it"
                      if counterpart is not None and has_fit_parameter(counterpart, name) else
                      f"drop {full}: it is not a fit parameter of this estimator (nor of scikit-learn's)")
            raise ValueError(f"{type(search).__name__}.fit({full}=...): {type(target.final).__name__}.fit takes no "
                             f"{name!r}; {advice}")


def sklearn_counterpart(estimator: Any) -> type | None:
    """scikit-learn's estimator that the hypergrad estimator `estimator` (or a subclass of one) mirrors:
    the class of the same name in `sklearn.linear_model` or `sklearn.neural_network`; None for another."""
    for cls in type(estimator).__mro__:
        if cls.__module__.startswith("hypergrad.sklearn"):
            for module in (sklearn.linear_model, sklearn.neural_network):
                if isinstance(getattr(module, cls.__name__, None), type):
                    return getattr(module, cls.__name__)
    return None


def check_data(target: Target, X: Any, y: Any) -> None:
    """scikit-learn's errors, naming X or y, for data the estimator's own `fit` refuses ("Input X
    contains NaN.", "Input y contains NaN.", 1-D X), raised before any fold is built or
    anything compiled, as the estimator's `fit` raises them in scikit-learn's search: X as that
    `fit` checks it, unless a Pipeline step transforms it first (an imputer takes NaN, a
    ColumnTransformer strings: the fitted steps' output is checked per fold); a regressor's y numeric
    and finite (a classifier's labels are checked by its `_encode_y`, as its `fit` checks them); no y
    at all (`search.fit(X)`) is the estimator's own "requires y to be passed" error.
    Cost: one pass over X and y (a float copy of X where it is not float already)."""
    if y is None:  # word for word scikit-learn's validate_data's, as the estimator's fit raises it
        raise ValueError(f"This {type(target.final).__name__} estimator requires y to be passed, but the target y "
                         "is None.")
    if target.before is None:  # sparse X is taken, as the estimator's fit takes it (densified per fold)
        check_array(X, dtype=(np.float64, np.float32), input_name="X", accept_sparse=SPARSE_FORMATS)
    if not is_classifier(target.final):
        check_array(y, ensure_2d=False, dtype="numeric", input_name="y")


def refused_folds(search: Any, target: Target, y: Any, encoded: np.ndarray, splits: Sequence[tuple]
                  ) -> dict[int, str]:
    """The folds whose training part holds fewer than 2 classes and the estimator's own `fit`
    refuses it (LogisticRegression's; MLPClassifier fits a single class, as scikit-learn's), each
    with the `ValueError` that `fit` raises on that part ("... needs samples of at least 2 classes"): its fits
    are failed fits, as scikit-learn's search records them (`_finish`: their scores `error_score`,
    a `FitFailedWarning` naming them), though the vmapped program, given the full data's classes,
    could fit them. With `error_score="raise"` that error is raised here, before anything compiles,
    as scikit-learn's search raises it. Empty for a regressor. Cost: one pass over the folds' codes."""
    if not is_classifier(target.final):
        return {}
    refused = {}
    for s, (train, _) in enumerate(splits):
        if np.unique(encoded[train]).size >= 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a column y's DataConversionWarning, given once already
                target.final._encode_y(_safe_indexing(y, train))
            continue  # the fit takes one class (MLPClassifier, as scikit-learn's): a fit, `fold_scoring` scores it
        except ValueError as raised:
            error = str(raised)
        who = type(target.final).__name__
        refused[s] = f"fold {s}, whose training part holds one class: {who}.fit refuses it ({error})"
        if search.error_score == "raise":
            raise ValueError(f"{refused[s]}; error_score='raise'")
    return refused


class FoldScoring(NamedTuple):
    """What scikit-learn's scorer makes of the folds whose labels the vmapped program's scores do
    not follow (`fold_scoring`): `exact`, fold -> (test, train) accuracy of a fit on a single class,
    which predicts that class whatever it learnt; `unscorable` (`unscorable_train`), fold -> why
    scikit-learn's log-loss scorer fails on its validation (training) part."""

    exact: dict[int, tuple[float, float]]
    unscorable: dict[int, str]
    unscorable_train: dict[int, str]


def fold_scoring(search: Any, target: Target, encoding: tuple[np.ndarray, dict], splits: Sequence[tuple],
                 refused: Mapping[int, str]) -> FoldScoring:
    """The folds a classifier's vmapped scores would misreport, read from the labels alone (before
    anything compiles; `refused` folds, whose fits fail, left out). A fold training on one class
    (an MLPClassifier's, as scikit-learn's fits it): scikit-learn's fit predicts that class always,
    so its accuracy is the share of that class in the scored part, exactly (the program's fit,
    given all the classes, could predict another). With scoring="neg_log_loss", scikit-learn's
    scorer pairs `predict_proba`'s columns (the classes trained on, two for one) with the labels of
    the scored part: where their numbers differ, or the part holds one label, its `log_loss` raises
    and the score is `error_score` with a "Scoring failed" `UserWarning` (`apply_fold_scoring`);
    where the numbers agree but the classes differ it pairs them wrongly and reports a number that
    means nothing. Here every part whose labels are not exactly the classes trained on is
    `unscorable` (the program would score it against every class of the data); with
    error_score="raise" the scorer's error is raised here. Cost: one pass over the folds' codes."""
    none = FoldScoring({}, {}, {})
    # a multilabel indicator: scikit-learn's fit knows every label on any fold, and its scorers score any part
    if not is_classifier(target.final) or np.ndim(encoding[0]) == 2:
        return none
    codes, classes = encoding[0], encoding[1]["classes_"]
    exact, unscorable, unscorable_train = {}, {}, {}
    log_loss = metric_of(search.estimator, search.scoring)[0] == "log_loss"
    for s, (train, val) in enumerate(splits):
        seen, labels = trained_classes(codes[train], len(classes)).seen, np.unique(codes[val])
        if s in refused or (seen.size > 1 and not log_loss):
            continue
        if not log_loss:
            exact[s] = (float(np.mean(codes[val] == seen[0])), 1.0)
        elif labels.size < 2 or not np.array_equal(labels, seen):
            unscorable[s] = (f"fold {s}: its validation part holds the classes {classes[labels].tolist()}, its fit was "
                             f"trained on {classes[seen].tolist()}, so scikit-learn's log_loss cannot pair predict_proba's "
                             "columns with the labels")
        if log_loss and seen.size < 2:
            unscorable_train[s] = f"fold {s}: its training part holds one class, which log_loss cannot score"
    whys = list(unscorable.values()) + (list(unscorable_train.values()) if search.return_train_score else [])
    if whys and search.error_score == "raise":
        raise ValueError(f"scoring='neg_log_loss' fails on {whys[0]} (scikit-learn's scorer raises there); "
                         "error_score='raise'")
    return FoldScoring(exact, unscorable, unscorable_train)


def apply_fold_scoring(search: Any, tables: dict[str, np.ndarray], scoring: FoldScoring, failed: np.ndarray,
                       host: HostFailures | None = None) -> None:
    """`fold_scoring`'s folds in the tables (candidates, folds): the exact accuracies; `error_score`
    for the unscorable, and for the fits whose validation part failed on the host (`host.unscored`,
    `built_fold`), with one `UserWarning` counting the fits scikit-learn's search warns for
    ("Scoring failed...", once per fit there), those not `failed` (a failed fit is not scored)."""
    for s, (test, train) in scoring.exact.items():
        tables["test"][:, s], tables["train"][:, s] = test, train
    unscored = np.zeros(failed.shape, bool)
    unscored[:, sorted(scoring.unscorable)] = True
    if host is not None:
        unscored |= host.unscored
    if unscored.any():  # (never with error_score="raise": `fold_scoring` raised; numpy would not take the string)
        tables["test"][unscored] = search.error_score
    whys = list(scoring.unscorable.values())
    if search.return_train_score and scoring.unscorable_train:
        folds = sorted(scoring.unscorable_train)
        tables["train"][:, folds] = search.error_score
        unscored[:, folds] = True
        whys += list(scoring.unscorable_train.values())
    if host is not None:
        whys += [f"{n} fits: {error}" for error, n in host.score_errors.items()]
    unscored &= ~failed
    if unscored.any():
        warnings.warn(f"Scoring failed. The score on this train-test partition for these parameters will be set to "
                      f"{search.error_score}. Details: \n{int(unscored.sum())} of the {unscored.size} fits are not "
                      f"scored: {'; '.join(whys)}", UserWarning, stacklevel=4)


def check_a_fold_fits(search: Any, candidates: Sequence[Mapping[str, Any]], refused: Mapping[int, str], k: int
                      ) -> None:
    """scikit-learn's "All the N fits failed" `ValueError` (`fits_failed`) when every one of the k
    folds is refused (`refused_folds`: each training part holds one class), raised before anything
    compiles instead of after fitting every candidate x fold for nothing; N counts `candidates` x
    k. Nothing when a fold is left."""
    if refused and len(refused) == k:
        fits_failed(search, list(candidates), np.ones((len(candidates), k), bool), refused)


def configurations(discrete: Mapping[str, Sequence[Any]], n_iter: int) -> list[dict[str, Any]]:
    """The configurations of `HypergradSearchCV`'s lists as many as it starts (every combination,
    or `n_iter` of them): for counting its fits before it draws which (`check_a_fold_fits`)."""
    combos = [dict(zip(discrete, values)) for values in itertools.product(*discrete.values())]
    return combos[:n_iter]


# -- candidates, grouped by what cannot be traced -------------------------------------------------------
def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted(params.items(), key=lambda item: item[0]))


def check_candidates(estimator: Any, candidates: Sequence[Mapping[str, Any]]) -> None:
    """scikit-learn's own errors for a bad candidate (an unknown parameter, a value its constraints
    refuse) and the hypergrad estimator's refusals (`_check_supported`: the `ValueError` its `fit`
    raises, e.g. for `solver="lbfgs"`), raised before anything is compiled: each candidate is set on
    a clone and validated, so a search never computes something other than the candidate's fit."""
    if not candidates:
        raise ValueError("No fits were performed. Were there no candidates? (an empty param_grid or n_iter=0)")
    for candidate in candidates:
        trial = clone(estimator).set_params(**candidate)
        for step in (trial.steps if isinstance(trial, Pipeline) else [("", trial)]):
            if hasattr(step[1], "_validate_params"):
                step[1]._validate_params()
            if isinstance(step[1], HypergradEstimator):
                step[1]._check_supported()


def check_descended_are_read(target: Target, discrete: Mapping[str, Sequence[Any]],
                             continuous: Mapping[str, Any]) -> None:
    """A `ValueError` for a range `HypergradSearchCV` would descend that no configuration's fit
    reads (`unused_params`: C under penalty=None, momentum under adam): its hypergradient is zero,
    so the descent would do nothing and say nothing."""
    base = target.final.get_params(deep=False)
    configurations = [dict(zip(discrete, values)) for values in itertools.product(*discrete.values())]
    for name in sorted(continuous):
        if all(name in target.final.unused_params({**base, **c}) for c in configurations):
            raise ValueError(f"HypergradSearchCV: {target.prefix}{name} is descended, but no configuration's fit "
                             f"reads it ({type(target.final).__name__}'s unused parameters for its settings), so "
                             f"its hypergradient is zero; drop it, or search a setting that reads it")


def host_groups(target: Target, candidates: Sequence[Mapping[str, Any]]) -> list[tuple[dict, np.ndarray]]:
    """(host parameters, candidate rows) per group of candidates that share them, in first-seen order."""
    groups: dict[str, tuple[dict, list[int]]] = {}
    for row, candidate in enumerate(candidates):
        host = target.host_params(candidate)
        groups.setdefault(_key(host), (host, []))[1].append(row)
    return [(host, np.asarray(rows)) for host, rows in groups.values()]


def final_candidates(target: Target, candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each candidate's value of every traced parameter of the final estimator that any candidate
    sets (the estimator's own value where one does not). At least one parameter: with nothing
    varying, its first continuous parameter at its value, since a search needs a setting per candidate."""
    names = sorted({name for c in candidates for name in target.final_params(c)})
    if not names:
        names = [sorted(target.final._continuous_params)[0]]
    defaults = target.final.get_params(deep=False)
    return [{name: target.final_params(c).get(name, defaults[name]) for name in names} for c in candidates]


def options_of(finals: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """`varying` for `_family`: each parameter's distinct values, in first-seen order."""
    out: dict[str, list] = {}
    for final in finals:
        for name, value in final.items():
            seen = out.setdefault(name, [])
            if not any(_normal(value) == _normal(v) for v in seen):
                seen.append(value)
    return out


def _normal(value: Any) -> Any:
    """A value as an option compares: numpy scalars as Python's, lists and arrays as tuples."""
    if isinstance(value, (list, np.ndarray)):
        return tuple(_normal(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


# -- folds: fitted preprocessing, and folds of equal sizes stacked into one cv problem ----------------------
def fold_arrays(target: Target, X: Any, y: Any, encoded: np.ndarray, train: np.ndarray, val: np.ndarray
                ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((X, y) trained on, (X, y) scored on) of one fold, y encoded as the estimator encodes it;
    the Pipeline's other steps fitted on the fold's training part with the original y (a fresh
    clone per fold, as scikit-learn's search fits the whole pipeline per fold)."""
    before, trained = fold_training(target, X, y, encoded, train)
    return trained, fold_validation(target, before, X, encoded, val)


def fold_training(target: Target, X: Any, y: Any, encoded: np.ndarray, train: np.ndarray
                  ) -> tuple[Pipeline | None, tuple[np.ndarray, np.ndarray]]:
    """(the Pipeline's other steps fitted on the fold's training part, or None without them;
    (X, y) of that part as the estimator fits it): what scikit-learn's search does in the fit of
    the fold, so an exception here is a failed fit (`built_fold`)."""
    x_train = _safe_indexing(X, train)
    before = None
    if target.before is not None:
        before = clone(target.before)
        x_train = before.fit_transform(x_train, None if y is None else _safe_indexing(y, train))
    return before, (fold_x(target, x_train), encoded[train])


def fold_validation(target: Target, before: Pipeline | None, X: Any, encoded: np.ndarray, val: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the fold's validation part as the estimator scores it, through `before` (the fitted
    steps of `fold_training`): what scikit-learn's search does in the scoring of the fold, so an
    exception here leaves the fit standing but unscored (`built_fold`)."""
    x_val = _safe_indexing(X, val)
    if before is not None:
        x_val = before.transform(x_val)
    return fold_x(target, x_val), encoded[val]


def fold_x(target: Target, x: Any) -> np.ndarray:
    """A fold's X as its estimator's fit checks it (float64), with that check's own errors (naming X
    and the estimator: NaN left by a Pipeline step gets scikit-learn's advice of an imputer), sparse
    (CSR/CSC: the whole X, or a Pipeline step's output such as OneHotEncoder's) densified as that fit
    densifies it (`dense`: memory n x d x itemsize per fold part)."""
    return dense(check_array(x, dtype=np.float64, accept_sparse=SPARSE_FORMATS, input_name="X",
                             estimator=target.final))


class BuiltFold(NamedTuple):
    """One fold's arrays as `built_fold` made them: `pair`, ((X, y) trained on, (X, y) scored on),
    None when the fit failed; `fit_error`, the traceback of the exception that failed it (the
    Pipeline's other steps, or the estimator's check of the data, on the training part);
    `score_error`, the traceback of the exception raised on the validation part, whose fit stands
    but is not scored (the training part's first rows stand in for it in `pair`)."""

    pair: tuple | None
    fit_error: str | None = None
    score_error: str | None = None


def built_fold(search: Any, target: Target, X: Any, y: Any, encoded: np.ndarray, train: np.ndarray,
               val: np.ndarray) -> BuiltFold:
    """One fold's arrays (`fold_arrays`), an exception caught as scikit-learn's search catches it
    (`_fit_and_score`): raised on the training part, the fit failed (`fit_error`: its scores are
    `error_score` with a `FitFailedWarning`); raised on the validation part, the fit stands and its
    test score is `error_score` with a "Scoring failed" `UserWarning` (`score_error`; its training
    part's rows, cycled to the validation part's size, stand in for it, so the fold keeps its
    shapes and program and its failure, should the fit diverge, is still read). With
    `error_score="raise"` the exception is raised, as scikit-learn's search raises it.
    Cost: `fold_arrays`'s."""
    if search.error_score == "raise":
        return BuiltFold(fold_arrays(target, X, y, encoded, train, val))
    try:
        before, trained = fold_training(target, X, y, encoded, train)
    except Exception:  # noqa: BLE001 -- any exception, as scikit-learn's _fit_and_score records it
        return BuiltFold(None, fit_error=traceback.format_exc())
    try:
        return BuiltFold((trained, fold_validation(target, before, X, encoded, val)))
    except Exception:  # noqa: BLE001 -- any exception, as scikit-learn's _score records it
        stand_in = np.resize(np.arange(len(trained[1])), len(val))
        return BuiltFold((trained, (trained[0][stand_in], trained[1][stand_in])), score_error=traceback.format_exc())


@dataclasses.dataclass(frozen=True)
class HostFailures:
    """What the host-side fold building (`built_fold`) made of a search's fits, (candidates, folds)
    each: `failed`, fits that failed there; `unscored`, fits whose validation part failed;
    `fit_errors` and `score_errors`, each exception's traceback -> the number of fits it stopped."""

    failed: np.ndarray
    unscored: np.ndarray
    fit_errors: dict[str, int]
    score_errors: dict[str, int]

    @classmethod
    def none(cls, shape: tuple[int, int]) -> HostFailures:
        """No failure yet, for `shape` (candidates, folds)."""
        return cls(np.zeros(shape, bool), np.zeros(shape, bool), {}, {})

    def record(self, rows: np.ndarray, built: Sequence[BuiltFold]) -> list[int]:
        """Records the folds `built` (one per fold) of the candidates `rows`; returns the folds whose
        fits run (those with a `pair`)."""
        for s, fold in enumerate(built):
            if fold.fit_error is not None:
                self.failed[rows, s] = True
                self.fit_errors[fold.fit_error] = self.fit_errors.get(fold.fit_error, 0) + len(rows)
            elif fold.score_error is not None:
                self.unscored[rows, s] = True
                self.score_errors[fold.score_error] = self.score_errors.get(fold.score_error, 0) + len(rows)
        return [s for s, fold in enumerate(built) if fold.pair is not None]


def stack_folds(objectives: Sequence[hg.Objective]) -> hg.Objective:
    """One cross-validated objective from per-fold objectives of equal data shapes: the first
    fold's objective (its functions, optimiser, steps) on a problem whose train and val data are
    every fold's concatenated, and whose explicit folds (`hg.Problem(cv=[...])`) pick each fold's
    rows back.

    Cost: a new Problem gathering k copies of the folds' data (memory k x n); nothing compiled."""
    first = objectives[0]
    problems = [o.problem for o in objectives]
    shapes = {str([np.shape(a) for a in _leaves(p.train_data) + _leaves(p.val_data)]) for p in problems}
    if len(shapes) > 1:
        raise ValueError(f"the folds' data have different shapes {sorted(shapes)}; stack only folds of one size")
    n_train = len(_leaves(problems[0].train_data)[0])
    n_val = len(_leaves(problems[0].val_data)[0])
    k = len(problems)
    folds = [(i * n_train + np.arange(n_train), i * n_val + np.arange(n_val)) for i in range(k)]
    train = _concatenate([p.train_data for p in problems])
    val = _concatenate([p.val_data for p in problems])
    problem = dataclasses.replace(problems[0], train_data=train, val_data=val, cv=folds, cv_labels=None)
    return dataclasses.replace(first, problem=problem)


def _leaves(tree: Any) -> list:
    return jax.tree.leaves(tree)


def _concatenate(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(a) for a in leaves]), *trees)


def stackable(objectives: Sequence[hg.Objective]) -> bool:
    """Whether per-fold objectives can share one cross-validated program: the same data structure,
    shapes and dtypes in every fold."""
    def signature(objective):
        data = (objective.problem.train_data, objective.problem.val_data)
        return jax.tree.structure(data), [(np.shape(a), np.asarray(a).dtype) for a in _leaves(data)]

    first = signature(objectives[0])
    return all(signature(o) == first for o in objectives[1:])


def bakes_data(target: Target, varying: Mapping[str, Sequence[Any]]) -> bool:
    """Whether the estimator's programs hold data of their own besides the problem's (the
    protocol's `_data_baking_params`, e.g. early stopping's held-out split, drawn from each fold's
    training part) at its own value or any candidate's: then folds cannot share a program and run
    one by one."""
    return target.final._bakes_data(varying)


def stacked_family(families: Sequence[hg.Structured]) -> hg.Structured:
    """The per-fold families as one family whose every configuration is the folds stacked
    (`stack_folds`); the first family's maskable choices and mask modes."""
    first = families[0]
    return hg.Structured(lambda config: stack_folds([f.objective(config) for f in families]),
                         maskable=first.maskable, mask=first.mask)


def shared_family(family: hg.Structured, key: Hashable | None) -> hg.Structured:
    """`family`, whose objective of each configuration keeps its compiled programs under the one
    `program_owner` of (key, configuration) (`hypergrad._compile.share_programs`): every fit with
    that key (a second `fit` of the search, the next outer fold of nested cross-validation, other
    data of the same shapes) reuses them instead of compiling its new objectives again. `family`
    itself when `key` is None (a program that holds data of its own, a parameter without an
    identity). Cost: nothing compiled or traced; one look-up per configuration."""
    if key is None:
        return family

    def build(config):
        objective = family.objective(config)
        try:
            configuration = tuple(sorted((name, frozen(value)) for name, value in config.items()))
        except TypeError:  # an option without an identity: this configuration keeps its own programs
            return objective
        _compile.share_programs(objective, program_owner((key, configuration)))
        return objective

    return hg.Structured(build, maskable=family.maskable, mask=family.mask)


def folds_key(base: Hashable | None, pairs: Sequence[tuple], indices: Sequence[int],
              rows: tuple[int, int] | None = None) -> Hashable | None:
    """The program identity of the folds `indices` of `pairs` (stacked when several) for an
    estimator's `_program_key` `base`: it with their number and shapes (padded to `rows` when
    given: `padded_rows`); None for None."""
    if base is None:
        return None
    pair = pairs[indices[0]]
    if rows is None:
        return base, len(indices), _compile.signature(pair)
    # the padded parts' shapes, as views that hold no copy of the data
    shapes = [jax.tree.map(lambda a, n=n: np.broadcast_to(np.zeros((), np.asarray(a).dtype), (n, *np.shape(a)[1:])),
                           part) for part, n in zip(pair, rows)]
    return base, len(indices), "padded", _compile.signature(shapes)


def padded_rows(target: Target, sizes: Sequence[tuple[int, int]], fits: Sequence[Mapping[str, Any]]
                ) -> tuple[int, int] | None:
    """(training rows, validation rows) to which every fold's parts, of `sizes` (training examples,
    validation examples) each, are padded with weight-0 rows,
    so that folds of different sizes (KFold on n examples not divisible by k, StratifiedKFold,
    GroupKFold, TimeSeriesSplit) run in one program: the largest of each, when the folds' sizes
    differ and the estimator says padding is exact for every fit (`_paddable`: the linear models
    always; an MLP only in full batch, `_mlp._bucketable`, its minibatches being drawn from the n
    examples). None otherwise: folds of one size need none, and the others keep one program per
    size. Cost: each fold's fit runs on the largest fold's rows (one more row for KFold), against
    one compilation per size saved; the scores are the unpadded ones, to float rounding."""
    train_sizes = sorted({n_train for n_train, _ in sizes})
    val_sizes = sorted({n_val for _, n_val in sizes})
    if len(train_sizes) == len(val_sizes) == 1:
        return None
    fixed = target.final.get_params(deep=False)
    if not target.final._paddable([{**fixed, **fit} for fit in fits], train_sizes):
        return None
    return train_sizes[-1], val_sizes[-1]


def class_keywords(classes: np.ndarray | None) -> dict[str, Any]:
    """`_family`'s keywords for a classifier of the full data's `classes` (labels in code order):
    n_classes and classes; none for a regressor (None)."""
    return {} if classes is None else {"n_classes": len(classes), "classes": classes}


def fold_batches(target: Target, pairs: Sequence[tuple], varying: Mapping[str, Sequence[Any]],
                 classes: Sequence[np.ndarray | None], fits: Sequence[Mapping[str, Any]]
                 ) -> list[tuple[list[int], hg.Structured, hg.Space]]:
    """(fold indices, family, space) per program: folds of one size and one number of classes
    (every fold, padded to one size where `padded_rows` says so for the `fits`, each the traced
    parameters of one fit) stacked into one family when their data can be pooled (`stackable`),
    else one family per fold; `classes[i]`, fold i's classes (`own_classes`), as `class_keywords`."""
    if bakes_data(target, varying):
        return [([i], *target.final._family(train, val, varying=varying, **class_keywords(classes[i])))
                for i, (train, val) in enumerate(pairs)]
    rows = padded_rows(target, [(len(train[0]), len(val[0])) for train, val in pairs], fits)
    padding = {} if rows is None else {"rows": rows}
    by_size: dict[tuple, list[int]] = {}
    for i, (train, val) in enumerate(pairs):
        size = rows or (train[0].shape, val[0].shape)
        k = None if classes[i] is None else len(classes[i])
        by_size.setdefault((size, np.shape(train[1])[1:], np.shape(val[1])[1:], k), []).append(i)
    batches = []
    for (*_, k), indices in by_size.items():
        base = target.final._program_key(varying, k)
        made = [target.final._family(pairs[i][0], pairs[i][1], varying=varying, **class_keywords(classes[i]),
                                     **padding) for i in indices]
        families, space = [f for f, _ in made], made[0][1]
        probe = {name: space[name].option(0) for name in space.structural}
        if len(indices) > 1 and stackable([f.objective(probe) for f in families]):
            key = folds_key(base, pairs, indices, rows)
            batches.append((indices, shared_family(stacked_family(families), key), space))
        else:
            batches.extend(([i], shared_family(f, folds_key(base, pairs, [i], rows)), s)
                           for i, (f, s) in zip(indices, made))
    return batches


def run_record(result: hg.Result, folds: int) -> dict[str, Any]:
    """Where one evaluation's seconds went (`hypergrad_info_`): planning, compilation (FLOP
    accounting included), the vmapped fits; its programs and the planner's decisions."""
    return {"folds": folds, "candidates": len(result.trials), "programs": result.info.get("programs", 1),
            "plan_s": float(result.info.get("plan_seconds", 0.0)), "compile_s": float(result.compile_seconds),
            "run_s": float(sum(t.seconds for t in result.trials)),
            "structure": {n: d["decision"] for n, d in result.info.get("structure", {}).items()}}


def run_folds(target: Target, pairs: Sequence[tuple], candidates: Sequence[Mapping[str, Any]], metric: tuple,
              classes: np.ndarray | None, key: jax.Array, strategy: str, records: list, overlap: Any = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores (candidates, folds) of `metric`, which fits failed (candidates, folds), seconds per
    fit (its share of its program's run and compilation) and which fits ran out of iterations
    (candidates, folds: `ran_out`), every distinct fit (`distinct_fits`) of
    one fold batch in one program; appends each evaluation's `run_record` to `records`. `overlap`:
    `evaluate_settings`'s, called when its first program compiles.

    A fit failed when its fold's validation loss is not finite (`fold_failed`): it diverged, where
    scikit-learn's estimator raises (an MLP's "Solver produced non-finite parameter weights"); its
    score is NaN. A fit that did not fail keeps its score, NaN included (R^2 of a one-example fold,
    as scikit-learn's `r2_score`), as scikit-learn's search keeps a successful fit's score. Counting
    scores (accuracy) are read back as exact fractions of the fold's examples (`exact_fraction`). A
    fold whose training part lacks a class of the data fits the classes it holds, as scikit-learn's
    estimator does (`own_classes`), in a program of its own number of classes."""
    finals = final_candidates(target, candidates)
    sharing = distinct_fits(target, finals)
    finals = [finals[rows[0]] for rows in sharing]
    varying = options_of(finals)
    name, sign, counts = metric
    scores = np.full((len(candidates), len(pairs)), np.nan)
    failed = np.zeros(scores.shape, bool)
    exhausted = np.zeros(scores.shape, bool)
    seconds = np.zeros_like(scores)
    own = own_classes(pairs, classes)  # each fold fits the classes its training part holds, as scikit-learn's
    for indices, family, space in fold_batches(target, own.pairs, varying, own.classes, finals):
        settings = target.final._settings(space, finals)
        result = evaluate_settings(family, settings, key, strategy=strategy, space=space, overlap=overlap)
        overlap = None
        records.append(run_record(result, len(indices)))
        share = result.compile_seconds / len(result.trials)
        for trial in result.trials:
            rows = sharing[trial.number]
            for j, fold in enumerate(indices):
                suffix = f"_fold{j}" if len(indices) > 1 else ""
                failed[rows, fold] = fold_failed(trial, suffix)
                exhausted[rows, fold] = ran_out(trial, suffix)
                value = np.nan if failed[rows[0], fold] else sign * trial.scores[f"val_{name}{suffix}"]
                scores[rows, fold] = exact_fraction(value, own.counted[fold], len(pairs[fold][1][0])) if counts \
                    else value
                seconds[rows, fold] = (trial.seconds + share) / len(indices) / len(rows)
    return scores, failed, seconds, exhausted


def fold_failed(trial: hg.Trial, suffix: str) -> bool:
    """Whether a trial's fit on one fold (`suffix` "_fold<j>", or "" for a lone fold) failed: its
    validation loss (log-loss or squared error) is not finite, so the fit diverged."""
    return not np.isfinite(trial.scores.get(f"val_loss{suffix}", np.nan))


def ran_out(trial: hg.Trial, suffix: str) -> bool:
    """Whether a trial's fit on one fold (`suffix` as `fold_failed`'s) ran all its `max_iter`
    iterations without its stopping rule stopping it: the family's metric "stopped" is 0 (the MLPs'
    `FitParams.stopped`, LogisticRegression's Newton convergence: what their `fit` warns from).
    False for a family without the metric (Ridge's closed form)."""
    return trial.scores.get(f"val_stopped{suffix}", 1.0) == 0.0


def distinct_fits(target: Target, finals: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """The candidates' rows per distinct fit, in first-seen order. Candidates whose traced
    parameters differ only in ones their fit does not read (`unused_params`: adam's learning_rate,
    say) fit the same model: the first of them (`rows[0]`) is fitted and the others get its scores,
    exactly what fitting each would give; its seconds are split among them, so the fit times add
    up to the compute spent."""
    fixed = target.final.get_params(deep=False)
    fits: dict[str, list[int]] = {}
    for row, final in enumerate(finals):
        unused = target.final.unused_params({**fixed, **final})
        fits.setdefault(_key({name: value for name, value in final.items() if name not in unused}), []).append(row)
    return [np.asarray(rows) for rows in fits.values()]


def warn_ignored(search: Any, target: Target, finals: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """One `UserWarning` (at the user's line) naming, by the search's own key (a Pipeline's
    `<step>__<name>`), each parameter the search sets that the estimator ignores with the other
    settings of every candidate that sets it (`unused_why`: momentum under solver='adam', as
    scikit-learn documents), and why; nothing when there is none. scikit-learn's search says nothing of an MLP's
    (its LogisticRegression's `fit` warns of C under penalty=None, once per fit: its words are the
    reason given). `finals`: each candidate's parameters of the final estimator, prefix stripped.
    Cost: `unused_why` per candidate."""
    fixed = target.final.get_params(deep=False)
    whys = [target.final.unused_why({**fixed, **final}) for final in finals]
    ignored = {}
    for name in sorted({name for final in finals for name in final}):
        setting = [why for why, final in zip(whys, finals) if name in final]  # a list of grids sets it in some
        if all(name in why for why in setting):
            ignored[name] = sorted({why[name] for why in setting})
    if not ignored:
        return frozenset()
    who = type(target.final).__name__
    named = "; ".join(f"{target.prefix}{name} ({'; '.join(reasons)})" for name, reasons in ignored.items())
    them = "it" if len(ignored) == 1 else "them"
    warnings.warn(f"{type(search).__name__} searches {named}, which {who} ignores with the other settings of "
                  f"every candidate setting {them}, as scikit-learn's {who} does: candidates that differ only in "
                  f"{them} are one fit with the same scores. Search {them} with the setting that reads {them}, or "
                  f"leave {them} out of the search's parameters", UserWarning, stacklevel=users_stacklevel())
    return frozenset(ignored)


def warn_as_fold_fits(target: Target, finals: Sequence[Mapping[str, Any]]) -> None:
    """The warnings scikit-learn's LogisticRegression.fit gives for each fit's parameters
    (`logistic_fit_warnings`: a `FutureWarning` for any `penalty`, ...), which scikit-learn 1.9's search
    gives once per fit of every fold, refit=False too (each fit under filters of its own, so even Python's
    default filter shows every one): here each distinct one once, at the user's line, before the fits
    run. `finals`: each fit's parameters of the final estimator, prefix stripped. A refit's own `fit`
    warns again, as there."""
    if not isinstance(target.final, LogisticRegression):
        return
    given: list[tuple[str, type[Warning]]] = []
    for final in finals:
        for warning in logistic_fit_warnings(clone(target.final).set_params(**final)):
            if warning not in given:
                given.append(warning)
    for message, category in given:
        warnings.warn(message, category, stacklevel=users_stacklevel())


@contextlib.contextmanager
def named_already(names: frozenset[str]) -> Iterator[None]:
    """Within, hypergrad's own unread-hyperparameter warning (`warn_unread_hparams`, given by the
    search's programs by the final estimator's internal names: 'momentum', not a Pipeline's
    'mlpclassifier__momentum') says nothing of a set of `names` that `warn_ignored` named already by
    the search's keys and why; it warns of any other set as before, and of each once per block
    (`unread_warned_once`). Touches no warning filter (`mark_unread_warned`). Cost: one set entry."""
    with unread_warned_once():
        mark_unread_warned(repr(name) for name in names)  # `unread_hparams`'s names: jax.tree key paths
        yield


def searched_finals(target: Target, candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each candidate's parameters of the final estimator (traced or not), its prefix stripped."""
    own = target.final.get_params(deep=False)
    cut = len(target.prefix)
    return [{name[cut:]: value for name, value in candidate.items()
             if name.startswith(target.prefix) and name[cut:] in own} for candidate in candidates]


# -- the search classes -----------------------------------------------------------------------------
@dataclasses.dataclass
class FallbackNotice:
    """The `UserWarning` that a search runs scikit-learn's own instead (`fallback`), kept until the
    fallback really fits: `RefusesCandidates` refuses a candidate the hypergrad estimator refuses
    before it, and then no warning saying something will run comes before the error. Pointed at
    the line of the user's code that called `fit`, where `warnings.warn` at that later point
    would name a line inside scikit-learn."""

    message: str
    frame: Any  # the user's frame that called fit: its file, line and module, as warnings.warn reads them

    def emit(self) -> None:
        """Warns, as `warnings.warn` would at the user's line (once per line under the default filter)."""
        module_globals = self.frame.f_globals
        warnings.warn_explicit(self.message, UserWarning, self.frame.f_code.co_filename, self.frame.f_lineno,
                               module=module_globals.get("__name__"),
                               registry=module_globals.setdefault("__warningregistry__", {}),
                               module_globals=module_globals)


def fallback(search: Any, why: str, base: type) -> FallbackNotice:
    """The warning that `search` runs scikit-learn's own `base` instead, for `why`, pointed at the
    user's line that called its `fit` (the first frame outside hypergrad); emitted by
    `run_fallback` once the fallback fits."""
    frame = sys._getframe(users_stacklevel() - 1)
    return FallbackNotice(f"{type(search).__name__}: {why}; running scikit-learn's own {base.__name__} instead "
                          "(fit by fit, on the host)", frame)


def run_fallback(search: Any, notice: FallbackNotice, fit: Any, *args: Any, **params: Any) -> Any:
    """`fit(*args, **params)`, scikit-learn's own search fitting `search` (a `RefusesCandidates`),
    warning `notice` when its candidates have passed `check_candidates` and its fits begin (so a
    refused candidate is an error with no warning before it, and so is anything else scikit-learn's
    `fit` refuses before fitting), or when `fit` returns without having fitted anything through
    `_run_search`. Cost: nothing besides the fit."""
    search._fallback_notice = [notice]
    try:
        fitted = fit(*args, **params)
        announce_fallback(search)
        return fitted
    finally:
        del search._fallback_notice


def announce_fallback(search: Any) -> None:
    """Emits the pending `FallbackNotice` of `search` (`run_fallback`), once; nothing without one."""
    pending = getattr(search, "_fallback_notice", [])
    while pending:
        pending.pop().emit()


def devices_for_n_jobs(n_jobs: int | None) -> int | None:
    """scikit-learn's `n_jobs` as JAX CPU devices: when it asks for several jobs (-1: one per core,
    -2: all but one, as joblib counts), nobody has chosen the CPU's device count yet
    (`hg.use_cpu_cores`, `jax_num_cpu_devices`) and JAX has not started, the CPU is split into that
    many devices (`hg.use_cpu_cores`), over which each chunk of candidates x folds is sharded, as
    scikit-learn spreads its fits over n_jobs processes. Otherwise nothing changes: JAX fixes its
    devices when it starts. Returns the number of devices set, or None.

    A fit calls it first, before its checks (`checked_on_every_process` starts JAX), so it refuses
    nothing: an `n_jobs` that is no int, or 0, changes nothing here, and the checks refuse it
    (`_validate_params`, `check_n_jobs`).
    """
    if not isinstance(n_jobs, numbers.Integral) or isinstance(n_jobs, bool) or n_jobs == 0:
        return None
    if jax.config.jax_num_cpu_devices != -1:
        return None
    count = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs
    if count <= 1:
        return None
    try:
        return hg.use_cpu_cores(count)
    except RuntimeError:  # JAX has started: its devices stay as they are
        return None


HYPERGRAD_FIT_ATTRIBUTES = ("hypergrad_info_", "hypergrad_not_converged_", "hybrid_result_")
"""The fitted attributes a search sets only when it runs hypergrad's programs, not scikit-learn's fallback."""


def forget_hypergrad_fit(search: Any) -> None:
    """Deletes `HYPERGRAD_FIT_ATTRIBUTES` from `search` at the start of a fit, so that after a fit
    that falls back to scikit-learn's search none is set (as `VmappedSearch.fit` documents), instead
    of the previous vmapped fit's, which describe other candidates than `cv_results_`."""
    for name in HYPERGRAD_FIT_ATTRIBUTES:
        vars(search).pop(name, None)


def check_n_jobs(n_jobs: Any) -> None:
    """joblib's own `ValueError` for `n_jobs=0` (`effective_n_jobs`), word for word as scikit-learn's
    searches raise it when they start their fits; nothing for any other value."""
    if n_jobs == 0:
        effective_n_jobs(n_jobs)


# -- several processes (jax.distributed): every process must make the same fit ---------------------------
UNDESCRIBED_SETTINGS = frozenset({"estimator", "param_grid", "param_distributions", "cv", "random_state", "n_jobs",
                                  "verbose", "pre_dispatch"})
"""A search's settings its fit description leaves out: described by what they make (the estimator's
parameters, the candidates, the folds), or not changing results (verbose, pre_dispatch; n_jobs, which
only sets the devices, except that a `HypergradSearchCV`'s plan follows them: see its docstring)."""


def data_digest(value: Any) -> str | None:
    """A digest of data (an array, a DataFrame, a sparse matrix, a list; the folds' indices) equal
    in every process that holds the same values: `joblib.hash` (MD5 of its pickle, an array's
    buffer read directly). None for None. Cost: one pass over the data's bytes on the host."""
    return None if value is None else joblib.hash(value)


def fit_description(search: Any, X: Any, y: Any, params: Mapping[str, Any], candidates: Any,
                    splits: Sequence[tuple], keys: Sequence[jax.Array]) -> dict[str, Any]:
    """What a search's fit computes from, as `checked_on_every_process` compares it across processes:
    the training keys (`_fit_key`'s, one per group of fits) as the key; the estimator's parameters
    (`get_params(deep=True)`), the candidates it evaluates (drawn already: an unseeded
    `RandomizedSearchCV`'s differ between processes), the settings that change results, digests of
    the folds' indices, X, y and each fit parameter as the arguments, each compared on its own.
    Cost: the data and folds hashed once on the host (`data_digest`)."""
    settings = {name: value for name, value in search.get_params(deep=False).items()
                if name not in UNDESCRIBED_SETTINGS}
    arguments = {"estimator": search.estimator.get_params(deep=True), "candidates": candidates,
                 "splits": data_digest([(np.asarray(t), np.asarray(v)) for t, v in splits]),
                 "X": data_digest(X), "y": data_digest(y),
                 **{f"fit_params.{name}": data_digest(value) for name, value in params.items()}, **settings}
    return {"kind": type(search).__name__, "space": None, "objective": None,
            "key": [np.asarray(jax.random.key_data(key)).tolist() for key in keys],
            "arguments": {name: identity(value) for name, value in arguments.items()}}


UNSEEDED_CANDIDATES = ("random_state=None draws other candidates on each process: give random_state=<int> so every "
                       "process draws the same candidates")
"""The advice for a search that draws its candidates (RandomizedSearchCV's) unseeded over several processes."""


def unseeded_advice(search: Any, target: Target) -> str:
    """How to make an unseeded search draw the same on every process: its `random_state` when
    it draws the candidates (RandomizedSearchCV's), the estimator's when it is not an int (a
    training key drawn from numpy's global state, which also samples HypergradSearchCV's
    configurations). Empty when both are seeded."""
    advice = []
    if search._draws_candidates and search.random_state is None:
        advice.append(UNSEEDED_CANDIDATES)
    state = target.final.get_params(deep=False).get("random_state")
    if not isinstance(state, numbers.Integral) or isinstance(state, bool):
        where = f" (the pipeline's {target.prefix}random_state)" if target.prefix else ""
        advice.append(f"{type(target.final).__name__}'s random_state={state!r} draws another training key on each "
                      f"process: give it random_state=<int>{where} so every process fits with the same key")
    return "".join(f". {line}" for line in advice)


def checked_on_every_process(search: Any, check: Callable[[], CheckedFit | FallsBack],
                             params: Mapping[str, Any]) -> CheckedFit | FallsBack:
    """`check()`, a search's own checks of its fit (`_checked_fit`), run inside `checked_together`,
    so that with several processes (`jax.distributed`) a check refusing the fit on one process alone
    (a bad `param_distributions` there, NaN in its X, an unseeded draw of a candidate the estimator
    refuses) stops every process, where the others would wait for it in a collective for ever: the
    refusing process raises its own error, unchanged, every other the same error named
    (`GridSearchCV.fit: process 1 refused its call with ValueError: ...`; a `ValueError` or
    `TypeError` as such, anything else as a `RuntimeError`), followed, for a search drawing its
    candidates unseeded, by the `random_state` to give (`UNSEEDED_CANDIDATES`). When no process
    refused, the same all-gather compares the checked fits' descriptions (`fit_description`; a fit
    that falls back describes nothing): a difference is a `ValueError` on every process naming it,
    and for an unseeded search the `random_state` to give (`unseeded_advice`), raised before
    anything compiles, where the processes' programs would otherwise meet in JAX's `device_put`
    with an AssertionError that names nothing. `check` must make no collective of its own. In a
    lone process `check` runs as it is: no description, no collective. Starts JAX (the process
    count). Cost, with several processes: the description (the data hashed on the host) and one
    all-gather of a 4 KiB buffer, also on the path that falls back to scikit-learn's search."""
    unseeded = search._draws_candidates and search.random_state is None
    with checked_together(f"{type(search).__name__}.fit", refused_advice=f". {UNSEEDED_CANDIDATES}" if unseeded
                          else "") as call:
        checked = check()
        if isinstance(checked, CheckedFit):
            call.compare(lambda: fit_description(search, checked.X, checked.y, params, checked.candidates,
                                                 checked.splits, checked.keys), unseeded_advice(search, checked.target))
    return checked


class CheckedFit(NamedTuple):
    """A fit its checks passed (`VmappedSearch._checked_fit`): the target, what it evaluates (the
    candidates; `HypergradSearchCV`'s ranges, {"discrete": ..., "continuous": ...}), X and y as
    `indexable` made them, the folds, and the training keys (one per host group of candidates)."""

    target: Target
    candidates: Any
    X: Any
    y: Any
    splits: list
    keys: list


class FallsBack(NamedTuple):
    """A fit its checks hand to scikit-learn's own search, for `why`, on `cv` (None: the search's own)."""

    why: str
    cv: Any = None


class RefusesCandidates:
    """Mixed in before a scikit-learn search class: its own `fit` (the fallback) refuses the
    candidates a hypergrad final estimator refuses, with that estimator's `ValueError`
    (`check_candidates`), before any candidate is fitted, as the vmapped search does, instead of
    recording each such fit as failed (a NaN score and a `FitFailedWarning`, or "All the N fits
    failed"). The check sees the candidates scikit-learn's search draws (`ParameterSampler` with
    `random_state=None` draws anew each time), so it refuses exactly what that search would fit.
    Nothing is refused for an estimator that is not a hypergrad one (nor a Pipeline ending in one).
    The fallback's pending warning (`run_fallback`) is emitted here, after the check, as the fits begin.
    Cost: a clone and a validation per candidate."""

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        # scikit-learn (1.9 on) passes callback_ctx to a _run_search whose signature names it; earlier ones never do
        kwargs = {} if callback_ctx is None else {"callback_ctx": callback_ctx}
        refuses = not isinstance(target_of(self.estimator), str)

        def checked(candidate_params, *args, **more):
            candidate_params = list(candidate_params)
            if candidate_params and refuses:  # none: scikit-learn's own "No fits were performed" error
                check_candidates(self.estimator, candidate_params)
            announce_fallback(self)  # the fallback fits now: its warning (run_fallback), after any refusal
            return evaluate_candidates(candidate_params, *args, **more)

        super()._run_search(checked, **kwargs)


class FallbackRandomizedSearchCV(RefusesCandidates, SklearnRandomizedSearchCV):
    """scikit-learn's `RandomizedSearchCV` as `HypergradSearchCV` falls back to it (`RefusesCandidates`)."""


class VmappedSearch(RefusesCandidates):
    """`fit` for scikit-learn's search classes, every candidate x fold vmapped (module docstring).
    Mixed in before the scikit-learn class, whose constructor, validation and predictions stay;
    its `fit` is the fallback, which refuses what the hypergrad estimator refuses (`RefusesCandidates`)."""

    _draws_candidates = False  # whether `random_state` draws the candidates (RandomizedSearchCV's)
    _rows_are_candidates = True  # whether each cv_results_ row is a candidate (not HypergradSearchCV's)

    def fit(self, X: Any, y: Any = None, **params: Any) -> VmappedSearch:
        """Runs the search (module docstring), or scikit-learn's own with a `UserWarning` when the
        vmapped search cannot run it exactly.

        Args:
            X, y: the data, as scikit-learn's search takes them.
            **params: `groups` for the splitter; any other fit parameter falls back (a
                `ValueError` for one the estimator's `fit` does not take: `check_fit_params`).

        Returns:
            self, fitted: `cv_results_`, `best_params_`, `best_score_`, `best_index_`,
            `best_estimator_` (with `refit`), `refit_time_`, `n_splits_`, `scorer_`, `multimetric_`;
            `hypergrad_info_`, one dict per vmapped evaluation (`run_record`: its programs,
            plan, compile and run seconds, and the planner's mask-or-group decisions); and
            `hypergrad_not_converged_`, a bool array (candidates, folds): the fits that ran all
            `max_iter` iterations without converging (not the failed ones), those a
            `ConvergenceWarning` counted (all False for Ridge, whose solve does not iterate).
            Neither is set when the search falls back to scikit-learn's.
        """
        devices_for_n_jobs(self.n_jobs)  # first: the checks start JAX, which then keeps its devices
        forget_hypergrad_fit(self)  # a previous fit's, which a fallback fit would otherwise leave beside its own
        # several processes: a refusal on one alone is raised on all, and the fits are compared
        checked = checked_on_every_process(self, lambda: self._checked_fit(X, y, params), params)
        if isinstance(checked, FallsBack):
            return run_fallback(self, fallback(self, checked.why, self._sklearn_class), self._sklearn_class.fit, self,
                                X, y, **params)
        target, candidates, X, y, splits, keys = checked
        # the refusals below read only what checked_on_every_process compared: every process makes them alike
        self.n_splits_ = len(splits)
        encoding = target.final._encode_y(y)
        refused = refused_folds(self, target, y, encoding[0], splits)
        check_a_fold_fits(self, candidates, refused, len(splits))
        scoring = fold_scoring(self, target, encoding, splits, refused)
        ignored = warn_ignored(self, target, searched_finals(target, candidates))
        if self.verbose > 0:
            print(f"Fitting {len(splits)} folds for each of {len(candidates)} candidates, totalling "
                  f"{len(splits) * len(candidates)} fits (vmapped)")
        warn_as_fold_fits(target, searched_finals(target, candidates))
        with named_already(ignored):
            refit = self._refit_program(target, X, y, candidates)
            tables, host = self._evaluate(target, X, y, encoding, candidates, splits, keys, refit)
        self._finish(X, y, candidates, splits, tables, refit, refused, scoring, host)
        return self

    def _checked_fit(self, X: Any, y: Any, params: Mapping[str, Any]) -> CheckedFit | FallsBack:
        """`fit`'s own checks, which compile nothing and make no collective (`checked_on_every_process`
        runs them): the search's parameters, the fit parameters, whether it falls back to
        scikit-learn's search, the candidates, the data; then the folds and training keys."""
        self._validate_params()
        check_n_jobs(self.n_jobs)
        check_fit_params(self, params)
        why = unsupported(self, params)
        candidates = [] if why else self._candidate_list()
        target = None if why else target_of(self.estimator)
        if target is not None and target.prefix and any(name == target.prefix[:-2] for c in candidates for name in c):
            why = f"a candidate replaces the final step {target.prefix[:-2]!r}, so its fits are not one family"
        if target is not None and not why:
            why = untraceable_values(target, candidates)
        if why:
            return FallsBack(why)
        check_candidates(self.estimator, candidates)
        check_data(target, X, y)
        X, y = indexable(X, y)
        splits = list(check_cv(self.cv, y, classifier=is_classifier(self.estimator)).split(X, y, params.get("groups")))
        keys = [target_of(clone(self.estimator).set_params(**host)).final._fit_key()
                for host, _ in host_groups(target, candidates)]
        return CheckedFit(target, candidates, X, y, splits, keys)

    def _refit_program(self, target: Target, X: Any, y: Any, candidates: list[dict]) -> Any:
        """The estimator's refit program for whichever candidate wins (`MLPClassifier`'s and
        `MLPRegressor`'s `MaskedRefit`), which compiles on a thread while the search's program
        does; None (the refit is then `best_estimator_.fit`) without `refit`, for a pipeline, for
        candidates in several host groups or an estimator without one."""
        if not self.refit or target.prefix or not hasattr(target.final, "_masked_refit"):
            return None
        groups = host_groups(target, candidates)
        if len(groups) != 1:
            return None
        final = target_of(clone(self.estimator).set_params(**groups[0][0])).final
        return final._masked_refit(X, y, options_of(final_candidates(target, candidates)))

    def _candidate_list(self) -> list[dict]:
        raise NotImplementedError

    def _evaluate(self, target: Target, X: Any, y: Any, encoding: tuple[np.ndarray, dict], candidates: list[dict],
                  splits: list, keys: Sequence[jax.Array], refit: Any = None
                  ) -> tuple[dict[str, np.ndarray], HostFailures]:
        """Test (and train) scores, failed fits and fit/score seconds, each (candidates, folds), of
        y encoded as `encoding` (`_encode_y`'s), each group of `host_groups` fitted with its training
        key in `keys`; `refit`'s program (if any) starts compiling when the first search program does.
        With them, the fits the host's fold building failed or left unscored (`built_fold`), which
        run no program (a failed one) or are scored `error_score` (`_finish`)."""
        y_encoded, fitted = encoding
        classes = fitted.get("classes_")
        metric = metric_of(self.estimator, self.scoring)
        shape = (len(candidates), len(splits))
        tables = {name: np.zeros(shape) for name in ("test", "train", "fit_time", "score_time")}
        tables["failed"] = np.zeros(shape, bool)
        tables["ran_out"] = np.zeros(shape, bool)
        host = HostFailures.none(shape)
        self.hypergrad_info_ = []  # one run_record per vmapped evaluation
        for (host_params, rows), key in zip(host_groups(target, candidates), keys):
            group = target_of(clone(self.estimator).set_params(**host_params))
            subset = [candidates[r] for r in rows]
            built = [built_fold(self, group, X, y, y_encoded, train, val) for train, val in splits]
            kept = host.record(rows, built)
            if not kept:  # every fold of this group failed on the host: nothing to run
                continue
            pairs, cells = [built[s].pair for s in kept], np.ix_(rows, kept)
            found = run_folds(group, pairs, subset, metric, classes, key, type(self).__name__, self.hypergrad_info_,
                              overlap=refit.start if refit is not None else None)
            for name, table in zip(("test", "failed", "fit_time", "ran_out"), found):
                tables[name][cells] = table
            if self.return_train_score:  # the same fits (failed as above), scored on their training folds
                train, _, seconds, _ = run_folds(group, [(train, train) for train, _ in pairs], subset, metric,
                                                 classes, key, type(self).__name__, self.hypergrad_info_)
                tables["train"][cells], tables["score_time"][cells] = train, seconds
        return tables, host

    def _finish(self, X: Any, y: Any, candidates: list[dict], splits: list, tables: dict[str, np.ndarray],
                refit: Any = None, refused: Mapping[int, str] | None = None, scoring: FoldScoring | None = None,
                host: HostFailures | None = None) -> None:
        """cv_results_ (scikit-learn's `_format_results`), the best candidate and the refit (with
        `refit`'s program when it can fit the best candidate, see `_refit_program`). `tables`
        holds "test", "train", "fit_time", "score_time", "failed" and "ran_out" (candidates,
        folds): a failed fit's test and train scores become `error_score`, as scikit-learn's
        `_fit_and_score` sets them (`fits_failed` raises when every fit failed, or with
        error_score="raise"); the fits that ran out of iterations (failed ones aside) are
        `hypergrad_not_converged_`, and one `ConvergenceWarning` counts them (`fits_not_converged`).
        `refused` (`refused_folds`): folds whose every fit failed because the estimator's `fit`
        refuses their training part. `scoring` (`fold_scoring`): folds scored as scikit-learn's
        scorer scores them, not as the program did. `host` (`HostFailures`): fits that failed, or whose
        validation part failed, on the host. `splits`' validation sizes are `n_test_samples`."""
        refused = refused or {}
        host = host or HostFailures.none(tables["failed"].shape)
        failed = tables["failed"] | host.failed
        failed[:, sorted(refused)] = True
        apply_fold_scoring(self, tables, scoring or FoldScoring({}, {}, {}), failed, host)
        if failed.any():
            fits_failed(self, candidates, failed, refused, host)
            tables["test"][failed] = self.error_score
            tables["train"][failed] = self.error_score
        self.hypergrad_not_converged_ = tables["ran_out"] & ~failed
        if self.hypergrad_not_converged_.any():
            fits_not_converged(self, candidates, self.hypergrad_not_converged_)
        out = []
        for c in range(len(candidates)):
            for s in range(len(splits)):
                entry = {"test_scores": tables["test"][c, s], "fit_time": tables["fit_time"][c, s],
                         "score_time": tables["score_time"][c, s], "n_test_samples": len(splits[s][1]),
                         "fit_error": None}
                if self.return_train_score:
                    entry["train_scores"] = tables["train"][c, s]
                out.append(entry)
        results = self._format_results(candidates, len(splits), out)
        self.multimetric_ = False
        self.best_index_ = int(self._select_best_index(self.refit, "score", results))
        if not callable(self.refit):
            self.best_score_ = float(results["mean_test_score"][self.best_index_])
        self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(self.estimator).set_params(**clone(self.best_params_, safe=False))
            began = time.time()
            if refit is None or not refit.fit(self.best_estimator_, X, y):
                self.best_estimator_.fit(X, y)
            self.refit_time_ = time.time() - began
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = check_scoring(self.estimator, self.scoring)
        self.cv_results_ = results


def fits_failed(search: Any, candidates: list[dict], failed: np.ndarray, refused: Mapping[int, str] | None = None,
                host: HostFailures | None = None) -> None:
    """scikit-learn's handling of failed fits (here: a fit whose validation loss is not finite, it
    diverged: `fold_failed`; every fit of a fold whose training part the estimator's `fit`
    refuses, `refused_folds`' messages; a fit whose fold failed on the host, `host.failed`, whose
    tracebacks are summarised as scikit-learn summarises its fits' errors): `error_score="raise"`
    raises, every fit failed raises scikit-learn's "All the N fits failed" `ValueError`
    (`_warn_or_raise_about_fit_failures`), anything else warns (`FitFailedWarning`) and the caller
    scores them `error_score`."""
    refused = refused or {}
    diverged = failed.copy()
    diverged[:, sorted(refused)] = False
    if host is not None:
        diverged &= ~host.failed
    details = [f"{len(candidates)} fits on {why}" for why in refused.values()]
    if diverged.any():
        c, s = np.argwhere(diverged)[0]
        details.append(f"{int(diverged.sum())} fits diverged (non-finite validation loss: the fit's weights or "
                       f"predictions are not finite), the first candidate {candidates[c]} on fold {s}")
    errors = {} if host is None else host.fit_errors  # as scikit-learn's summary: one block per distinct error
    summary = "\n".join(f"{'-' * 80}\n{n} fits failed with the following error:\n{error}"
                        for error, n in errors.items())
    what = "\n".join(part for part in ("; ".join(details), summary) if part)
    advice = (". The input data may contain large values and need to be preprocessed, or the learning rate may be "
              "too large.") if details else ""
    if search.error_score == "raise":
        raise ValueError(f"{what}; error_score='raise'")
    if failed.all():
        raise ValueError(f"\nAll the {failed.size} fits failed.\nIt is very likely that your model is misconfigured.\n"
                         "You can try to debug the error by setting error_score='raise'.\n\n"
                         f"Below are more details about the failures:\n{what}{advice}")
    warnings.warn(f"\n{int(failed.sum())} fits failed out of a total of {failed.size}.\nThe score on these train-test "
                  f"partitions for these parameters will be set to {search.error_score}.\nIf these failures are not "
                  f"expected, you can try to debug them by setting error_score='raise'.\n\n"
                  f"Below are more details about the failures:\n{what}", FitFailedWarning, stacklevel=4)


def fits_not_converged(search: Any, candidates: list[dict], ran_out: np.ndarray) -> None:
    """One `ConvergenceWarning` for the fits (`ran_out`: candidates x folds) that ran all their
    `max_iter` iterations without their stopping rule stopping them, where scikit-learn's search
    warns once per such fit (its estimator's `fit` does, as `fit` here does for the refit). For
    `HypergradSearchCV`, whose `cv_results_` rows are configurations at each outer step, not
    candidates, it counts those rows (`_rows_are_candidates`)."""
    c, s = np.argwhere(ran_out)[0]
    rows = np.flatnonzero(ran_out.any(axis=1))
    max_iter = sorted({str(v) for v in (fit_param(search.estimator, candidates[r], "max_iter") for r in rows)
                       if v is not None})
    reached = f"max_iter={', '.join(max_iter)}" if max_iter else "max_iter"
    if search._rows_are_candidates:
        counted = (f"{int(ran_out.sum())} of the {ran_out.size} candidate x fold fits ({len(rows)} of the "
                   f"{len(candidates)} candidates, on {ran_out.shape[1]} folds each)")
        first, table = f"candidate {candidates[c]}", "candidates x folds"
    else:
        counted = (f"{int(ran_out.sum())} of the {ran_out.size} fits of cv_results_ rows x folds ({len(rows)} of the "
                   f"{len(candidates)} rows, each a configuration at one outer step of the descent, on "
                   f"{ran_out.shape[1]} folds each)")
        first, table = f"row {c} {candidates[c]}", "rows x folds"
    warnings.warn(f"{counted} reached {reached} and the optimization hasn't converged yet (their stopping rule never "
                  f"stopped them), the first: {first} on fold {s}. Increase max_iter, or scale the data "
                  "(sklearn.preprocessing.StandardScaler); the fits that did not converge are "
                  f"search.hypergrad_not_converged_ ({table}).", ConvergenceWarning, stacklevel=4)


def fit_param(estimator: Any, candidate: Mapping[str, Any], name: str) -> Any:
    """The value of the final estimator's parameter `name` in `candidate` (a Pipeline's with its step
    prefix), else the estimator's own; None when it has none."""
    target = target_of(estimator)
    if isinstance(target, str):
        return None
    return candidate.get(target.prefix + name, target.final.get_params(deep=False).get(name))


class GridSearchCV(VmappedSearch, SklearnGridSearchCV):
    """scikit-learn's `GridSearchCV` (same signature and attributes) whose candidates x folds run
    vmapped in hypergrad programs when the estimator is a hypergrad.sklearn estimator (or a Pipeline
    ending in one); anything else falls back to scikit-learn's with a `UserWarning`. See the module
    docstring for what runs where, its cost and memory. `n_jobs` > 1 (or -1) splits the CPU into
    that many JAX devices if JAX has not started (`devices_for_n_jobs`), and each chunk of
    candidates x folds is sharded over them; `pre_dispatch` is used only by the fallback."""

    _sklearn_class = SklearnGridSearchCV

    def _candidate_list(self) -> list[dict]:
        return list(ParameterGrid(self.param_grid))


class RandomizedSearchCV(VmappedSearch, SklearnRandomizedSearchCV):
    """scikit-learn's `RandomizedSearchCV` (same signature and attributes; candidates drawn by
    scikit-learn's `ParameterSampler`, so `params` equal scikit-learn's under one `random_state`,
    `scipy.stats` distributions included), every candidate x fold vmapped; fallbacks and cost as
    `GridSearchCV`."""

    _sklearn_class = SklearnRandomizedSearchCV
    _draws_candidates = True

    def _candidate_list(self) -> list[dict]:
        return list(ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state))


# -- HypergradSearchCV: discrete parameters searched, continuous ones descended -----------------------------
@dataclasses.dataclass(frozen=True)
class Bounds:
    """A continuous parameter's range, descended in log or linear coordinates."""

    low: float
    high: float
    log: bool

    def distribution(self) -> hg.LogUniform | hg.Uniform:
        return hg.LogUniform(self.low, self.high) if self.log else hg.Uniform(self.low, self.high)

    def scipy(self) -> Any:
        """The same range as a scipy.stats distribution (for scikit-learn's own search)."""
        if self.log:
            return scipy.stats.loguniform(self.low, self.high)
        return scipy.stats.uniform(self.low, self.high - self.low)


def bounds_of(name: str, value: Any) -> Bounds | None:
    """Bounds of a continuous entry of param_distributions: `(low, high)`, `(low, high, "log")`,
    `(low, high, "linear")` or a bounded continuous scipy.stats distribution (log for loguniform);
    None for a list of options. Raises `ValueError` for anything else."""
    if isinstance(value, tuple) and len(value) in (2, 3) and all(isinstance(v, numbers.Real) for v in value[:2]):
        scale = value[2] if len(value) == 3 else "linear"
        if scale not in ("log", "linear") or not value[0] < value[1] or (scale == "log" and value[0] <= 0):
            raise ValueError(f"param_distributions[{name!r}]={value!r}: give (low, high) or (low, high, 'log') with "
                             "low < high (and low > 0 for 'log')")
        return Bounds(float(value[0]), float(value[1]), scale == "log")
    if hasattr(value, "rvs") and hasattr(value, "support") and isinstance(getattr(value, "dist", None),
                                                                      scipy.stats.rv_continuous):
        low, high = (float(v) for v in value.support())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"param_distributions[{name!r}] is unbounded ({low}, {high}); HypergradSearchCV descends "
                             "within bounds: give scipy.stats.loguniform(low, high), uniform(...) or (low, high, 'log')")
        return Bounds(low, high, value.dist.name in ("loguniform", "reciprocal"))
    if isinstance(value, (list, np.ndarray)) or (isinstance(value, tuple) and value):
        return None
    raise ValueError(f"param_distributions[{name!r}]={value!r}: give a list of options, a bounded continuous "
                     "scipy.stats distribution or (low, high[, 'log'])")


def split_distributions(target: Target, distributions: Any) -> tuple[dict, dict] | str:
    """({name: options}, {name: Bounds}) of the final estimator's parameters, or why not."""
    if not isinstance(distributions, Mapping):
        return "a list of param_distributions dicts samples several spaces; give one dict"
    discrete, continuous = {}, {}
    for full, value in distributions.items():
        name = full[len(target.prefix):] if full.startswith(target.prefix) else None
        bounds = bounds_of(full, value)
        if name is None or name not in target.traced:
            return (f"{full!r} is not a traced parameter of {type(target.final).__name__}; HypergradSearchCV searches "
                    f"and descends only {sorted(target.traced)}")
        if bounds is not None and name not in target.final._continuous_params:
            return f"{full!r} is descended, but it is not one of the continuous {sorted(target.final._continuous_params)}"
        if bounds is None:
            why = untraceable_values(target, [{full: v} for v in value])
            if why:
                return why
        (discrete if bounds is None else continuous)[name] = list(value) if bounds is None else bounds
    if not continuous:
        return "no continuous parameter to descend (give scipy.stats distributions or (low, high, 'log'))"
    return discrete, continuous


def unequal_folds(target: Target, splits: Sequence[tuple[np.ndarray, np.ndarray]], varying: Mapping[str, list]
                  ) -> str | None:
    """Why `HypergradSearchCV` can neither pad the folds to one size (`padded_rows`, for the fits of
    `varying`) nor cut them to one (`equal_folds`), or None: padding is not exact for the estimator
    (an MLP fitted in minibatches) and their training parts, or their validation parts, differ by
    more than one example. KFold and StratifiedKFold (repeated or shuffled too), ShuffleSplit and
    LeaveOneOut make parts that differ by at most one; TimeSeriesSplit's growing windows,
    GroupKFold's unequal groups, a PredefinedSplit or index lists may not, and cutting those would
    fit and score far fewer examples than scikit-learn's search (TimeSeriesSplit: every fold trained
    on the first window). Where padding is exact (the linear models, an MLP fitted in full batch)
    any sizes are descended."""
    sizes = [(len(t), len(v)) for t, v in splits]
    if padded_rows(target, sizes, varying_fits(varying)) is not None:
        return None
    for part, counts in (("training", [t for t, _ in sizes]), ("validation", [v for _, v in sizes])):
        if max(counts) - min(counts) > 1:
            return (f"the folds' {part} parts hold {counts} examples, which differ by more than one example, so they "
                    "cannot be cut to one size for one program without fitting or scoring fewer examples than "
                    "scikit-learn's search, nor padded to one (padding is exact only for the linear models and an MLP "
                    "fitted in full batch; splitters whose folds differ by at most one, such as KFold and "
                    "StratifiedKFold, are descended)")
    return None


def partial_class_folds(target: Target, encoding: tuple[np.ndarray, dict], splits: Sequence[tuple],
                        among: Sequence[int]) -> str | None:
    """Why `HypergradSearchCV` cannot descend a classifier's folds `among` in one program, or None:
    such a fold's training part holds at least two classes but not all the data's (y encoded as
    `encoding`, `_encode_y`'s), and scikit-learn's estimator fits those alone there
    (`own_classes`: a model of fewer classes, another program), where one stacked program would
    fit every class on every fold. Cost: one pass over the folds' labels."""
    if not is_classifier(target.final):
        return None
    codes, classes = encoding[0], encoding[1]["classes_"]
    for s in among:
        seen, partial = trained_classes(codes[splits[s][0]], len(classes))
        if partial:
            return (f"fold {s}'s training part holds the classes {classes[seen].tolist()} of the data's "
                    f"{classes.tolist()}, and scikit-learn's {type(target.final).__name__} fits only those there (a "
                    "model of fewer classes), so the folds cannot be descended in one program (StratifiedKFold, "
                    "cv=<int>'s default for a classifier, gives every fold every class)")
    return None


def varying_fits(varying: Mapping[str, list]) -> list[dict[str, Any]]:
    """Every combination of `varying`'s values (each a fit's traced parameters, for `padded_rows`)."""
    return [dict(zip(varying, values)) for values in itertools.product(*varying.values())]


def equal_folds(splits: Sequence[tuple[np.ndarray, np.ndarray]], among: Sequence[int] | None = None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds cut to the smallest train and val sizes (of the folds `among`, default all), so
    that one cross-validated objective vmaps them all: folds whose parts differ by at most one
    example (`unequal_folds` refuses the rest) lose the last index of their larger parts. Bias:
    such a fold's fit sees one training example fewer, or its score counts one validation example
    fewer, than scikit-learn's; `descent_folds` cuts only where padding would not be exact."""
    among = range(len(splits)) if among is None else among
    train = min(len(splits[s][0]) for s in among)
    val = min(len(splits[s][1]) for s in among)
    return [(t[:train], v[:val]) for t, v in splits]


def descent_varying(target: Target, discrete: Mapping[str, list], continuous: Mapping[str, Bounds]
                    ) -> dict[str, list]:
    """`varying` for `_family` in `HypergradSearchCV`: the lists, each range's two ends, and, when
    nothing is listed, the first structural parameter at its value (`hg.hybrid_search` searches at
    least one choice)."""
    varying = {**discrete, **{name: [b.low, b.high] for name, b in continuous.items()}}
    if not discrete:
        name = sorted(target.final._structural_params)[0]
        varying[name] = [target.final.get_params(deep=False)[name]]
    return varying


def descent_folds(target: Target, splits: Sequence[tuple[np.ndarray, np.ndarray]], descended: Sequence[int],
                  varying: Mapping[str, list]) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, int] | None]:
    """(the folds `HypergradSearchCV` fits and scores, the rows the `descended` ones are padded
    to, or None). Folds of different sizes are scikit-learn's own, padded with weight-0 rows to
    the largest (`padded_rows`), where the estimator says that is exact for every fit of every
    combination of `varying` (`_paddable`: the linear models; an MLP fitted in full batch): each
    fold's loss, hypergradient and scores are then those of its full parts. Otherwise (an MLP
    fitted in minibatches, whose epoch sampler draws from the n examples) they are cut to the
    smallest descended fold's sizes (`equal_folds`, and its bias). Cost: a padded fold fits the
    largest fold's rows (one row more for KFold)."""
    rows = padded_rows(target, [(len(splits[s][0]), len(splits[s][1])) for s in descended], varying_fits(varying))
    if rows is not None:
        return list(splits), rows
    cut = equal_folds(splits, descended)  # a fold not descended (refused) is not fitted: its sizes stay its own
    return [cut[s] if s in descended else splits[s] for s in range(len(splits))], None


def built_descent_folds(search: Any, target: Target, X: Any, y: Any, encoded: np.ndarray,
                        splits: Sequence[tuple[np.ndarray, np.ndarray]], refused: Mapping[int, str],
                        varying: Mapping[str, list]) -> tuple[list[int], list, tuple[int, int] | None, list, dict]:
    """(the folds `HypergradSearchCV` descends, every fold as it is scored and the rows they are padded to
    (`descent_folds`), the descended folds' arrays (`built_fold`), `refused` with the folds the Pipeline's
    other steps fail on): such a fold is not descended, and its fits are failed fits as `refused_folds`' are
    (`error_score` with a `FitFailedWarning`, or "All the N fits failed"; with `error_score="raise"` the
    step's exception is raised, as scikit-learn's search raises it). One whose validation part alone fails,
    which scikit-learn's search would fit and score `error_score` with a "Scoring failed" warning, is one too:
    its validation loss, which the descent lowers, cannot be computed. Leaving a fold out can change the
    sizes the others are cut to, so the folds are built again until none fails. Cost: the steps fitted per
    fold, again for each round that finds a failure."""
    refused = dict(refused)
    who = type(target.final).__name__
    while True:
        descended = [s for s in range(len(splits)) if s not in refused]
        scored, rows = descent_folds(target, splits, descended, varying) if descended else (list(splits), None)
        built = {s: built_fold(search, target, X, y, encoded, *scored[s]) for s in descended}
        failing = {s: fold for s, fold in built.items() if fold.pair is None or fold.score_error is not None}
        if not failing:
            return descended, scored, rows, [built[s].pair for s in descended], refused
        for s, fold in failing.items():
            part, error = ("training", fold.fit_error) if fold.pair is None else ("validation", fold.score_error)
            refused[s] = (f"fold {s}, on whose {part} part the pipeline's steps before {who} failed "
                          f"({error.strip().splitlines()[-1]})")


def hybrid_space(target: Target, space: hg.Space, discrete: Mapping[str, list], continuous: Mapping[str, Bounds]
                 ) -> hg.Space:
    """The family's space with each continuous parameter over its given bounds (log or linear as
    asked) and each listed continuous-kind parameter a numeric `hg.Choice` (searched, not descended)."""
    entries = {}
    for name in space.names:
        if name in continuous:
            entries[name] = continuous[name].distribution()
        elif name in discrete and name in target.final._continuous_params:
            entries[name] = hg.Choice([float(v) for v in discrete[name]])
        else:
            entries[name] = space[name]
    return hg.Space(entries)


def as_param(value: Any) -> Any:
    """A trial's value as scikit-learn shows a parameter: Python scalars, tuples for sizes."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    return value.item() if isinstance(value, np.generic) else value


class HypergradSearchCV(VmappedSearch, SklearnRandomizedSearchCV):
    """A search with `RandomizedSearchCV`'s interface whose continuous parameters are descended by
    hypergradients of the cross-validated loss while the discrete ones are searched
    (`hg.hybrid_search` underneath).

    `param_distributions` holds lists (searched: every combination, or `n_iter` of them sampled
    when there are more) and continuous ranges: bounded `scipy.stats` distributions (`loguniform`
    descends in log coordinates) or `(low, high)` / `(low, high, "log")` (descended). Every
    configuration starts at the centre of the ranges and takes Adam steps (`outer`, default Adam
    0.05 on the unconstrained coordinates) on the hypergradient (`method`, default `hg.Reverse()`)
    of the mean validation loss (log-loss, or squared error) over the folds, all configurations and
    folds vmapped. The folds are scikit-learn's (`check_cv`), run in one program (`descent_folds`):
    padded with weight-0 rows to the largest fold's sizes where the estimator says that is exact
    (the linear models; an MLP fitted in full batch), whatever their sizes (KFold, TimeSeriesSplit,
    GroupKFold, index lists), so every fold's loss, hypergradient and scores are those of its full
    parts, as scikit-learn's (cost: a smaller fold fits the largest fold's rows); otherwise (an MLP
    fitted in minibatches, whose epoch sampler draws from the n examples) cut to the smallest
    fold's sizes where they differ by at most one example (KFold, StratifiedKFold, ShuffleSplit),
    so a larger fold's fit sees one training example fewer, or its score counts one validation
    example fewer, than scikit-learn's (bias; `n_test_samples` is the size scored). Such folds that
    differ by more (`unequal_folds`: TimeSeriesSplit, GroupKFold with unequal groups,
    PredefinedSplit, index lists) run in scikit-learn's `RandomizedSearchCV` on the same folds and
    ranges, with a `UserWarning` naming the sizes; so do a classifier's folds where one trains on some
    but not all of the data's classes (`partial_class_folds`: scikit-learn's estimator fits a model
    of those classes alone there, which one stacked program cannot). A fold whose training part
    holds one class, where the classifier's own `fit` refuses it (`refused_folds`: LogisticRegression's;
    an MLPClassifier fits it, as scikit-learn's, and it is descended), is not descended:
    the loss is the mean over the other folds, and its scores are `error_score` with a
    `FitFailedWarning`, as scikit-learn's search records a failed fit (every fold refused:
    scikit-learn's "All the N fits failed", before anything compiles). A configuration
    whose start (or every step so far) diverges restarts at a fresh draw from the ranges until a
    step is finite, with a warning (`hypergrad.outer`).

    Args:
        budget: training-run equivalents (one run = every fold once) spent in all; None gives each
            configuration 30 (about 9 Reverse hypergradients).
        method: an `hg.Method`, None for `hg.Reverse()`.
        outer: an optax optimiser over the unconstrained coordinates, None for hybrid_search's default.
            Kept as given (scikit-learn's rule for constructor parameters), and optax's optimisers
            are closures that `pickle` cannot save: a search given one, fitted or not, fails
            `pickle.dumps` and `joblib.dump` ("Can't pickle local object 'chain.<locals>.init_fn'").
            With `outer=None` the search pickles; to keep one given an optimiser, use cloudpickle,
            or save its `best_estimator_` (a plain hypergrad estimator, which pickles).
        The rest: as `RandomizedSearchCV`; `n_iter` is the number of configurations of the lists
        (sampled from the estimator's training key, `_fit_key()`, when there are more; `random_state`
        is accepted and used only by the fallback), `n_jobs` as `GridSearchCV`'s, `pre_dispatch`
        used only by the fallback. Unlike scikit-learn's, `n_jobs` can change the result: the
        budget is charged for the padding rows a program's configurations are given to split
        evenly over the devices `n_jobs` makes (`hg.hybrid_search`), so where the devices do not
        divide them (3 configurations, n_jobs=2) the same budget buys fewer outer steps, and
        `cv_results_` has fewer rows; give `n_jobs` a divisor of the configurations, or compare
        searches made with one `n_jobs`.

    `cv_results_` has one row per (configuration, outer step), with scikit-learn's keys; the best
    row is refit through the estimator's own `fit`. A row's fits that ran out of iterations are
    counted in one `ConvergenceWarning` and marked in `hypergrad_not_converged_` (rows x folds), as
    `GridSearchCV.fit` does. Cost: budget runs plus compilation (one program
    per structural group), plus the refit. Bias: hypergradients of a finite number of training steps
    (exact for the unrolled fit; `method` decides); `mean_test_score` of the picked row is an
    optimistic estimate, as for any search. Anything the path cannot run (an estimator that is not a
    hypergrad one, a callable scoring, parameters outside the final estimator, `return_train_score=True`,
    since the descent scores the validation folds only) goes to scikit-learn's `RandomizedSearchCV` on
    the same ranges, with a `UserWarning` (`budget`, `method` and `outer` are then unused); after such
    a fit `hybrid_result_`, `hypergrad_info_` and `hypergrad_not_converged_` are not set.
    """

    _sklearn_class = SklearnRandomizedSearchCV
    _parameter_constraints: dict = {**SklearnRandomizedSearchCV._parameter_constraints,
                                    "budget": [Interval(numbers.Real, 0, None, closed="neither"), None],
                                    "method": "no_validation", "outer": "no_validation"}
    _rows_are_candidates = False  # a cv_results_ row is a configuration at one outer step

    def __init__(self, estimator, param_distributions, *, n_iter=10, scoring=None, n_jobs=None, refit=True, cv=None,
                 verbose=0, pre_dispatch="2*n_jobs", random_state=None, error_score=np.nan,
                 return_train_score=False, budget=None, method=None, outer=None):
        super().__init__(estimator, param_distributions, n_iter=n_iter, scoring=scoring, n_jobs=n_jobs, refit=refit,
                         cv=cv, verbose=verbose, pre_dispatch=pre_dispatch, random_state=random_state,
                         error_score=error_score, return_train_score=return_train_score)
        self.budget = budget
        self.method = method
        self.outer = outer

    def fit(self, X: Any, y: Any = None, **params: Any) -> HypergradSearchCV:
        """Searches the listed parameters and descends the continuous ones (class docstring).

        Returns:
            self, fitted as `RandomizedSearchCV` (one `cv_results_` row per configuration and step).
        """
        devices_for_n_jobs(self.n_jobs)  # first: the checks start JAX, which then keeps its devices
        forget_hypergrad_fit(self)  # a previous fit's, which a fallback fit would otherwise leave beside its own
        # several processes: a refusal on one alone is raised on all, and the fits are compared
        checked = checked_on_every_process(self, lambda: self._checked_fit(X, y, params), params)
        if isinstance(checked, FallsBack):  # scikit-learn's search (on exactly these folds when cv is given)
            return self._sklearn_fallback(fallback(self, checked.why, SklearnRandomizedSearchCV), X, y, cv=checked.cv,
                                          **params)
        target, ranges, X, y, splits, (key,) = checked
        discrete, continuous = ranges["discrete"], ranges["continuous"]
        self.n_splits_ = len(splits)
        # the refusals below read only what checked_on_every_process compared: every process makes them alike
        encoding = target.final._encode_y(y)
        refused = refused_folds(self, target, y, encoding[0], splits)
        check_a_fold_fits(self, configurations(discrete, self.n_iter), refused, len(splits))
        ignored = warn_ignored(self, target, [dict(zip(discrete, v)) for v in itertools.product(*discrete.values())])
        warn_as_fold_fits(target, [{**dict(zip(discrete, v)), **{n: b.low for n, b in continuous.items()}}
                                   for v in itertools.product(*discrete.values())])
        varying = descent_varying(target, discrete, continuous)
        # a refused fold's fit, or one whose pipeline steps fail on it, is no fit to descend
        descended, scored, rows, pairs, refused = built_descent_folds(self, target, X, y, encoding[0], splits, refused,
                                                                      varying)
        check_a_fold_fits(self, configurations(discrete, self.n_iter), refused, len(splits))
        scoring = fold_scoring(self, target, encoding, scored, refused)
        why = partial_class_folds(target, encoding, splits, descended)  # read from what every process compared
        if why:  # scikit-learn's search on these folds, after the refusals it would make too
            return self._sklearn_fallback(fallback(self, why, SklearnRandomizedSearchCV), X, y, cv=splits, **params)
        with named_already(ignored):
            result = self._descend(target, pairs, encoding, discrete, continuous, key, rows)
        n_val = [len(val) for _, val in scored]  # the validation examples each fold's scores count
        candidates, tables = self._tables(target, result, [*discrete, *continuous], len(splits), n_val, descended)
        self.hybrid_result_ = result
        self.hypergrad_info_ = [run_record(result, len(descended))]
        self._finish(X, y, candidates, scored, tables, refused=refused, scoring=scoring)
        return self

    def _checked_fit(self, X: Any, y: Any, params: Mapping[str, Any]) -> CheckedFit | FallsBack:
        """`fit`'s own checks, which compile nothing and make no collective (`checked_on_every_process`
        runs them): the search's parameters, the fit parameters, whether it falls back to
        scikit-learn's search, the ranges and their candidates, the data, the folds; then the
        training key."""
        self._validate_params()
        check_n_jobs(self.n_jobs)
        check_fit_params(self, params)
        target = target_of(self.estimator)
        why = unsupported(self, params)
        if why is None and self.return_train_score:
            why = "return_train_score=True: the descent scores the validation folds only"
        split = why or split_distributions(target, self.param_distributions)
        if not isinstance(split, str) and bakes_data(target, split[0]):
            split = (f"{sorted(target.final._data_baking_params)} make each fold's program hold data of its own (early "
                     "stopping's held-out split), so folds cannot share one")
        if isinstance(split, str):
            return FallsBack(split)
        discrete, continuous = split
        check_candidates(self.estimator, [{target.prefix + n: v} for n, options in discrete.items() for v in options]
                         + [{target.prefix + n: v} for n, b in continuous.items() for v in (b.low, b.high)])
        check_descended_are_read(target, discrete, continuous)
        check_data(target, X, y)
        X, y = indexable(X, y)
        splits = list(check_cv(self.cv, y, classifier=is_classifier(self.estimator)).split(X, y, params.get("groups")))
        why = unequal_folds(target, splits, descent_varying(target, discrete, continuous))
        if why:  # scikit-learn's search on exactly these folds (a generator cv is spent)
            return FallsBack(why, splits)
        ranges = {"discrete": discrete, "continuous": continuous}
        return CheckedFit(target, ranges, X, y, splits, [target.final._fit_key()])

    def _descend(self, target: Target, pairs: list, encoding: tuple[np.ndarray, dict], discrete: dict,
                 continuous: dict, key: jax.Array, rows: tuple[int, int] | None) -> hg.Result:
        """`hg.hybrid_search` on the folds' arrays `pairs` (`built_descent_folds`) stacked into one
        cross-validated family (`descent_folds`: padded to `rows` when given, else of equal sizes),
        y encoded as `encoding` (`_encode_y`'s), from the training key `key`."""
        fitted = encoding[1]
        varying = descent_varying(target, discrete, continuous)
        padding = {} if rows is None else {"rows": rows}
        made = [target.final._family(train, val, varying=varying, **class_keywords(fitted.get("classes_")), **padding)
                for train, val in pairs]
        space = hybrid_space(target, made[0][1], discrete, continuous)
        combos = int(np.prod([len(options) for options in discrete.values()]))
        configs = "grid" if self.n_iter >= combos else self.n_iter
        budget = self.budget if self.budget is not None else 30.0 * min(combos, self.n_iter)
        if self.verbose > 0:
            print(f"Descending {min(combos, self.n_iter)} configurations on {len(pairs)} folds, {budget:g} runs")
        # one fold (a single ShuffleSplit, say) is its own family: a cross-validated problem needs two
        family = made[0][0] if len(made) == 1 else stacked_family([f for f, _ in made])
        classes = fitted.get("classes_")
        base = target.final._program_key(varying, None if classes is None else len(classes))
        family = shared_family(family, folds_key(base, pairs, range(len(pairs)), rows))
        return hg.hybrid_search(family, space, key, budget=budget,
                                configs=configs, method=self.method or hg.Reverse(), outer=self.outer)

    def _tables(self, target: Target, result: hg.Result, names: list[str], k: int, n_val: Sequence[int],
                descended: Sequence[int]) -> tuple[list[dict], dict]:
        """Candidates (one per trial) and their per-fold scores, failed fits and seconds from the
        hybrid's trials, on k folds of `n_val[s]` validation examples each (`descent_folds`), of which
        the hybrid descended the folds `descended` (in order; the others, refused, stay NaN for
        `_finish`); failures and scores as `run_folds` reads them."""
        metric, sign, counts = metric_of(self.estimator, self.scoring)
        trials = result.trials
        candidates = [{target.prefix + n: as_param(t.hparams[n]) for n in names} for t in trials]
        shape = (len(trials), k)
        tables = {"test": np.full(shape, np.nan), "train": np.zeros(shape), "fit_time": np.zeros(shape),
                  "score_time": np.zeros(shape), "failed": np.zeros(shape, bool), "ran_out": np.zeros(shape, bool)}
        share = result.compile_seconds / len(trials)
        for row, t in enumerate(trials):
            for j, fold in enumerate(descended):  # one fold's problem is not cross-validated: no fold suffix
                suffix = f"_fold{j}" if len(descended) > 1 else ""
                tables["failed"][row, fold] = fold_failed(t, suffix)
                tables["ran_out"][row, fold] = ran_out(t, suffix)
                value = np.nan if tables["failed"][row, fold] else sign * t.scores.get(f"val_{metric}{suffix}", np.nan)
                tables["test"][row, fold] = exact_fraction(value, n_val[fold]) if counts else value
                tables["fit_time"][row, fold] = (t.seconds + share) / len(descended)
        return candidates, tables

    def _sklearn_fallback(self, notice: FallbackNotice, X: Any, y: Any, cv: Any = None, **params: Any
                          ) -> HypergradSearchCV:
        """scikit-learn's RandomizedSearchCV on the same ranges (tuples as scipy.stats distributions)
        and folds (`cv`: given splits, or None for the search's own `cv`), warning `notice` when it
        fits (`run_fallback`); its fitted attributes copied onto self."""
        def converted(distributions):
            out = {}
            for name, value in distributions.items():
                bounds = bounds_of(name, value)
                out[name] = value if bounds is None or not isinstance(value, tuple) else bounds.scipy()
            return out

        given = self.param_distributions
        distributions = [converted(d) for d in given] if isinstance(given, list) else converted(given)
        settings = {k: v for k, v in self.get_params(deep=False).items() if k not in ("budget", "method", "outer")}
        settings["cv"] = settings["cv"] if cv is None else cv
        search = FallbackRandomizedSearchCV(**{**settings, "param_distributions": distributions})
        run_fallback(search, notice, search.fit, X, y, **params)
        for name, value in vars(search).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(self, name, value)
        return self
