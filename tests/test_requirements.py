"""Every library the code imports directly is pinned, so a Space builds what was tested."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = {"chatlib", "ui", "tests", "bench", "app", "_harness"}


def _imported_top_level(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - LOCAL - set(sys.stdlib_module_names) - {"__future__"}


def _pinned(*files: str) -> set[str]:
    pins: set[str] = set()
    for name in files:
        for line in (REPO / name).read_text(encoding="utf-8").splitlines():
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==", line.strip())
            if match:
                pins.add(match[1].lower().replace("_", "-"))
    return pins


def _distributions(module: str) -> set[str]:
    found = importlib.metadata.packages_distributions().get(module, [])
    return {name.lower().replace("_", "-") for name in found}


def test_every_runtime_import_is_pinned_in_requirements() -> None:
    code = [REPO / "app.py", *(REPO / "chatlib").rglob("*.py"), *(REPO / "ui").rglob("*.py")]
    pinned = _pinned("requirements.txt")
    missing = {m for m in _imported_top_level(code) if not _distributions(m) & pinned}
    assert not missing, f"imported but not pinned in requirements.txt: {sorted(missing)}"


def test_every_test_and_bench_import_is_pinned() -> None:
    code = [*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    pinned = _pinned("requirements.txt", "requirements-dev.txt")
    missing = {m for m in _imported_top_level(code) if not _distributions(m) & pinned}
    assert not missing, f"imported but not pinned: {sorted(missing)}"
