"""The embedded study store: every trial in a SQLite file as it is produced, and resume from it.

`storage=` (a path; created if missing) and `study=` (a name) on `hg.random_search`,
`hg.grid_search`, `hg.tune`, `hg.hybrid_search` and `hg.optuna_search` keep a study in a file of
Python's own `sqlite3`: nothing to install or start. The same call again resumes it: stored trials are
loaded, never re-run, and the final `Result` equals an uninterrupted run's (trial numbers,
hyperparameters and values bitwise; seconds and compile time aside); once the study has finished,
the same call returns its stored `Result`, the first call's seconds included, and leaves its row as
that call wrote it (`StudyWriter.finish`, `finished_result`). A call whose arguments differ
from the stored study's (space, objective, key, counts, method, ...) is a `ValueError` naming the
first difference, never a silent mix; the objective's functions count with the module-level values
they read and the attributes of the plain objects they hold (`hypergrad._store_codec`). So do
hypergrad's own numbers (`NUMERICS`, such as the minibatch order): a running study started by a
version that computed the same call otherwise, or whose fingerprint cannot show how (a minibatch
objective's study from before fingerprint format 5), is refused, not continued; finished ones load.
A file or study written by a newer hypergrad (a later store schema, fingerprint format or
`NUMERICS`) is refused as such, with the advice to upgrade (`hg.load_study` still reads a study of
a later fingerprint format or `NUMERICS`). So are the JAX settings that change a call's numbers but
not its description (`NUMERICS_SETTINGS`: `jax_enable_x64`, `jax_threefry_partitionable`,
`jax_default_prng_impl`, ...), recorded in the study's info at creation: a running study resumed under
others is refused before anything traces, naming each setting, its stored value and the
`jax.config.update` that restores it; a finished one is refused when its description differs too (a
built-in problem's data in another dtype), else its same call returns it. A study created before they
were recorded is not checked on them.

Schema (numbers and JSON only, never pickles: opening someone else's file runs no code):

    studies      name, kind, strategy, fingerprint (JSON of the call), state ("running"/"complete"),
                 run_flops, compile_seconds, info (JSON), created, updated
    trials       study, number, hparams (JSON: arrays with dtype and shape), value, scores (JSON),
                 state, runs, flops, seconds, run_flops, grad_norm, tuner, step
    checkpoints  study, step, number, state (JSON: per cohort of tuners, the live tuner ids and the
                 iterate z, last good z and outer-optimiser state as flat arrays with their tree
                 structure; `hybrid_search` adds the structure plan's measured rates): `tune` and
                 `hybrid_search`, written in the same transaction as that step's trials; a search
                 of an `hg.Structured` family keeps only its plan's rates there (written with its
                 first chunk), so a resumed call plans as the first did. Keys are stateless (a
                 step's key is a function of the study's key and the step), so the step counter is
                 all the randomness there is to restore.
    leases       study, pid, host, since: which process is writing a study

Searches draw their settings from the key, so resuming skips the stored trial numbers (whole
chunks: trials are committed one chunk at a time); tune restores its checkpoint and goes on from
the next step. Non-finite numbers are stored as the strings "nan", "inf", "-inf" in JSON. In the
REAL columns (value, runs, flops, seconds, run_flops, grad_norm) infinities are SQLite's own, and a
NaN is the TEXT 'nan' (SQLite would store NaN as NULL, which reads as a missing grad_norm): plain
SQL over them must skip it (`WHERE typeof(value) = 'real'`), or `avg` counts it as 0 and `max`
returns it.

Safety: WAL journal with `synchronous=NORMAL` (a killed process loses at most the commits in flight;
an operating-system crash may lose the last few commits, never the file's consistency), a busy
timeout of 30 s for concurrent readers and writers of other studies, and a lease per study: a second
process writing the same study gets a `RuntimeError` naming the first one's pid (a lease of a process
that no longer runs on this host is taken over), and so does a second writer in the same process
(another thread), when it opens the study, before it computes. A file truncated or edited by hand gives a
`ValueError` naming the file, study and trial; other studies in it stay readable. A tune or
hybrid_search study missing a trial before its checkpoint (a row deleted by hand) is refused on
resume and by `load_study`: its steps go on past the checkpoint and would never recompute it. Under
`jax.distributed` process 0 alone writes; when it is refused a study or a write fails, it sends the
error to the others (a broadcast at the opening and at every commit), which raise it too instead of
waiting in collectives it never reaches. Every process reads the study as it opens, and processes that
find it in different states (their `storage=` paths are not one file: a node-local disk on each
machine) are refused with a `ValueError` naming `storage=` and the fix (`_check_one_file`).

Cost: one transaction per chunk of trials (or per outer step), encoded and written by a background
thread while the next chunk computes; a new file is created, and the file closed, by that thread too
(SQLite's syncs cost tens of milliseconds), so a call pays about a millisecond to open a study and
the wait for its last chunk's write; `benchmarks/store_overhead.py` measures it against a 256-trial
search. The closing runs just after the call returns (the interpreter waits for it at exit): until
then the newest commits sit in the file's `-wal` companion, which every SQLite reader sees; copy a
study file with SQLite's backup (`sqlite3 study.db ".backup copy.db"`), not by its bytes alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import itertools
import json
import math
import os
import queue
import re
import shlex
import socket
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from hypergrad import _caches, _compile
from hypergrad._batching import is_writer
from hypergrad._checks import shared_outcome, users_stacklevel
from hypergrad._processes import check_processes_agree
from hypergrad._store_codec import (FINGERPRINT_FORMAT, TooLarge, decode_hparams, decode_value, describe_space,
                                    encode_hparams, encode_value, first_difference, identity, in_format,
                                    space_reordering)
from hypergrad.results import Result, Trial, pickable
from hypergrad.space import Space

__all__ = ["StudyInfo", "StudyWriter", "check_study", "open_study", "studying", "stored_call", "finished_result",
           "fingerprint", "objective_digest", "load_study", "list_studies", "fingerprint_format",
           "described_objective", "warn_if_objective_changed", "extends_difference"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (name TEXT PRIMARY KEY, kind TEXT NOT NULL, strategy TEXT,
    fingerprint TEXT NOT NULL, state TEXT NOT NULL, run_flops REAL, compile_seconds REAL, info TEXT,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (study TEXT NOT NULL, number INTEGER NOT NULL, hparams TEXT NOT NULL,
    value REAL, scores TEXT NOT NULL, state TEXT NOT NULL, runs REAL, flops REAL, seconds REAL,
    run_flops REAL, grad_norm REAL, tuner INTEGER, step INTEGER, PRIMARY KEY (study, number));
CREATE TABLE IF NOT EXISTS checkpoints (study TEXT PRIMARY KEY, step INTEGER NOT NULL, number INTEGER NOT NULL,
    state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (study TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    since REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('format', 'hypergrad-study-store 1');
"""
STORE_SCHEMA = 1  # the schema above ('hypergrad-study-store 1'); a file of a later one is refused (`_connect`)
_TRIAL_COLUMNS = "number, hparams, value, scores, state, flops, seconds, run_flops, grad_norm, tuner"


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """One study of a store file (`hg.list_studies`).

    Attributes:
        name: the study's name; kind: "random", "grid", "tune", "hybrid" or "optuna";
        strategy: the result's label once finished (None while running);
        state: "complete" once its call finished, else "running": also after a call stopped by an
            exception or Ctrl-C, or a killed process (call it again to resume);
        num_trials: trials stored; best_value: the lowest finite validation loss among the trials its
            `Result` may pick (`Result.best_value`, as `load_study` reads it: for a `tune(resample_key=True)`,
            finished or not, those scored on the call's key; else all of them; inf if none);
        created, updated: Unix times.
    """

    name: str
    kind: str
    strategy: str | None
    state: str
    num_trials: int
    best_value: float
    created: float
    updated: float


def _real(x: Any) -> Any:
    """A float for a REAL column: NaN as the text 'nan' (SQLite would store NaN as NULL)."""
    if x is None:
        return None
    x = float(x)
    return "nan" if math.isnan(x) else x


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


_BUSY_SECONDS = 30.0  # the busy timeout: how long a connection waits for another's lock on the file


def _locked(err: Exception) -> bool:
    """Whether an SQLite error is another connection's lock on the file (SQLITE_BUSY, SQLITE_LOCKED), not damage."""
    code = err.sqlite_errorcode if isinstance(err, sqlite3.Error) else None
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _unreadable(path: str, err: Exception) -> ValueError:
    if _locked(err):  # the file is fine: another process held it longer than the busy timeout
        return ValueError(f"storage={path!r} is locked by another process ({err}): it held the file for longer than "
                          f"the {_BUSY_SECONDS:g} s busy timeout. The file is not damaged; run the call again once "
                          "that process's write has ended")
    return ValueError(f"storage={path!r} is not a readable hypergrad study file ({err}): it was truncated, "
                      "damaged or is not SQLite; give another path (a new file is created), or restore a copy")


def _connect(path: str, create: bool = True) -> sqlite3.Connection | None:
    """A connection in autocommit mode (transactions begun explicitly), WAL, 30 s busy timeout, the
    schema created if missing (`create`). A reader's (`create` False) writes nothing and is left in one
    read transaction, ended by closing it: its format check and every read after it are one state of
    the file (in WAL, the snapshot of its first read), so a commit of another process between two
    reads (a tune step's trials and checkpoint) is not half seen; and a reader gets None for a file
    with no tables yet, a store another process is creating (its schema not committed yet) or an empty
    file. Raises `ValueError` for a file that is not a readable store."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"storage={path!r} must be a path to a SQLite file (created if missing)")
    path = os.fspath(path)
    if os.path.dirname(os.path.abspath(path)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_SECONDS * 1000)}")
        if create:
            conn.execute("PRAGMA synchronous = NORMAL")
            if not conn.execute("SELECT 1 FROM sqlite_master").fetchone():  # an empty file: made a store
                # (another SQLite database, an Optuna one say, is refused below, never written)
                _to_wal(conn)  # kept by the file
                conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")  # one transaction: one sync
        else:
            conn.execute("BEGIN")
            if not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                conn.close()
                return None
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    schema = _schema_version(fmt)
    if schema is None or schema > STORE_SCHEMA:
        conn.close()
        if schema is None:
            raise _unreadable(path, ValueError(f"format {fmt!r}"))
        raise ValueError(newer_hypergrad(f"storage={path!r}", f"store schema {schema}", f"reads schema {STORE_SCHEMA}",
                                         "to open it (nothing of it was read or written)"))
    return conn


def _to_wal(conn: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode = WAL`, retried while another connection holds the file, for at most the busy
    timeout: SQLite does not wait for a lock to change the journal mode, so of two processes creating one
    store file at once (two users starting two studies in it) the second failed at once ("database is locked")."""
    deadline, pause = time.monotonic() + _BUSY_SECONDS, 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if not _locked(err) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _schema_version(row: Any) -> int | None:
    """The schema version of a store's meta row ('hypergrad-study-store N'), None for another file's."""
    match = re.fullmatch(r"hypergrad-study-store (\d+)", str(row[0])) if row is not None else None
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock taken up front, so concurrent
    writers wait (busy timeout) instead of failing half-way."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# The (real path, study) pairs this process has open for writing, with the thread that opened each
