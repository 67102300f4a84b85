"""A fingerprint describes all of an object's state: an object of the user's class keeps its repr
when part of its state lies outside its attributes (a slotted base, a builtin or C base), a JAX
pytree node (a flax Param) is described by its leaves hashed whole, and a str key holding ":" is
apart from another type's key. A Result saved with an objective digest of an older fingerprint
format (or none) still extends an unchanged objective."""

import dataclasses
import decimal
import fractions
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hypergrad as hg
from hypergrad._store_codec import identity
from _helpers import objective_scaled_by


# -- state outside the attributes: the repr stays ---------------------------------------------------
class SlottedBase:
    """A base keeping `scale` in a slot, with a repr written in Python."""

    __slots__ = ("scale",)

    def __repr__(self):
        return f"{type(self).__name__}(scale={self.scale})"


class Weighted(SlottedBase):
    """The user's class: `name` in its __dict__, `scale` in the base's slot."""

    def __init__(self, scale, name):
        self.scale, self.name = scale, name


class Frac(fractions.Fraction):
    """A Fraction (a slotted standard-library base) with one attribute of its own."""

    def __new__(cls, *args, label="x"):
        made = super().__new__(cls, *args)
        made.label = label
        return made


class Dec(decimal.Decimal):
    """A Decimal (a C base) with an attribute and a repr written in Python."""

    def __new__(cls, value, tag):
        made = super().__new__(cls, value)
        made.tag = tag
        return made

    def __repr__(self):
        return f"Dec({self}, {self.tag})"


class Plain:
    """The user's class whose state is all in its attributes, with a repr written in Python."""

    def __init__(self, scale):
        self.scale = scale

    def __repr__(self):
        return f"Plain(scale={self.scale})"


@pytest.mark.parametrize("make", [lambda v: Weighted(v, "mse"), lambda v: Frac(v, 7, label="y"),
                                  lambda v: Dec(str(v), "t")], ids=["slotted-base", "fraction", "decimal"])
def test_state_outside_the_attributes_keeps_the_repr(make):
    a, b = make(1), make(3)
    assert identity(a) != identity(b)
    assert "repr" in identity(a)


def test_an_object_whose_state_is_all_in_its_attributes_leaves_its_python_repr_out():
    described = identity(Plain(1.0))
    assert "repr" not in described and described["fields"] == {"scale": 1.0}
    assert identity(Plain(1.0)) != identity(Plain(2.0))


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.1), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_a_study_with_another_value_in_a_slotted_base_is_a_different_call(ridge_problem, key, tmp_path):
    db = tmp_path / "study.db"
    hg.random_search(objective_scaled_by(ridge_problem, Weighted(1.0, "mse"), "scale"), SPACE, key, 2, storage=db, study="s")
    with pytest.raises(ValueError, match=r"study 's' .* different call: objective\."):
        hg.random_search(objective_scaled_by(ridge_problem, Weighted(100.0, "mse"), "scale"), SPACE, key, 2, storage=db, study="s")


# -- JAX pytree nodes: their leaves hashed whole ----------------------------------------------------
@jax.tree_util.register_pytree_node_class
class Wrapped:
    """A pytree node without a __dict__ whose repr shows only its shape."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"Wrapped(shape={self.value.shape})"

    def tree_flatten(self):
        return (self.value,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def test_a_pytree_node_is_described_by_its_leaves():
    a, b = jnp.zeros((64, 64)), jnp.zeros((64, 64)).at[32, 32].set(5.0)
    assert repr(Wrapped(a)) == repr(Wrapped(b))
    assert identity(Wrapped(a)) != identity(Wrapped(b))
    assert identity(Wrapped(a)) == identity(Wrapped(np.zeros((64, 64))))  # leaves as plain arrays are


def test_a_flax_param_is_described_by_its_whole_array():
    nnx = pytest.importorskip("flax.nnx")
    a, b = jnp.zeros((64, 64)), jnp.zeros((64, 64)).at[32, 32].set(5.0)
    assert identity(nnx.Param(a)) != identity(nnx.Param(b))  # the repr prints only the first values
    assert identity(nnx.Param(a)) == identity(nnx.Param(jnp.zeros((64, 64))))
    state = {"layer": {"kernel": nnx.Param(a)}}
    assert identity(state) != identity({"layer": {"kernel": nnx.Param(b)}})
    assert "repr" in identity(nnx.Param(a), format=4)  # format 4 (stored studies) as it was


# -- mapping keys -----------------------------------------------------------------------------------
def test_a_str_key_holding_a_colon_is_apart_from_another_types_key():
    assert identity({"int:1": 5.0, 1: 7.0}) != identity({1: 5.0, "int:1": 7.0})
    assert identity({"int:1": 5.0, 1: 7.0}) == identity({1: 7.0, "int:1": 5.0})
    assert identity({"lr": 1.0}) == {"lr": 1.0}  # a key without ":" as itself, as in every format


# -- extends= of a Result saved in an older format --------------------------------------------------
def saved_without_format(result, digest):
    """`result` as an older hypergrad saved it: `digest` as its objective, no format beside it."""
    info = {k: v for k, v in result.info.items() if k != "objective_format"}
    return dataclasses.replace(result, info={**info, "objective": digest})


def test_a_result_saved_with_a_format_4_digest_extends_an_unchanged_objective(ridge_problem, key, tmp_path):
    objective = objective_scaled_by(ridge_problem, Plain(1.0), "scale")  # a Python-written repr: formats 4 and 5 differ
    first = hg.random_search(objective, SPACE, key, 2)
    # what hypergrad before format 5 saved as the digest (store.objective_digest then)
    old = hashlib.sha1(hg.store._json(identity(objective, format=4)).encode()).hexdigest()[:16]
    assert old != first.info["objective"]
    path = tmp_path / "r.json"
    saved_without_format(first, old).save(path)
    extended = hg.random_search(objective, SPACE, key, 3, extends=hg.Result.load(path))
    assert len(extended.trials) == 3 and extended.info["objective"] == first.info["objective"]
    assert extended.info["objective_format"] == first.info["objective_format"] == hg.store.FINGERPRINT_FORMAT
    other = objective_scaled_by(ridge_problem, Plain(2.0), "scale")
    with pytest.raises(ValueError, match="another objective"):
        hg.random_search(other, SPACE, key, 3, extends=hg.Result.load(path))


def test_a_saved_digest_is_compared_in_its_stored_format(ridge_problem, key):
    objective = objective_scaled_by(ridge_problem, Plain(1.0), "scale")
    first = hg.random_search(objective, SPACE, key, 2)
    old = hg.store.objective_digest(objective, format=4)
    assert old == hashlib.sha1(hg.store._json(identity(objective, format=4)).encode()).hexdigest()[:16]
    given = dataclasses.replace(first, info={**first.info, "objective": old, "objective_format": 4})
    assert len(hg.random_search(objective, SPACE, key, 3, extends=given).trials) == 3
    wrong = dataclasses.replace(first, info={**first.info, "objective": old, "objective_format": 2})
    with pytest.raises(ValueError, match="another objective"):
        hg.random_search(objective, SPACE, key, 3, extends=wrong)
