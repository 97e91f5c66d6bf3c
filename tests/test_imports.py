"""The import graph of ``s3_hf`` has no cycles, counting every kind of import between its modules.

Imports are read with :mod:`ast` (nothing is imported): module level, ``if TYPE_CHECKING:`` blocks, and imports
inside functions and methods all count, because a function-level import that closes a loop is a cycle in the design
even when it happens to work at run time. Only real packages are walked (folders with ``__init__.py``): the
``evaluate`` scripts under ``s3_hf/metrics/`` are loaded by path, not imported as ``s3_hf`` modules. Importing a
submodule is not counted as importing its parent package (Python runs ``s3_hf/__init__.py`` first either way).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import s3_hf

PACKAGE_DIR = Path(s3_hf.__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # "module", "type_checking" or "function"
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def package_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of a package and its subpackages (folders with ``__init__.py`` only)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        folders = [package_dir.joinpath(*relative.parts[:i]) for i in range(1, len(relative.parts))]
        if not all((folder / "__init__.py").is_file() for folder in folders):
            continue
        parts = [package, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]):
        self.module, self.is_package, self.modules = module, is_package, modules
        self.edges: list[Edge] = []
        self._functions = 0
        self._type_checking = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            self._add(submodule if submodule in self.modules else target, node.lineno)

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.modules:  # ``import s3_hf.tasks.x`` -> the deepest known module
            target = target.rpartition(".")[0]
        if target and target != self.module:
            kind = "function" if self._functions else "type_checking" if self._type_checking else "module"
            if not any(e.target == target and e.kind == kind for e in self.edges):  # first line of each kind
                self.edges.append(Edge(self.module, target, kind, line))


def import_graph(package_dir: Path, package: str) -> dict[str, list[Edge]]:
    """Every import between the modules of ``package`` (in ``package_dir``), by importing module."""
    modules = package_modules(package_dir, package)
    graph = {}
    for module, path in modules.items():
        collector = _ImportCollector(module, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[module] = collector.edges
    return graph


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """Cycles found by a depth-first walk, each as its edges (at least one per cyclic group); ``[]`` when acyclic."""
    cycles: list[list[Edge]] = []
    done: set[str] = set()
    stack: list[str] = []  # the modules of the current walk; path[i] goes from stack[i] to stack[i + 1]
    path: list[Edge] = []

    def visit(module: str) -> None:
        stack.append(module)
        for edge in graph.get(module, []):
            if edge.target in stack:
                cycles.append([*path[stack.index(edge.target) :], edge])
            elif edge.target not in done:
                path.append(edge)
                visit(edge.target)
                path.pop()
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return cycles


def _describe(cycles: list[list[Edge]]) -> str:
    return "\n".join("  " + "  |  ".join(str(edge) for edge in cycle) for cycle in cycles)


def test_s3_hf_import_graph_has_no_cycles():
    graph = import_graph(PACKAGE_DIR, "s3_hf")
    assert {"s3_hf", "s3_hf.tasks", "s3_hf.metrics", "s3_hf.qa", "s3_hf.testing.faults"} <= set(graph)
    assert not any(name.startswith("s3_hf.metrics.") for name in graph)  # the evaluate scripts are not modules
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in s3_hf:\n" + _describe(cycles)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("s3_hf.qa", "s3_hf.metrics"),
        ("s3_hf.report", "s3_hf.pipeline"),
        ("s3_hf.prompts", "s3_hf.tasks"),
        ("s3_hf.llm_config", "s3_hf.llm_engine"),
        ("s3_hf.generation", "s3_hf.llm_engine"),
        ("s3_hf.llm_wire", "s3_hf.llm_engine"),
    ],
)
def test_lower_module_does_not_import_the_higher_one(lower, higher):
    graph = import_graph(PACKAGE_DIR, "s3_hf")
    assert [str(e) for e in graph[lower] if e.target == higher] == []
    assert any(e.target == lower for e in graph[higher])  # the dependency goes the other way


def test_cycle_finder_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "scripts").mkdir()
    files = {
        "__init__.py": "from .a import A\n",
        "a.py": "from .b import B\nA = 1\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nB = 2\n",
        "c.py": "import pkg.sub.d\n",
        "sub/__init__.py": "",
        "sub/d.py": "def f():\n    from ..c import x\n",
        "e.py": "from . import f\n",
        "f.py": "import os\n",
        "scripts/tool.py": "from pkg.e import f\n",  # not a package folder: ignored
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package, "pkg")
    assert "pkg.scripts.tool" not in graph
    assert [str(e) for e in graph["pkg.e"]] == ["pkg.e -> pkg.f (module, line 1)"]
    cycles = find_cycles(graph)
    found = sorted(sorted((e.source, e.target, e.kind) for e in cycle) for cycle in cycles)
    assert found == [
        [("pkg.a", "pkg.b", "module"), ("pkg.b", "pkg.a", "type_checking")],
        [("pkg.c", "pkg.sub.d", "module"), ("pkg.sub.d", "pkg.c", "function")],
    ]
    (package / "b.py").write_text("B = 2\n")
    (package / "sub/d.py").write_text("def f():\n    import os\n")
    assert find_cycles(import_graph(package, "pkg")) == []
