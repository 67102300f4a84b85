"""Several processes making one call (`jax.distributed`): every process must make the same call, or
the programs they run differ and a collective waits for ever (or gloo aborts with a "collective
mismatch"). `checked_together` runs a call's own checks, then compares its plain arguments (and,
where the block hands one to `CheckedCall.compare`, the call's description) and shares any refusal
in one all-gather; `check_processes_agree` compares the calls' descriptions across processes before
anything runs. Each refuses a difference (or a refusal) on every process, naming it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["CheckedCall", "checked_together", "check_arguments_agree", "check_processes_agree"]

PARTS = ("kind", "space", "objective", "key")  # a description's parts compared whole; its arguments one by one
_DIGEST_BYTES = 8
_ARGUMENT_SLOTS = 24  # arguments compared one by one; any further ones share the last slot
_ARGUMENTS_TAG = b"hypergrad-arguments/3:"  # opens `check_arguments_agree`'s buffer: a mismatched gather shows
_ARGUMENTS_BYTES = 4096  # the buffer `check_arguments_agree` gathers (a fixed shape, as a gather needs)
_SHOWN = 100  # characters of a value a refusal shows (a longer one is cut, its digest appended)
# how to mend a difference of an argument, where the general advice says too little
_STUDY_FIX = ("give the same {name}= on every process (process 0 alone writes the study; the others read it to "
              "resume, on a filesystem they all see)")
_FIX = {"log": "give log= on every process or on none (process 0 alone writes it: the path another process "
               "gives is not written, and may differ)",
        "storage": _STUDY_FIX, "study": _STUDY_FIX,
        # compared by kind (as `plain_description` shows an object): the objectives are compared whole later
        "objective": ("give the same kind of objective on every process: an hg.Objective on all, or an "
                      "hg.Structured family on all (a family plans its programs from process 0's measured "
                      "rates, which the others must wait for)")}
_GIVEN_ONLY = ("log",)  # compared by whether they are given (a path), not by their value
_PATHS = ("storage",)  # compared as real paths: "./s.db" and "s.db" name one file
_REFUSAL_CHARS = 600  # of a refusal's message sent to the other processes (ASCII, escapes included)
_RAISED_AS = (ValueError, TypeError)  # a refusal the others raise as such (anything else: RuntimeError)


class CheckedCall:
    """What a `checked_together` block may add to its all-gather: the call's description, made once
    the block's checks passed (`compare`). Yielded by `checked_together`."""

    def __init__(self) -> None:
        self.describe: Callable[[], dict[str, Any]] | None = None
        self.advice = ""

    def compare(self, describe: Callable[[], dict[str, Any]], advice: str = "") -> None:
        """Compares `describe()` (a description as `check_processes_agree` takes it) across the
        processes in the block's own all-gather, instead of a second one: made after the block,
        compared when no process refused; a difference is `check_processes_agree`'s `ValueError`
        on every process, `advice` (a suffix, ". ..." or "") appended. With several processes
        only: in a lone process nothing is described."""
        self.describe, self.advice = describe, advice


