"""scikit-learn drop-ins: change one import, and the fits run as compiled, vmapped hypergrad programs.

    from hypergrad.sklearn import MLPClassifier, RandomizedSearchCV, GridSearchCV, HypergradSearchCV

Estimators (`MLPClassifier`, `MLPRegressor`, `LogisticRegression`, `Ridge`) take scikit-learn's
parameter names, defaults and meanings (`hypergrad/sklearn/_mlp.py`, `_linear.py`). The searches
are scikit-learn's own classes whose `fit` evaluates every candidate x fold in one vmapped program
(`hypergrad/sklearn/_search.py`); anything they cannot run exactly falls back to scikit-learn's
search with a `UserWarning`. Needs the `data` extra (scikit-learn).
"""

try:
    import sklearn  # noqa: F401  (the optional extra this package stands on)
except ImportError as err:  # pragma: no cover - only without the extra
    raise ImportError("hypergrad.sklearn needs scikit-learn: pip install 'hypergrad[data]' "
                      "(or pip install scikit-learn)") from err

from hypergrad.sklearn._base import HypergradEstimator  # noqa: E402
from hypergrad.sklearn._linear import LogisticRegression, Ridge  # noqa: E402
from hypergrad.sklearn._mlp import MLPClassifier, MLPRegressor  # noqa: E402
from hypergrad.sklearn._search import GridSearchCV, HypergradSearchCV, RandomizedSearchCV  # noqa: E402

__all__ = ["MLPClassifier", "MLPRegressor", "LogisticRegression", "Ridge", "GridSearchCV", "RandomizedSearchCV",
           "HypergradSearchCV", "HypergradEstimator"]
