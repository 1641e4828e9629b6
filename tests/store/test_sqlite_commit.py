"""A COMMIT SQLite refuses (a deferred constraint fails at COMMIT, as a busy database can) must not leave
its transaction open: SQLite keeps it open after such a failure, so every later change of the control
plane would fail ("cannot start a transaction within a transaction") or join the dead one.
(PostgreSQL's failing COMMIT is covered in tests/control/test_audited_changes.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.store.base import Consumer, StoreError
from fastgw.store.sqlite import SQLiteStore


def consumer(cid: str, name: str) -> Consumer:
    return Consumer(id=cid, name=name, team="", roles=(), metadata={}, created=1.0)


def test_a_commit_sqlite_refuses_is_rolled_back_and_the_store_takes_the_next_change(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    store.add_consumer(consumer("c_1", "acme"))
    db = store._db  # the store's own connection: foreign keys are a per-connection setting
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
