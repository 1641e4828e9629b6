"""The audit chain: every kind of tampering is found and named (edited, removed, reordered, truncated)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fastgw.audit import AuditLog, verify
from fastgw.store.sqlite import Store

KEY = b"k" * 32


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[tuple[AuditLog, Store, Path]]:
    store = Store(str(tmp_path / "fastgw.db"))
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), KEY, store)
    for i in range(6):
        log.append("reload", reason="SIGHUP", ok=True, snapshot=f"snap{i}")
    yield log, store, path
    store.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def check(path: Path, store: Store) -> str:
    result = verify(str(path), KEY, store.audit_anchor(str(path)))
    return "" if result.ok else result.problem


def test_intact_log_verifies_against_its_anchor(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    result = verify(str(path), KEY, store.audit_anchor(str(path)))
    assert result.ok and result.records == 6
    assert store.audit_anchor(str(path)) == (6, result.last_mac.hex())


def test_edited_record(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    content = lines(path)
    record = orjson.loads(content[2])
    record["ok"] = False
    content[2] = orjson.dumps(record) + b"\n"
    path.write_bytes(b"".join(content))
    assert check(path, store) == "line 3: seq 3: MAC does not match (edited)"


def test_edited_record_with_a_recomputed_mac_needs_the_key(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    content = lines(path)
    record = orjson.loads(content[1])
    record["snapshot"] = "forged"
    record["mac"] = "00" * 32  # an attacker without the key cannot produce the MAC
    content[1] = orjson.dumps(record) + b"\n"
    path.write_bytes(b"".join(content))
    assert "line 2: seq 2: MAC does not match" in check(path, store)


def test_removed_record(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    content = lines(path)
    del content[3]
    path.write_bytes(b"".join(content))
    assert check(path, store) == "line 4: seq 4..4 missing before seq 5 (removed)"


def test_swapped_records(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    content = lines(path)
    content[1], content[2] = content[2], content[1]
    path.write_bytes(b"".join(content))
    assert check(path, store) == "line 2: seq 3 where seq 2 was expected (reordered)"


def test_truncated_log(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    path.write_bytes(b"".join(lines(path)[:4]))
    assert check(path, store) == "truncated: the file ends at seq 4 but the store's anchor is seq 6"
    # Without the anchor, a clean cut at a record boundary is not detectable: that is what it is for.
    assert verify(str(path), KEY).ok


def test_garbage_line(audit: tuple[AuditLog, Store, Path]) -> None:
    _log, store, path = audit
    content = lines(path)
    content[0] = b"not json\n"
    path.write_bytes(b"".join(content))
    assert check(path, store) == "line 1: not an audit record (edited)"


def test_restart_continues_the_chain_and_keeps_damage_visible(
    audit: tuple[AuditLog, Store, Path],
) -> None:
    _log, store, path = audit
    again = AuditLog(str(path), KEY, store)
    again.append("start")
    assert verify(str(path), KEY, store.audit_anchor(str(path))).records == 7
    path.write_bytes(b"".join(lines(path)[:5]))  # someone cuts the tail...
    third = AuditLog(str(path), KEY, store)  # ...and the gateway restarts
    assert "truncated" in third.problem
    third.append("start")  # continues after the anchor, so the gap stays in the file
    assert "missing before seq 8 (removed)" in check(path, store)


def test_store_and_audit_log_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    """The database holds key digests and consumers; SQLite creates it 0644 less the umask and gives its
    -wal and -shm files the database's mode. Both it and the audit log are for the gateway's user only."""
    old = os.umask(0o022)
    try:
        store = Store(str(tmp_path / "state" / "fastgw.db"))
        try:
            log = AuditLog(str(tmp_path / "state" / "audit.log"), b"k" * 32, store)
            log.append("start")
            names = sorted(p.name for p in (tmp_path / "state").iterdir())
            assert names == ["audit.log", "fastgw.db", "fastgw.db-shm", "fastgw.db-wal"], names
            modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "state").iterdir()}
            assert modes == dict.fromkeys(names, 0o600), modes
        finally:
            store.close()
        # A database an older version left 0644 is tightened when opened.
        (tmp_path / "state" / "fastgw.db").chmod(0o644)
        Store(str(tmp_path / "state" / "fastgw.db")).close()
        assert (tmp_path / "state" / "fastgw.db").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
