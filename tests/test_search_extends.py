"""Random search continued (`extends=`) and families of grouped choices only.

Checks that a saved or stored Result whose space has a Choice of functions can be extended (the
loaded trials hold the options' stored forms, matched exactly against the space's options, with no
looser check for a real mismatch), that an extension equals one call bitwise when both are given one
chunk size, and that a family whose every choice is grouped runs in any chunk size.
"""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402

STEPS = 5


@pytest.fixture(scope="module")
def ridge():
    return hg.problems.ridge(num_examples=40, num_features=3, seed=0)


def schedule_family(problem):
    """Plain SGD whose step size follows one of the space's schedule functions."""
    def build(config):
        make = config["schedule"]

        def optimizer(h):
            if make is optax.constant_schedule:
                return optax.sgd(make(h["lr"]))
            return optax.sgd(make(h["lr"], 0.0, STEPS))
        return hg.Objective(problem, optimizer, num_steps=STEPS)
    return hg.Structured(build=build)


SCHEDULES = hg.Space({"lr": hg.LogUniform(1e-3, 0.5),
                      "schedule": hg.Choice([optax.constant_schedule, optax.linear_schedule])})


def test_a_saved_or_stored_search_over_functions_extends_as_the_returned_one_does(ridge, tmp_path):
    # Result.load and hg.load_study read a function option back as its repr string, and extends=
    # compared that string with the function: "its trials are not this search's first draws"
    family, key, db = schedule_family(ridge), jax.random.key(0), tmp_path / "s.db"
    earlier = hg.random_search(family, SCHEDULES, key, num_trials=3, storage=db, study="s")
    earlier.save(tmp_path / "r.json")
    once = hg.random_search(family, SCHEDULES, key, num_trials=5)
    assert {t.hparams["schedule"] for t in once.trials} == set(SCHEDULES["schedule"].options)  # both drawn
    for loaded in [hg.Result.load(tmp_path / "r.json"), hg.load_study(db, "s")]:
        assert isinstance(loaded.trials[0].hparams["schedule"], str)  # what the bug tripped on
        more = hg.random_search(family, SCHEDULES, key, num_trials=5, extends=loaded)
        assert [t.number for t in more.trials] == list(range(5))
        for a, b in zip(more.trials, once.trials, strict=True):
            assert a.hparams["schedule"] is b.hparams["schedule"]  # the space's own function again
            np.testing.assert_array_equal(a.hparams["lr"], b.hparams["lr"])
            np.testing.assert_allclose(a.value, b.value, rtol=1e-12)
        same = hg.random_search(family, SCHEDULES, key, num_trials=3, extends=loaded)
        assert all(t.hparams["schedule"] in SCHEDULES["schedule"].options for t in same.trials)


def test_a_loaded_option_that_names_another_option_is_still_refused(ridge, tmp_path):
    family, key = schedule_family(ridge), jax.random.key(0)
    earlier = hg.random_search(family, SCHEDULES, key, num_trials=3)
    earlier.save(tmp_path / "r.json")
    loaded = hg.Result.load(tmp_path / "r.json")
    names = {optax.constant_schedule: "<function constant_schedule>", optax.linear_schedule: "<function linear_schedule>"}
    assert loaded.trials[0].hparams["schedule"] == names[earlier.trials[0].hparams["schedule"]]
    other = next(name for fn, name in names.items() if fn is not earlier.trials[0].hparams["schedule"])
    swapped = dataclasses.replace(loaded.trials[0], hparams={**loaded.trials[0].hparams, "schedule": other})
    for wrong in [dataclasses.replace(loaded, trials=(swapped, *loaded.trials[1:])),
                  dataclasses.replace(loaded, trials=tuple(dataclasses.replace(
                      t, hparams={**t.hparams, "schedule": "<function cosine_decay_schedule>"}) for t in loaded.trials))]:
        with pytest.raises(ValueError, match="not this search's first draws"):
            hg.random_search(family, SCHEDULES, key, num_trials=5, extends=wrong)


def test_options_stored_alike_cannot_be_told_apart_and_say_so(ridge, tmp_path):
    """Two lambdas of one function have one repr: a loaded trial cannot say which was drawn."""
    options = [lambda lr: optax.constant_schedule(lr), lambda lr: optax.constant_schedule(0.5 * lr)]
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "schedule": hg.Choice(options)})
    family = hg.Structured(build=lambda c: hg.Objective(ridge, lambda h: optax.sgd(c["schedule"](h["lr"])),
                                                         num_steps=STEPS))
    key = jax.random.key(0)
    earlier = hg.random_search(family, space, key, num_trials=2)
    earlier.save(tmp_path / "r.json")
    assert len(hg.random_search(family, space, key, num_trials=3, extends=earlier).trials) == 3  # in memory: fine
    with pytest.raises(ValueError, match=r"which of them it was cannot be told.*reprs of their own"):
        hg.random_search(family, space, key, num_trials=3, extends=hg.Result.load(tmp_path / "r.json"))


def test_an_extension_is_one_call_bitwise_given_one_chunk_size(ridge):
    """The docstring's promise: with one chunk_size no larger than either count, every trial runs
    in the program one call runs it in (a row's value does not depend on the other rows)."""
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5, shape=(STEPS,)), "weight_decay": hg.LogUniform(1e-4, 1.0),
                      "momentum": hg.Choice([0.0, 0.9])})
    objective = hg.Objective(ridge, lambda h: optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"]),
                             num_steps=STEPS)
    key = jax.random.key(0)
    earlier = hg.random_search(objective, space, key, num_trials=3, chunk_size=2)
    more = hg.random_search(objective, space, key, num_trials=7, chunk_size=2, extends=earlier)
    once = hg.random_search(objective, space, key, num_trials=7, chunk_size=2)
    np.testing.assert_array_equal([t.value for t in more.trials], [t.value for t in once.trials])


def test_a_family_of_grouped_choices_only_runs_in_any_chunk_size(ridge):
    # every group's settings were empty: vmap had nothing to map ("vmap must have at least one
    # non-None value"), and the program's cache key (shapes of no leaves) gave the one-row program
    # of chunk_size=1 to a chunk of 2 (IndexError)
    space = hg.Space({"opt": hg.Choice(["sgd", "adam"], structural=True)})
    family = hg.Structured(lambda c: hg.Objective(
        ridge, (lambda h: optax.sgd(0.05)) if c["opt"] == "sgd" else (lambda h: optax.adam(0.05)), num_steps=STEPS))
    key = jax.random.key(0)
    runs = [hg.random_search(family, space, key, num_trials=4, chunk_size=size) for size in (1, 2, None, 3)]
    assert [r.info["chunk_size"] for r in runs] == [1, 2, 2, 2]
    drawn = [t.hparams["opt"] for t in runs[0].trials]
    assert set(drawn) == {"sgd", "adam"}
    alone = {opt: float(family.objective({"opt": opt})({}, key)) for opt in ("sgd", "adam")}
    for result in runs:
        assert [t.hparams["opt"] for t in result.trials] == drawn
        np.testing.assert_allclose([t.value for t in result.trials], [alone[opt] for opt in drawn], rtol=1e-12)
