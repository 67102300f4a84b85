"""A Ctrl-C pressed while `python -m hypergrad compare` is still importing (the first seconds) stops it.

CPython drops a KeyboardInterrupt raised inside a garbage-collection callback, and JAX installs one as it is
imported ("Exception ignored in: <function _xla_gc_callback>"): a Ctrl-C during `import hypergrad`'s imports (about
one second, some two hundred collections), before the command's own handler (`cli._ctrl_c_honoured`) was installed,
was ignored and the comparison ran to its end with exit status 0. Each child here is `python -m hypergrad compare`
with Python's default Ctrl-C handler, whose Ctrl-C is delivered, deterministically, inside a collection that runs
as the named module starts importing: the command ends with Python's own KeyboardInterrupt exit (killed by SIGINT,
which a shell reports as 130) before anything runs or is written."""

import gc
import os
import signal
import subprocess
import sys

import pytest

from hypergrad._interrupts import ctrl_c_kept

ROOT = os.path.join(os.path.dirname(__file__), "..")

CHILD = """
import gc, runpy, signal, sys

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell's foreground process
target, argv = sys.argv[1], sys.argv[2:]
pressed = []

def ctrl_c_during_collection(phase, info):
    if phase == "start" and not pressed:
        pressed.append(phase)
        signal.raise_signal(signal.SIGINT)  # its KeyboardInterrupt is raised inside the callback, and dropped


class CtrlCWhenImporting:
    def find_spec(self, name, path=None, target_module=None):
        if name == target and not pressed:
            gc.callbacks.append(ctrl_c_during_collection)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(ctrl_c_during_collection)
            print("pressed", file=sys.stderr, flush=True)
        return None  # the ordinary finders import it


sys.meta_path.insert(0, CtrlCWhenImporting())
sys.argv = ["hypergrad", *argv]
runpy.run_module("hypergrad", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("target", [
    "jax.core",  # inside `import jax`, after jax._src.lib installed its garbage-collection callback
    "hypergrad.tune",  # one of `import hypergrad`'s own modules
    "hypergrad.cli",  # after `import hypergrad`: `python -m hypergrad` importing the command
])
def test_ctrl_c_while_the_command_imports_stops_it(tmp_path, target):
    out = tmp_path / "run"
    # A budget too small for any plan: the old code, which lost the Ctrl-C, ended at once with that usage error
    # (status 2) instead of running a whole comparison.
    child = subprocess.run([sys.executable, "-c", CHILD, target, "compare", "--problem", "iris-mlp", "--budget",
                            "0.001", "--out", str(out), "--cpu-devices", "1"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert "\npressed\n" in child.stderr, child.stderr  # after the dropped exception's lines
    assert child.returncode == -signal.SIGINT, child.stderr  # Python's own exit on KeyboardInterrupt
    assert child.stderr.rstrip().endswith("KeyboardInterrupt"), child.stderr
    assert "budget" not in child.stderr and not out.exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one
def test_the_import_guard_raises_a_dropped_ctrl_c_and_restores_the_callers_handler():
    default = signal.signal(signal.SIGINT, signal.default_int_handler)
    pressed = []

    def ctrl_c_during_collection(phase, info):
        if phase == "start" and not pressed:
            pressed.append(phase)
            signal.raise_signal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_kept():
                gc.callbacks.append(ctrl_c_during_collection)
                try:
                    gc.collect()
                finally:
                    gc.callbacks.remove(ctrl_c_during_collection)
                assert pressed  # dropped inside the collection: the block goes on
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with ctrl_c_kept():  # no Ctrl-C: nothing raised
            pass
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored Ctrl-C (a background job) stays ignored
        with ctrl_c_kept():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, default)
