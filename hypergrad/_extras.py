"""Optional extras imported on first use, without keeping the caller's frames alive (`import_extra`)."""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any


def import_extra(name: str, needed_by: str, extra: str) -> Any:
    """The module `name` of the optional extra `extra`, imported on first use, or `ImportError`
    saying that `needed_by` needs it and how to install it.

    Its first import in a process runs on a thread of its own: a package such as optuna keeps the
    tracebacks of the optional imports it defers (`optuna._imports.try_import`, e.g. redis when it is
    missing), and the frames of a kept traceback hold their callers' frames (`f_back`) with their
    locals, so an import under `hg.optuna_search` (or `Result.to_optuna`) would keep that first
    call's objective, results and its callers' locals alive for the rest of the process. A thread's
    frames start at the thread, so only its own frames are kept. Cost: one short-lived thread, once
    per process; later calls find the module in `sys.modules`."""
    got: dict[str, Any] = {}
    if name in sys.modules:  # loaded (or refused by a None entry): no module code runs here
        _load_module(name, got)
    else:
        thread = threading.Thread(target=_load_module, args=(name, got), name=f"hypergrad-import-{name}")
        thread.start()
        thread.join()
    if isinstance(got.get("error"), ImportError):
        raise ImportError(f"{needed_by} needs {name}: pip install 'hypergrad[{extra}]'") from got["error"]
    if "error" in got:
        raise got["error"]
    return got["module"]


def _load_module(name: str, into: dict[str, Any]) -> None:
    """`into["module"]`: the module `name` imported, or `into["error"]`: why not (for the thread that
    asked, `import_extra`, to raise; an exception would else end on this thread unseen)."""
    try:
        into["module"] = importlib.import_module(name)
    except Exception as err:  # any: raised by the caller's thread
        into["error"] = err
