"""How the coordinator's code is laid out, held by its source: job and step states change in one
module (``app.lifecycle``), and the ledger's modules import each other one way only
(``app.ledger.batch`` hands notices to ``app.registry``, which never imports the batch back)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.grid import ROOT


def _app_files() -> list[Path]:
    return sorted((ROOT / "app").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The ``app`` modules a file imports (``from app.ledger import batch`` names app.ledger.batch)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "app"}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_job_and_step_states_change_only_in_the_lifecycle_module():
    files = _app_files()
    assert ROOT / "app" / "lifecycle.py" in files

    assignments = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in files
        if path.name != "lifecycle.py" or path.parent != ROOT / "app"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        for element in (target.elts if isinstance(target, ast.Tuple) else [target])
        if isinstance(element, ast.Attribute) and element.attr == "state"
    ]

    assert assignments == [], "set a job's or a step's state through app.lifecycle"


#: Where jobs, steps and the ledger's records are handled: none of these is part of an import cycle.
LEDGER_SIDE = ("app.ledger.", "app.registry", "app.lifecycle", "app.jobs", "app.api.work")


def test_the_ledger_s_modules_import_each_other_without_a_cycle():
    # Packages left out: ``app`` builds the application from every module, as it should.
    modules = {_module(path): path for path in _app_files() if path.name != "__init__.py"}
    assert {"app.ledger.batch", "app.ledger.executions", "app.registry", "app.lifecycle"} <= set(modules)
    graph = {
        name: {imported for imported in _imports(path) if imported in modules and imported != name}
        for name, path in modules.items()
    }
    # Lazy imports inside functions count too: a cycle is a cycle, whenever it closes.
    cycles = set()
    for start in graph:
        if not start.startswith(LEDGER_SIDE):
            continue
        stack = [(start, (start,))]
        while stack:
            current, path = stack.pop()
            for following in graph[current]:
                if following == start:
                    cycles.add(" -> ".join((*path, start)))
                elif following not in path:
                    stack.append((following, (*path, following)))

    assert sorted(cycles) == []