# (`_claim`): a lease names a process, so a second writer of a study in the same process (another
# thread) is refused here, not by the lease.
_WRITING: dict[tuple[str, str], threading.Thread] = {}
_WRITING_LOCK = threading.Lock()


def _claim(path: str, study: str) -> tuple[str, str, threading.Thread]:
    """Claims study `study` in `path` for a writer opened by this thread, before its lease is taken
    or anything computes; `RuntimeError` (the lease's, `_lease`) while a writer that another
    running thread of this process opened holds it. Released by `_release` when that writer
    closes. A claim of this same thread, or of a thread that has ended, is taken over: its call
    has ended (a writer lost to a Ctrl-C before its caller held it is never closed)."""
    claim = (os.path.realpath(path), study)
    with _WRITING_LOCK:
        holder = _WRITING.get(claim)
        if holder is not None and holder is not threading.current_thread() and holder.is_alive():
            raise RuntimeError(
                f"study {study!r} in {path} is being written by pid {os.getpid()} on {socket.gethostname()} (this "
                f"process: thread {holder.name!r}); wait for it to finish, or use another study name")
        _WRITING[claim] = threading.current_thread()
    return (*claim, threading.current_thread())


def _release(claim: tuple[str, str, threading.Thread] | None) -> None:
    """Ends a `_claim` (nothing for None, or one already released or taken over)."""
    if claim is not None:
        with _WRITING_LOCK:
            if _WRITING.get(claim[:2]) is claim[2]:
                del _WRITING[claim[:2]]


def _alive(pid: int, host: str) -> bool:
    """Whether the lease holder may still run: True for another host (unknowable from here)."""
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        # this process: an earlier call that ended without releasing (an exception); a writer still
        # running in this process holds its `_claim`, which refused this one before its lease
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: it writes nothing any more
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# The fingerprint format `fingerprint` writes: `FINGERPRINT_FORMAT`, or an older one while a stored
# study of that format is compared (`_described`; the callers' fingerprint callables take no format).
_FORMAT: contextvars.ContextVar[int] = contextvars.ContextVar("hypergrad_fingerprint_format",
                                                              default=FINGERPRINT_FORMAT)


def fingerprint_format() -> int:
    """The fingerprint format being written: `FINGERPRINT_FORMAT`, or an older one while a stored
    study of that format is compared. For a caller whose description of an argument changed with
    the format (tune's `init=`: the given values up to format 3, the starts made of them from 4)."""
    return _FORMAT.get()


# True while the call is described again to resume a study stored in an older format (`_described_again`;
# not for one that finished: nothing of it runs again).
_RESUMING: contextvars.ContextVar[bool] = contextvars.ContextVar("hypergrad_fingerprint_resuming", default=False)


NUMERICS = 1
"""hypergrad's own numbers for the same call: bump it when they change (an epoch's minibatch order,
`hypergrad._sampler.ROUNDS`, say), so that a study or a saved Result made before is told apart by
comparison. A study's fingerprint and a random search's `Result.info` carry it ("numerics"); a
running study of another one is not resumed, a Result of another one not extended (its trials and
the ones to come would be two computations' numbers), while a finished study still loads and its
same call still returns it. 1: since the epoch sampler's eight rounds (fingerprint format 5 on, and
a Result whose info holds "objective_format", were all made under it)."""


def numerics_of(version: Any, numerics: Any) -> int | None:
    """The `NUMERICS` a fingerprint (or a Result's info) of format `version` holding `numerics` was
    made under: `numerics` when it holds one, 1 for fingerprint format 5 or 6 without it (made after
    the sampler's eight rounds, before the field), None when it cannot be told (format 4 and older: the
    epoch sampler's four rounds until part-way through format 4)."""
    if isinstance(numerics, int) and not isinstance(numerics, bool):
        return numerics
    return 1 if isinstance(version, int) and 5 <= version <= 6 else None


SETTINGS_KEY = "jax_settings"
"""The key of a study's stored info (column `info`) holding the JAX settings it was created under
(`numerics_settings`); kept there when it finishes, left out of `load_study`'s `Result.info`."""

# The JAX settings that change a same call's numbers without changing its fingerprint (which describes the
# objective and arguments, not the process): float precision, the PRNG's implementation and its partitioning
# (other random draws: a random search's settings, every run's initialisation and minibatch order), and the
# matmul precision. Those this JAX has; a study stored without one (an older JAX, or hypergrad) is not checked on it.
NUMERICS_SETTINGS = tuple(name for name in (
    "jax_enable_x64", "jax_threefry_partitionable", "jax_default_prng_impl", "jax_random_seed_offset",
    "jax_default_matmul_precision", "jax_random_normal_mode", "jax_legacy_random_uniform")
    if name in jax.config.values)


def numerics_settings() -> dict[str, Any]:
    """The values of `NUMERICS_SETTINGS` in force in this thread now (a `with jax.threefry_partitionable(...)`
    block's too), as JSON values (a value of another type by its `str`). A study records them at creation
    and a call resuming it must hold the same ones (`_changed_settings`). Cost: one read per setting."""
    values = {name: getattr(jax.config, name) for name in NUMERICS_SETTINGS}
    return {name: value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in values.items()}


def _stored_settings(info: Any) -> dict[str, Any] | None:
    """The settings a study's stored info (its JSON text) recorded at creation; None for a study
    created before they were recorded, or an unreadable info (`load_study` names it)."""
    try:
        decoded = None if info is None else decode_value(json.loads(info))
    except (TypeError, ValueError, KeyError):
        return None
    settings = decoded.get(SETTINGS_KEY) if isinstance(decoded, dict) else None
    return settings if isinstance(settings, dict) else None


def _changed_settings(stored: dict[str, Any] | None, now: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(name, stored value, value now) of each recorded setting that differs; none unless both are known."""
    if stored is None or now is None:
        return []
    return [(name, stored[name], value) for name, value in now.items()
            if name in stored and (type(stored[name]), stored[name]) != (type(value), value)]


def _settings_refusal(study: str, path: str, changed: list[tuple[str, Any, Any]], field: str | None = None
                      ) -> ValueError:
    """The refusal of a call under other JAX settings than its stored study's: `field` names the first
    field of the call's description that differs (a finished study, whose call computes nothing, is
    refused only then), or None for a running one (its trials to come would compute other numbers)."""
    listed = ", ".join(f"{name} ({stored!r} stored, {now!r} now)" for name, stored, now in changed)
    fix = "; ".join(f'jax.config.update("{name}", {stored!r})' for name, stored, _ in changed)
    why = ("its trials to come would compute other numbers than its stored ones (other random draws or another "
           "float precision), so the result would equal no uninterrupted run" if field is None else
           f"under them this call's {field} differs from the stored call's")
    return ValueError(
        f"study {study!r} in {path} was created under other JAX settings than this call's: {listed}; {why}. Run "
        f"{fix} at the start of the program (before building the problem and objective) to "
        f"{'resume it' if field is None else 'have this call return its stored result'}, or give "
        "another study name (study=...) to run this call afresh under the current settings; hg.load_study reads "
        "its stored trials meanwhile")


def _refuse_other_settings_early(storage: Any, study: Any) -> None:
    """Refuses a call of a single process that would resume a running study created under other JAX
    settings (`_settings_refusal`), before its checks trace or compile anything (`stored_call`); the
    study's opening checks it again (`_register`), for every kind and process. Nothing for a file or
    study not readable here: its opening names what is wrong. Cost: one read of the study's row."""
    try:
        if jax.process_count() != 1 or not check_study(storage, study):
            return
        path = os.fsdecode(os.fspath(storage))
        if not os.path.isfile(path):
            return
        conn = _connect(path, create=False)
    except (ValueError, OSError):
        return
    if conn is None:  # no tables yet: no study
        return
    try:
        row = conn.execute("SELECT state, info FROM studies WHERE name = ?", (study,)).fetchone()
    except sqlite3.DatabaseError:
        return
    finally:
        conn.close()
    changed = [] if row is None or row[0] == "complete" else _changed_settings(_stored_settings(row[1]),
                                                                               numerics_settings())
    if changed:
        raise _settings_refusal(study, path, changed)


_MOST_BUILT = 64  # the most configurations of an `hg.Structured` family `uses_minibatches` builds to tell


def uses_minibatches(objective: Any, space: Space | None = None) -> bool:
    """Whether `objective`'s training may draw minibatches (whose order is hypergrad's own numbers):
    an `hg.Objective`'s problem with a `batch_size`; an `hg.Structured` family when any objective of
    the structural choices of `space` does (each built: the family keeps them, and a run reuses
    them); any other objective, or a family without `space` or of more than `_MOST_BUILT`
    configurations, may."""
    problem = getattr(objective, "problem", None)
    if problem is not None and hasattr(problem, "batch_size"):
        return problem.batch_size is not None
    if space is None or not callable(getattr(objective, "objective", None)):
        return True
    names = space.structural
    if math.prod(len(space[name].options) for name in names) > _MOST_BUILT:
        return True
    return any(uses_minibatches(objective.objective(dict(zip(names, options))))
               for options in itertools.product(*(space[name].options for name in names)))


