"""The engine's in-memory caches under threads: `hg.clear_caches()` (or another thread's eviction)
between a look-up's check and its read makes the look-up miss and recompute, never raise."""

import collections
import sys
import threading
import time

import jax
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import _compile, accounting, search
from hypergrad._batching import first_row
from hypergrad.problems import sgd_momentum_schedule as sgd_schedule
from hypergrad.sklearn import _base

T = 6


@pytest.fixture(scope="module")
def objective():
    problem = hg.problems.logistic("synthetic", num_examples=40, num_features=4, num_classes=3, seed=0,
                                   batch_size=8)
    return hg.Objective(problem, sgd_schedule, num_steps=T)


@pytest.fixture(scope="module")
def space():
    return hg.Space({"lr": hg.LogUniform(1e-2, 1.0, shape=(T,)), "momentum": hg.Uniform(0.0, 0.9),
                     "weight_decay": hg.LogUniform(1e-5, 1e-1)})


def hammer(read, disturb, seconds=1.5):
    """Runs `read()` and `disturb()` each in a loop on its own thread for `seconds`, with the
    interpreter switching threads as often as it can (so a clear lands inside a look-up); returns
    the errors `read` raised, by type and message, and how many reads completed."""
    errors, reads, stop = collections.Counter(), [0], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                read()
                reads[0] += 1
            except Exception as err:  # noqa: BLE001 - counted: the test expects none
                errors[f"{type(err).__name__}: {err}"[:100]] += 1

    def disturber():
        while not stop.is_set():
            disturb()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=reader), threading.Thread(target=disturber)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        hg.clear_caches()
    return dict(errors), reads[0]


class Owner:
    pass


def test_compiled_program_look_ups_miss_when_another_thread_clears_the_caches():
    owner, args = Owner(), (1.0,)

    def disturb():
        _compile._cache.put(*_compile._split(("prog", owner), args), "executable")
        hg.clear_caches()

    errors, reads = hammer(lambda: _compile.cached(("prog", owner), args), disturb)
    assert reads > 0 and errors == {}


def test_compiled_program_eviction_on_another_thread_is_a_miss():
    owners = [Owner() for _ in range(8)]

    def read():
        for owner in owners:
            _compile.cached(("prog", owner), (1.0,))
            _compile._cache.put(*_compile._split(("prog", owner), (1.0,)), "executable")

    def disturb():  # fills the cache past its cap: every put evicts the oldest program
        for i in range(_compile.MAX_ENTRIES + 8):
            _compile._cache.put(*_compile._split(("prog", owners[i % len(owners)], i), (1.0,)), "executable")

    errors, reads = hammer(read, disturb)
    assert reads > 0 and errors == {}


@pytest.mark.parametrize("lookup", ["cached_program", "program_owner"])
def test_scikit_learn_program_look_ups_miss_when_another_thread_clears_the_caches(lookup):
    read = ((lambda: _base.cached_program("fit-program", object)) if lookup == "cached_program"
            else (lambda: _base.program_owner("fit-program")))
    errors, reads = hammer(read, hg.clear_caches)
    assert reads > 0 and errors == {}


def test_flop_count_look_ups_miss_when_another_thread_evicts():
    owner = Owner()

    def read():
        accounting._counts.get_or_count(owner, "hot", lambda: 1.0)

    def disturb():  # one owner's table past its cap: every put evicts its oldest count
        for i in range(accounting.MAX_ENTRIES + 4):
            accounting._counts.put(owner, i, 1.0)
        accounting._counts.put(owner, "hot", 1.0)

    errors, reads = hammer(read, disturb)
    assert reads > 0 and errors == {}


def test_search_program_look_up_misses_when_another_thread_clears_its_names(objective, space):
    key = jax.random.key(0)
    settings = space.sample(key, 2)
    example, one = (settings, key, objective.problem.data), first_row(settings)
    search._search_program(objective, 2, example, one, warn_unread=False)  # compiled once, here
    errors, reads = hammer(lambda: search._search_program(objective, 2, example, one, warn_unread=False),
                           search._programs.clear, seconds=1.0)
    assert reads > 0 and errors == {}


def test_threads_running_strategies_while_a_third_clears_the_caches_match_a_sequential_run(objective, space):
    key = jax.random.key(1)
    hparams = space.sample(key, 1)
    hparams = {name: v[0] for name, v in hparams.items()}

    def gradient():
        value, grads = hg.hypergradient(objective, hparams, key)
        return float(value), {name: np.asarray(g) for name, g in grads.items()}

    def searched():
        result = hg.random_search(objective, space, key, 6, chunk_size=2)
        return [(t.number, t.value) for t in result.trials]

    hg.clear_caches()
    expected = gradient(), searched()

    results, errors, stop = {}, [], threading.Event()

    def run(name, call):
        try:
            results[name] = call()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def clearer():
        while not stop.is_set():
            hg.clear_caches()
            time.sleep(0.02)

    workers = [threading.Thread(target=run, args=("gradient", gradient)),
               threading.Thread(target=run, args=("search", searched))]
    clearing = threading.Thread(target=clearer)
    clearing.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    clearing.join()
    assert errors == []
    (value, grads), trials = results["gradient"], results["search"]
    assert value == expected[0][0]
    for name, g in grads.items():
        np.testing.assert_array_equal(g, expected[0][1][name])
    assert trials == expected[1]
