"""Argument checks shared by the validators: predicates (each caller words its own error message),
`check_count`, the one "positive integer" check with its one message, `check_checkpoint_every`,
the one check of a checkpoint segment length, `check_progress`,
`check_key`, the one PRNG-key check, `check_log`, the one check of a trials log's path,
`users_stacklevel`, which points a library warning at the user's line, and `shared_outcome`,
which raises on every process of a multi-process run what one process met."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


def is_int(value: Any) -> bool:
    """Whether `value` is an integer: a Python or numpy int, not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_number(value: Any) -> bool:
    """Whether `value` is a real number: a Python or numpy int or float, not a bool, or a scalar of
    the floats numpy's own classes miss (ml_dtypes' bfloat16, as `np.asarray(0.1, jnp.bfloat16)[()]` is)."""
    if isinstance(value, np.generic) and not isinstance(value, (np.integer, np.floating, np.bool_)):
        return bool(jnp.issubdtype(value.dtype, jnp.floating))
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_int_at_least(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is an integer (a Python or numpy int, not a bool) and >= `minimum`."""
    return is_int(value) and value >= minimum


def check_progress(progress: Any) -> Any:
    """`progress` if it is None, a bool or a callable(str); else a `ValueError`."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise ValueError(f"progress={progress!r} must be True (a line per step or chunk on stderr), False, or a "
                     "callable taking each line")


MAX_COUNT = 2**31 - 1  # trial numbers, steps and indices are int32 on the device


def check_count(value: Any, argname: str) -> int:
    """`int(value)` for an integer from 1 to `MAX_COUNT` (not a bool); else a `ValueError` naming
    `argname` (a larger count overflowed an int32 index on the device and aborted the process)."""
    if not is_int_at_least(value):
        raise ValueError(f"{argname}={value!r} must be an integer >= 1")
    if int(value) > MAX_COUNT:
        raise ValueError(f"{argname}={value!r} is more than {MAX_COUNT} (2**31 - 1), the most that int32 trial "
                         "numbers, steps and indices hold on the device; split the work into several calls")
    return int(value)


def check_checkpoint_every(value: Any, where: str, steps: str = "num_steps") -> int | None:
    """`checkpoint_every` as a Python int, or None; else a `ValueError` naming `where`'s argument
    (0 divided by zero, a negative length reshaped the steps into negative segments, a float was
    no segment length), raised before anything is traced. `steps` names the horizon it splits."""
    if value is None:
        return None
    if not is_int_at_least(value):
        raise ValueError(f"{where}(checkpoint_every={value!r}) must be a positive int (try about sqrt({steps})) "
                         "or None")
    return int(value)


@functools.cache
def raw_key_shape(impl: str) -> tuple[int, ...]:
    """The shape of a raw uint32 key (`jax.random.PRNGKey(0)`) of the PRNG implementation named
    `impl` ("threefry2x32": (2,), "rbg"/"unsafe_rbg": (4,)). Cost: one abstract trace per name."""
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def check_key(key: Any, argname: str = "key") -> jax.Array:
    """A typed PRNG key: a typed key as it is, a raw uint32 one (`jax.random.PRNGKey(0)`) of the
    default implementation's shape (`jax_default_prng_impl`: (2,) for threefry, (4,) for rbg)
    wrapped as the typed key of the same bits (`jax.random.wrap_key_data`, which uses that
    implementation); `ValueError` otherwise."""
    if isinstance(key, jax.core.Tracer):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        raise ValueError(f"{argname}={key} is an int; pass jax.random.key({key})")
    try:
        array = key if isinstance(key, jax.Array) else jnp.asarray(key)  # asarray costs ~0.3 ms a call
    except TypeError as err:
        raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed)") from err
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        if array.shape != ():
            raise ValueError(f"{argname} has shape {array.shape}; pass a single key, not a batch of keys")
        return array
    impl = str(jax.config.jax_default_prng_impl)
    if array.dtype == jnp.uint32 and array.shape == raw_key_shape(impl):
        # as the typed key it is (the same bits, the same draws): a raw key would be another
        # argument type to every compiled program, compiled again beside the typed key's
        return jax.random.wrap_key_data(array)
    raise ValueError(f"{argname} must be a PRNG key from jax.random.key(seed), got {array.dtype}{array.shape} (a raw "
                     f"key of jax_default_prng_impl={impl!r} is uint32{raw_key_shape(impl)})")


def check_log(log: Any, storage: Any = None) -> Any:
    """`log` if it is None or a usable path of the JSON-lines file each trial is appended to
    (`hypergrad.results.TrialRecorder`); else a `ValueError` naming `log=`. Usable: a str, bytes or
    os.PathLike naming a file (not a directory) that can be appended to, and not the study file
    `storage` (when given: `check_log_apart`). A missing directory is
    created and removed again here (by process 0 alone, the one that writes the log): whether it can
    be is known only by trying, and a call refused later for another reason leaves nothing behind;
    the trial recorder creates it for good when it opens the log. Cost: a few `stat` calls (and
    a `mkdir` and `rmdir` per missing directory); in a multi-process run, one all-gather of
    process 0's verdict, which every process raises (`shared_outcome`)."""
    if log is None:
        return None
    if not isinstance(log, (str, bytes, os.PathLike)) or not os.fspath(log):
        raise ValueError(f"log={log!r} must be the path of a JSON-lines file to append each trial to "
                         "(e.g. log='trials.jsonl'), or None")
    check_log_apart(log, storage)
    error = None
    if jax.process_index() == 0:
        try:
            _check_log_path(log)
        except ValueError as err:
            error = err
    shared_outcome(error, "this call")  # several processes: the others raise process 0's refusal too
    if error is not None:
        raise error
    return log


