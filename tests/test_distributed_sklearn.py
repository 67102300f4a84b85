"""The scikit-learn searches over several processes (`jax.distributed`, two processes of one CPU
device each on loopback, as tests/test_distributed.py starts them).

Processes whose fits differ (an unseeded `RandomizedSearchCV` drawing other candidates on each
process, other data, an estimator without `random_state` drawing another training key) met in JAX's
`device_put` with a raw "not the same on each process" AssertionError; every process now refuses
the fit before anything compiles with a `ValueError` naming what differs and the fix. The same fit
on every process returns what one process with both devices returns.
"""

import contextlib
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import sklearn.model_selection as sk
from jax.experimental import multihost_utils
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge as SklearnRidge

import hypergrad.sklearn._search as search_module
from hypergrad import _compile
from hypergrad._processes import checked_together
from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, RandomizedSearchCV, Ridge

from _helpers import WORKER_START, two_workers

# One process with the two processes' two devices: the reference of the same fits.
_LONE_START = r'''
import json, os, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
process, port, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
'''

_SEARCHES = r'''
import scipy.stats
from sklearn.datasets import make_regression
from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, RandomizedSearchCV, Ridge
X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
model = Ridge(random_state=0)
alpha = {"alpha": scipy.stats.loguniform(0.01, 10.0)}
calls = {  # each process's fit: the same but for one thing
    "unseeded": lambda: RandomizedSearchCV(model, alpha, n_iter=3, cv=3).fit(X, y),
    "data": lambda: GridSearchCV(model, {"alpha": [0.1, 1.0, 10.0]}, cv=3).fit(X + 0.5 * max(process, 0), y),
    "unseeded_estimator": lambda: GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=3).fit(X, y),
    "unseeded_descent": lambda: HypergradSearchCV(Ridge(), {"alpha": (0.01, 10.0, "log")}, cv=3, budget=4).fit(X, y),
    "same": lambda: RandomizedSearchCV(model, alpha, n_iter=3, cv=3, random_state=0).fit(X, y),
}
out = {}
for name, call in calls.items():
    if process < 0 and name not in ("same", "unseeded"):
        continue
    try:
        s = call()
        out[name] = {"scores": [float(v) for v in s.cv_results_["mean_test_score"]],
                     "params": [str(p) for p in s.cv_results_["params"]], "best": str(s.best_params_),
                     "coef": [float(v) for v in np.ravel(s.best_estimator_.coef_)]}
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"searches{process}.json"), "w") as f:
    json.dump(out, f)
'''


def _lone(tmp_path) -> dict:
    worker = tmp_path / "lone.py"
    worker.write_text(_LONE_START + "import numpy as np\n" + _SEARCHES)
    done = subprocess.run([sys.executable, str(worker), "-1", "0", str(tmp_path)], capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp_path / "searches-1.json").read_text())


@pytest.fixture(scope="module")
def _shared(tmp_path_factory):
    """(the folder, {"searches": each process's outcome of `_SEARCHES`, "alone": of `_REFUSED_ALONE`}): both
    scenarios run in turn in one launch of the two processes, each writing its own file."""
    tmp = tmp_path_factory.mktemp("sklearn")
    searches = two_workers(tmp, WORKER_START + "import numpy as np\n" + _SEARCHES + _REFUSED_ALONE, "searches")
    return tmp, {"searches": searches, "alone": [json.loads((tmp / f"alone{i}.json").read_text()) for i in (0, 1)]}


def test_processes_fitting_differently_are_refused_naming_the_difference_and_the_fix(_shared):
    """Each refusal on both processes, before anything compiled: the unseeded RandomizedSearchCV's
    candidates (fix: random_state=<int>), the data (fix: the same data), the unseeded estimator's
    training key (fix: its random_state=<int>, which also samples HypergradSearchCV's configurations)."""
    tmp_path, out = _shared[0], _shared[1]["searches"]
    for i in (0, 1):
        refusals = {name: out[i][name] for name in ("unseeded", "data", "unseeded_estimator", "unseeded_descent")}
        for name, message in refusals.items():
            assert isinstance(message, str) and message.startswith("ValueError: several processes made different "
                                                                   "calls of "), (i, name, message)
            assert "process 1's call differs from process 0's in " in message, (i, name, message)
        assert "in arguments.candidates." in refusals["unseeded"], refusals["unseeded"]
        assert "give random_state=<int> so every process draws the same candidates" in refusals["unseeded"]
        assert "in arguments.X." in refusals["data"], refusals["data"]
        assert "random_state" not in refusals["data"]
        for name in ("unseeded_estimator", "unseeded_descent"):
            assert "differs from process 0's in key." in refusals[name], refusals[name]
            assert "Ridge's random_state=None draws another training key on each process: give it " \
                   "random_state=<int> so every process fits with the same key" in refusals[name], refusals[name]
    # the same fit on both processes: the same results, as one process with both devices gives them
    lone = _lone(tmp_path)
    assert out[0]["same"] == out[1]["same"]
    assert out[0]["same"]["params"] == lone["same"]["params"] and out[0]["same"]["best"] == lone["same"]["best"]
    np.testing.assert_allclose(out[0]["same"]["scores"], lone["same"]["scores"], rtol=1e-6)
    np.testing.assert_allclose(out[0]["same"]["coef"], lone["same"]["coef"], rtol=1e-5, atol=1e-6)
    assert isinstance(lone["unseeded"], dict)  # one process: nothing to compare, an unseeded search runs


