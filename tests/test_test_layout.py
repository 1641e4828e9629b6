"""How the tests are laid out: a helper two test modules share lives in tests/support/, never in a test
module or a conftest.py, so that no test depends on another test file and every helper has one home."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for each import in ``source``, the text of ``module``; relative
    imports are resolved against the module's package."""
    package = module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:  # from . import x: each name may be a module of the package
                    found.extend((node.lineno, ".".join([*base, alias.name])) for alias in node.names)
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def is_test_code(name: str) -> bool:
    """A module of the tests other than tests/support/: a test module or a conftest."""
    return (name == "tests" or name.startswith("tests.")) and not (
        name == "tests.support" or name.startswith("tests.support.")
    )


def test_test_code_imports_only_tests_support_from_the_tests() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imported_modules(path.read_text(), module_name(path))
        if is_test_code(name)
    ]
    assert not bad, "move the shared helper to tests/support/:\n" + "\n".join(bad)


def test_the_check_sees_absolute_and_relative_imports_of_test_code() -> None:
    source = (
        "import json\n"
        "from tests.e2e.test_admin import Admin\n"
        "def f():\n    from .test_tls import tls_config\n"
        "from .. import conftest\n"
        "from tests.support.admin import TOKEN\n"
        "from ..support import gateways\n"
    )
    names = [name for _, name in imported_modules(source, "tests.e2e.test_probe")]
    assert sorted(n for n in names if is_test_code(n)) == [
        "tests.conftest",
        "tests.e2e.test_admin",
        "tests.e2e.test_tls",
    ]
    assert "tests.support.admin" in names and "tests.support" in names  # both allowed
