"""Versioned migrations: a database made by any earlier fastgw upgrades in place, keeping its rows; a new
one gets every step; ``fastgw store migrate --dry-run`` shows the SQL and changes nothing. Step 7 (a quota
row per run) runs on both backends here: the ``make_store`` fixture (tests/conftest.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fastgw.store import postgres, sqlite
from fastgw.store.base import ApiKey, AuditAnchor, Consumer, QuotaAdmission, QuotaBase, StoreError
from fastgw.store.migrations import MIGRATIONS
from fastgw.store.sqlite import SQLiteStore
from fastgw.store.tables import QUOTAS
from tests.support.stores import StoreMaker

# The schema exactly as the code before versioned migrations wrote it (fastgw/store/sqlite.py SCHEMA, then
# ADDED_COLUMNS' ALTER): no schema_migrations table.
OLD_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_anchor (log TEXT PRIMARY KEY, seq INTEGER NOT NULL, mac TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS consumers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " team TEXT NOT NULL, roles TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY,"
    " consumer_id TEXT NOT NULL REFERENCES consumers(id), prefix TEXT NOT NULL, digest BLOB NOT NULL UNIQUE,"
    " pepper_id TEXT NOT NULL, scopes TEXT NOT NULL, roles TEXT NOT NULL, routes TEXT, created REAL NOT NULL,"
    " expires REAL, revoked REAL, replaced_by TEXT)",
    "CREATE TABLE IF NOT EXISTS quotas (key_hash INTEGER NOT NULL, period INTEGER NOT NULL,"
    " limit_id TEXT NOT NULL, key TEXT NOT NULL, base INTEGER NOT NULL, run_id REAL NOT NULL,"
    " run INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (key_hash, period))",
    "ALTER TABLE consumers ADD COLUMN disabled REAL",
)


def old_database(path: Path) -> None:
    """A database as the previous release left it: WAL, its tables, a consumer, a key, an anchor."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in OLD_SCHEMA:
        db.execute(statement)
    db.execute(
        "INSERT INTO consumers VALUES ('c_1', 'acme', 'red', '[\"ops\"]',"
        ' \'{"limits": {"a": 5}}\', 1.0, 3.0)'
    )
    db.execute(
        "INSERT INTO api_keys VALUES ('k_1', 'c_1', 'fgw_abc', x'0102', 'p1', '[\"read\"]', '[]', '[\"r\"]',"
        " 2.0, 9.0, NULL, NULL)"
    )
    db.execute("INSERT INTO audit_anchor VALUES ('/var/log/audit.log', 7, 'ab')")
    db.commit()
    db.close()