def test_one_process_describes_nothing(monkeypatch):
    """A lone process neither describes its fit nor gathers anything: the description is never made."""
    def refuse(*args, **kwargs):
        raise AssertionError("a lone process described its fit")

    monkeypatch.setattr(search_module, "fit_description", refuse)
    X, y = make_regression(n_samples=30, n_features=3, noise=1.0, random_state=0)
    assert len(GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y).cv_results_["params"]) == 2
    assert len(RandomizedSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, n_iter=2, cv=2).fit(X, y).cv_results_["params"]) == 2
    assert HypergradSearchCV(Ridge(), {"alpha": (0.01, 10.0, "log")}, cv=2, budget=4).fit(X, y).best_params_


# -- a fit refused on one process alone: refused on every process ---------------------------------
_REFUSED_ALONE = r'''
import numpy as np
from sklearn.datasets import make_classification, make_regression
from hypergrad.sklearn import GridSearchCV, HypergradSearchCV, LogisticRegression, RandomizedSearchCV, Ridge
first = process == 0
X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
model = Ridge(random_state=0)
nan_x = X.copy()
nan_x[0, 0] = np.nan
xc, yc = make_classification(n_samples=60, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=0)


def unseeded():
    np.random.seed(1 - process)  # random_state=None: process 0 draws alpha=1.0, process 1 alpha=-1.0 (refused)
    return RandomizedSearchCV(model, {"alpha": [1.0, -1.0]}, n_iter=1, cv=3).fit(X, y)


calls = {  # each process's fit: the same but for one thing process 1 alone gives invalid
    "distributions": lambda: HypergradSearchCV(model, {"alpha": (0.01, 10.0, "log") if first else (10.0, 0.01, "log")},
                                               cv=3, budget=4).fit(X, y),
    "nan": lambda: GridSearchCV(model, {"alpha": [0.1, 1.0]}, cv=3).fit(X if first else nan_x, y),
    "unseeded": unseeded,
    "n_jobs": lambda: GridSearchCV(model, {"alpha": [0.1, 1.0]}, cv=3, n_jobs=None if first else 0).fit(X, y),
    "classes": lambda: GridSearchCV(LogisticRegression(random_state=0), {"C": [0.1, 1.0]}, cv=3).fit(
        xc, yc if first else np.minimum(yc, 1)),  # process 1's y lacks class 2
    "same": lambda: GridSearchCV(model, {"alpha": [0.1, 1.0]}, cv=3).fit(X, y),
}
out = {}
for name, call in calls.items():
    try:
        s = call()
        out[name] = {"scores": [float(v) for v in s.cv_results_["mean_test_score"]], "best": str(s.best_params_)}
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
with open(os.path.join(tmp, f"alone{process}.json"), "w") as f:
    json.dump(out, f)
'''


def test_a_fit_refused_on_one_process_alone_is_refused_on_every_process(_shared):
    """A fit refused by a check on process 1 alone (a bad param_distributions, NaN in its X, an
    unseeded draw of a candidate Ridge refuses, n_jobs=0) left process 0 waiting in the fit's
    comparison for ever. Process 1 now raises its own error and process 0 the same, naming process 1
    (with the random_state to give for the unseeded draw); a y lacking a class on process 1 is a
    difference refused on both; the fit that follows runs and agrees."""
    out = _shared[1]["alone"]
    unseeded = (". random_state=None draws other candidates on each process: give random_state=<int> so every "
                "process draws the same candidates")
    for name, what, advice in [("distributions", "HypergradSearchCV", ""), ("nan", "GridSearchCV", ""),
                               ("unseeded", "RandomizedSearchCV", unseeded), ("n_jobs", "GridSearchCV", "")]:
        own = out[1][name]
        assert isinstance(own, str) and "process" not in own, (name, own)
        assert out[0][name] == (f"ValueError: {what}.fit: process 1 refused its call with {own} (every process "
                                "stops: each must make the same call, and one that a process refuses would leave the "
                                f"others waiting for it for ever){advice}"), (name, out[0][name])
    assert out[1]["distributions"].startswith("ValueError: param_distributions['alpha']=(10.0, 0.01, 'log'): give")
    assert out[1]["nan"].startswith("ValueError: Input X contains NaN")
    assert out[1]["unseeded"].startswith("InvalidParameterError: The 'alpha' parameter of Ridge must be")
    assert out[1]["n_jobs"].startswith("ValueError: n_jobs == 0")
    for i in (0, 1):
        assert out[i]["classes"].startswith("ValueError: several processes made different calls of GridSearchCV.fit: "
                                            "process 1's call differs from process 0's in "), out[i]["classes"]
        assert "arguments.y" in out[i]["classes"], out[i]["classes"]
    assert isinstance(out[0]["same"], dict) and out[0]["same"] == out[1]["same"], (out[0]["same"], out[1]["same"])