@contextlib.contextmanager
def checked_together(what: str, *, refused_advice: str = "", **arguments: Any) -> Iterator[CheckedCall]:
    """A strategy's own checks, run in the `with` block, then its plain `arguments` compared across
    processes in one all-gather that also carries each process's refusal, so that a check failing
    on one process alone (an int for the key, say) stops every process instead of leaving the
    others waiting for it in a collective for ever. After the block, on every process:

    - arguments that differ: `check_arguments_agree`'s `ValueError` naming the first (chained from
      this process's own refusal, if any): a difference explains a refusal on one process alone;
    - else a process that refused raises its own error, unchanged;
    - else, another process having refused, the first's error, named: `random_search: process 1
      refused its call with ValueError: key must be ...` (a `ValueError` or `TypeError` as the same
      type, anything else as a `RuntimeError`), `refused_advice` (a suffix) appended;
    - else, where the block handed the call's description to the yielded `CheckedCall.compare`,
      descriptions that differ: `check_processes_agree`'s `ValueError` (a process whose block
      described nothing sends none, which differs from any description). An error making the
      description is this process's refusal.

    The block must make no collective of its own (a check gathering a verdict, as `check_log`
    does, comes after it: a process that refused earlier would pair its gather with another).
    In a lone process the block runs as it is, and nothing is gathered or described. Cost, with
    several processes: `check_arguments_agree`'s one all-gather, no more (the description, when
    compared, rides in it: its digests, 224 bytes)."""
    call = CheckedCall()
    if jax.process_count() == 1:
        yield call
        return
    try:
        yield call
        described = None if call.describe is None else [_described(call.describe)]
    except Exception as err:  # any: a process leaving here alone would leave the others waiting
        _compared(what, arguments, err, None, refused_advice)
        raise
    _compared(what, arguments, None, described, refused_advice, call.advice)


def check_arguments_agree(what: str, **arguments: Any) -> None:
    """Raises `ValueError` on every process when the processes gave `what` (a public strategy's
    name) different plain arguments, naming the first that differs and each process's value:
    `log= differs: 'trials.jsonl' on process 0, None on process 1; ...`. Each strategy calls it
    through `checked_together`, after its own checks, so that an argument given (or invalid) on one
    process alone is refused on all, instead of one process raising while another waits for it in a
    collective, or the processes pairing different collectives (a gloo abort). Values are shown
    as `plain_description` gives them: numbers, strings and paths as they are (`storage=` as a
    real path), arrays by dtype, shape and digest, other objects by their type's name (so an
    object's memory address never differs); `check_processes_agree` then compares the whole call.
    Nothing in a lone process.

    Cost, with several processes: one all-gather of a 4 KiB buffer (also a barrier), and arrays
    among the arguments copied to the host to be digested."""
    if jax.process_count() == 1:
        return
    _compared(what, arguments, None, None, "")


def _compared(what: str, arguments: dict[str, Any], refusal: Exception | None, described: list | None,
              refused_advice: str, advice: str = "") -> None:
    """The all-gather of `checked_together`: every process's `arguments`, refusal (None: its checks
    passed) and description (`described`: [the description, or None where too large to make], or
    None: not compared); raises as it says, except this process's own refusal (its caller re-raises it)."""
    shown = {name: _shown(name, value) for name, value in arguments.items()}
    digests = None if described is None else _digests(described[0]).tobytes().hex()
    got = np.asarray(multihost_utils.process_allgather(_buffer(shown, _refusal_text(refusal), digests)), np.uint8)
    calls = [_decoded(bytes(row), what) for row in got.reshape(jax.process_count(), -1)]
    for name in arguments:
        values = [call[0].get(name, "(not given)") for call in calls]
        if any(value != values[0] for value in values):
            said = ", ".join(f"{value} on process {p}" for p, value in enumerate(values))
            fix = _FIX.get(name, "give the same {name}= on every process (every process must make the same call, "
                                 "or they run different programs and wait for each other for ever)")
            raise ValueError(f"several processes made different calls of {what}: {name}= differs: {said}; "
                             + fix.format(name=name)) from refusal
    refused = [(p, call[1]) for p, call in enumerate(calls) if call[1] is not None]
    if refusal is None and refused:
        p, (kind, message, raised_as) = refused[0]
        raised = next((k for k in _RAISED_AS if k.__name__ == raised_as), RuntimeError)
        raise raised(f"{what}: process {p} refused its call with {kind}: {message} (every process stops: each "
                     "must make the same call, and one that a process refuses would leave the others waiting "
                     f"for it for ever){refused_advice}")
    if refusal is None and any(call[2] is not None for call in calls):  # none refused; compared where one described
        rows = [_digests(None) if call[2] is None else np.frombuffer(bytes.fromhex(call[2]), np.uint8)
                for call in calls]
        _refuse_differences(rows, None if described is None else described[0], what, advice)


