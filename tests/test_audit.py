"""The audit chain: every kind of tampering is found and named (edited, removed, reordered, truncated)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fastgw.audit import AuditLog, audit_key, verify
from fastgw.snapshot import AuditSettings, StateSettings
from fastgw.store.base import AuditAnchor, Store
from fastgw.store.sqlite import SQLiteStore

KEY = b"k" * 32


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[tuple[AuditLog, Store, Path]]:
    store = SQLiteStore(str(tmp_path / "fastgw.db"))
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
    assert store.audit_anchor(str(path)) == AuditAnchor(str(path), 6, result.last_mac.hex())


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
        store = SQLiteStore(str(tmp_path / "state" / "fastgw.db"))
        try:
            log = AuditLog(str(tmp_path / "state" / "audit.log"), b"k" * 32, store)
            log.append("start")
            names = sorted(p.name for p in (tmp_path / "state").iterdir())
            assert names == ["audit.log", "fastgw.db", "fastgw.db-shm", "fastgw.db-wal"], names
            modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "state").iterdir()}
            assert modes == dict.fromkeys(names, 0o600), modes
        finally:
            store.close()
        # A database, audit log or audit key an older version (or an operator) left 0644 is tightened
        # when opened.
        (tmp_path / "state" / "fastgw.db").chmod(0o644)
        (tmp_path / "state" / "audit.log").chmod(0o644)
        (tmp_path / "state" / "audit.key").write_bytes(b"k" * 32)
        (tmp_path / "state" / "audit.key").chmod(0o644)
        store = SQLiteStore(str(tmp_path / "state" / "fastgw.db"))
        AuditLog(str(tmp_path / "state" / "audit.log"), b"k" * 32, store)
        state = StateSettings(dir=str(tmp_path / "state"), keep_configs=1, pid_file="")
        audit_key(AuditSettings(file="", key=None), state)
        store.close()
        for name in ("fastgw.db", "audit.log", "audit.key"):
            assert (tmp_path / "state" / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        os.umask(old)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "audit", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def gateway_state(tmp_path: Path) -> tuple[Path, Path]:
    """A config (state dir, audit key file) and the audit log a gateway with it wrote: 6 records."""
    state = tmp_path / "state"
    (tmp_path / "audit.key").write_bytes(KEY)
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[state]\ndir = "{state}"\n[audit]\nkey = {{ file = "{tmp_path / "audit.key"}" }}\n'
        '[[listeners]]\nbind = "127.0.0.1:1"\n[upstreams.b]\ntargets = ["127.0.0.1:2"]\n'
        '[[routes]]\nname = "r"\npath = "/"\nupstream = "b"\nauth = "none"\n'
    )
    store = SQLiteStore.in_state_dir(str(state))
    try:
        log = AuditLog(str(state / "audit.log"), KEY, store)
        for i in range(6):
            log.append("reload", snapshot=f"snap{i}")
    finally:
        store.close()
    return config, state / "audit.log"


def test_a_log_without_an_anchor_fails_unless_told(gateway_state: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = gateway_state
    assert _cli("verify", "--config", str(config)).returncode == 0
    copy = tmp_path / "audit.log.1"  # rotated or copied: the store has no anchor for this path
    copy.write_bytes(b"".join(lines(log)[:4]))  # ...and truncated
    out = _cli("verify", str(copy), "--config", str(config))
    assert out.returncode == 3 and "no anchor in the store" in out.stderr and "--no-anchor" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    chain_only = _cli("verify", str(copy), "--config", str(config), "--no-anchor")
    assert chain_only.returncode == 0 and "chain only" in chain_only.stdout


def test_an_exported_anchor_catches_truncation_with_the_store_rolled_back(
    gateway_state: tuple[Path, Path], tmp_path: Path
) -> None:
    config, log = gateway_state
    anchor = tmp_path / "elsewhere" / "anchor.json"
    anchor.parent.mkdir()
    out = _cli("anchor", "--export", str(anchor), "--config", str(config))
    assert out.returncode == 0, out.stderr
    fields = orjson.loads(anchor.read_bytes())
    assert fields["seq"] == 6 and fields["log"] == str(log) and len(fields["sig"]) == 64
    stdout = _cli("anchor", "--export", "-", "--config", str(config))  # for logger(1) or a webhook
    assert orjson.loads(stdout.stdout)["mac"] == fields["mac"]
    # The log goes on after the export: the anchor still holds (its record is in the file).
    store = SQLiteStore.in_state_dir(str(log.parent))
    try:
        AuditLog(str(log), KEY, store).append("start")
        # The attacker truncates the log and rolls the store's anchor row back to match.
        log.write_bytes(b"".join(lines(log)[:4]))
        store.set_audit_anchor(str(log), 4, orjson.loads(lines(log)[3])["mac"])
    finally:
        store.close()
    assert _cli("verify", "--config", str(config)).returncode == 0  # the state dir alone cannot tell
    caught = _cli("verify", "--config", str(config), "--anchor", str(anchor))
    assert caught.returncode == 1
    assert "truncated: the file ends at seq 4 but the exported anchor is seq 6" in caught.stdout
    # A copy of the truncated log (no store anchor for its path) is caught by the exported anchor alone.
    copy = tmp_path / "copy.log"
    copy.write_bytes(log.read_bytes())
    assert _cli("verify", str(copy), "--config", str(config), "--anchor", str(anchor)).returncode == 1


def test_an_exported_anchor_pins_history_even_against_the_key(
    gateway_state: tuple[Path, Path], tmp_path: Path
) -> None:
    """With the key, an attacker can rebuild a consistent chain, but not one through the exported MAC."""
    config, log = gateway_state
    anchor = tmp_path / "anchor.json"
    assert _cli("anchor", "--export", str(anchor), "--config", str(config)).returncode == 0
    copy = tmp_path / "copy.log"
    copy.write_bytes(log.read_bytes())
    ok = _cli("verify", str(copy), "--config", str(config), "--anchor", str(anchor))
    assert ok.returncode == 0 and "matches the exported anchor (seq 6)" in ok.stdout
    rewritten = tmp_path / "rewritten.log"
    store = SQLiteStore(str(tmp_path / "attacker.db"))
    try:
        forged = AuditLog(str(rewritten), KEY, store)
        for i in range(6):
            forged.append("reload", snapshot=f"other{i}")
    finally:
        store.close()
    out = _cli("verify", str(rewritten), "--config", str(config), "--anchor", str(anchor))
    assert out.returncode == 1 and "seq 6 differs from the exported anchor (edited)" in out.stdout
    # An edited anchor (moved back to seq 4 with that record's MAC) is refused by its signature.
    fields = orjson.loads(anchor.read_bytes())
    fields.update(seq=4, mac=orjson.loads(lines(log)[3])["mac"])
    anchor.write_bytes(orjson.dumps(fields))
    edited = _cli("verify", str(copy), "--config", str(config), "--anchor", str(anchor))
    assert edited.returncode == 1 and "signature does not match" in edited.stderr


def test_no_anchor_is_exported_for_a_damaged_log(gateway_state: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = gateway_state
    log.write_bytes(b"".join(lines(log)[:3]))
    out = _cli("anchor", "--export", str(tmp_path / "a.json"), "--config", str(config))
    assert out.returncode == 1 and "TAMPERED" in out.stderr and not (tmp_path / "a.json").exists()


def test_a_record_cut_short_by_a_crash_or_a_full_disk_is_removed_at_start_not_read_as_tampering(
    audit: tuple[AuditLog, Store, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """A last line without its newline (a full disk took part of it, or a crash mid-write) was kept: the
    next record was glued to it and verify said the file was edited, forever after."""
    _log, store, path = audit
    with path.open("ab") as fh:
        fh.write(b'{"seq":7,"time":"2026-12-07T00:00:00Z","event":"consumer.create","mac":"6f85')
    again = AuditLog(str(path), KEY, store)
    assert again.problem == ""
    again.append("start")
    assert check(path, store) == ""
    assert verify(str(path), KEY, store.audit_anchor(str(path))).records == 7
    assert "a last line cut short" in capfd.readouterr().err
