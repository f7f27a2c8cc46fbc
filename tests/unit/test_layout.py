"""The layout holds: no test module imports another (shared code lives in tests/helpers/ or in
broker/devtools/harness), and production code never imports the dev tools."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
BROKER = ROOT / "broker"


def _imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in a module, `from a import b` giving a.b as well as a."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def _is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def test_no_test_module_imports_another() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted(TESTS.rglob("*.py"))
                 for line, name in _imported(path) if _is_test_module(name)]
    assert offenders == [], "move shared test code to tests/helpers/:\n" + "\n".join(offenders)


def test_the_check_sees_such_an_import(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("from tests.contract.test_delivery import post\nimport tests.conftest\n"
                      "from tests.helpers.support import post\n", "utf-8")
    assert [name for _line, name in _imported(module) if _is_test_module(name)] == [
        "tests.contract.test_delivery", "tests.conftest"]


def test_production_code_never_imports_devtools() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted(BROKER.rglob("*.py"))
                 if path.relative_to(BROKER).parts[0] not in ("devtools", "cli")
                 for line, name in _imported(path) if name.startswith("broker.devtools")]
    assert offenders == [], "\n".join(offenders)


def test_every_test_folder_is_a_package() -> None:
    """Tests import `tests.helpers.*`: each folder needs its __init__.py."""
    folders = {p.parent for p in TESTS.rglob("*.py")}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()) == []