def _shown(name: str, value: Any) -> str:
    if name in _GIVEN_ONLY:
        return _given(value)
    if name in _PATHS and isinstance(value, (str, bytes, os.PathLike)) and os.fsdecode(value) not in ("", ":memory:"):
        return repr(os.path.realpath(os.fsdecode(value)))  # (its own check refuses "" and ":memory:")
    return plain_description(value)


def _refusal_text(refusal: Exception | None) -> list[str] | None:
    """A refusal as sent: its type's name, its message (cut, in ASCII: escapes for the rest) and the
    name of the type the others raise it as."""
    if refusal is None:
        return None
    message = str(refusal).encode("ascii", "backslashreplace").decode()
    cut = message if len(message) <= _REFUSAL_CHARS else message[:_REFUSAL_CHARS] + "..."
    raised = next((kind for kind in _RAISED_AS if isinstance(refusal, kind)), RuntimeError)
    return [type(refusal).__name__, cut, raised.__name__]


def _buffer(shown: dict[str, str], refused: list[str] | None, described: str | None) -> np.ndarray:
    """The gathered buffer: the tag, then the shown arguments, the refusal and the description's
    digests (hex, or None) as JSON (arguments as digests alone when they do not fit: not with a
    strategy's arguments, each value cut to _SHOWN)."""
    sent = np.zeros(_ARGUMENTS_BYTES, np.uint8)
    text = _ARGUMENTS_TAG + json.dumps([_fitted(shown), refused, described]).encode()
    if len(text) > _ARGUMENTS_BYTES:
        digests = {k: "#" + _digest(v).tobytes().hex() for k, v in shown.items()}
        text = _ARGUMENTS_TAG + json.dumps([digests, refused, described]).encode()
    sent[:len(text)] = np.frombuffer(text, np.uint8)
    return sent


def _given(path: Any) -> str:
    """A path argument as compared when only whether it is given counts: "given" for a non-empty
    path, "None", or anything else as `plain_description` shows it (its own check refuses it)."""
    if isinstance(path, (str, bytes, os.PathLike)) and os.fspath(path):
        return "given"
    return plain_description(path)