def newer_hypergrad(what: str, stored: str, now: str, fix: str) -> str:
    """The refusal of something written by a newer hypergrad than this one: `fix` says what to do
    after 'upgrade hypergrad (the version that wrote it, or later) '."""
    return (f"{what} was written by a newer hypergrad ({stored}; this version {now}): upgrade hypergrad (the "
            f"version that wrote it, or later) {fix}")


class _Unresumable(ValueError):
    """A stored study whose stored part this version would not continue as its format says it ran."""


class _StaleNoise(_Unresumable):
    """A study stored before random estimates drew fresh noise at each outer step, resumed now."""


class _UnprovenSampler(_Unresumable):
    """A study of a minibatch objective stored in a format that cannot prove its minibatch order."""


_UNPROVEN = ("its objective draws minibatches and it was started by a hypergrad whose fingerprint (format {}) cannot "
             "show which minibatch order its trials used (hypergrad drew another epoch order until part-way through "
             "format 4), so resuming it may mix two orders, and its result would equal no uninterrupted run. Rerun "
             "the call under a new study name (study=...) to start it afresh; its stored trials stay readable "
             "with hg.load_study")


def _check_sampler_proven(version: int, objective: Any, space: Space) -> None:
    """Raises `_UnprovenSampler` while a running study of fingerprint format `version` is resumed
    (`_RESUMING`) when that format cannot tell its minibatch order (`numerics_of`) and `objective`
    draws minibatches (`uses_minibatches`). Full-batch objectives computed the same numbers then."""
    if _RESUMING.get() and numerics_of(version, None) is None and uses_minibatches(objective, space):
        raise _UnprovenSampler(_UNPROVEN.format(version))


def _check_noise_unchanged(kind: str, version: int, arguments: dict[str, Any]) -> None:
    """Raises `_StaleNoise` for a tune or hybrid_search with a random estimate (`hg.ES`, `hg.PES`)
    and `resample_key=False` described in fingerprint format 3 or older (a study stored before
    such methods drew fresh noise at each outer step): its stored steps reused one noise draw and
    the steps to come draw their own, so the resumed run would mix two different algorithms
    under one fingerprint. With `resample_key=True` the noise was, and is, that of each step's key."""
    method = arguments.get("method")
    if (version <= 3 and _RESUMING.get() and kind in ("tune", "hybrid")
            and getattr(type(method), "random_estimate", False) and not arguments.get("resample_key", False)):
        raise _StaleNoise(
            f"it was started by a hypergrad that drew the noise of method={method!r} once, for every outer step "
            "(with resample_key=False); this version draws fresh noise at each outer step, so resuming it would mix "
            "the two. Rerun the call under a new study name (study=...) to start it afresh; its finished steps "
            "stay readable with hg.load_study")


def fingerprint(kind: str, objective: Any, space: Space, key: Any, **arguments: Any) -> dict[str, Any]:
    """The JSON description of a call that a resumed study must match: kind, space (a Choice's
    function options by their code: `describe_space`), objective (its functions, data and settings:
    `identity`), the key's raw data and the given arguments (those
    that change results; chunk sizes, logs and progress do not), in `FINGERPRINT_FORMAT`.

    Raises:
        ValueError: the call is too large to describe (more than `_store_codec._NODES` objects).
    """
    version = _FORMAT.get()
    _check_noise_unchanged(kind, version, arguments)
    _check_sampler_proven(version, objective, space)
    try:
        described = identity(objective, format=version)
        description = {"format": version, "kind": kind, "space": describe_space(space, format=version),
                       "objective": described, "key": np.asarray(jax.random.key_data(key)).tolist(),
                       "arguments": {name: identity(value, format=version)
                                     for name, value in sorted(arguments.items())}}
        if version == FINGERPRINT_FORMAT:  # an older format's description, made to compare a study stored in
            description["numerics"] = NUMERICS  # it, holds what it held: no "numerics" (`numerics_of`)
    except TooLarge as err:
        raise ValueError(
            f"storage=, study=: this call cannot be checked on resume ({err}: the objective's functions or the "
            "arguments hold large Python containers?). Hold data in arrays (hashed whole), or run it without "
            "storage= and study=") from err
    watched = _STUDIED.get()
    if watched is not None and version == FINGERPRINT_FORMAT:  # the objective as it is now (not an older format's)
        watched.setdefault(id(objective), (objective, hashlib.sha1(_json(described).encode()).hexdigest()))
    return description


def objective_digest(objective: Any, format: int = FINGERPRINT_FORMAT) -> str:
    """SHA-1 (16 hex digits) of the objective's description in a fingerprint (`identity`: its
    functions, the values they read, its data and settings) in fingerprint format `format` (a saved
    Result's digest is compared in the format it was made in): equal for the same objective in any
    process, different for another data set, `num_steps` or optimizer. An objective too large to
    describe (`TooLarge`) gets a digest of its own, different at every call (so `extends=` refuses
    it rather than accepting another objective as it). Cost: the description's, the data's bytes
    hashed once (a copy to the host first, for data on a device)."""
    try:
        return description_digest(identity(objective, format=format))
    except TooLarge:
        return "unchecked-" + os.urandom(6).hex()


def description_digest(description: Any) -> str:
    """SHA-1 (16 hex digits) of an objective's description (`identity`, or the one a stored
    fingerprint holds): `objective_digest`'s, and what `load_study` proves from a fingerprint."""
    return hashlib.sha1(_json(description).encode()).hexdigest()[:16]


# The descriptions of the objectives whose digests this process's Results hold (digest -> description as
# JSON reads it back; the latest `_KEPT_DESCRIPTIONS`), so that `extends=` refusing one can name what differs.
_DESCRIPTIONS: dict[str, Any] = {}
_KEPT_DESCRIPTIONS = 16


def _remember(digest: str, description: Any) -> None:
    with _traced_lock:
        _DESCRIPTIONS.pop(digest, None)
        _DESCRIPTIONS[digest] = description
        while len(_DESCRIPTIONS) > _KEPT_DESCRIPTIONS:
            _DESCRIPTIONS.pop(next(iter(_DESCRIPTIONS)))


def described_objective(objective: Any) -> tuple[str, Any]:
    """`objective_digest(objective)` and its description as JSON reads it back (None when too large
    to describe), remembered so that `extends_difference` can name what differs from it later."""
    try:
        described = identity(objective)
    except TooLarge:
        return objective_digest(objective), None
    digest = description_digest(described)
    described = json.loads(_json(described))
    _remember(digest, described)
    return digest, described


_CHANGED = ("{where}: the objective changed during this call: {field} was {before} when the call began and is "
            "{now} at its end, so {consequence}. The objective's functions (or an hg.Structured family's build) "
            "change a value they read, e.g. a call counter; keep such state out of what they read, since it is part "
            "of the objective's description (count outside build and the objective's functions, or keep the count "
            "as an attribute of a module, which is described by name only: mymodule.count += 1), or leave the "
            "value unchanged")


def warn_if_objective_changed(before: Any, objective: Any, where: str, consequence: str) -> None:
    """Warns (`UserWarning`) when `objective`'s description now differs from `before` (its
    description as JSON reads it back, as `described_objective` gives it; nothing when None), naming
    the first value that differs and both its values: a call that changed a value its objective's
    functions read (a build counter) made a fingerprint or digest that the same call again cannot
    match. Cost: one description of the objective (its data hashed again, as `objective_digest`)."""
    now = None if before is None else _described_now(objective)
    if now is not None:
        _warn_changed(before, now, "objective.", where, consequence)


def _described_now(objective: Any) -> Any:
    """`objective`'s description now, as JSON reads it back; None when it cannot be described (too
    large, or failing): what compares it with an earlier description then says nothing."""
    try:
        return json.loads(_json(identity(objective)))
    except Exception:  # noqa: BLE001 (too large or not describable now): the call itself is not at fault
        return None


def _warn_changed(before: Any, now: Any, prefix: str, where: str, consequence: str) -> None:
    """`warn_if_objective_changed`'s warning for two descriptions (as JSON reads them back) that differ."""
    field = first_difference(before, now)
    if field is not None:
        warnings.warn(_CHANGED.format(where=where, field=prefix + field, before=_excerpt(before, field),
                                      now=_excerpt(now, field), consequence=consequence), UserWarning,
                      stacklevel=users_stacklevel())


def extends_difference(digest: Any, objective: Any) -> str:
    """Words naming the first value of `objective`'s description that differs from the one whose
    digest is `digest` (when this process made or read that description: `described_objective`,
    `load_study`), as a resumed study's refusal names it; empty when not known."""
    before = _DESCRIPTIONS.get(digest) if isinstance(digest, str) else None
    now = None if before is None else _described_now(objective)
    field = None if now is None else first_difference(before, now)
    if field is None:
        return ""
    return f" (objective.{field} differs: {_excerpt(before, field)} then, {_excerpt(now, field)} now)"


def _refuse_url(path: str) -> None:
    """`ValueError` for a URL (`scheme://...`, e.g. Optuna's 'sqlite:///study.db'): taken as a path it
    would make a folder named after the scheme ('sqlite:') and a file in it."""
    # a scheme of two characters or more (a one-letter one is a Windows drive, 'C:/x' or 'C://x'), then
    # '//' or, from a pathlib.Path, which folds 'sqlite:///x' to 'sqlite:/x', a single '/'
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", path):
        raise ValueError(f"storage={path!r} is a URL; storage= takes a plain file path, e.g. storage='study.db' "
                         "(created if missing). The URL form (sqlite:///study.db) is Optuna's: give it to "
                         "Result.to_optuna, not to storage=")


