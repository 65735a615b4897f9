"""The shape of the package, walked from its source: data flows one way, the analytic model runs
nothing, and the modules every process loads stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "llmcomm_tests"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node, less what sits under ``if TYPE_CHECKING:`` (never imported when the code runs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs, at the top or inside a function (resolved, absolute)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` names a module
    return found


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def reachable(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# The floors, bottom up (the package docstring says what each holds).  A module imports from its
# own floor and the floors below, never above: data flows one way.
FLOORS = (
    ("core",),
    ("engine", "analytic", "spec"),
    ("runtime", "frameworks"),
    ("calibration",),
    ("judging", "report"),
    ("suite",),
    ("commands",),
)
FLOOR_OF = {folder: level for level, folders in enumerate(FLOORS) for folder in folders}


def floor(name: str) -> int | None:
    """The floor of module ``name``; None for the package root (``llmcomm_tests`` itself)."""
    parts = name.split(".")
    return FLOOR_OF[parts[1]] if len(parts) > 1 else None


def test_every_module_lives_on_a_floor():
    homeless = sorted(n for n in MODULES if n != "llmcomm_tests" and n.split(".")[1] not in FLOOR_OF)
    assert not homeless, f"modules outside the floors {FLOORS}: {homeless}"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} (floor {floor(name) + 1}) imports {target} (floor {floor(target) + 1})"
                  for name, targets in graph.items() if floor(name) is not None
                  for target in targets if floor(target) is not None and floor(target) > floor(name))


def test_no_import_climbs_a_floor():
    climbs = upward_imports(GRAPH)
    assert not climbs, "imports that climb:\n" + "\n".join(climbs)


def test_the_floor_rule_catches_a_planted_upward_import():
    planted = dict(GRAPH)
    planted["llmcomm_tests.core.stats"] = GRAPH["llmcomm_tests.core.stats"] | {"llmcomm_tests.judging.checks"}
    assert upward_imports(planted) == ["llmcomm_tests.core.stats (floor 1) imports llmcomm_tests.judging.checks (floor 5)"]


RUNTIME = {n for n in MODULES if floor(n) is not None and floor(n) >= FLOOR_OF["runtime"]}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("llmcomm_tests.analytic")))
def test_the_analytic_model_runs_nothing(name):
    """analytic/ imports neither torch nor the launcher, the recorder or the measurement code."""
    direct = imports_of(MODULES[name])
    assert not {m for m in direct if m.split(".")[0] == "torch"}, f"{name} imports torch"
    assert not (reachable(name) | {name}) & RUNTIME, f"{name} reaches {sorted(reachable(name) & RUNTIME)}"


def test_the_checker_below_catches_a_planted_cycle_and_a_planted_import(tmp_path, monkeypatch):
    """The two checks above can fail: a module importing its importer is a cycle; analytic
    importing the recorder is refused."""
    planted = dict(GRAPH)
    planted["llmcomm_tests.core.contract"] = GRAPH["llmcomm_tests.core.contract"] | {"llmcomm_tests.judging.checks"}
    planted["llmcomm_tests.analytic.latency"] = GRAPH["llmcomm_tests.analytic.latency"] | {"llmcomm_tests.runtime.recorder"}
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", planted)
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_import_graph_has_no_cycle()
    with pytest.raises(AssertionError, match="reaches"):
        test_the_analytic_model_runs_nothing("llmcomm_tests.analytic.latency")


@pytest.mark.parametrize("module", ["llmcomm_tests.suite.plugin", "llmcomm_tests.spec", "llmcomm_tests.analytic.e2e",
                                    "llmcomm_tests.core.documents", "llmcomm_tests.core.contract", "llmcomm_tests.judging.baseline",
                                    "llmcomm_tests.report.html", "llmcomm_tests.commands", "llmcomm_tests.core.units",
                                    "llmcomm_tests.runtime.run_config", "llmcomm_tests.suite.items",
                                    "llmcomm_tests.suite.case_run", "llmcomm_tests.frameworks.registry"])
def test_modules_load_without_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
