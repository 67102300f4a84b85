"""Experiments use hypergrad's public API only (DESIGN.md): custom_nnx_model.py, the README's recipe for a
user's own model, imported hypergrad.cli.set_aside and estimator_quality.py hypergrad.search.evaluate_settings,
names no `__all__` lists; the earlier check caught only leading underscores (hunt-experiments finding 8).

The public API is what the package declares: `hypergrad.__all__`, and the `__all__` of its public modules
(those `hypergrad.__all__` names, online and problems, and the scikit-learn front end hypergrad.sklearn)."""

import ast
import importlib
import types

import hypergrad as hg
from _helpers import EXPERIMENTS as FOLDER

SCRIPTS = sorted(FOLDER.glob("*.py"))
PUBLIC_MODULES = {"hypergrad": hg, "hypergrad.sklearn": None,
                  **{f"hypergrad.{n}": getattr(hg, n) for n in hg.__all__ if isinstance(getattr(hg, n), types.ModuleType)}}


def public_names(module: str) -> set[str]:
    if PUBLIC_MODULES[module] is None:
        PUBLIC_MODULES[module] = importlib.import_module(module)
    module = PUBLIC_MODULES[module]  # a module's own dunder attributes (__file__, __version__) are public too
    return set(module.__all__) | {name for name in dir(module) if name.startswith("__") and name.endswith("__")}


def violations(source: str) -> list[str]:
    """Every use of a hypergrad name outside the public API in `source`: `from M import x` or `import M`
    with M not a public module or x not in its `__all__`, and `alias.x` for an alias of a public module."""
    found, aliases = [], {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != "hypergrad":
                    continue
                if a.name not in PUBLIC_MODULES:
                    found.append(f"{node.lineno}: import {a.name}")
                else:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hypergrad":
            if node.module not in PUBLIC_MODULES:
                found.append(f"{node.lineno}: from {node.module} import ...")
                continue
            for a in node.names:
                target = f"{node.module}.{a.name}"
                if target in PUBLIC_MODULES:
                    aliases[a.asname or a.name] = target
                elif a.name not in public_names(node.module):
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):  # hg.x and hg.problems.x: each step a public name
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if node.attr not in public_names(module):
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
            elif f"{module}.{node.attr}" in PUBLIC_MODULES:
                aliases.setdefault(f"{node.value.id}.{node.attr}", f"{module}.{node.attr}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases):
            chain = f"{node.value.value.id}.{node.value.attr}"
            module = PUBLIC_MODULES.get(f"{aliases[node.value.value.id]}.{node.value.attr}") and \
                f"{aliases[node.value.value.id]}.{node.value.attr}"
            if module and node.attr not in public_names(module):
                found.append(f"{node.lineno}: {chain}.{node.attr}")
    return found


def test_the_checker_catches_each_way_of_reaching_a_private_name():
    source = ("import hypergrad as hg\nfrom hypergrad.cli import set_aside\nfrom hypergrad.search import "
              "evaluate_settings, run_flops\nfrom hypergrad import tune, Objective\nfrom hypergrad.online import sgd_hd\n"
              "import hypergrad.search\nhg.search\nhg.problems.ridge\nhg.problems.not_a_public_name\nhg.tune\n")
    assert [v.split(": ", 1)[1] for v in violations(source)] == [
        "from hypergrad.cli import ...", "from hypergrad.search import ...", "import hypergrad.search",
        "hg.search", "hg.problems.not_a_public_name"]


def test_experiments_use_only_the_public_api():
    bad = {script.name: violations(script.read_text()) for script in SCRIPTS}
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}
