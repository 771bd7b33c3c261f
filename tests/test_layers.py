"""The package's imports form layers: no cycle, and no stage imports the daemon or the CLI.

Only imports that run when a module is loaded count: those at module level,
outside ``if TYPE_CHECKING:``. Imports inside functions are lazy on purpose
(heavy libraries, optional stages) and are where a lower layer may reach a
plugin without depending on it at load time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "device" / "microexpr"
#: The top layer: wiring and entry points. Nothing below may import these.
TOP = ("microexpr.service", "microexpr.cli", "microexpr.commands", "microexpr.__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(tree: ast.Module, here: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("microexpr"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".") if is_package else here.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                if module.startswith("microexpr"):
                    found.add(module)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = _load_time_imports(tree, name, path.name == "__init__.py")
        # "from microexpr import config" names a module, not the package's init
        graph[name] = {t for t in targets if t != name}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "microexpr" and not node.level:
                graph[name].discard("microexpr")
                graph[name].update(f"microexpr.{a.name}" for a in node.names if f"microexpr.{a.name}" in modules)
                if any(f"microexpr.{a.name}" not in modules for a in node.names):
                    graph[name].add("microexpr")
    return graph


def test_the_scan_sees_the_package() -> None:
    graph = _graph()
    assert "microexpr.service.daemon" in graph and "microexpr.mqtt.publisher" in graph
    assert "microexpr.outbox" in graph["microexpr.mqtt.publisher"]


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ re-exporting its own submodules is not a cycle
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


@pytest.mark.parametrize("top", TOP)
def test_no_stage_imports_the_top_layer(top: str) -> None:
    graph = _graph()
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if not name.startswith(TOP)
        for target in targets
        if target == top or target.startswith(top + ".")
    )
    assert not upward, "; ".join(upward)