def check_study(storage: Any, study: Any) -> bool:
    """True when a study is asked for (`storage=` and `study=` given); `ValueError` unless both or
    neither are given, a path and a non-empty name."""
    if storage is None and study is None:
        return False
    if storage is None or study is None:
        given, missing = ("storage", "study") if study is None else ("study", "storage")
        raise ValueError(f"{given}= was given without {missing}=: give both (storage='study.db', "
                         "study='my-search') to keep the study in a file and resume it, or neither")
    if not isinstance(study, str) or not study:
        raise ValueError(f"study={study!r} must be a non-empty string naming the study in storage")
    if not isinstance(storage, (str, os.PathLike)):
        raise ValueError(f"storage={storage!r} must be a path to a SQLite file (created if missing)")
    path = os.fspath(storage)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    _refuse_url(path)
    if path in ("", ":memory:"):
        # SQLite takes "" and ":memory:" for a database that vanishes with its connection: nothing
        # would be kept, and the same call again would not resume
        raise ValueError(f"storage={path!r} keeps nothing (SQLite makes a temporary database of it): give the "
                         "path of a file, e.g. storage='study.db' (created if missing), or neither storage= "
                         "nor study=")
    if os.path.isdir(path):
        raise ValueError(f"storage={path!r} is a directory: give the path of a file in it, e.g. "
                         f"storage={os.path.join(path, 'study.db')!r} (created if missing)")
    return True


def open_study(storage: Any, study: Any, *, kind: str, fingerprint: dict[str, Any] | Callable[[], dict[str, Any]],
               space: Space | None = None) -> StudyWriter | None:
    """The writer of study `study` in file `storage` (created, or checked against `fingerprint` and
    loaded to resume), its lease taken; None when both are None. `fingerprint` is the call's
    description, or a callable making it (called only when a study is asked for; called again
    under an older format to compare a study stored in it).

    Raises:
        ValueError: only one of storage and study given, an unreadable file, or a stored study
            made by a different call (the message names the first differing field).
        RuntimeError: another running process writes this study.
    """
    if not check_study(storage, study):
        return None
    describe = fingerprint if callable(fingerprint) else None
    fingerprint = fingerprint() if describe is not None else fingerprint
    path = os.fspath(storage)
    settings = numerics_settings()  # this thread's (a new file's study is registered by the writer's thread)
    if not is_writer():  # several processes: process 0 writes; the others only read what a resume needs,
        shared_outcome(None, _STUDY)  # once process 0 has opened it (its earlier calls flushed), or raise its error
        reader, error = None, None
        try:
            reader = _reader(path, study, kind, fingerprint, space, describe, settings)
        except BaseException as err:
            error = err
        shared_outcome(error, _STUDY)  # process 0 (and the others) raise this process's refusal too
        if error is not None:
            raise error
        _check_one_file(reader)
        return reader
    created = time.time()  # the study's, when this call registers it (the log's records name it)
    if not os.path.exists(path) and jax.process_count() == 1:  # nothing to resume: the writer's thread
        # creates the file (tens of milliseconds of syncs) while the first chunk computes; another
        # process's lease surfaces at a commit (another thread's claim here, at once)
        return StudyWriter(None, path, study, space, created=created, claim=_claim(path, study),
                           setup=lambda: _created_here(path, study, kind, fingerprint, describe, created, settings))
    try:
        claim = _claim(path, study)
        try:
            conn, resumed = _opened(path, study, kind, fingerprint, describe, created, settings)
            writer = StudyWriter(conn, path, study, space, resumed=resumed, claim=claim)
        except BaseException:
            _release(claim)
            raise
    except BaseException as err:
        shared_outcome(err, _STUDY)  # the other processes raise it too, instead of waiting in collectives
        raise
    shared_outcome(None, _STUDY)
    try:
        shared_outcome(None, _STUDY)  # another process's reader refused the study (a different key, say)
        _check_one_file(writer)
    except BaseException:
        writer.close()  # the lease released
        raise
    return writer


# a study's kind -> the call that makes it, as messages name it
STRATEGY_CALLS = {"random": "random_search", "grid": "grid_search", "tune": "tune", "hybrid": "hybrid_search",
                  "optuna": "optuna_search"}
_STUDY = "this study"  # what `shared_outcome`'s messages say a failing process stopped


def _check_one_file(writer: StudyWriter) -> None:
    """Several processes: `ValueError` on every process when they found the study in different states
    (stored trials, checkpoint step, finished or not): their `storage=` paths are not one file (a
    node-local disk on each machine, or a stale copy), so process 0 would load stored chunks the others
    compute, and the processes would feed different chunks to one program (a JAX assertion, or gloo's
    abort on a collective mismatch, naming neither the storage nor the fix). A new study found by no
    one else (a file another machine cannot see yet) is not refused: nothing of it is stored. Every
    process calls it once its study is open. Cost: one all-gather of four ints; nothing in a lone process."""
    if jax.process_count() == 1:
        return
    found = [len(writer.done), -1 if writer.checkpoint is None else int(writer.checkpoint["step"]),
             int(writer.complete), int(os.path.exists(writer.path))]
    views = np.asarray(multihost_utils.process_allgather(np.asarray(found, np.int32)), np.int64).reshape(-1, 4)
    if all(np.array_equal(view[:3], views[0, :3]) for view in views):
        return
    seen = "; ".join(f"process {p} finds {_view_said(view)}" for p, view in enumerate(views))
    raise ValueError(
        f"study {writer.study!r} in {writer.path}: the processes find it in different states ({seen}), so "
        "their storage= paths are not one file. storage= must be a file every process sees (on a shared "
        "filesystem, not a node-local disk such as /tmp or a scratch directory of each machine): process 0 "
        "alone writes it, the others read it to resume (README, Several machines). Give every process such a "
        "path (copy the file there first to keep the study), and make the same call again")


def _view_said(view: Any) -> str:
    """What a process found of a study (`_check_one_file`'s row: trials, checkpoint step, finished, file), in words."""
    trials, step, complete, exists = (int(v) for v in view)
    if not exists:
        return "no file at that path"
    said = f"{trials} stored trials" + ("" if step < 0 else f", its checkpoint at step {step}")
    return said + (", finished" if complete else "")


def _opened(path: str, study: str, kind: str, fingerprint: dict[str, Any],
            describe: Callable[[], dict[str, Any]] | None = None,
            created: float | None = None, settings: dict[str, Any] | None = None) -> tuple[sqlite3.Connection, bool]:
    """A connection to the file, with the study's lease taken and its call registered (at time
    `created`; default now; under the JAX `settings` of the calling thread) or checked; and whether
    the study was stored already (this call resumes it)."""
    conn = _connect(path)
    try:
        with _transaction(conn, path):
            _lease(conn, path, study)
            resumed = _register(conn, path, study, kind, fingerprint, describe, created, settings)
    except BaseException:
        conn.close()
        raise
    return conn, resumed


def _created_here(path: str, study: str, kind: str, fingerprint: dict[str, Any],
                  describe: Callable[[], dict[str, Any]] | None, created: float,
                  settings: dict[str, Any] | None) -> sqlite3.Connection:
    """`_opened` for a study whose file did not exist when this call opened it (`open_study`'s set-up in
    the writer's thread, while the first chunk computes): its connection. `RuntimeError`, before anything
    of this call is written, when the study was in the file by then: another process started it at the
    same moment and its writer has ended (its lease was free), so this call, which computes and logs
    the study afresh instead of resuming it, would write its trials again (an IntegrityError)."""
    conn, resumed = _opened(path, study, kind, fingerprint, describe, created, settings)
    if not resumed:
        return conn
    with contextlib.suppress(sqlite3.Error):
        conn.execute("DELETE FROM leases WHERE study = ? AND pid = ?", (study, os.getpid()))
    conn.close()
    raise RuntimeError(f"study {study!r} in {path} was started by another process at the same moment as this call, "
                       "which found no file and began it afresh; that process's writer has ended, and nothing of "
                       "this call was written. Run the same call again to resume the study")


def _reader(path: str, study: str, kind: str, fingerprint: dict[str, Any], space: Space | None,
            describe: Callable[[], dict[str, Any]] | None = None,
            settings: dict[str, Any] | None = None) -> StudyWriter:
    """The view of a process other than 0 in a multi-process run: the stored trials and checkpoint
    (read before any chunk runs, so before process 0 commits anything of this call), nothing written."""
    conn = _connect(path, create=False) if os.path.exists(path) else None
    try:
        found = conn is not None and conn.execute("SELECT 1 FROM studies WHERE name = ?", (study,)).fetchone()
        if found:
            _register(conn, path, study, kind, fingerprint, describe, settings=settings)
        return StudyWriter(conn if found else None, path, study, space, write=False)
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    finally:
        if conn is not None:
            conn.close()


def _lease_removal(path: str, study: str) -> str:
    """The shell command that removes `study`'s lease from `path`, quoted for any path and name (a
    `'` in the name doubled inside the SQL string literal)."""
    sql = "DELETE FROM leases WHERE study = '" + study.replace("'", "''") + "'"
    return f"sqlite3 {shlex.quote(path)} {shlex.quote(sql)}"


def _lease(conn: sqlite3.Connection, path: str, study: str) -> None:
    row = conn.execute("SELECT pid, host, since FROM leases WHERE study = ?", (study,)).fetchone()
    if row is not None and _alive(int(row[0]), str(row[1])):
        raise RuntimeError(
            f"study {study!r} in {path} is being written by pid {row[0]} on {row[1]} (since "
            f"{time.ctime(row[2])}); wait for it to finish, or use another study name. If that process is gone, "
            f"remove its lease: {_lease_removal(path, study)}")
    conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
                 (study, os.getpid(), socket.gethostname(), time.time()))


