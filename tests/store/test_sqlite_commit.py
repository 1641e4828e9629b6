"""A COMMIT SQLite refuses (a deferred constraint fails at COMMIT, as a busy database can) must not leave
its transaction open: SQLite keeps it open after such a failure, so every later change of the control
plane would fail ("cannot start a transaction within a transaction") or join the dead one. Nor may a
ROLLBACK that fails too (a disk I/O error): the store closes that connection and opens a fresh one.
(PostgreSQL's failing COMMIT is covered in tests/control/test_audited_changes.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fastgw.store.base import ConflictError, Consumer, StoreError
from fastgw.store.sqlite import SQLiteStore


def consumer(cid: str, name: str) -> Consumer:
    return Consumer(id=cid, name=name, team="", roles=(), metadata={}, created=1.0)


def test_a_commit_sqlite_refuses_is_rolled_back_and_the_store_takes_the_next_change(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    store.add_consumer(consumer("c_1", "acme"))
    db = store._db  # the store's own connection: foreign keys are a per-connection setting
    assert db is not None
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TRIGGER doomed AFTER INSERT ON consumers WHEN NEW.name = 'doomed'"
        " BEGIN INSERT INTO child VALUES ('missing'); END;"
    )
    with pytest.raises(StoreError, match="FOREIGN KEY"), store.transaction():
        store.add_consumer(consumer("c_2", "doomed"))  # checked only at COMMIT
    assert not db.in_transaction
    assert [c.id for c in store.consumers()] == ["c_1"]  # undone
    with store.transaction():
        store.add_consumer(consumer("c_3", "after"))
    assert [c.id for c in SQLiteStore(str(tmp_path / "state.db")).consumers()] == ["c_1", "c_3"]
    store.close()


@contextmanager
def rollback_refused(db: sqlite3.Connection) -> Iterator[None]:
    """SQLite refuses every ROLLBACK on ``db`` for the block (its authorizer denies the statement: the
    connection stays inside its transaction, as when a ROLLBACK fails on a disk I/O error)."""
    refused = True

    def authorize(action: int, arg1: str | None, *_: object) -> int:
        if refused and action == sqlite3.SQLITE_TRANSACTION and arg1 == "ROLLBACK":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    db.set_authorizer(authorize)
    try:
        yield
    finally:
        refused = False


def others_can_write(path: Path) -> list[str]:
    """Another connection takes the write lock at once (the failed one holds none) and reads the ids."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return [row[0] for row in other.execute("SELECT id FROM consumers ORDER BY id")]
    finally:
        other.close()


@pytest.mark.parametrize(
    "spelling", ["{}", "/{}", "{}.d/../state.db"], ids=["plain", "double-slash", "dotdot"]
)
def test_a_rollback_that_fails_closes_the_connection_and_the_store_recovers(
    tmp_path: Path, spelling: str
) -> None:
    """The reopen goes to the same file however its path is spelt ("//x" was read as a URI authority)."""
    path = tmp_path / "state.db"
    (tmp_path / "state.db.d").mkdir()
    store = SQLiteStore(spelling.format(path))
    store.add_consumer(consumer("c_1", "acme"))
    failed = store._db
    assert failed is not None
    with rollback_refused(failed):
        # The block's own error is the one raised, not the ROLLBACK's.
        with pytest.raises(ConflictError, match="UNIQUE"), store.transaction():
            store.add_consumer(consumer("c_2", "doomed"))
            store.add_consumer(consumer("c_1", "again"))
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            failed.execute("SELECT 1")  # closed: what it wrote discarded, its write lock released
    assert others_can_write(path) == ["c_1"]
    # The database file goes away (unreadable): the next change fails, and creates no empty database.
    path.rename(tmp_path / "away.db")
    with pytest.raises(StoreError, match="cannot reopen the database"):
        store.add_consumer(consumer("c_3", "during"))
    assert not path.exists()
    # The fault clears: the next change opens a fresh connection and succeeds.
    (tmp_path / "away.db").rename(path)
    store.add_consumer(consumer("c_3", "after"))
    assert store._db is not failed
    assert others_can_write(path) == ["c_1", "c_3"]
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL, as on the first connection
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.consumers()


def test_a_failed_commit_whose_rollback_fails_too_raises_the_commits_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    failed = store._db
    assert failed is not None
    failed.execute("PRAGMA foreign_keys = ON")
    failed.executescript(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TRIGGER doomed AFTER INSERT ON consumers WHEN NEW.name = 'doomed'"
        " BEGIN INSERT INTO child VALUES ('missing'); END;"
    )
    with rollback_refused(failed), pytest.raises(StoreError, match="FOREIGN KEY"), store.transaction():
        store.add_consumer(consumer("c_1", "doomed"))  # checked only at COMMIT
    assert others_can_write(tmp_path / "state.db") == []
    with store.transaction():
        store.add_consumer(consumer("c_2", "after"))
    assert others_can_write(tmp_path / "state.db") == ["c_2"]
    store.close()
