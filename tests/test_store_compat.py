"""Files of other hypergrad versions read by this one: a study or a saved Result whose numbers this
version would not continue as they were computed is refused, naming the cause and the fix, never
silently mixed (hunt COMPAT F1); a file of a newer version is refused as such (F2); an interrupted
run of an older `hypergrad compare` is named as such (F3)."""

import hashlib
import json
import math
import sqlite3

import jax
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import cli
from hypergrad._sampler import epoch_batch_indices
from _helpers import Stop, fingerprint_format, stop_after

SPACE = hg.Space({"lr": hg.LogUniform(1e-3, 0.5)})


@pytest.fixture(scope="module")
def minibatch_objective(logistic_minibatch_problem):
    return hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(h["lr"]), num_steps=4)


@pytest.fixture(scope="module")
def fullbatch_objective(ridge_problem):
    return hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=4)


def same_trials(a, b):
    assert [t.number for t in a.trials] == [t.number for t in b.trials] == list(range(len(a.trials)))
    for x, y in zip(a.trials, b.trials):
        assert x.value == y.value or (math.isnan(x.value) and math.isnan(y.value)), (x.number, x.value, y.value)
        assert all(np.array_equal(x.hparams[n], y.hparams[n]) for n in x.hparams), x.number


def edit_fingerprint(db, study, edit):
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = ?", (study,)).fetchone()[0])
        edit(stored)
        conn.execute("UPDATE studies SET fingerprint = ? WHERE name = ?", (json.dumps(stored), study))


def interrupted_search(objective, key, db, study, **kwargs):
    """A random search of 4 trials stopped after its first chunk of 2 (as a Ctrl-C leaves it)."""
    with pytest.raises(Stop):
        hg.random_search(objective, SPACE, key, 4, chunk_size=2, storage=db, study=study, progress=stop_after(1),
                         **kwargs)


# F1: a minibatch study or Result whose format cannot show its epoch order (hypergrad drew another one,
# with four Feistel rounds, until part-way through fingerprint format 4) is not continued.

def test_a_running_minibatch_study_of_format_4_is_refused_not_mixed_with_this_versions_order(
        minibatch_objective, fullbatch_objective, key, tmp_path):
    # old: resumed without a word, its stored trials of one minibatch order and its new ones of another
    db = tmp_path / "s.db"
    with fingerprint_format(4):
        interrupted_search(minibatch_objective, key, db, "mb")
        interrupted_search(fullbatch_objective, key, db, "full")
        hg.random_search(minibatch_objective, SPACE, key, 2, storage=db, study="done")
    with pytest.raises(ValueError, match=r"study 'mb' in .* cannot be resumed: its objective draws minibatches .*"
                                         r"format 4.*new study name.*hg.load_study"):
        hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="mb")
    assert len(hg.load_study(db, "mb").trials) == 2  # still readable, nothing written
    # a full-batch objective computed the same numbers then: it resumes; a finished study is returned
    same_trials(hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="full"),
                hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2))
    same_trials(hg.random_search(minibatch_objective, SPACE, key, 2, storage=db, study="done"),
                hg.load_study(db, "done"))


def test_extending_a_minibatch_result_that_cannot_show_its_order_is_refused(minibatch_objective,
                                                                           fullbatch_objective, key):
    # old: the Result's trials (another order's) were kept and trials of this order appended
    def as_before_the_marker(result):  # info as a version before fingerprint format 5 saved it
        info = {k: v for k, v in result.info.items() if k not in ("numerics", "objective_format")}
        return hg.Result.from_dict(dict(result.to_dict(), info=info))

    earlier = as_before_the_marker(hg.random_search(minibatch_objective, SPACE, key, 2))
    with pytest.raises(ValueError, match=r"extends=.*older hypergrad.*draws minibatches.*without extends="):
        hg.random_search(minibatch_objective, SPACE, key, 3, extends=earlier)
    full = as_before_the_marker(hg.random_search(fullbatch_objective, SPACE, key, 2, chunk_size=1))
    same_trials(hg.random_search(fullbatch_objective, SPACE, key, 3, chunk_size=1, extends=full),
                hg.random_search(fullbatch_objective, SPACE, key, 3, chunk_size=1))


