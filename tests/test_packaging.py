"""Packaging: the sdist is the project's source, so `pytest` runs from it unpacked (before, it shipped every
tests/test_*.py but not conftest.py or _helpers.py, and 37 files failed to collect: "No module named
'_helpers'"), it ships the Apache-2.0 LICENSE that pyproject.toml's `license` names, and `hg.__version__` is the
installed distribution's version ("0+unknown" when hypergrad was never installed)."""

import importlib
import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import tarfile

import hypergrad as hg

ROOT = pathlib.Path(__file__).resolve().parent.parent
# what a checkout holds beside its source (a venv, git's data, outputs of local runs): never copied to the build
LOCAL_AT_ROOT = {".git", ".venv", "build", "dist", "results", ".pytest_cache", ".hypothesis"}
LOCAL_ANYWHERE = ("__pycache__", ".egg-info", ".pyc")
BUILD = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"


def source_only(folder, names):
    """shutil.copytree's `ignore`: the names under `folder` that are local state, not source."""
    at_root = pathlib.Path(folder).resolve() == ROOT
    return {n for n in names if (at_root and n in LOCAL_AT_ROOT) or n.endswith(LOCAL_ANYWHERE)}


def build_sdist(tmp_path):
    """The sdist of a copy of this tree (the build writes its egg-info into the tree it builds), with
    setuptools' own build backend, the one pyproject.toml names: the copy and the tarball's paths."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=source_only)
    done = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "dist")], cwd=src, capture_output=True,
                          text=True, timeout=300, check=False)
    # setuptools older than 77 rejects `license = "Apache-2.0"`: the test extra asks for setuptools>=77
    have = [d.version for d in importlib.metadata.distributions(name="setuptools")][:1]
    assert done.returncode == 0, f"setuptools {have}: " + done.stdout[-2000:] + done.stderr[-4000:]
    return src, tmp_path / "dist" / done.stdout.split()[-1]


def test_the_sdist_ships_the_tests_with_what_they_import_and_the_license(tmp_path):
    src, sdist = build_sdist(tmp_path)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
        top = sdist.name.removesuffix(".tar.gz")
    unpacked = tmp_path / "unpacked" / top
    shipped = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    # every Python file of the library, its tests, experiments and benchmarks, and the Makefile test_cli runs
    source = {p.relative_to(src).as_posix() for folder in ("hypergrad", "tests", "experiments", "benchmarks")
              for p in (src / folder).rglob("*.py")}
    needed = source | {"tests/conftest.py", "tests/_helpers.py", "Makefile", "LICENSE", "README.md", "pyproject.toml"}
    assert sorted(needed - shipped) == []
    assert [n for n in shipped if "__pycache__" in n or n.endswith((".pyc", ".log", ".partial.json"))] == []
    metadata = (unpacked / "PKG-INFO").read_text()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    license_text = (unpacked / "LICENSE").read_text()
    assert license_text == (src / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text and len(license_text.splitlines()) == 202
    # collected from the unpacked sdist: conftest.py and _helpers.py are found, and so are the experiments
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
                              "tests/test_cache_keys_more.py", "tests/test_experiments.py"], cwd=unpacked,
                             capture_output=True, text=True, timeout=300, check=False)
    assert collect.returncode == 0, collect.stdout[-4000:] + collect.stderr[-2000:]
    assert "test_experiments.py::test_experiment_smoke[online_lr.py]" in collect.stdout, collect.stdout[-4000:]


def test_version_is_the_installed_distributions():
    assert hg.__version__ == importlib.metadata.version("hypergrad")


def test_version_of_a_tree_never_installed_says_so(monkeypatch):
    # importlib.metadata finds no distribution named hypergrad, as for a source tree put on sys.path by hand;
    # reloading re-runs only hypergrad/__init__.py, whose submodules are already imported
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    try:
        assert importlib.reload(hg).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(hg)
    assert hg.__version__ == importlib.metadata.version("hypergrad")
