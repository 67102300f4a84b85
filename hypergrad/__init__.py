"""hypergrad: gradient-based hyperparameter optimisation in JAX, with fair baselines."""

import importlib.metadata

from hypergrad._interrupts import ctrl_c_kept

with ctrl_c_kept():  # a Ctrl-C that the imports drop (JAX's garbage-collection callback) is raised as they end
    from hypergrad import online, problems
    from hypergrad._caches import clear_caches, use_compilation_cache
    from hypergrad.accounting import hypergradient_flops, run_flops
    from hypergrad.hybrid import hybrid_search
    from hypergrad.hypergradient import hypergradient
    from hypergrad.methods import ES, PES, Forward, Implicit, Method, Reverse, Reversible, Truncated
    from hypergrad.objective import Objective
    from hypergrad.optuna_search import optuna_search
    from hypergrad.problem import Problem
    from hypergrad.report import Report, compare
    from hypergrad.results import Comparison, Result, Trial
    from hypergrad.search import grid_search, random_search, use_cpu_cores
    from hypergrad.space import Choice, LogUniform, Space, Uniform
    from hypergrad.store import StudyInfo, list_studies, load_study
    from hypergrad.structure import Masked, Structured, select_transform
    from hypergrad.tune import tune, tune_step_cost

__all__ = [
    # declaring the problem and the search space
    "Problem", "Objective", "Space", "Uniform", "LogUniform", "Choice", "problems",
    # structural choices: one program per configuration, or one masked program
    "Structured", "Masked", "select_transform",
    # hypergradient methods
    "hypergradient", "Method", "Reverse", "Truncated", "Forward", "Implicit", "Reversible", "ES", "PES",
    "online",
    # strategies and their results
    "tune", "tune_step_cost", "hypergradient_flops", "run_flops", "random_search", "grid_search", "use_cpu_cores", "optuna_search", "hybrid_search",
    "compare", "Result", "Trial", "Comparison", "Report",
    # durable studies: storage= and study= on every strategy
    "load_study", "list_studies", "StudyInfo",
    # engine state
    "clear_caches", "use_compilation_cache",
]

try:  # the installed distribution's version, so it cannot drift from pyproject.toml's
    __version__ = importlib.metadata.version("hypergrad")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