def _register(conn: sqlite3.Connection, path: str, study: str, kind: str, given: dict[str, Any],
              describe: Callable[[], dict[str, Any]] | None = None, created: float | None = None,
              settings: dict[str, Any] | None = None) -> bool:
    """Creates the study (False; at time `created`, default now; its info holding the JAX `settings`
    of the call, `numerics_settings`), or checks a stored one was made by the same call (True; in the
    stored one's fingerprint format: `describe` makes the call's description again in it) under the
    same settings: a running one under others is refused before its fingerprint is compared, a
    finished one (its call computes nothing) when its fingerprint differs too (`_settings_refusal`)."""
    row = conn.execute("SELECT fingerprint, state, info FROM studies WHERE name = ?", (study,)).fetchone()
    if row is None:
        now = time.time() if created is None else created
        info = None if settings is None else _json(encode_value({SETTINGS_KEY: settings}))
        conn.execute("INSERT INTO studies VALUES (?, ?, NULL, ?, 'running', NULL, NULL, ?, ?, ?)",
                     (study, kind, _json(given), info, now, now))
        return False
    try:
        stored = json.loads(row[0])
    except (TypeError, ValueError) as err:
        raise ValueError(f"study {study!r} in {path}: its stored call (fingerprint) is unreadable ({err}); "
                         "the file was edited or damaged; use another study name") from err
    given = json.loads(_json(given))
    version = stored.get("format", 1) if isinstance(stored, dict) else FINGERPRINT_FORMAT
    stored, given = _numerics_checked(stored, given, version, path, study, finished=row[1] == "complete")
    changed = _changed_settings(_stored_settings(row[2]), settings)
    if changed and row[1] != "complete":
        raise _settings_refusal(study, path, changed)
    if isinstance(version, int) and 1 <= version < FINGERPRINT_FORMAT and describe is not None:
        # stored in an older format: compared as it was made (its weaker check), not refused
        given = _described_again(describe, max(version, 2), path, study, finished=row[1] == "complete")
    if version == 1:  # stored before fingerprints described globals and attributes
        given = {k: in_format(v, 1) for k, v in given.items() if k != "format"}
    field = first_difference(stored, given)
    if field is not None and changed:
        raise _settings_refusal(study, path, changed, field)
    if field is not None:
        raise ValueError(
            f"study {study!r} in {path} was made by a different call: {field} differs "
            f"({_excerpt(stored, field)} stored, {_excerpt(given, field)} now){_argument_said(field)}. Repeat the "
            "original call to resume it, or give another study name for this one"
            + _more_trials_hint(kind, stored, given, path, study))
    reordered = space_reordering(stored, given)
    if reordered is not None:
        order, now = reordered
        raise ValueError(
            f"study {study!r} in {path} was made by a different call: its space lists the same entries in "
            f"another order ({', '.join(order)} stored; {', '.join(now)} now), and the order of a space's entries "
            "fixes the grid's order and the random draws. Pass the space with its entries in the stored order, "
            f"hg.Space({{{', '.join(f'{name!r}: ...' for name in order)}}}), to resume the study, or give "
            "another study name for this one")
    return True


def _argument_said(field: str) -> str:
    """What a differing field deep inside the `outer=` optimiser's description (its closures, where a
    learning rate sits) means, as a suffix of `_register`'s refusal; "" for any other field."""
    if not field.startswith("arguments.outer."):
        return ""
    return ("; that is outer=: the stored study's outer optimiser is not this one (another optimiser, or the same "
            "one with another setting, a learning rate say)")


def _more_trials_hint(kind: str, stored: Any, given: dict[str, Any], path: str, study: str) -> str:
    """The way on for a random search whose call differs from the stored study's only in asking for
    more trials (`random_search(extends=...)`: the stored trials kept, the new draws run), as words
    that follow the refusal; empty for any other difference. A new study name would run the stored
    trials again, and a stored study keeps the num_trials it was started with."""
    if kind != "random" or not isinstance(stored, dict) or not isinstance(stored.get("arguments"), dict):
        return ""
    before, now = stored["arguments"].get("num_trials"), given.get("arguments", {}).get("num_trials")
    if not (isinstance(before, int) and isinstance(now, int) and now > before):
        return ""
    same = {**stored, "arguments": {**stored["arguments"], "num_trials": now}}
    if first_difference(same, given) is not None or space_reordering(same, given) is not None:
        return ""
    return (f". To continue it to {now} trials without running its stored trials again, pass "
            f"extends=hg.load_study({path!r}, {study!r}) to random_search with num_trials={now} and without "
            "storage= and study= (a stored study keeps the num_trials it was started with, so the longer result "
            "is not stored: keep it with its .save(path))")


def _numerics_checked(stored: Any, given: dict[str, Any], version: Any, path: str, study: str,
                      finished: bool) -> tuple[Any, dict[str, Any]]:
    """The stored and given fingerprints without their "numerics" (compared here, not as a field of
    the call). Raises `ValueError` for a study stored by a newer hypergrad (a later fingerprint format
    or `NUMERICS`), and for a running one made under an older `NUMERICS` (resuming it would mix two
    computations' numbers); a finished one is only compared (its same call returns it, computing
    nothing). A format that cannot tell its `NUMERICS` is refused by `fingerprint`, which sees the
    objective (`_check_sampler_proven`)."""
    given = {k: v for k, v in given.items() if k != "numerics"}
    if not isinstance(stored, dict):
        return stored, given
    numerics = numerics_of(version, stored.get("numerics"))
    later = isinstance(version, int) and version > FINGERPRINT_FORMAT
    if later or (numerics or 0) > NUMERICS:
        newer, now = ((f"fingerprint format {version}", f"writes format {FINGERPRINT_FORMAT}") if later else
                      (f"numerics {numerics}", f"computes numerics {NUMERICS}"))
        raise ValueError(newer_hypergrad(f"study {study!r} in {path}", newer, now,
                                         "to resume or repeat it; hg.load_study reads its trials meanwhile"))
    if numerics is not None and numerics < NUMERICS and not finished:
        raise ValueError(
            f"study {study!r} in {path} cannot be resumed: it was started by an older hypergrad whose numbers for the "
            f"same call differ from this version's (numerics {numerics} stored, {NUMERICS} now), so resuming it would "
            "mix the two. Rerun the call under a new study name (study=...) to start it afresh; its stored trials "
            "stay readable with hg.load_study")
    return {k: v for k, v in stored.items() if k != "numerics"}, given


def _described(describe: Callable[[], dict[str, Any]], version: int) -> dict[str, Any]:
    """`describe()` made in fingerprint format `version`, as JSON reads it back."""
    token = _FORMAT.set(version)
    try:
        return json.loads(_json(describe()))
    finally:
        _FORMAT.reset(token)


def _described_again(describe: Callable[[], dict[str, Any]], version: int, path: str, study: str,
                     finished: bool) -> dict[str, Any]:
    """`_described`, with the refusal of a study that this version cannot resume as its format says
    it was run (`_check_noise_unchanged`) naming the study; a `finished` one is not resumed (the same
    call returns its stored result), so it is only compared."""
    token = _RESUMING.set(not finished)
    try:
        return _described(describe, version)
    except _Unresumable as err:
        raise ValueError(f"study {study!r} in {path} cannot be resumed: {err}") from None
    finally:
        _RESUMING.reset(token)


