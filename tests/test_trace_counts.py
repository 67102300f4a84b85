"""How many times a first `random_search` and a first `tune` call trace a function and compile an XLA
program, pinned, so that a redundant trace or a small eager program creeping back fails here (not as
a slower suite). Counted with `jax.monitoring`'s events after `jax.clear_caches()` and
`hg.clear_caches()`, as in a fresh process; never a timing."""

import collections
import logging

import jax
import optax
import pytest

import hypergrad as hg
from hypergrad._compile import jaxlib_version_tuple

T = 2
SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(T,)), "weight_decay": hg.LogUniform(1e-4, 1.0)})

_EVENTS: collections.Counter = collections.Counter()
_TRACE, _COMPILE = "/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration"
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _EVENTS.update([event]) if event in (_TRACE, _COMPILE) else None)


# Traces JAX itself makes in a first tune beyond the library's, by the first JAX version (major, minor)
# that behaves so: jax 0.10 traces one eager `add` while tune sets up (logged 'Finished tracing add', no
# compilation for it) that jax 0.12 does not trace; the compilations are the same. A version between
# two rows takes the older row: a JAX that differs fails here, and gets its measured row.
JAX_EXTRA_TRACES = {(0, 12): 0, (0, 10): 1}


def jax_extra_traces() -> int:
    """`JAX_EXTRA_TRACES`' row for the installed JAX."""
    installed = jaxlib_version_tuple()[:2]
    return JAX_EXTRA_TRACES[max(v for v in JAX_EXTRA_TRACES if v <= installed)]


def schedule_sgd(hparams):
    """SGD whose step t uses hparams["lr"][t]; weight decay as an L2 step."""
    return optax.chain(optax.add_decayed_weights(hparams["weight_decay"]),
                       optax.sgd(lambda step: hparams["lr"][step]))


class _Named(logging.Handler):
    """The names of the programs JAX logs as compiled (for a failure's message only)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith(("Compiling ", "Finished tracing")):
            self.names.append(message.split(" with ")[0][:80])


def counted(call):
    """(traces, compilations, what JAX logged) of `call()` as a process's first call."""
    jax.clear_caches()
    hg.clear_caches()
    handler, logger = _Named(), logging.getLogger("jax")
    logger.addHandler(handler)
    before = _EVENTS.copy()
    try:
        with jax.log_compiles():
            call()
    finally:
        logger.removeHandler(handler)
    return _EVENTS[_TRACE] - before[_TRACE], _EVENTS[_COMPILE] - before[_COMPILE], handler.names


@pytest.fixture
def objective(logistic_problem):
    return hg.Objective(logistic_problem, schedule_sgd, num_steps=T)  # its own: nothing cached


def test_a_first_random_search_traces_and_compiles_no_eager_indexing(objective, key):
    # the sampler, the schedule check's key, probe and its init's shapes, the run and the search program;
    # reading the first setting by indexing device arrays compiled two eager programs per leaf (11, 9)
    traces, compiles, names = counted(lambda: hg.random_search(objective, SPACE, key, num_trials=4))
    assert (traces, compiles) == (7, 5), (traces, compiles, names)


def test_a_first_tune_broadcasts_its_centre_on_the_host(objective, key):
    # broadcasting the centre to one row per tuner was an eager program per leaf shape (23, 15 on jax 0.10)
    traces, compiles, names = counted(lambda: hg.tune(objective, SPACE, key, steps=2))
    assert (traces, compiles) == (20 + jax_extra_traces(), 13), (jax.__version__, traces, compiles, names)


def test_a_first_tune_with_a_warmup_traces_the_run_once(objective, key):
    # the checks' trace of the run is the warm-up search's program: it was traced again (24 traces),
    # and the search's first setting read by eager indexing (4 compilations more: 28, 19 on jax 0.10)
    traces, compiles, names = counted(lambda: hg.tune(objective, SPACE, key, steps=2, warmup=4, population=2))
    assert (traces, compiles) == (22 + jax_extra_traces(), 15), (jax.__version__, traces, compiles, names)


def test_a_first_tune_runs_the_objectives_python_for_its_count_and_not_again_for_its_step(logistic_problem, key):
    # the outer step replays the hypergradient traced for its FLOP count instead of tracing the method
    # and the objective's Python again: 8 calls of the optimiser function before, one trace fewer
    calls = []

    def optimizer(hparams):
        calls.append(1)
        return schedule_sgd(hparams)

    objective = hg.Objective(logistic_problem, optimizer, num_steps=T)
    first = counted(lambda: hg.tune(objective, SPACE, key, steps=2))
    assert len(calls) == 6, first
