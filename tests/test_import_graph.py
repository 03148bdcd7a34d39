"""Inside mmaplog, subpackages import only downward and no module imports itself back.

The graph is read from the AST of every module, counting every import: at the top, inside
functions and under ``TYPE_CHECKING`` (a cycle a reader has to follow is a cycle, whether or
not Python executes it at import time).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mmaplog"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = (
    "mmaplog.errors",
    "mmaplog.storage",
    "mmaplog.version",  # the package version and the core in use
    "mmaplog.engine",
    "mmaplog.integrity",
    "mmaplog.runs",
    "mmaplog.query",  # selection, decoded tables, the Parquet/CSV dataset, SQL, run diff
    "mmaplog",  # the package root: the public re-exports
    "mmaplog.demo",
    "mmaplog.cli",
    "mmaplog.__main__",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every mmaplog module ``name`` imports, resolved to the most specific module."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one.
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer_of(module: str) -> int:
    best = -1
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + ".") and prefix != "mmaplog":
            best = i
    if best < 0 and module == "mmaplog":
        return LAYERS.index("mmaplog")
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(edges[node]):
            if colour[nxt] == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == white and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(edges):
        if colour[node] == white and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_belongs_to_a_layer():
    for name in all_modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{src} ({LAYERS[layer_of(src)]}) imports {dst} ({LAYERS[layer_of(dst)]})"
        for src, targets in graph().items()
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "\n".join(upward)


def test_mmaplog_has_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = find_cycle(edges)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_relative_and_submodule_imports_are_resolved(tmp_path):
    known = {"mmaplog.storage", "mmaplog.storage.layout", "mmaplog.storage.entry"}
    src = tmp_path / "__init__.py"
    src.write_text("from . import layout\nfrom mmaplog.storage.entry import Entry\n")
    assert imports_of("mmaplog.storage", src, known) == {
        "mmaplog.storage.layout",
        "mmaplog.storage.entry",
    }