def _excerpt(tree: Any, field: str) -> str:
    """The value at a dotted path of a fingerprint, shortened for a message."""
    node = tree
    for part in field.replace("[", ".[").split("."):
        if not part:
            continue
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return "absent"
    text = json.dumps(node, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


_POLL_SECONDS = 0.1  # how often an idle writer thread checks for a job or a close whose wake-up was lost
_CLOSE_SECONDS = 60.0  # the longest `StudyWriter.close` waits for the thread to close the file


class StudyWriter:
    """The writing end of one study: what `TrialRecorder` commits through (its sink).

    One background thread writes: `commit` hands it the queued trials (and a tune step's
    checkpoint, taken at once), which it encodes and writes in one transaction while the next chunk
    computes. At most one commit is in flight: `commit` first waits for the previous one, so the
    computation never runs more than a chunk (or step) ahead of the file, and a process killed
    loses at most the commit in flight and the chunk computing, which a resume recomputes. The
    thread also creates a new file, and closes the file at the end (SQLite's final WAL checkpoint).
    `finish` waits for every commit, so a call returns with its study on disk; `close` waits for the
    thread to close the file. The thread is a daemon that wakes every `_POLL_SECONDS` while idle
    (no cost a chunk notices): a Ctrl-C landing inside `queue.put` can leave a stale waiter that
    takes the put's wake-up (or the closing None's), and the thread still sees the job or the close;
    a writer lost to a Ctrl-C before its caller held it never keeps the interpreter from exiting
    (SQLite's transactions make its end at exit a kill's: what was committed stays). An error in the
    thread is raised by the next `commit` or `finish` (on every process of a multi-process run:
    `shared_outcome`).

    Attributes:
        done: trial number -> stored trial (what a resumed call loads instead of running).
        checkpoint: the latest tune checkpoint ({"step", "number", "state"}), or None.
        complete: whether the study was finished (its row complete) when this call opened it.
        resumed: True when the study was in the file before this call (`TrialRecorder` then logs
            no trial its log already holds for the study).
        identity: what tells this study from any other of its name: {"storage": the file's real
            path, "study_created": the study's creation time} (None for a study not yet in the file
            of a reading process). `TrialRecorder` puts it in each log record.
    """

    def __init__(self, conn: sqlite3.Connection | None, path: str, study: str, space: Space | None,
                 write: bool = True, setup: Any = None, resumed: bool = False, created: float | None = None,
                 claim: tuple[str, str, threading.Thread] | None = None):
        self.path, self.study, self._space, self._write = path, study, space, write
        self._claim = claim  # released by `close` (`_claim`)
        self.resumed = resumed
        self.complete = False  # the study was finished when this call opened it (`finish` keeps its row)
        if conn is not None:  # a stored study: its own creation time
            row = conn.execute("SELECT created, state FROM studies WHERE name = ?", (study,)).fetchone()
            created = created if row is None else float(row[0])
            self.complete = row is not None and row[1] == "complete"
        self.identity = None if created is None else {"storage": os.path.realpath(path), "study_created": created}
        self._conn = conn if write else None  # a reader's connection is closed by `_reader`
        self._pending: list[Trial] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False  # set by `close`: the thread ends once the queue is empty
        self.done = {} if conn is None else {t.number: t for t in _read_trials(conn, path, study, space)}
        self.checkpoint = None if conn is None else _read_checkpoint(conn, path, study)
        if self.checkpoint is not None:  # a trial deleted before it would never be recomputed
            _check_unbroken(conn, path, study, self.done, loading=False)
        if setup is not None:
            try:
                self._submit(setup)
            except BaseException:  # a Ctrl-C: no caller will close this writer, so close it here
                self.close()
                raise

    def _submit(self, job: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"hypergrad-store-{self.study}", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def _work(self) -> None:
        """The thread: runs jobs in order until None, or until `close` has been called and the queue
        is empty (the None's wake-up may have gone to a stale waiter), then closes the file."""
        while True:
            try:
                job = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._closed:
                    break
                continue
            if job is None:
                self._queue.task_done()
                break
            try:
                if self._error is None:
                    self._conn = job()  # the setup opens the file; a write returns it unchanged
            except BaseException as err:  # raised in the caller's thread by its next call
                self._error = err
            finally:
                self._queue.task_done()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def add(self, trial: Trial) -> None:
        """Queues a trial; it is written by the next `commit` (nothing, in a reading process)."""
        if self._write:
            self._pending.append(trial)

    def commit(self, checkpoint: Any = None) -> None:
        """Writes the queued trials, and the checkpoint (a callable giving {"step", "number", "state"}
        with arrays inside, called now) when given, in one transaction (in the background)."""
        if self._thread is not None:
            # one commit in flight at most: writes slower than the chunks would otherwise queue up
            # unboundedly, and a kill would lose every trial already reported but not yet written
            self._queue.join()
        shared_outcome(self._error, _STUDY)  # several processes: the others raise the error process 0 met
        if not self._write:
            return
        self._raise()
        state = checkpoint() if checkpoint is not None else None
        if not self._pending and state is None:
            return
        trials, self._pending = self._pending, []

        def write() -> sqlite3.Connection:
            self._rows(trials, state)
            return self._conn

        self._submit(write)

    def _rows(self, trials: list[Trial], state: dict | None) -> None:
        step = None if state is None else state["step"]
        rows = [_trial_row(self.study, t, self._space, step) for t in trials]
        checkpoint = None if state is None else _json(encode_value(state["state"]))
        with _transaction(self._conn, self.path) as conn:
            conn.executemany(f"INSERT INTO trials (study, {_TRIAL_COLUMNS}, runs, step) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if state is not None:
                conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                             (self.study, int(state["step"]), int(state["number"]), checkpoint))
            conn.execute("UPDATE studies SET updated = ? WHERE name = ?", (time.time(), self.study))

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self) -> None:
        """Waits until every commit is written; raises an error the writing met."""
        if self._thread is not None:
            self._queue.join()
        self._raise()

    def trials_from(self, number: int) -> list[Trial]:
        """The stored trials numbered `number` or later, in order."""
        return [self.done[n] for n in sorted(self.done) if n >= number]

    def finish(self, result: Result, space: Space) -> Result:
        """Marks the study complete with its result's label, cost and info (after every commit is
        written); returns the result with `info["space"]` (which `Result.to_optuna` reads). A study
        that was finished when this call opened it, and whose trials this call all loaded (it
        computed none: the same call again), keeps its row, and the call returns its stored `Result`
        (`load_study`: the first call's trials, cost, compile and set-up seconds and info), as
        `finished_result` gives a finished tune's: the repeat's own seconds (its tracing, about none
        compiled) would otherwise replace the study's for good."""
        self.commit()
        result = dataclasses.replace(result, info={**result.info, "space": describe_space(space)})
        repeated = self.complete and all(t.number in self.done for t in result.trials)
        error, stored = None, None
        try:
            if self._write:
                self.flush()
            if repeated:  # every process reads it (they all see the file: README "Several machines")
                stored = load_study(self.path, self.study)
            elif self._write:
                self._completed(result)
        except BaseException as err:  # noqa: BLE001 - raised below, once the other processes know
            error = err
        shared_outcome(error, _STUDY)
        if error is not None:
            raise error
        return result if stored is None else stored

    def _completed(self, result: Result) -> None:
        """Writes the study's row as complete, with `result`'s label, cost and info."""
        with _transaction(self._conn, self.path) as conn:
            # the JAX settings recorded at its creation stay (a finished study's same call is checked on them)
            row = conn.execute("SELECT info FROM studies WHERE name = ?", (self.study,)).fetchone()
            settings = None if row is None else _stored_settings(row[0])
            info = result.info if settings is None else {**result.info, SETTINGS_KEY: settings}
            conn.execute("UPDATE studies SET state = 'complete', strategy = ?, run_flops = ?, "
                         "compile_seconds = ?, info = ?, updated = ? WHERE name = ?",
                         (result.strategy, _real(result.run_flops), _real(result.compile_seconds),
                          _json(encode_value(info)), time.time(), self.study))

    def close(self) -> None:
        """Waits for what was committed, releases the lease, and waits (at most `_CLOSE_SECONDS`) for
        the thread to close the file. Trials added but not committed are dropped: a resume
        recomputes them. Interrupted while waiting for the commits (a second Ctrl-C), it still tells
        the thread to end once they are written, and leaves the lease (a dead process's lease blocks
        no one). Errors are not raised here (`finish` raises them on success; on failure another
        exception is already on its way)."""
        if not self._write:
            return
        self._write = False
        try:
            if self._thread is not None:
                self._queue.join()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("DELETE FROM leases WHERE study = ? AND pid = ?", (self.study, os.getpid()))
        finally:
            _release(self._claim)
            if self._thread is not None:
                self._closed = True
                self._queue.put(None)
                self._thread.join(timeout=_CLOSE_SECONDS)
            elif self._conn is not None:
                self._conn.close()
                self._conn = None


@contextlib.contextmanager
def studying(storage: Any, study: Any, *, kind: str, fingerprint: Any, space: Space) -> Iterator[Any]:
    """`open_study` as a context: yields the writer (or None without storage), released on exit.
    `fingerprint` is a callable, so nothing is described when no study is asked for, and with
    several processes it is how they check, first, that they all make the same call
    (`check_processes_agree`: refused on every process, naming the difference).

    With a study, the objective's programs are those of the objective the fingerprint describes:
    programs (and FLOP counts) are cached per objective object, keyed on the arguments' types, not
    on the values its functions read (a module-level `SCALE`, a closed-over dict), so after such a
    value was edited the same objective object would run the programs traced before the edit, as a
    `jax.jit` function keeps the global it traced, and the study would store their values under a
    fingerprint naming the new one. Before anything of the study runs, each objective described is
    checked against the description under which its programs were traced (`_fresh`); when it differs,
    or programs were made for it outside a stored call under a description not known, or no stored
    call described it before (a call without storage may have traced it: a FLOP count, a probe), that
    objective is forgotten (`hypergrad._caches.forget`: its programs, `jax.jit` wrappers, FLOP counts,
    checked shapes and unread names; for an `hg.Structured` family, whose programs are those of the objectives
    it built, those objectives too, and `build` is called again), so the study's trials are computed
    from the objective as it is now. Every other objective's programs stay. Cost: nothing more when
    the objective is unchanged since its last stored call; its programs compiled again when it was
    edited (or first stored after calls without storage made programs of it; a trace when they made
    none); one description of the objective per program compiled for it outside a stored call, once
    it was stored (`_traced_again`). At its end (an interrupted one's too) the call is described
    again: when that differs from its description as its study opened (the objective's functions,
    or a family's build, changed a value they read: a call counter), a `UserWarning` names the value
    and both its values (`_warn_if_call_changed`), since the same call again would be refused."""
    watched: dict | None = {} if storage is not None and study is not None else None
    described = _STUDIED.set(watched)
    began: list = []
    try:
        check_processes_agree(fingerprint, STRATEGY_CALLS.get(kind, kind))
        writer = open_study(storage, study, kind=kind, space=space, fingerprint=_keeping(fingerprint, began))
    finally:
        _STUDIED.reset(described)
    objectives = list((watched or {}).values())
    try:
        _forget_stale_programs(objectives)
        yield writer
    except BaseException:
        with contextlib.suppress(Exception):  # the call's own error goes on
            _warn_if_call_changed(writer, began, fingerprint)
        raise
    else:
        _warn_if_call_changed(writer, began, fingerprint)
    finally:
        _traced_under_now(objectives)
        if writer is not None:
            writer.close()


def _keeping(fingerprint: Any, began: list) -> Any:
    """`fingerprint` (a callable), keeping in `began` the first description it makes in the current
    fingerprint format, as JSON reads it back (the call as it was when its study was opened)."""
    if not callable(fingerprint):
        return fingerprint

    def described() -> dict[str, Any]:
        made = fingerprint()
        if not began and _FORMAT.get() == FINGERPRINT_FORMAT:
            began.append(json.loads(_json(made)))
        return made
    return described


def _warn_if_call_changed(writer: StudyWriter | None, began: list, fingerprint: Any) -> None:
    """At a stored call's end: warns when its objective, described again, differs from its description
    when its study was opened (`warn_if_objective_changed`): the same call again in this process would
    be refused. Only the objective is compared: an argument's own state (an Optuna sampler's random
    generator) moves during every call, and a resume passes a fresh one. Cost: one description of the
    call."""
    if writer is None or not began or not callable(fingerprint):
        return
    try:
        now = json.loads(_json(fingerprint()))
    except Exception:  # noqa: BLE001 (too large or not describable now): the resume names it
        return
    if isinstance(began[0], dict) and isinstance(now, dict):
        _warn_changed(began[0].get("objective"), now.get("objective"), "objective.",
                      f"study {writer.study!r} in {writer.path}",
                      "the study's stored call (its fingerprint, made as the call began) differs from the same call "
                      "made again in this process, which would refuse to resume or repeat it (and "
                      "random_search(extends=) would refuse its result; a new process that builds the objective "
                      "afresh describes it as it began)")


# The objectives the fingerprints of the stored call being opened described: id -> (objective, SHA-1 of
# its description); None outside `studying` with a study (nothing is watched then).
_STUDIED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hypergrad_studied", default=None)
# objective -> [SHA-1 of its description when its programs were traced (None: not one known), how many
# programs (`_compile.programs_made`) were made for it under that description], for the objectives a
# stored call described; objective -> number of stored calls running on it now.
_traced_under: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_in_stored_call: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_traced_lock = threading.Lock()


def finished_result(writer: StudyWriter | None, steps: int) -> Result | None:
    """The stored `Result` of a study of outer steps (`hg.tune`, `hg.hybrid_search`) that finished
    (its checkpoint at the final step `steps`, its call's row complete), as `load_study` reads it:
    the first call's trials, cost, compile and set-up seconds and info. None otherwise, and the
    call runs or resumes: a study killed after its last step but before it was marked complete
    resumes as any other (its programs compiled, no step run). Cost: one more read of the study's
    rows, instead of the programs' compilation."""
    if writer is None or writer.checkpoint is None or writer.checkpoint["step"] < steps:
        return None
    if not any(info.name == writer.study and info.state == "complete" for info in list_studies(writer.path)):
        return None
    return load_study(writer.path, writer.study)


# The objectives of the stored calls begun in this context (`stored_call`) that were forgotten as they began:
# id -> objective. What is made for them before their study opens is of this call.
_BEGUN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hypergrad_begun", default=None)


@contextlib.contextmanager
def stored_call(storage: Any, study: Any, objective: Any) -> Iterator[None]:
    """The span of a call that opens a study of `objective` (`studying`) after checks that trace it
    (`hg.tune`'s count of the run, a method's output check, `Reversible`'s probe; `hg.hybrid_search`'s
    plan, priced by FLOP counts). Unless the objective is fresh (`_fresh`: stored under the
    description it has now, nothing made since under another), it is forgotten as the call begins,
    before those checks, which would otherwise read what earlier calls left (a probe traced before
    an edit refusing the optimiser as it is now, a count pricing the plan); what the checks then
    make is of this call, so `studying` keeps it, not traced again. Nothing without a study. Cost: one description of an objective stored before (its data hashed, as
    `objective_digest`), and its programs compiled again when it is not fresh, as `studying` would."""
    _refuse_other_settings_early(storage, study)  # before the checks trace (one read of the study's row)
    try:
        fresh = storage is None or study is None or _fresh(objective, _digest_now(objective))
    except TypeError:  # cannot be weakly referenced: `studying` forgets it
        fresh = True
    if fresh:
        yield
        return
    _caches.forget(objective)
    token = _BEGUN.set({**(_BEGUN.get() or {}), id(objective): objective})
    try:
        yield
    finally:
        _BEGUN.reset(token)


def _digest_now(objective: Any) -> str | None:
    """SHA-1 of `objective`'s description now (`identity`), as `_traced_under` records it; None when
    it cannot be described (too large, or a value that cannot be described). Nothing for an
    objective no stored call described (its record is None, so it is not fresh whatever this is)."""
    if _traced_under.get(objective) is None:
        return None
    try:
        return hashlib.sha1(_json(identity(objective)).encode()).hexdigest()
    except Exception:  # noqa: BLE001 (too large, or a value that cannot be described): not known
        return None


def _begun_here(objective: Any) -> bool:
    return (_BEGUN.get() or {}).get(id(objective)) is objective


def _fresh(objective: Any, digest: str) -> bool:
    """Whether every program made for `objective` was traced while it was described as `digest`: it
    was stored under `digest` with no program made since under another. An objective no stored call
    described is not: besides compiled programs (`_compile.programs_made`), calls without storage keep
    traces that compile nothing (a FLOP count of `hg.run_flops`, `Reversible`'s probe, unread names),
    which forgetting it drops at the cost of a trace."""
    record = _traced_under.get(objective)
    return record is not None and record[0] == digest and record[1] == _compile.programs_made(objective)


def _forget_stale_programs(objectives: list[tuple[Any, str]]) -> None:
    """Forgets each objective that is not `_fresh` (`hypergrad._caches.forget`: its own programs and
    counts, every other objective's kept), then marks them as in a stored call (their programs made
    now are of the description checked)."""
    with _traced_lock:
        stale = []
        for objective, digest in objectives:
            try:
                if not (_fresh(objective, digest) or _begun_here(objective)):
                    stale.append(objective)
                _in_stored_call[objective] = _in_stored_call.get(objective, 0) + 1
            except TypeError:  # cannot be weakly referenced: its programs' description unknown
                stale.append(objective)
    for objective in stale:
        _caches.forget(objective)


def _traced_under_now(objectives: list[tuple[Any, str]]) -> None:
    """At a stored call's end: its objectives' programs, those it made included, are of its description."""
    with _traced_lock:
        for objective, digest in objectives:
            try:
                _traced_under[objective] = [digest, _compile.programs_made(objective)]
                left = _in_stored_call.get(objective, 1) - 1
                if left > 0:
                    _in_stored_call[objective] = left
                else:
                    _in_stored_call.pop(objective, None)
            except TypeError:
                continue


@_compile.on_new_program
def _traced_again(objective: Any) -> None:
    """A program was made for `objective` outside a stored call: if one described it before, the
    program's description is found now (the objective described again: its data hashed, cost as
    `objective_digest`'s), and the record kept only if it is the same."""
    with _traced_lock:
        try:
            record = _traced_under.get(objective)
            if record is None or _in_stored_call.get(objective):
                return
        except TypeError:
            return
    digest = _digest_now(objective)
    with _traced_lock:
        if record[0] is not None and record[0] == digest:
            record[1] += 1
        else:
            record[0] = None


def _trial_row(study: str, t: Trial, space: Space | None, step: int | None) -> tuple:
    scores = {name: encode_value(float(v)) for name, v in t.scores.items()}
    return (study, t.number, _json(encode_hparams(t.hparams, space)), _real(t.value), _json(scores), t.state,
            _real(t.flops), _real(t.seconds), _real(t.run_flops), _real(t.grad_norm), t.tuner, _real(t.runs), step)


def _float(x: Any) -> float:
    if isinstance(x, (bytes, bytearray)):
        raise ValueError(f"a number column holds bytes {bytes(x)[:20]!r}")
    return float(x)


def _trial(row: tuple, space: Space | None) -> Trial:
    number, hparams, value, scores, state, flops, seconds, run_flops, grad_norm, tuner = row
    if state not in ("complete", "fail", "skipped"):
        raise ValueError(f"state {state!r}")
    scores = {str(k): float(decode_value(v)) for k, v in json.loads(scores).items()}
    return Trial(number=int(number), hparams=decode_hparams(json.loads(hparams), space),
                 value=math.nan if value is None else _float(value), scores=scores, state=state,
                 flops=_float(flops), seconds=_float(seconds), run_flops=_float(run_flops),
                 grad_norm=None if grad_norm is None else _float(grad_norm),
                 tuner=None if tuner is None else int(tuner))


def _read_trials(conn: sqlite3.Connection, path: str, study: str, space: Space | None) -> list[Trial]:
    """The study's trials in order; `ValueError` naming the first unreadable one."""
    try:
        rows = conn.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study = ? ORDER BY number",
                            (study,)).fetchall()
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    trials = []
    for row in rows:
        try:
            trials.append(_trial(row, space))
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"study {study!r} in {path}: trial {row[0]!r} is unreadable ({type(err).__name__}: "
                             f"{err}); the file was edited or damaged. Other studies are unaffected; "
                             f"{_row_fix(conn, study, row[0])}") from err
    return trials


