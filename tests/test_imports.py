"""What ``import dtaskq`` costs: the client API only, not the worker runtime nor the demo's
terminal UI, checked in a fresh interpreter; and how the worker's modules import each other."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import dtaskq.worker


def modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter once ``code`` has run."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


HEAVY = ("rich", "dtaskq.worker", "dtaskq.cli", "dtaskq.demo", "dtaskq.demo_provider")


def heavy(modules: set[str]) -> set[str]:
    """The modules of ``modules`` that belong to one of HEAVY (a package or its parts)."""
    return {m for m in modules for h in HEAVY if m == h or m.startswith(f"{h}.")}


def test_import_dtaskq_loads_neither_the_worker_nor_rich() -> None:
    loaded = modules_after("import dtaskq")
    assert "dtaskq.client" in loaded
    assert heavy(loaded) == set()


def test_the_worker_loads_when_first_used() -> None:
    loaded = modules_after("import dtaskq\nassert dtaskq.Worker.__name__ == 'Worker'")
    assert "dtaskq.worker.runtime" in loaded
    assert {m for m in heavy(loaded) if not m.startswith("dtaskq.worker")} == set()


def test_the_pytest_plugin_loads_what_import_dtaskq_does_and_no_more() -> None:
    # pytest imports the plugin in every session of every project installed next to dtaskq.
    plain = modules_after("import dtaskq")
    loaded = modules_after("import dtaskq.testing.plugin")
    assert heavy(loaded) == set()
    assert {m for m in loaded - plain if m.startswith("dtaskq")} == {
        "dtaskq.testing",
        "dtaskq.testing.plugin",
    }


def test_the_worker_modules_import_each_other_without_a_cycle() -> None:
    package = Path(dtaskq.worker.__file__).parent
    modules = {path.stem for path in package.glob("*.py")} - {"__init__"}
    imports: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((package / f"{name}.py").read_text())
        found = {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        imports[name] = found & modules

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for name in imports[start] - seen:
            if name == goal or reaches(name, goal, seen | {name}):
                return True
        return False

    assert [name for name in sorted(modules) if reaches(name, name, set())] == []
