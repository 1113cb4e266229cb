"""The trainer core depends only on numpy, torch, the standard library and itself. The adapters to the rest
of the project (whose package layout is allowed to move) are named: `data.py` turns a workspace, the store
and the settings into arrays; `jobs.py` is the job behind `coldlabel train` (settings, errors, results
directories); `report.py` renders stored results with matplotlib and the labeler's run figures."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[1] / "trainer"
ALLOWED = {"numpy", "torch", "trainer"} | set(sys.stdlib_module_names)
ADAPTERS = {"data.py", "jobs.py", "report.py"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_only_the_adapter_imports_project_code():
    modules = sorted(TRAINER.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        foreign = _imports(path) - ALLOWED
        if path.name in ADAPTERS:
            assert foreign, f"the adapter {path.name} is expected to import the project's modules"
        else:
            assert not foreign, f"{path.name} imports {sorted(foreign)}; route it through trainer/data.py"
        assert len(path.read_text().splitlines()) <= 400, f"{path.name} is over 400 lines"