def test_another_process_refusing_stops_this_ones_fit_also_where_it_falls_back(monkeypatch):
    """Without a second process (the all-gather faked, process 0 having refused with NaN in its X):
    this process's fit raises process 0's error, named, whether it would fall back to scikit-learn's
    search (which never runs) or vmap its fits (nothing compiled; its description, made before the
    all-gather it rides in, is not compared); an unseeded RandomizedSearchCV adds the random_state
    to give."""
    sent = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda row: sent.append(np.asarray(row)) or
                        np.stack([sent[-1], sent[-1]]))
    with contextlib.suppress(ValueError), checked_together("GridSearchCV.fit"):
        raise ValueError("Input X contains NaN.")
    refused = sent[-1]
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda row: np.stack([refused, np.asarray(row)]))
    monkeypatch.setattr(sk.GridSearchCV, "fit", None)  # reaching scikit-learn's search would fail otherwise
    X, y = make_regression(n_samples=30, n_features=3, noise=1.0, random_state=0)
    named = r"^{}\.fit: process 0 refused its call with ValueError: Input X contains NaN\. \(every process stops"
    compilations = _compile.stats.compilations
    with pytest.raises(ValueError, match=named.format("GridSearchCV") + r".*for ever\)$"):
        GridSearchCV(SklearnRidge(), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y)  # falls back here
    with pytest.raises(ValueError, match=named.format("RandomizedSearchCV") + r".*for ever\)\. random_state=None "
                                         r"draws other candidates on each process: give random_state=<int>"):
        RandomizedSearchCV(Ridge(random_state=0), {"alpha": [0.1, 1.0]}, n_iter=1, cv=2).fit(X, y)
    assert _compile.stats.compilations == compilations


class _Compared(Exception):
    """Raised where a faked fit has passed its comparison across processes (`refused_folds`, next)."""


def _fit_gathering(monkeypatch, fit, others=None) -> list:
    """The rows this process's `fit()` sends to the all-gathers it makes, with two processes faked:
    the other process sends `others` (this process's own row when None); stopped once compared."""
    sent = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda row: sent.append(np.asarray(row)) or np.stack(
        [sent[-1], sent[-1] if others is None else others]))

    def compared(*args, **kwargs):
        raise _Compared

    monkeypatch.setattr(search_module, "refused_folds", compared)
    monkeypatch.setattr(sk.GridSearchCV, "fit", compared)  # a fallback stops there, uncompared
    with contextlib.suppress(_Compared):
        fit()
    return sent


def test_a_fits_checks_and_its_description_share_one_all_gather(monkeypatch):
    """With several processes, the common path of GridSearchCV, RandomizedSearchCV and
    HypergradSearchCV made two all-gathers (the checks' refusals, then the description's): the
    description now rides in the first, so a fit that agrees makes one; a fit whose data differ
    is still refused, naming X, as is a fit that falls back to scikit-learn's search on one process
    alone (the other then waited in the description's all-gather for ever)."""
    X, y = make_regression(n_samples=30, n_features=3, noise=1.0, random_state=0)
    fits = {"grid": lambda X: GridSearchCV(Ridge(random_state=0), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y),
            "randomized": lambda X: RandomizedSearchCV(Ridge(random_state=0), {"alpha": [0.1, 1.0]}, n_iter=2, cv=2,
                                                       random_state=0).fit(X, y),
            "descent": lambda X: HypergradSearchCV(Ridge(random_state=0), {"alpha": (0.01, 10.0, "log")}, cv=2,
                                                   budget=4, random_state=0).fit(X, y)}
    for name, fit in fits.items():
        assert len(_fit_gathering(monkeypatch, lambda: fit(X))) == 1, name
        (other,) = _fit_gathering(monkeypatch, lambda: fit(X + 1.0))
        with pytest.raises(ValueError, match=r"process 1's call differs from process 0's in arguments\.X\."):
            _fit_gathering(monkeypatch, lambda: fit(X), others=other)
    (falling_back,) = _fit_gathering(monkeypatch, lambda: GridSearchCV(SklearnRidge(), {"alpha": [0.1, 1.0]},
                                                                       cv=2).fit(X, y))
    (vmapped,) = _fit_gathering(monkeypatch, lambda: fits["grid"](X))
    with pytest.raises(ValueError, match=r"^several processes made different calls of GridSearchCV\.fit: process 1's"):
        _fit_gathering(monkeypatch, lambda: fits["grid"](X), others=falling_back)
    with pytest.raises(ValueError, match=r"^several processes made different calls of GridSearchCV\.fit: process 1's"):
        _fit_gathering(monkeypatch, lambda: GridSearchCV(SklearnRidge(), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y),
                       others=vmapped)