def check_log_apart(log: Any, storage: Any) -> None:
    """A `ValueError` naming `log=` and `storage=` when the log is the study's SQLite file or one of
    its companions (`-wal`, `-shm`, `-journal`): SQLite's pages would overwrite every record. Both
    are paths (anything else, None included, is left to their own checks: `check_log`,
    `hypergrad.store.check_study`). Cost: a few `realpath` calls."""
    paths = (str, bytes, os.PathLike)
    if not (isinstance(log, paths) and isinstance(storage, paths) and os.fspath(log) and os.fspath(storage)):
        return
    logged = os.path.realpath(os.fsdecode(log))
    stored = os.path.realpath(os.fsdecode(storage))
    if logged in {stored + suffix for suffix in ("", "-wal", "-shm", "-journal")}:
        own = os.path.splitext(os.fsdecode(storage))[0] + ".jsonl"
        raise ValueError(f"log={os.fsdecode(log)!r} is the study file storage={os.fsdecode(storage)!r} writes (or its "
                         f"SQLite companion): its pages would overwrite the log's records; give the log its own path, "
                         f"e.g. log={own!r}")


def _check_log_path(log: Any) -> None:
    """`check_log`'s checks of the file system, on the process that writes the log."""
    path = os.path.abspath(os.fsdecode(log))
    if os.path.isdir(path):
        raise ValueError(f"log={log!r} is a directory: give the path of a file in it, e.g. "
                         f"log={os.path.join(path, 'trials.jsonl')!r}, or None")
    directory = os.path.dirname(path)
    missing = _missing_directories(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise ValueError(f"log={log!r}: its directory {directory!r} cannot be created ({err.strerror}); give "
                         "the path of a JSON-lines file in a directory you can write, or None") from err
    try:
        writable = os.access(path if os.path.exists(path) else directory, os.W_OK)
    finally:
        for made in missing:  # deepest first: the trial log's writer creates them when it writes
            os.rmdir(made)
    if not writable:
        raise ValueError(f"log={log!r} cannot be written (no write permission); give the path of a JSON-lines "
                         "file you can write, or None")
    return log


def _missing_directories(directory: str) -> list[str]:
    """The directories on the way to `directory` that do not exist yet, deepest first."""
    missing = []
    while directory and not os.path.exists(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return missing


_MESSAGE_BYTES = 2048  # of an error's message sent to the other processes (a fixed shape for the gather)
_KINDS = (ValueError, RuntimeError)  # the errors the others raise as such (anything else: RuntimeError)


def shared_outcome(error: BaseException | None, what: str) -> None:
    """Every process's outcome of one step of a multi-process run (None: success, or the error this
    process met), raised on the processes that met none: one all-gather of a small buffer (also a
    barrier), so no process goes on to wait in a collective another never reaches. A process that
    met no error raises an error of the kind and message of the first process that did ("process
    1 stopped `what` with ValueError: ..."); a process that did raises nothing here: its caller
    raises its own error. Every process must call it at the same point (a buffer that is not an
    outcome, another collective's paired with this one, is a `RuntimeError` saying the processes are
    out of step, on the processes that see it). Nothing in a lone process."""
    if jax.process_count() == 1:
        return
    sent = np.zeros(_MESSAGE_BYTES + 1, np.uint8)
    if error is not None:
        kind = next((i for i, k in enumerate(_KINDS) if isinstance(error, k)), len(_KINDS) - 1)
        text = f"{type(error).__name__}: {error}".encode()[:_MESSAGE_BYTES]
        sent[0], sent[1:1 + len(text)] = kind + 1, np.frombuffer(text, np.uint8)
    got = np.asarray(multihost_utils.process_allgather(sent), np.uint8).reshape(-1, _MESSAGE_BYTES + 1)
    garbled = [i for i in range(len(got)) if got[i, 0] > len(_KINDS)]
    if garbled:  # a process sent another collective's buffer: raised on every process that sees it
        raise RuntimeError(
            f"process {garbled[0]} sent something else than its outcome of {what}: the processes' collectives "
            "are out of step, because a call differed between them (an argument given on one process alone, "
            "say) or one of them raised where the others went on; make the same calls on every process and "
            "start them all again")
    failed = [i for i in range(len(got)) if got[i, 0]]
    if error is None and failed:
        first = failed[0]
        message = bytes(got[first, 1:]).rstrip(b"\0").decode(errors="replace")
        raise _KINDS[int(got[first, 0]) - 1](f"process {first} stopped {what} with {message}")


def users_stacklevel() -> int:
    """`warnings.warn`'s stacklevel, called from the function that calls this, that points at the
    first frame outside hypergrad: the user's line, however deep in the library the warning is
    (Python's default filter then shows a warning once per line of the user's code). `contextlib`'s
    frames are passed over too: a warning from a library context manager's exit names the user's
    `with` line, not contextlib's."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2
    while frame is not None and (os.path.abspath(frame.f_code.co_filename).startswith(package)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level
