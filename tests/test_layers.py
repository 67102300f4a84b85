"""The shape of the code, read with `ast`: short functions (at most 60 lines besides the
docstring), layers that only import downwards, no private name crossing modules, no import hidden
inside a function (save the optional extras), benchmarks sharing one helper module.

The allow-lists name what is still pending; shrink them as the code is rewritten, never grow them
without a reason written beside the entry.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hypergrad"
MAX_LINES = 60

# Optional extras imported lazily, so that `import hypergrad` works without them.
LAZY_EXTRAS = {"matplotlib", "pandas", "optuna", "sklearn"}

# (file relative to hypergrad/, qualified function name): why it is still over MAX_LINES.
LONG_PENDING: dict[tuple[str, str], str] = {}

# (file, function, imported module): why the import still sits inside the function.
INNER_IMPORT_PENDING: dict[tuple[str, str, str], str] = {}

# (file, imported private name): why a private name still crosses modules.
PRIVATE_PENDING: dict[tuple[str, str], str] = {}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        name = "hypergrad." + rel[:-3].replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield rel, name, ast.parse(path.read_text(), filename=str(path))


MODULES = list(_modules())
NAMES = {name for _, name, _ in MODULES}


def _functions(tree):
    """(qualified name, node) of every function, methods as Class.method, nested as outer.inner."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def _absolute(node: ast.ImportFrom, module: str, rel: str) -> str:
    """The absolute module of a `from ... import` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if rel.endswith("__init__.py") else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_modules(node, module: str, rel: str) -> list[str]:
    """The modules an import statement loads (for `from p import m`, p.m when m is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = _absolute(node, module, rel)
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in NAMES else source for a in node.names]


def _code_lines(node) -> int:
    """Lines of a function, signature included, its docstring not: a public function documents every
    argument (Google style), and that prose is wanted however long it is."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_functions_are_short():
    found = {}
    for rel, _, tree in MODULES:
        for qualname, node in _functions(tree):
            lines = _code_lines(node)
            if lines > MAX_LINES:
                found[(rel, qualname)] = lines
    over = {k: v for k, v in found.items() if k not in LONG_PENDING}
    assert not over, f"functions over {MAX_LINES} lines of code (split them into named helpers): {over}"
    done = [k for k in LONG_PENDING if k not in found]
    assert not done, f"no longer long: remove from LONG_PENDING: {done}"


def test_no_import_inside_a_function():
    found = set()
    for rel, module, tree in MODULES:
        for qualname, node in _functions(tree):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    for target in _imported_modules(inner, module, rel):
                        if target.split(".")[0] not in LAZY_EXTRAS:
                            found.add((rel, qualname, target))
    hidden = found - set(INNER_IMPORT_PENDING)
    assert not hidden, f"imports inside functions (move them to the top; break a cycle by layering): {hidden}"
    done = [k for k in INNER_IMPORT_PENDING if k not in found]
    assert not done, f"no longer hidden: remove from INNER_IMPORT_PENDING: {done}"


def test_no_private_name_crosses_modules():
    found = set()
    for rel, module, tree in MODULES:
        aliases = {}  # local name -> hypergrad module imported whole
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, module, rel)
                if not source.startswith("hypergrad"):
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in NAMES:  # a module, private ones included
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif alias.name.startswith("_") and source != module:
                        found.add((rel, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("hypergrad") and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != module
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.add((rel, f"{aliases[node.value.id]}.{node.attr}"))
    crossing = found - set(PRIVATE_PENDING)
    assert not crossing, ("private names used across modules (make them public names of their module, or move "
                          f"shared helpers into a private module such as _checks.py or _tree.py): {crossing}")
    done = [k for k in PRIVATE_PENDING if k not in found]
    assert not done, f"no longer crossing: remove from PRIVATE_PENDING: {done}"


def _graph():
    """Module -> the hypergrad modules it imports at import time (module level)."""
    graph = {}
    for rel, module, tree in MODULES:
        edges = set()
        for node in tree.body:
            statements = [node]
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                statements = []  # annotations only: never imported at run time
            elif isinstance(node, (ast.If, ast.Try)):
                statements = list(ast.walk(node))
            for statement in statements:
                if isinstance(statement, (ast.Import, ast.ImportFrom)):
                    edges |= {t for t in _imported_modules(statement, module, rel)
                              if t in NAMES and t != module and not module.startswith(t + ".")}
        graph[module] = edges
    return graph


def test_no_import_cycle():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("lower,higher", [("hypergrad.results", "hypergrad.plots"),
                                          ("hypergrad.results", "hypergrad.report"),
                                          ("hypergrad.plots", "hypergrad.report")])
def test_results_are_data_and_plots_sit_above(lower, higher):
    graph = _graph()
    seen, todo = set(), [lower]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert higher not in seen, f"{lower} imports {higher} (directly or not): layers import downwards only"


def test_the_library_never_imports_experiments_or_benchmarks():
    for rel, module, tree in MODULES:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_modules(node, module, rel):
                    assert target.split(".")[0] not in ("experiments", "benchmarks", "tests"), (rel, target)


def test_benchmarks_share_one_helper_module():
    """Benchmark scripts import no other script, only the shared helpers `benchmarks/_common.py` and
    `benchmarks/_report.py` (report writing without jax, for parents that only start children), and
    edit `sys.path` only to reach an experiment they time (`python benchmarks/x.py` puts benchmarks/
    on it already)."""
    folder = PACKAGE.parent / "benchmarks"
    scripts = {path.stem for path in folder.glob("*.py")}
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                siblings = [n for n in names if n.split(".")[0] in scripts - {"_common", "_report"}]
                assert not siblings, f"{path.name} imports the script {siblings}: share it through _common.py"
        for line in text.splitlines():
            if "sys.path" in line and ("insert" in line or "append" in line):
                assert "experiments" in line, f"{path.name}: {line.strip()}"