def test_an_interrupted_study_extends_as_a_finished_one_its_fingerprint_proving_numerics_and_objective(
        minibatch_objective, fullbatch_objective, logistic_minibatch_problem, key, tmp_path):
    # old: hg.load_study of a study that had not finished gave info={}, so extends= took any minibatch
    # objective's study for one of an older hypergrad ("cannot show their order") and refused it
    db = tmp_path / "s.db"
    family = hg.Structured(lambda c: hg.Objective(logistic_minibatch_problem, lambda h: optax.sgd(h["lr"]),
                                                  num_steps=c["depth"]))
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "depth": hg.Choice([1, 2], structural=True)})
    interrupted_search(minibatch_objective, key, db, "mb")
    with pytest.raises(Stop):
        hg.random_search(family, space, key, 4, chunk_size=2, storage=db, study="family", progress=stop_after(1))
    earlier = hg.load_study(db, "mb")
    same_trials(hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2, extends=earlier),
                hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2))
    assert len(earlier.trials) == 2 and earlier.info == {"objective_format": hg.store.FINGERPRINT_FORMAT,
                                                         "numerics": hg.store.NUMERICS,
                                                         "objective": hg.store.objective_digest(minibatch_objective)}
    # old: another objective (2 more steps) was accepted, its trials appended to this one's
    longer = hg.Objective(minibatch_objective.problem, lambda h: optax.sgd(h["lr"]), num_steps=6)
    with pytest.raises(ValueError, match=r"extends=.*another objective"):
        hg.random_search(longer, SPACE, key, 4, chunk_size=2, extends=earlier)
    # a family's first chunk is one structure's trials (not the first draws, which extends= refuses as
    # such), so its numerics and digest are checked alone: this version's, not refused
    assert hg.search._same_objective(hg.load_study(db, "family").info, family, hg.store.objective_digest(family), space)
    # one whose fingerprint cannot show its minibatch order is still refused; a full-batch one extends
    with fingerprint_format(4):
        interrupted_search(minibatch_objective, key, db, "mb4")
        interrupted_search(fullbatch_objective, key, db, "full4")
    assert hg.load_study(db, "mb4").info == {"objective_format": 4,
                                             "objective": hg.store.objective_digest(minibatch_objective, format=4)}
    with pytest.raises(ValueError, match=r"extends=.*older hypergrad.*draws minibatches.*without extends="):
        hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2, extends=hg.load_study(db, "mb4"))
    same_trials(hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2, extends=hg.load_study(db, "full4")),
                hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2))


def test_a_structured_family_is_told_minibatch_or_not_by_the_objectives_it_builds(logistic_minibatch_problem,
                                                                                 ridge_problem, key):
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.5), "depth": hg.Choice([1, 2], structural=True)})

    def family(problem):
        return hg.Structured(lambda c: hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=c["depth"]))

    assert hg.store.uses_minibatches(family(logistic_minibatch_problem), space)
    assert not hg.store.uses_minibatches(family(ridge_problem), space)
    assert hg.store.uses_minibatches(family(ridge_problem))  # its objectives unknown: it may
    legacy = {"objective": "0123456789abcdef"}  # a digest without format nor numerics (before format 5)
    for problem, refused in ((logistic_minibatch_problem, True), (ridge_problem, False)):
        try:
            hg.search._same_objective(legacy, family(problem), "fedcba9876543210", space)
        except ValueError as err:
            assert refused and "draws minibatches" in str(err)
        else:
            assert not refused


def test_the_numerics_marker_is_compared_and_studies_stored_before_it_resume_bitwise(minibatch_objective, key,
                                                                                    tmp_path):
    db = tmp_path / "s.db"
    for study in ("before", "older"):
        interrupted_search(minibatch_objective, key, db, study)
    hg.random_search(minibatch_objective, SPACE, key, 2, storage=db, study="older-done")
    with sqlite3.connect(db) as conn:
        stored = json.loads(conn.execute("SELECT fingerprint FROM studies WHERE name = 'before'").fetchone()[0])
    assert stored["numerics"] == hg.store.NUMERICS and stored["format"] == hg.store.FINGERPRINT_FORMAT
    # a format-6 study stored before the marker (no "numerics") was made under NUMERICS 1: it resumes bitwise
    edit_fingerprint(db, "before", lambda f: f.pop("numerics"))
    same_trials(hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="before"),
                hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2))
    with pytest.raises(Stop):  # and a tune, from its checkpoint
        hg.tune(minibatch_objective, SPACE, key, steps=3, storage=db, study="tune", progress=stop_after(2))
    edit_fingerprint(db, "tune", lambda f: f.pop("numerics"))
    same_trials(hg.tune(minibatch_objective, SPACE, key, steps=3, storage=db, study="tune"),
                hg.tune(minibatch_objective, SPACE, key, steps=3))
    # a running study of an older NUMERICS is refused; a finished one is returned
    for study in ("older", "older-done"):
        edit_fingerprint(db, study, lambda f: f.update(numerics=hg.store.NUMERICS - 1))
    with pytest.raises(ValueError, match=r"'older' .* cannot be resumed: .*older hypergrad.*numerics 0 stored, 1 now"):
        hg.random_search(minibatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="older")
    assert len(hg.random_search(minibatch_objective, SPACE, key, 2, storage=db, study="older-done").trials) == 2
    result = hg.random_search(minibatch_objective, SPACE, key, 2)
    assert result.info["numerics"] == hg.store.NUMERICS
    older = hg.Result.from_dict(dict(result.to_dict(), info=dict(result.info, numerics=0)))
    with pytest.raises(ValueError, match=r"extends=.*older hypergrad.*numerics 0 saved, 1 now"):
        hg.random_search(minibatch_objective, SPACE, key, 3, extends=older)


