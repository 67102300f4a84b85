"""Shared fixtures: float64 on before anything builds arrays, and tiny problems so tests stay fast."""

import os

# The suite writes nothing outside its temporary directories: `hypergrad compare` (run in-process by
# test_cli) would turn on the persistent compilation cache in the user's cache directory.
# test_compilation_cache.py turns it on in child processes of its own.
os.environ["HYPERGRAD_COMPILATION_CACHE"] = "0"

import jax  # noqa: E402

# Must run before any hypergrad module builds an array: the built-in problems pick their dtype
# (float64 here) when constructed, and the finite-difference checks need float64 throughout.
jax.config.update("jax_enable_x64", True)

from hypergrad import _compile  # noqa: E402

# Tests compile many small programs and run each briefly, so compilation is most of the suite's
# time: skip LLVM's optimisations and, where the installed jaxlib still has it, use XLA:CPU's older
# fusion code generator: `hypergrad._compile.QUICK_COMPILE`, only the flags this jaxlib knows (XLA
# aborts the process on an unknown XLA_FLAGS flag). Together they halve the slowest smoke runs:
# experiments and benchmarks start child processes, which inherit the variable. XLA's cost analysis
# is unchanged; the generated code differs, which is why no test compares numbers across processes
# that could have been compiled with other options. JAX reads the variable when its backend starts,
# which importing jax and hypergrad does not (tests/test_jax_settings.py checks it).
os.environ.setdefault("XLA_FLAGS", _compile.quick_xla_flags())

import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402


@pytest.fixture(scope="session")
def ridge_problem():
    """Full-batch synthetic ridge regression: 24 training examples, 5 features."""
    return hg.problems.ridge(num_examples=40, num_features=5, noise=0.5, seed=0)


@pytest.fixture(scope="session")
def logistic_problem():
    """Full-batch softmax regression on 60 synthetic examples, 4 features, 3 classes."""
    return hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0)


@pytest.fixture(scope="session")
def logistic_minibatch_problem():
    """The same logistic problem trained on minibatches of 8 of its 36 training examples."""
    return hg.problems.logistic("synthetic", num_examples=60, num_features=4, num_classes=3, seed=0,
                                batch_size=8)


@pytest.fixture(scope="session")
def mlp_problem():
    """A tanh MLP (4 -> 8 -> 3) on iris, full batch."""
    return hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=None)


@pytest.fixture(scope="session")
def mlp_minibatch_problem():
    """The iris MLP on minibatches of 16."""
    return hg.problems.mlp_classifier("iris", hidden=(8,), batch_size=16)


@pytest.fixture
def key():
    return jax.random.key(0)

