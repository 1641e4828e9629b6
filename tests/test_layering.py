"""Import-boundary rules from STYLE.md, checked by parsing imports (aiohttp precedent)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fastgw"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        p = PKG / part
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")])
    return out


def test_core_and_codec_never_import_asyncio_server_or_config() -> None:
    for path in modules("codec", "exchange", "router", "snapshot", "proxy_headers"):
        bad = {
            m for m in imports_of(path) if m == "asyncio" or m.startswith(("fastgw.process", "fastgw.config"))
        }
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_config_never_imports_server_or_upstream_connection() -> None:
    for path in modules("config"):
        bad = {m for m in imports_of(path) if m.startswith(("fastgw.process", "fastgw.upstream.connection"))}
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_only_worker_imports_the_compiler_on_the_data_plane() -> None:
    # The supervisor validates configs (control plane; it never serves a request).
    for path in modules("proxy", "process", "upstream", "policy", "codec"):
        if path.name in ("worker.py", "supervisor.py"):
            continue
        assert "fastgw.config.compiler" not in imports_of(path), path


def test_policy_check_never_awaits() -> None:
    for path in modules("policy"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef) and node.name == "check":
                raise AssertionError(f"{path}: check() must be sync")


def test_only_the_store_imports_sqlite3() -> None:
    """Callers see the Store protocol and its rows, so another backend (PostgreSQL) needs no caller
    changes; sqlite3 and its errors stay inside fastgw/store/."""
    outside = [p for p in PKG.rglob("*.py") if p.parent != PKG / "store"]
    assert outside
    bad = [str(p.relative_to(PKG)) for p in outside if "sqlite3" in imports_of(p)]
    assert not bad, f"import sqlite3 outside fastgw/store/: {bad}"
