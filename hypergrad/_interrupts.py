"""A Ctrl-C that a block of code drops is raised again when the block ends (`ctrl_c_kept`): `import hypergrad`'s
imports run under it, and so does the `hypergrad` command's import of `hypergrad.cli` (`python -m hypergrad`)."""

import contextlib
import signal
import threading


@contextlib.contextmanager
def ctrl_c_kept():
    """For the block, Python's Ctrl-C (SIGINT) handler is swapped for one that raises KeyboardInterrupt the same
    way and also records it; when the block ends without an exception, a recorded Ctrl-C is raised again. CPython
    drops a KeyboardInterrupt raised inside a garbage-collection callback, and JAX installs one as it is imported
    ("Exception ignored in: <function _xla_gc_callback>"): a Ctrl-C pressed while `hypergrad compare` was still
    importing JAX was ignored, and the command ran to its end. Swapped only in the main thread and over Python's
    default handler (an ignored SIGINT, or the caller's own handler, is left alone, as the `hypergrad` command's
    `_ctrl_c_honoured` does); the previous handler is back before the block's end raises. An exception other than
    KeyboardInterrupt out of the block after a Ctrl-C (JAX's extension fails to initialise when interrupted: an
    ImportError) is raised as the KeyboardInterrupt, from it."""
    pressed = []

    def handler(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    own = (threading.current_thread() is threading.main_thread()
           and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = signal.signal(signal.SIGINT, handler) if own else None
    try:
        yield
    except Exception as err:
        if pressed:  # the KeyboardInterrupt became another error (an extension module failing to initialise)
            raise KeyboardInterrupt from err
        raise
    finally:
        if own:
            signal.signal(signal.SIGINT, previous)
    if pressed:  # the block went on: the KeyboardInterrupt was dropped (or caught) inside it
        raise KeyboardInterrupt
