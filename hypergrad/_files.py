"""Files written whole or not at all: a reader, or a run killed part-way, sees the old file or the
new one, never half of one."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


def _umask() -> int:
    """The process's file-creation mask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Opens a new file beside `path` for writing; when the block ends without an exception, renames it
    over `path` (one `os.replace`, atomic on POSIX and Windows within a folder). On an exception, or a
    kill part-way, `path` keeps its earlier content (or stays absent) and the new file is removed (a
    kill leaves a `.partial-*` file beside it). Permissions are those `open()` would give, not
    `mkstemp`'s 0600, so a shared folder's readers can read it. Cost: the file is written once; the
    folder needs room for both versions while the block runs."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    handle, temporary = tempfile.mkstemp(dir=folder or ".", prefix=f".partial-{name}.")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as f:
            yield f
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
