"""The shape of ``gateway/``: wings that follow the data around a small kernel, without import cycles.

The import graph is read from the source with ``ast`` (every import: top level, inside functions,
under ``TYPE_CHECKING``), so a cycle hidden in a function body counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"

KERNEL = {"gateway", "gateway.models", "gateway.errors", "gateway.clock", "gateway.log", "gateway.mqtt_util",
          "gateway.broker", "gateway.systemd"}  # fmt: skip
# The runtime and the scenario runner wire every wing together. The runner is split in three:
# scenario_wire feeds wire steps through the ingest wing, scenario_expect reads alerts, pages,
# trails and visits back (gateway/scenario.py grew past what reads well as one file).
COMPOSERS = {"gateway.runtime", "gateway.scenario", "gateway.scenario_wire", "gateway.scenario_expect"}
FOUNDATION = ("site", "store")  # what the block is, and durability: below every feature
FEATURES = ("ingest", "alerts", "outputs", "care", "testmode", "cli", "web")
WINGS = FOUNDATION + FEATURES


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(GATEWAY.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``gateway`` modules one module imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # ``from gateway.cli import alerts`` imports the module gateway.cli.alerts.
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def wing_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_imports_inside_functions() -> None:
    # The check below is only as good as its reader: a function-level import must show up.
    edges = graph()
    assert "gateway.care.checkin" in edges["gateway.cli.app"]  # imported in cmd_visits_checkin
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_gateway() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


@pytest.mark.parametrize("wing", FOUNDATION)
def test_site_and_store_import_no_feature(wing: str) -> None:
    bad = sorted(
        f"{name} imports {dep}"
        for name, deps in graph().items()
        if wing_of(name) == wing
        for dep in deps
        if wing_of(dep) in FEATURES or dep in COMPOSERS
    )
    assert bad == []


def test_store_imports_no_site() -> None:
    # The store takes a path and bounds; it knows nothing of the block.
    bad = sorted(f"{n} imports {d}" for n, deps in graph().items() if wing_of(n) == "store" for d in deps
                 if wing_of(d) == "site")  # fmt: skip
    assert bad == []


def test_kernel_imports_only_kernel() -> None:
    bad = sorted(f"{n} imports {d}" for n, deps in graph().items() if n in KERNEL for d in deps if d not in KERNEL)
    assert bad == []


def test_every_module_is_in_the_kernel_a_wing_or_a_composer() -> None:
    loose = sorted(n for n in modules() if n not in KERNEL | COMPOSERS and wing_of(n) is None)
    assert loose == []


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_what_it_owns(wing: str) -> None:
    tree = ast.parse((GATEWAY / wing / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 8, f"gateway/{wing}/__init__.py needs an opening docstring"