def test_the_minibatch_order_is_the_one_numerics_1_names():
    # A tripwire: when this order changes (hypergrad._sampler.ROUNDS, say), bump hypergrad.store.NUMERICS and
    # record the new order's digest here, so stored studies and saved Results of the old order are refused.
    batch = jax.jit(jax.vmap(lambda t: epoch_batch_indices(jax.random.key(3), t, 37, 5)))
    batches = batch(np.arange(16, dtype=np.int32))
    indices = np.asarray(batches).reshape(-1)
    digest = hashlib.sha1(indices.astype(np.int64).tobytes()).hexdigest()[:16]
    assert {hg.store.NUMERICS: digest} == {1: "1cfeb51f30338eef"}


# F2: files of a newer hypergrad

def test_a_study_of_a_newer_fingerprint_format_or_store_schema_asks_for_an_upgrade(fullbatch_objective, key,
                                                                                  tmp_path):
    # old: "format differs (7 stored, 6 now). Repeat the original call", which the user did
    db = tmp_path / "s.db"
    interrupted_search(fullbatch_objective, key, db, "r")
    edit_fingerprint(db, "r", lambda f: f.update(format=hg.store.FINGERPRINT_FORMAT + 1))
    with pytest.raises(ValueError, match=r"study 'r' in .* written by a newer hypergrad \(fingerprint format 7; "
                                         r"this version writes format 6\).*upgrade hypergrad.*hg.load_study"):
        hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="r")
    assert len(hg.load_study(db, "r").trials) == 2
    edit_fingerprint(db, "r", lambda f: f.update(format=hg.store.FINGERPRINT_FORMAT,
                                                 numerics=hg.store.NUMERICS + 1))
    with pytest.raises(ValueError, match=r"newer hypergrad \(numerics 2; this version computes numerics 1\)"):
        hg.random_search(fullbatch_objective, SPACE, key, 4, chunk_size=2, storage=db, study="r")
    # old: a later schema was read as schema 1 without a word
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 'hypergrad-study-store 2' WHERE key = 'format'")
    for call in (lambda: hg.list_studies(db), lambda: hg.load_study(db, "r"),
                 lambda: hg.random_search(fullbatch_objective, SPACE, key, 4, storage=db, study="r")):
        with pytest.raises(ValueError, match=r"written by a newer hypergrad \(store schema 2; this version reads "
                                             r"schema 1\).*upgrade"):
            call()


def test_extending_a_result_of_a_newer_format_asks_for_an_upgrade(fullbatch_objective, key):
    # old: "was given the Result of a search of another objective"
    result = hg.random_search(fullbatch_objective, SPACE, key, 2)
    newer = hg.Result.from_dict(dict(result.to_dict(), info=dict(
        result.info, objective="0123456789abcdef", objective_format=hg.store.FINGERPRINT_FORMAT + 1)))
    with pytest.raises(ValueError, match=r"extends=.* written by a newer hypergrad \(fingerprint format 7.*upgrade"):
        hg.random_search(fullbatch_objective, SPACE, key, 3, extends=newer)


# F3: an interrupted run of an older `hypergrad compare` (no run marker)

def test_compare_names_folders_without_a_marker_as_an_older_versions_or_another_programs(tmp_path, capsys):
    # old: "... already exist and no earlier run of this command into DIR wrote them", though one did
    out = tmp_path / "res"
    (out / "iris-mlp").mkdir(parents=True)
    (out / "iris-mlp" / "report.md").write_text("# iris")
    (out / "digits-mlp").mkdir()
    (out / "digits-mlp" / "trials.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--problem", "iris-mlp,digits-mlp", "--budget", "8", "--steps", "5", "--out", str(out),
                  "--quiet", "--cpu-devices", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no earlier run" not in err
    assert "no run marker" in err and "older hypergrad" in err and "another program" in err and "--out" in err
    assert sorted(p.name for p in out.iterdir()) == ["digits-mlp", "iris-mlp"]