_CHECKPOINTED = ("tune", "hybrid")  # the kinds whose outer steps resume from a checkpoint (`_recomputed`)


def _row_fix(conn: sqlite3.Connection, study: str, number: Any) -> str:
    """What fixes the unreadable row of trial `number`: deleting it where a resume recomputes it."""
    try:
        if _recomputed(conn, study, [number])[0]:
            return "delete this trial's row to recompute it on resume, or use another study name"
        call = STRATEGY_CALLS[_kind_of(conn, study)]  # a tune or hybrid_search study (`_recomputed`)
    except sqlite3.DatabaseError:
        return "use another study name"
    return (f"this {call} study's outer steps resume from a checkpoint past this trial, so deleting its row "
            "would not recompute it: use another study name")


def _kind_of(conn: sqlite3.Connection, study: str) -> str | None:
    row = conn.execute("SELECT kind FROM studies WHERE name = ?", (study,)).fetchone()
    return None if row is None else row[0]


def _checkpoint_number(conn: sqlite3.Connection, study: str) -> int | None:
    """The number of the first trial after the study's checkpoint; None without one (or unreadable)."""
    row = conn.execute("SELECT number FROM checkpoints WHERE study = ?", (study,)).fetchone()
    return row[0] if row is not None and isinstance(row[0], int) else None


def _recomputed(conn: sqlite3.Connection, study: str, numbers: list[Any]) -> list[bool]:
    """Per trial number, whether repeating the call of `study` recomputes that trial were its row
    missing: always for a search (its chunks skip the stored numbers only); for tune and
    hybrid_search, whose outer steps go on from their checkpoint, only before a first checkpoint, or
    for a warm-up trial of a tune study still running (its warm-up search skips stored trials only;
    a finished one is read back whole). Cost: two reads of one row each."""
    row = conn.execute("SELECT kind, state, fingerprint FROM studies WHERE name = ?", (study,)).fetchone()
    if row is None or row[0] not in _CHECKPOINTED or _checkpoint_number(conn, study) is None:
        return [True] * len(numbers)
    warmup = 0
    if row[0] == "tune" and row[1] != "complete":
        with contextlib.suppress(TypeError, ValueError, KeyError, AttributeError):
            warmup = json.loads(row[2])["arguments"]["warmup"]
    warmup = warmup if isinstance(warmup, int) else 0
    return [isinstance(n, int) and 0 <= n < warmup for n in numbers]


def _check_unbroken(conn: sqlite3.Connection, path: str, study: str, numbers: Any, loading: bool) -> None:
    """Refuses a tune or hybrid_search study some of whose trials before its checkpoint are missing
    (rows deleted by hand): its outer steps resume from the checkpoint, so a resumed call would never
    recompute them, and its `Result` (or `load_study`'s) would silently lack them. Resuming
    (`loading` False) refuses only the trials it would not recompute (`_recomputed`); `load_study`
    refuses any. `numbers`: the stored trial numbers (a set or dict). Cost: a read of a row or two,
    and a scan of the numbers below the checkpoint."""
    try:
        kind = _kind_of(conn, study)
        if kind not in _CHECKPOINTED:
            return
        upto = _checkpoint_number(conn, study) or 0
        missing = [n for n in range(upto) if n not in numbers]
        lost = [n for n, again in zip(missing, _recomputed(conn, study, missing)) if not again]
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    if not lost and (not missing or not loading):
        return
    shown = str(missing[:10])[:-1] + (", ...]" if len(missing) > 10 else "]")
    head = (f"study {study!r} in {path}: trial(s) {shown} of this {STRATEGY_CALLS[kind]} study are missing (rows "
            "deleted by hand?)")
    if not lost:
        raise ValueError(f"{head}, so its Result would silently lack them; repeat its call to recompute them (the "
                         "warm-up trials of a tune study still running are recomputed on resume)")
    raise ValueError(f"{head}, and its outer steps resume from its checkpoint (trial {upto} on), past them, so they "
                     "would never be recomputed and its Result would silently lack them. Use another study name "
                     "to run the call afresh")


