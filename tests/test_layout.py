"""The code's shape, checked: no import circle in the package or the crate, no Python function
longer than a screen, and the package never imports itself from below."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "polars_curate"
SRC = ROOT / "src"
#: Lines of code a function may have (its docstring not counted).
MAX_LINES = 80


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (anywhere in it)."""
    modules: dict[str, Path | None] = {_module(p): p for p in PACKAGE.rglob("*.py")}
    modules["polars_curate._internal"] = None  # the compiled extension
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        if path is None:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from X import a`: the module X.a if there is one, else X.
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_circle_in_the_package():
    graph = _python_imports()
    assert len(graph) > 20
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_module_imports_the_package_from_below():
    graph = _python_imports()
    bad = sorted(m for m, deps in graph.items() if "polars_curate" in deps)
    assert bad == [], f"{bad} import polars_curate itself (its __init__ imports them)"


def test_no_python_function_over_a_screen():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if ast.get_docstring(node, clean=False) is not None:
                doc = node.body[0]
                lines -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def _rust_module(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return ["crate", *parts]


_USE = re.compile(r"^\s*use\s+((?:crate|super|self)(?:::\w+)*)", re.M)


def test_no_import_circle_in_the_crate():
    """``use`` edges between the crate's modules (``pub use`` re-exports are a module's face,
    not a dependency, and are left out)."""
    files = {tuple(_rust_module(p)): p for p in SRC.rglob("*.rs")}
    graph: dict[str, set[str]] = {"::".join(m): set() for m in files}
    for mod, path in files.items():
        text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests.*", "", path.read_text())
        here = list(mod) if path.stem in ("mod", "lib") else list(mod[:-1])
        for m in _USE.finditer(text):
            segs = m.group(1).split("::")
            where = here if segs[0] != "crate" else []
            for s in segs:
                if s == "super":
                    where = where[:-1]
                elif s == "self":
                    continue
                else:
                    where = [*where, s]
            while where and tuple(where) not in files:
                where = where[:-1]
            target = "::".join(where)
            if target and target != "::".join(mod):
                graph["::".join(mod)].add(target)
    assert len(graph) > 10
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
