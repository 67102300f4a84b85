"""Report writing every benchmark script shares, without JAX: a parent process that only starts
children and writes their tables (`closed_constants.py`, `longrun_costs.py`) imports this and not
`_common`, which imports jax and hypergrad (seconds a process). `_common` re-exports both functions.
"""

from __future__ import annotations

import os


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_report(text: str, out: str | None, *, append: bool = False, echo: bool = True) -> None:
    """Prints `text` (unless `echo=False`) and, with `out`, writes it there (appended after a blank
    line with `append` when the file already has content); the shared ending of every benchmark
    script."""
    if echo:
        print(text)
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    appending = append and os.path.exists(out) and os.path.getsize(out) > 0
    with open(out, "a" if appending else "w") as f:
        f.write(("\n" if appending else "") + text.rstrip("\n") + "\n")