def _read_checkpoint(conn: sqlite3.Connection, path: str, study: str) -> dict | None:
    try:
        row = conn.execute("SELECT step, number, state FROM checkpoints WHERE study = ?", (study,)).fetchone()
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    if row is None:
        return None
    try:
        return {"step": int(row[0]), "number": int(row[1]), "state": decode_value(json.loads(row[2]))}
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"study {study!r} in {path}: its checkpoint is unreadable ({err}); the file was edited "
                         "or damaged; use another study name") from err


def load_study(storage: str | os.PathLike, study: str) -> Result:
    """The `Result` of a stored study: its trials in order (a study still running, or killed, gives
    those stored so far, all read in one transaction: the study as of one commit of its writer), with
    the strategy, cost and info of its call once it has finished. A random search study's info also
    holds the fingerprint format, `NUMERICS` and objective digest its stored call proves, finished or
    not (`_proven_by_fingerprint`), which `random_search(extends=...)` reads. A `tune(resample_key=True)`
    study that has not finished holds `resample_key` and the final iterates stored so far
    (`info["final_trials"]`, none before its last step), read from its stored call (`_running_pick`), so
    its `best_*` range over the trials scored on the call's key alone, as the finished call's would.

    Raises:
        ValueError: the file is unreadable, holds no such study (the message lists those it holds),
            or a trial of this study is damaged, or missing before a tune or hybrid_search study's checkpoint.
    """
    check_study(storage, study)
    path = os.fspath(storage)
    if not os.path.exists(path):
        raise ValueError(f"storage={path!r} does not exist; give the path of a study file")
    conn = _connect(path, create=False)  # in one read transaction: row, names, trials and checkpoint of one commit
    if conn is None:  # a file with no tables yet (another process creating the store): no study in it
        raise ValueError(f"study={study!r} is not in {path}; it holds [] (no tables yet: a store file another "
                         "process is creating, or an empty file)")
    try:
        try:
            row = conn.execute("SELECT kind, strategy, run_flops, compile_seconds, info, fingerprint, state "
                               "FROM studies WHERE name = ?", (study,)).fetchone()
            names = [r[0] for r in conn.execute("SELECT name FROM studies ORDER BY name")]
        except sqlite3.DatabaseError as err:
            raise _unreadable(path, err) from err
        if row is None:
            raise ValueError(f"study={study!r} is not in {path}; it holds {names}")
        trials = _read_trials(conn, path, study, None)
        _check_unbroken(conn, path, study, {t.number for t in trials}, loading=True)
        picking = _running_pick(conn, study, row[0], row[6], row[5])
    finally:
        conn.close()
    kind, strategy, run_flops, compile_seconds, info, stored, _ = row
    try:
        info = {} if info is None else decode_value(json.loads(info))
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"study {study!r} in {path}: its info is unreadable ({err})") from err
    if isinstance(info, dict):  # the settings it was created under are the store's, not its call's Result's
        info = {name: value for name, value in info.items() if name != SETTINGS_KEY}
    if kind == "random":  # what random_search(extends=) reads; other kinds' info stays as their call returned it
        info = _proven_by_fingerprint(info, stored)
    if picking and isinstance(info, dict):  # a running tune(resample_key=True): its Result's pick rule
        info = {**picking, **info}
    unit = _float(run_flops) if run_flops is not None else (trials[0].run_flops if trials else math.nan)
    return Result(strategy or kind, tuple(trials), unit, 0.0 if compile_seconds is None else _float(compile_seconds),
                  info)


def _proven_by_fingerprint(info: Any, stored: Any) -> Any:
    """A random search study's `info` with what its stored fingerprint `stored` (its JSON text)
    proves, where `info` lacks it (a study that has not finished has no info; one finished before
    they were saved has no "numerics" nor "objective_format"): the fingerprint format
    ("objective_format"), `NUMERICS` ("numerics": `numerics_of`, left out for format 4 and older,
    which cannot show their minibatch order) and the objective's digest ("objective":
    `objective_digest` in that format, of the description the fingerprint holds). `random_search(
    extends=hg.load_study(...))` reads them, so an interrupted study of this version extends and one
    of another objective, or of a minibatch objective in format 4, is refused as a finished one is.
    The fingerprint's numerics are those of every stored trial (a running study is resumed only
    under its own, or, for format 4 and older, by a full-batch objective). "objective_format" names
    the format of the digest, so the two are added together, never beside a digest or format the
    info holds. An unreadable fingerprint adds nothing (resuming the study names it). Cost: one
    parse of the fingerprint's text, one SHA-1 of its objective's description."""
    try:
        fingerprinted = json.loads(stored)
    except (TypeError, ValueError):
        return info
    if not isinstance(info, dict) or not isinstance(fingerprinted, dict):
        return info
    version = fingerprinted.get("format", 1)
    numerics = numerics_of(version, fingerprinted.get("numerics"))
    proven = {} if "objective" in info or "objective_format" in info else {"objective_format": version}
    if proven and isinstance(version, int) and 2 <= version <= FINGERPRINT_FORMAT and "objective" in fingerprinted:
        proven["objective"] = description_digest(fingerprinted["objective"])
    if version == FINGERPRINT_FORMAT and "objective" in fingerprinted:  # `extends_difference` names what differs
        _remember(description_digest(fingerprinted["objective"]), fingerprinted["objective"])
    if numerics is not None:
        proven["numerics"] = numerics
    return {**proven, **info}


def _running_pick(conn: sqlite3.Connection, study: str, kind: Any, state: Any, stored: Any) -> dict[str, Any]:
    """For a `tune(resample_key=True)` study that has not finished (its info does not say it yet), what
    its `Result` picks by (`hypergrad.results.pickable`): {"resample_key": True, "final_trials": the
    numbers of the trials committed with the final step's checkpoint (step `steps`: the final iterates,
    scored on the call's key), none before it}, from its stored call (fingerprint `stored`, JSON text);
    else {} (another kind, a finished study, resample_key False, an unreadable fingerprint). Cost: a
    parse of the fingerprint, for a running tune study alone; one read of its final trials' numbers."""
    if kind != "tune" or state == "complete" or not isinstance(stored, str) or '"resample_key"' not in stored:
        return {}
    try:
        arguments = json.loads(stored).get("arguments")
    except (TypeError, ValueError, AttributeError):
        return {}
    if not isinstance(arguments, dict) or arguments.get("resample_key") is not True:
        return {}
    steps = arguments.get("steps")
    final = [] if not isinstance(steps, int) else [int(r[0]) for r in conn.execute(
        "SELECT number FROM trials WHERE study = ? AND step = ? ORDER BY number", (study, steps))]
    return {"resample_key": True, "final_trials": final}


def list_studies(storage: str | os.PathLike) -> list[StudyInfo]:
    """The studies a store file holds, by name (none for a file with no tables yet, a store another process is
    creating). Raises `ValueError` for an unreadable file."""
    if isinstance(storage, (str, os.PathLike)):
        _refuse_url(os.fsdecode(os.fspath(storage)))
    if not isinstance(storage, (str, os.PathLike)) or not os.path.exists(storage):
        raise ValueError(f"storage={storage!r} does not exist; give the path of a study file")
    path = os.fspath(storage)
    conn = _connect(path, create=False)  # one snapshot for the rows and `_best_value`'s reads
    if conn is None:  # a file with no tables yet (another process creating the store): no study in it
        return []
    try:
        rows = conn.execute(
            "SELECT s.name, s.kind, s.strategy, s.state, s.created, s.updated, COUNT(t.number), "
            "MIN(CASE WHEN t.state != 'fail' AND typeof(t.value) = 'real' AND abs(t.value) < 9e999 THEN t.value END), "
            "s.info FROM studies s LEFT JOIN trials t ON t.study = s.name GROUP BY s.name ORDER BY s.name").fetchall()
        return [StudyInfo(name=r[0], kind=r[1], strategy=r[2], state=r[3], num_trials=int(r[6]),
                          best_value=_best_value(conn, path, r, math.inf if r[7] is None else float(r[7])),
                          created=float(r[4]), updated=float(r[5]))
                for r in rows]
    except sqlite3.DatabaseError as err:
        raise _unreadable(path, err) from err
    finally:
        conn.close()


def _best_value(conn: sqlite3.Connection, path: str, row: tuple, lowest: float) -> float:
    """The `best_value` of the study of `list_studies`'s `row` as its `Result` picks it
    (`hypergrad.results.pickable`): `lowest`, the lowest finite value of its trials, except for a
    `tune(resample_key=True)`, finished or not (`_running_pick`), whose pick is among the trials scored
    on the call's key. Cost: nothing, or one read of that study's trials (and, for a running tune
    study, of its fingerprint)."""
    study, kind, state, info = row[0], row[1], row[3], row[8]
    if info is None or "resample_key" not in info:
        if kind != "tune" or state == "complete":
            return lowest
        stored = conn.execute("SELECT fingerprint FROM studies WHERE name = ?", (study,)).fetchone()
        picking = _running_pick(conn, study, kind, state, None if stored is None else stored[0])
        if not picking:
            return lowest
        info = picking
    else:
        try:
            info = decode_value(json.loads(info))
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"study {study!r} in {path}: its info is unreadable ({err})") from err
    rule = pickable(info)
    return min((t.value for t in _read_trials(conn, path, study, None) if rule(t)), default=math.inf)
