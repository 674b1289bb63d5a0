"""The repository's structure as tests (issue #9): what a newcomer relies on when reading
the code, checked so it stays true.

* no import cycle among product modules (imports inside functions count: they hide an
  order, they do not remove it);
* no product module over 700 lines, no function over 60;
* one exception root per package: every exception class a package defines derives from
  its root, so `except PackageError` catches everything it raises on purpose;
* the product never imports the drill's world (`lab`), except `storebox drill` itself.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware", "failover", "payments_cache", "hw")
ROOTS = {"firmware": "firmware.errors.FirmwareError",
         "failover": "failover.errors.FailoverError",
         "payments_cache": "payments_cache.errors.PaymentsError",
         "hw": "hw.errors.HwError"}
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 60
#: The one product module allowed to import the lab: the CLI command that runs the drill.
LAB_IMPORTERS = {"firmware.cli.drill_cmd"}


def product_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


MODULES = product_modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` needs the module only
                module = f"{base}.{alias.name}"
                yield module if module in MODULES else base


def imports_of(module: str) -> set[str]:
    """The product modules `module` imports, anywhere in its body."""
    found = {_resolve(name) for name in _imported_names(module, MODULES[module])}
    found.discard(None)
    found.discard(module)
    return {name for name in found if name is not None}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_product_modules() -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert cycles(graph) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_lengths(module: str) -> None:
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, module
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def _root(package: str) -> type[BaseException]:
    module, _, name = ROOTS[package].rpartition(".")
    root = getattr(importlib.import_module(module), name)
    assert issubclass(root, Exception)
    return root  # type: ignore[no-any-return]


@pytest.mark.parametrize("package", PACKAGES)
def test_one_exception_root_per_package(package: str) -> None:
    root = _root(package)
    strays = []
    for module in (m for m in MODULES if m.split(".")[0] == package
                   and not m.endswith("__main__")):  # importing those runs them
        loaded = importlib.import_module(module)
        for name, obj in vars(loaded).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) \
                    and obj.__module__ == module and not issubclass(obj, root):
                strays.append(f"{module}.{name}")
    assert strays == []


def test_the_product_does_not_import_the_lab() -> None:
    importers = {module for module in MODULES
                 if any(name == "lab" or name.startswith("lab.")
                        for name in _imported_names(module, MODULES[module]))}
    assert importers <= LAB_IMPORTERS
