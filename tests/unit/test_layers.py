"""The import contracts of broker/ (pyproject's [tool.importlinter]) hold, and they can fail: a copy
of the package with one upward import (the API importing the dashboard), or with SQLAlchemy imported
by the case logic, breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def _copy_with(tmp_path: Path, module: str, line: str) -> None:
    """A copy of broker/ and the contracts in `tmp_path`, with `line` added to `module`."""
    shutil.copytree(ROOT / "broker", tmp_path / "broker",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "broker" / module
    path.write_text(path.read_text("utf-8") + f"\n{line}\n", "utf-8")


def test_the_layers_contract_is_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broker layers KEPT" in result.stdout
    assert "SQL only in broker.store KEPT" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    _copy_with(tmp_path, "http/routes.py", "import broker.dashboard.views  # upward")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broker layers BROKEN" in result.stdout
    assert "broker.http.routes -> broker.dashboard.views" in result.stdout


def test_sql_outside_the_store_breaks_the_contract(tmp_path: Path) -> None:
    _copy_with(tmp_path, "cases/replies.py", "import sqlalchemy  # SQL in the case logic")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SQL only in broker.store BROKEN" in result.stdout
    assert "broker.cases.replies -> sqlalchemy" in result.stdout
