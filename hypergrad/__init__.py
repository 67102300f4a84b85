"""hypergrad: gradient-based hyperparameter optimisation in JAX, with fair baselines."""

from hypergrad import problems
from hypergrad.hypergradient import hypergradient
from hypergrad.methods import Method, Reverse
from hypergrad.objective import Objective
from hypergrad.problem import Problem
from hypergrad.space import Choice, LogUniform, Space, Uniform

__all__ = ["Choice", "LogUniform", "Method", "Objective", "Problem", "Reverse", "Space", "Uniform",
           "hypergradient", "problems"]
__version__ = "0.1.0"
