"""Fingerprint format 6: an object described by its repr (an installed package's) is described alike
under any hash seed when it holds a set, and apart from another whose repr differs past its first
200 characters; a JAX pytree node is described by its auxiliary data and children, not by its
treedef's text (which prints auxiliary data by their `str`). Studies stored in format 5 still
resume."""

import argparse
import dataclasses
import json
import sqlite3
import types

import jax
import jax.numpy as jnp
import pytest

import hypergrad as hg
from hypergrad._store_codec import FINGERPRINT_FORMAT, first_difference, identity
from _helpers import Node, Stop, fingerprint_format, objective_scaled_by, stop_after


def colliding(first, second):
    """Equal sets that print differently in one process: 0 and 8 share a slot of a small set's table,
    so the order of insertion decides the order printed, as string hashes do under two hash seeds."""
    return {first, second}


# -- an object described by its repr ----------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ids: argparse.Namespace(ids=ids, lr=0.1),
                                  lambda ids: types.SimpleNamespace(ids=[frozenset(ids)], lr=0.1)],
                         ids=["python-repr", "c-repr"])
def test_a_set_held_by_an_object_described_by_its_repr_is_printed_sorted(make):
    a, b = make(colliding(0, 8)), make(colliding(8, 0))
    assert repr(a) != repr(b)  # the same value, printed in two orders
    assert identity(a) == identity(b)
    assert identity(a) != identity(make({0, 9}))  # the set's elements still tell them apart


def test_a_repr_differing_past_its_first_200_characters_is_another_description():
    note = "x" * 300
    a, b = argparse.Namespace(note=note, lr=0.1), argparse.Namespace(note=note, lr=0.2)
    assert identity(a)["repr"][:200] == identity(b)["repr"][:200]
    assert identity(a) != identity(b)
    assert identity(a) == identity(argparse.Namespace(note=note, lr=0.1))


# -- JAX pytree nodes: auxiliary data by identity -----------------------------------------------------
class Aux:
    """Auxiliary data whose repr is object's (its state shows nowhere in it)."""

    def __init__(self, scale):
        self.scale = scale

    def __eq__(self, other):
        return isinstance(other, Aux) and self.scale == other.scale

    def __hash__(self):
        return hash(self.scale)


@pytest.mark.parametrize("aux", [(1, "1"), (Aux(1.0), Aux(2.0)), (frozenset({"a"}), frozenset({"a", "b"}))],
                         ids=["int-or-str", "default-repr", "set"])
def test_pytree_nodes_with_other_auxiliary_data_are_described_apart(aux):
    first, second = aux
    array = jnp.arange(3.0)
    assert identity(Node(array, first)) != identity(Node(array, second))
    assert identity({"k": Node(Node(array, first), "outer")}) != identity({"k": Node(Node(array, second), "outer")})
    assert identity(Node(array, first)) == identity(Node(jnp.arange(3.0), first))


def test_a_pytree_nodes_auxiliary_set_is_described_alike_in_any_order():
    a, b = Node(jnp.zeros(2), frozenset(colliding(0, 8))), Node(jnp.zeros(2), frozenset(colliding(8, 0)))
    assert str(jax.tree_util.tree_structure(a)) != str(jax.tree_util.tree_structure(b))
    assert identity(a) == identity(b)


SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.1), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def test_a_study_closing_over_a_node_with_other_auxiliary_data_is_a_different_call(ridge_problem, key, tmp_path):
    db = tmp_path / "study.db"
    hg.random_search(objective_scaled_by(ridge_problem, Node(1.0, 1), "value"), SPACE, key, 2, storage=db, study="n")
    with pytest.raises(ValueError, match=r"study 'n' .* different call: objective\..*aux"):
        hg.random_search(objective_scaled_by(ridge_problem, Node(1.0, "1"), "value"), SPACE, key, 2, storage=db, study="n")


def test_a_study_stored_in_format_5_still_resumes(ridge_problem, key, tmp_path):
    """A study stored in format 5 (a node by its treedef's text) is compared as it was made, and
    resumes."""
    assert FINGERPRINT_FORMAT == 6
    db = tmp_path / "study.db"
    objective = objective_scaled_by(ridge_problem, Node(1.0, "tag"), "value")
    with fingerprint_format(5), pytest.raises(Stop):
        hg.random_search(objective, SPACE, key, 6, chunk_size=3, storage=db, study="r", progress=stop_after(1))
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = 'r'").fetchone()[0])
    assert stored["format"] == 5 and '"pytree": "PyTreeDef(' in json.dumps(stored)  # described otherwise than 6
    progress, whole_progress = stop_after(0), stop_after(0)
    resumed = hg.random_search(objective, SPACE, key, 6, chunk_size=3, storage=db, study="r", progress=progress)
    whole = hg.random_search(objective, SPACE, key, 6, chunk_size=3, progress=whole_progress)
    assert len(progress.calls) < len(whole_progress.calls)  # the stored trials were loaded, not run again
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]


def test_a_result_saved_with_a_format_5_digest_and_no_format_extends_an_unchanged_objective(ridge_problem, key):
    """A Result saved before `info["objective_format"]` was kept holds a digest of format 5 (or
    older) alone; its objective's format-6 digest differs (a node), and it still extends."""
    objective = objective_scaled_by(ridge_problem, Node(1.0, "tag"), "value")
    first = hg.random_search(objective, SPACE, key, 2)
    old = hg.store.objective_digest(objective, format=5)
    assert old != first.info["objective"]
    info = {k: v for k, v in first.info.items() if k != "objective_format"}
    saved = dataclasses.replace(first, info={**info, "objective": old})
    assert len(hg.random_search(objective, SPACE, key, 3, extends=saved).trials) == 3
    with pytest.raises(ValueError, match="another objective"):
        hg.random_search(objective_scaled_by(ridge_problem, Node(1.0, "other"), "value"), SPACE, key, 3, extends=saved)
