"""Where the two on-disk caches (JAX's compiled programs, the pretrained models) live, and what
happens when they cannot: one user cache folder for both (`_caches.user_cache_dir`), never a
folder named `~` in the working directory, an unusable default folder only warns (the caches save
time, nothing more), a folder the user named explicitly that cannot be used is still refused,
naming it. Also the `hypergrad` command without scikit-learn, and `hypergrad --version`.

Read-only folders are simulated (the suite may run as root, whom chmod does not stop): a path
under a regular file, or `os.makedirs` raising PermissionError.
"""

import importlib.metadata
import os
import pwd
import subprocess
import sys

import jax
import numpy as np
import pytest

import hypergrad as hg
from hypergrad import _caches, cli
from hypergrad.problems import pretrained as pre

TEMPLATE = {"w": np.zeros(3, np.float32)}


def _build(calls):
    def build():
        calls.append(1)
        return {"w": np.arange(3, dtype=np.float32)}
    return build


@pytest.fixture
def no_cache_settings(monkeypatch, tmp_path):
    """No cache variable set (conftest turns the compilation cache off), the working directory an
    empty temporary folder, and JAX's cache folder restored afterwards."""
    for name in (_caches.ENV_VAR, pre.CACHE_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = jax.config.jax_compilation_cache_dir
    yield cwd
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture
def no_home(monkeypatch, no_cache_settings):
    """HOME unset and no password entry for this user: `os.path.expanduser('~')` returns '~'."""
    monkeypatch.delenv("HOME", raising=False)

    def missing(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", missing)
    assert os.path.expanduser("~") == "~"
    return no_cache_settings


def test_a_tilde_or_a_relative_xdg_cache_home_is_read_alike_by_both_caches(no_cache_settings, monkeypatch, tmp_path):
    # XDG_CACHE_HOME="~/c" (a Dockerfile ENV): the pretrained cache wrote into ./~/c/hypergrad/pretrained
    # while the compilation cache used $HOME/c; a relative XDG_CACHE_HOME put a cache in every cwd.
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", "~/c")
    assert pre.cache_dir() == str(home / "c" / "hypergrad" / "pretrained")
    assert _caches.default_compilation_cache_dir() == str(home / "c" / "hypergrad" / "jax")
    assert _caches.user_cache_dir() == str(home / "c")
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")  # ignored, as the XDG specification says
    assert pre.cache_dir() == str(home / ".cache" / "hypergrad" / "pretrained")
    assert _caches.default_compilation_cache_dir() == str(home / ".cache" / "hypergrad" / "jax")


def test_without_a_home_neither_cache_writes_a_tilde_folder(no_home, monkeypatch):
    # HOME unset and no passwd entry (docker run -u 12345): both caches went to <cwd>/~/.cache/hypergrad
    cwd = no_home
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(UserWarning, match=r"compilation cache is off: no home folder.*set HYPERGRAD_COMPILATION_CACHE"):
        assert hg.use_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    calls = []
    with pytest.warns(UserWarning, match=r"pretrained cache: no home folder.*without being cached.*HYPERGRAD_CACHE"):
        params = pre.cached_params("tiny", {"k": 1}, TEMPLATE, _build(calls))
    assert calls == [1] and np.array_equal(params["w"], np.arange(3))
    monkeypatch.setenv(_caches.ENV_VAR, "~/jax")  # named explicitly: refused, naming the variable
    with pytest.raises(ValueError, match=r"HYPERGRAD_COMPILATION_CACHE='~/jax': no home folder to expand '~'"):
        hg.use_compilation_cache()
    assert list(cwd.iterdir()) == []
    assert _caches.user_cache_dir() is None and pre.cache_dir() is None


@pytest.mark.parametrize("blocked", ["under a file", "permission"])
def test_an_unwritable_pretrained_cache_warns_and_uses_the_model(no_cache_settings, monkeypatch, tmp_path, blocked):
    # digits-finetune pretrained for 6 s, then died of NotADirectoryError / OSError in save_params
    a_file = tmp_path / "afile"
    a_file.write_text("")
    folder = a_file / "cache"
    if blocked == "permission":
        folder = tmp_path / "readonly-home" / "cache"

        def refused(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(os, "makedirs", refused)
    calls = []
    with pytest.warns(UserWarning, match=r"pretrained cache: .*cache.*cannot be written.*HYPERGRAD_CACHE") as caught:
        params = pre.cached_params("tiny", {"k": 1}, TEMPLATE, _build(calls), folder)
    assert len(caught) == 1 and calls == [1] and np.array_equal(params["w"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "cwd"]


def test_digits_transfer_with_an_unwritable_cache_is_built_uncached(no_cache_settings, tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("")
    with pytest.warns(UserWarning, match="cannot be written"):
        problem = pre.digits_transfer(2, hidden=(4,), pretrain_steps=1, cache=a_file / "cache")
    assert problem.name == "digits-transfer-2shot"


def test_an_unusable_default_compilation_cache_warns_and_the_command_runs_on(no_cache_settings, monkeypatch, tmp_path,
                                                                           capsys):
    # HOME read-only and no setting: exit 2 with "HYPERGRAD_COMPILATION_CACHE=None: the folder cannot be created"
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    default = str(home / ".cache" / "hypergrad" / "jax")
    before = jax.config.jax_compilation_cache_dir
    match = rf"its default folder '{default}' lies under .*set HYPERGRAD_COMPILATION_CACHE"
    with pytest.warns(UserWarning, match=match):
        assert hg.use_compilation_cache() is None
    cli._use_compilation_cache()  # no SystemExit
    err = capsys.readouterr().err
    assert err.startswith("hypergrad compare: warning: the persistent compilation cache is off") and default in err, err
    assert "None" not in err and len(err.splitlines()) == 1, err
    assert jax.config.jax_compilation_cache_dir == before


def test_a_named_folder_that_cannot_be_created_is_refused_naming_it(no_cache_settings, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "ro" / "jax"

    def refused(path, *args, **kwargs):
        raise PermissionError(30, "Read-only file system", path)

    monkeypatch.setattr(os, "makedirs", refused)
    monkeypatch.setenv(_caches.ENV_VAR, str(folder))
    with pytest.raises(SystemExit) as exit_:
        cli._use_compilation_cache()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"HYPERGRAD_COMPILATION_CACHE='{folder}': the folder '{folder}' cannot be created (Read-only" in err, err


NO_SKLEARN = """
import sys
sys.modules["sklearn"] = None  # as if scikit-learn were not installed
from hypergrad import cli
for argv in (["--help"], ["--version"], ["compare", "--problem", "iris-mlp", "--out", sys.argv[1]]):
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    print(f"\\nexit {code}", flush=True)
    print(f"exit {code}", file=sys.stderr, flush=True)
"""


def test_the_command_without_scikit_learn_helps_and_says_what_to_install(tmp_path):
    # `hypergrad --help` died of ModuleNotFoundError: No module named 'sklearn' (cli.py's top-level import)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", NO_SKLEARN, str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYPERGRAD_COMPILATION_CACHE": "0"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: hypergrad" in proc.stdout and "exit 0\nhypergrad " in proc.stdout, proc.stdout
    assert proc.stdout.rstrip().endswith("exit 1"), proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "exit 1" and "pip install 'hypergrad[cli]'" in lines[-2], proc.stderr
    assert lines[-2].startswith("hypergrad compare: error: this command needs scikit-learn"), proc.stderr
    assert not out.exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hypergrad {importlib.metadata.version('hypergrad')}\n"