def versions(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        db.close()


def test_a_database_from_before_versioned_migrations_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "fastgw.db"
    old_database(path)
    store = SQLiteStore(str(path))
    try:
        assert store.pending_migrations() == []
        assert store.consumers() == [
            Consumer(
                id="c_1",
                name="acme",
                team="red",
                roles=("ops",),
                metadata={"limits": {"a": 5}},
                created=1.0,
                disabled=3.0,
            )
        ]
        assert store.api_keys("c_1") == [
            ApiKey(
                id="k_1",
                consumer_id="c_1",
                prefix="fgw_abc",
                digest=b"\x01\x02",
                pepper_id="p1",
                scopes=("read",),
                roles=(),
                routes=("r",),
                created=2.0,
                expires=9.0,
            )
        ]
        assert store.audit_anchor("/var/log/audit.log") == AuditAnchor("/var/log/audit.log", 7, "ab")
    finally:
        store.close()
    assert versions(path) == [m.version for m in MIGRATIONS]
    SQLiteStore(str(path)).close()  # opening again runs nothing twice
    assert versions(path) == [m.version for m in MIGRATIONS]


def test_a_new_database_gets_every_step_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fastgw.db"
    store = SQLiteStore(str(path), migrate=False)
    try:
        assert [m.version for m in store.pending_migrations()] == [1, 2, 3, 5, 6, 7]
        assert [m.version for m in store.migrate()] == [1, 2, 3, 5, 6, 7]
        assert store.migrate() == []
        store.add_consumer(Consumer(id="c_1", name="a", team="", roles=(), metadata={}, created=1.0))
        assert store.consumer("a") == store.consumer("c_1") is not None
    finally:
        store.close()


def test_a_schema_newer_than_this_fastgw_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fastgw.db"
    SQLiteStore(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        SQLiteStore(str(path))


def test_database_errors_are_store_errors_and_a_transaction_rolls_back(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "fastgw.db"))
    acme = Consumer(id="c_1", name="acme", team="", roles=(), metadata={}, created=1.0)
    try:
        store.add_consumer(acme)
        with pytest.raises(StoreError, match="UNIQUE"):
            store.add_consumer(acme)
        with pytest.raises(RuntimeError), store.transaction():
            store.set_consumer_disabled("c_1", 5.0)
            with store.transaction():  # joins the outer one
                store.set_audit_anchor("log", 1, "ab")
            raise RuntimeError("abandon")
        assert store.consumer("c_1") == acme and store.audit_anchor("log") is None
    finally:
        store.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "store", "migrate", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_store_migrate_dry_run_shows_the_sql_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gw.toml"
    config.write_text(f'[state]\ndir = "{state}"\n')  # only [state] is read: no listener needed
    # No database yet: it shows every step and does not create one.
    out = _cli("--config", str(config), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "does not exist yet" in out.stdout and "CREATE TABLE IF NOT EXISTS consumers" in out.stdout
    assert "ALTER TABLE consumers ADD COLUMN disabled REAL;" in out.stdout
    assert not state.exists()
    # A database from before the disabled column: only step 2 would run, and a dry run leaves it as it was.
    state.mkdir()
    db = sqlite3.connect(state / "fastgw.db")
    for statement in OLD_SCHEMA[:-1]:
        db.execute(statement)
    db.close()
    out = _cli("--config", str(config), "--dry-run")
    assert out.returncode == 0, out.stderr
    # Step 1 is not recorded yet: all are pending.
    assert f"{len(MIGRATIONS)} migrations would run" in out.stdout
    assert (
        "-- migration 1: " in out.stdout and "ALTER TABLE consumers ADD COLUMN disabled REAL;" in out.stdout
    )
    db = sqlite3.connect(state / "fastgw.db")
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(consumers)")}
    finally:
        db.close()
    assert "schema_migrations" not in tables and "disabled" not in columns
    # The real run applies both; a second finds nothing to do.
    out = _cli("--config", str(config))
    applied = f"{len(MIGRATIONS)} migrations applied"
    assert out.returncode == 0 and applied in out.stdout, out.stdout + out.stderr
    assert versions(state / "fastgw.db") == [m.version for m in MIGRATIONS]
    assert (state / "fastgw.db").stat().st_mode & 0o777 == 0o600
    again = _cli("--config", str(config), "--dry-run")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_a_database_that_already_has_a_later_column_records_the_step_without_running_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fastgw.db"
    old_database(path)
    store = SQLiteStore(str(path), migrate=False)
    try:
        pending = store.pending_migrations()
        assert [(m.version, m.statements) for m in pending] == [
            (1, MIGRATIONS[0].statements),
            (2, ()),
            (3, MIGRATIONS[2].statements),
            *((m.version, m.statements) for m in MIGRATIONS[3:]),  # later steps, as they are
        ]
    finally:
        store.close()


# Quota rows as the one-row-per-key-and-period layout (before step 7) left them: key 7's base holds what
# runs before run 5.0 counted, key 8 was counted by run 6.0 alone.
OLD_QUOTA_ROWS = [(7, 3, "l", "k", 10, 5.0, 4, 50.0), (8, 3, "l", "j", 0, 6.0, 2, 60.0)]


def test_quota_rows_keep_their_totals_and_bases_through_the_step_to_a_row_per_run(
    make_store: StoreMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, name = (sqlite, "MIGRATIONS") if make_store.backend == "sqlite" else (postgres, "PG_MIGRATIONS")
    with monkeypatch.context() as patch:  # a database at schema version 6
        patch.setattr(module, name, tuple(m for m in getattr(module, name) if m.version <= 6))
        old = make_store()
        old.insert_rows(QUOTAS.name, QUOTAS.columns, OLD_QUOTA_ROWS)
        totals, bases = old.quota_counts(), {run: old.quota_bases(run, [3]) for run in (5.0, 6.0, 9.0)}
    assert [m.version for m in old.pending_migrations()] == [7]
    store = make_store.reopen(old)
    assert store.pending_migrations() == []
    assert store.quota_counts() == totals and {r: store.quota_bases(r, [3]) for r in bases} == bases
    assert [(c.key, c.count) for c in totals] == [("j", 2), ("k", 14)]
    assert set(bases[5.0]) == {QuotaBase(7, 3, 10), QuotaBase(8, 3, 2)}  # the migrated row is run 5.0's
    # Run 9.0 and the migrated row's run 5.0 count key 7 in turn: each row keeps its own run.
    store.add_quota_counts(9.0, [QuotaAdmission(7, 3, "l", "k", 1)], 70.0)
    store.add_quota_counts(5.0, [QuotaAdmission(7, 3, "l", "k", 2)], 71.0)
    assert QuotaBase(7, 3, 10 + 1) in store.quota_bases(5.0, [3])
    assert QuotaBase(7, 3, 10 + 4 + 2) in store.quota_bases(9.0, [3])
    assert [(c.key, c.count) for c in store.quota_counts()] == [("k", 17), ("j", 2)]
