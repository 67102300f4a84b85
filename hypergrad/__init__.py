"""hypergrad: gradient-based hyperparameter optimisation in JAX, with fair baselines."""

from hypergrad import problems
from hypergrad.hypergradient import hypergradient
from hypergrad.methods import Forward, Implicit, Method, Reverse, Reversible, Truncated
from hypergrad.objective import Objective
from hypergrad.problem import Problem
from hypergrad.results import Comparison, Result, Trial, compare
from hypergrad.search import grid_search, random_search
from hypergrad.space import Choice, LogUniform, Space, Uniform
from hypergrad.tune import tune, tune_step_cost

__all__ = ["Choice", "Comparison", "Forward", "Implicit", "Reversible", "Truncated", "LogUniform", "Method", "Objective", "Problem", "Result", "Reverse",
           "Space", "Trial", "Uniform", "compare", "grid_search", "hypergradient", "problems",
           "random_search", "tune", "tune_step_cost"]
__version__ = "0.1.0"