def plain_description(value: Any) -> str:
    """`value` as `check_arguments_agree` compares and shows it: the same on every process for the
    same value (a path as its text, an array by dtype, shape and digest, an object by its type)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":  # np.int64(4) is 4, as the checks read it
        return repr(value.item())
    if isinstance(value, (bytes, os.PathLike)):
        return repr(os.fsdecode(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {plain_description(v)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(plain_description(v) for v in value) + "]"
    if isinstance(value, (np.ndarray, jax.Array)):
        return _array_description(value)
    return f"a {type(value).__name__}"


def _array_description(value: Any) -> str:
    """An array by dtype, shape and the digest of its bytes (a typed key by its key data)."""
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    try:
        host = np.asarray(value)
    except Exception:  # an array spread over processes is not for one process to read: its type says enough
        return f"a {type(value).__name__}"
    return f"{host.dtype}{list(host.shape)} #{hashlib.sha1(host.tobytes()).hexdigest()[:12]}"


def _fitted(shown: dict[str, str]) -> dict[str, str]:
    """`shown` with each value over `_SHOWN` characters cut, its digest appended (so that values that
    differ past the cut still differ), to fit the gathered buffer."""
    def fit(text: str) -> str:
        if len(text) <= _SHOWN:
            return text
        return text[:_SHOWN] + "... #" + hashlib.sha1(text.encode()).hexdigest()[:12]
    return {name: fit(text) for name, text in shown.items()}


def _decoded(row: bytes, what: str) -> tuple[dict[str, str], list[str] | None, str | None]:
    """A process's arguments, refusal and description's digests from its gathered buffer; a
    `RuntimeError` for a buffer that is not one (the processes' collectives out of step: an earlier
    call differed between them)."""
    text = row.rstrip(b"\0")
    try:
        if not text.startswith(_ARGUMENTS_TAG):
            raise ValueError("untagged")
        arguments, refused, described = json.loads(text[len(_ARGUMENTS_TAG):].decode())
        return arguments, refused, described
    except (ValueError, TypeError) as err:
        raise RuntimeError(
            f"{what}: the processes' collectives are out of step (a process sent something else than its "
            "call's arguments): an earlier call differed between the processes, or one of them raised "
            "where the others went on; start every process again, making the same calls") from err


def check_processes_agree(describe: Callable[[], dict[str, Any]], what: str) -> None:
    """Raises `ValueError` on every process when the processes' calls differ: `describe()` is this
    call's description as a stored study's fingerprint gives it (`hypergrad.store.fingerprint`: kind,
    space, objective with its functions and data, key, the arguments that change results). Every
    process must call it at the same point. Nothing in a lone process.

    Cost, with several processes: the description (the objective's data hashed on the host) and one
    all-gather of a few hundred bytes, which is also a barrier. A description too large to make (a
    `ValueError` from `describe`) is not compared, on any process."""
    if jax.process_count() == 1:
        return
    described = _described(describe)
    got = np.asarray(multihost_utils.process_allgather(_digests(described)), np.uint8)
    _refuse_differences(list(got.reshape(jax.process_count(), -1)), described, what)


def _described(describe: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """`describe()`, or None for a description too large to make (its `ValueError`): not compared."""
    try:
        return describe()
    except ValueError:
        return None


def _refuse_differences(got: list[np.ndarray], described: dict[str, Any] | None, what: str,
                        advice: str = "") -> None:
    """`check_processes_agree`'s `ValueError` when the processes' gathered digests `got` differ,
    naming the parts (as this process's `described` names its arguments), `advice` appended."""
    differing = {p: _differences(got[0], got[p], described) for p in range(1, len(got))
                 if not np.array_equal(got[p], got[0])}
    if differing:
        said = "; ".join(f"process {p}'s call differs from process 0's in {', '.join(parts)}"
                         for p, parts in differing.items())
        raise ValueError(
            f"several processes made different calls of {what}: {said}. Every process must "
            "make the same call (the same objective, data, space, key and arguments), or they run different "
            "programs and wait for each other for ever: load the same data in each, and seed the key the same "
            f"(not with jax.process_index()){advice}")


def _digest(value: Any) -> np.ndarray:
    text = json.dumps(value, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha1(text).digest()[:_DIGEST_BYTES], np.uint8)


def _digests(described: dict[str, Any] | None) -> np.ndarray:
    """The description's parts and each of its arguments (sorted by name), digested; zeros for none."""
    slots = np.zeros((len(PARTS) + _ARGUMENT_SLOTS, _DIGEST_BYTES), np.uint8)
    if described is None:
        return slots.reshape(-1)
    for i, part in enumerate(PARTS):
        slots[i] = _digest(described.get(part))
    arguments = sorted(described.get("arguments", {}).items())
    for i, (name, value) in enumerate(arguments[:_ARGUMENT_SLOTS - 1]):
        slots[len(PARTS) + i] = _digest([name, value])
    if len(arguments) >= _ARGUMENT_SLOTS:
        slots[-1] = _digest(arguments[_ARGUMENT_SLOTS - 1:])
    return slots.reshape(-1)


def _differences(first: np.ndarray, other: np.ndarray, described: dict[str, Any] | None) -> list[str]:
    """The names of the parts whose digests differ (arguments by name, as this process's call names them)."""
    first, other = first.reshape(-1, _DIGEST_BYTES), other.reshape(-1, _DIGEST_BYTES)
    arguments = sorted((described or {}).get("arguments", {}))
    names = [*PARTS, *(f"arguments.{name}" for name in arguments[:_ARGUMENT_SLOTS - 1])]
    return [names[i] if i < len(names) else "arguments" for i in range(len(first))
            if not np.array_equal(first[i], other[i])]
