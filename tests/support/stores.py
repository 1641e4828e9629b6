"""Empty stores of either backend, for the tests of the store protocol: each call gives a store with no
rows, so a property test can start every example afresh."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg

from fastgw.store.base import Store
from fastgw.store.postgres import PostgresStore
from fastgw.store.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgres"]
ROW_TABLES = "audit_anchor, consumers, api_keys, quotas, provider_credentials, changes"


class StoreMaker:
    """``maker()`` opens a new empty store: a new SQLite file, or the test's PostgreSQL database emptied."""

    __test__ = False

    def __init__(self, backend: str, tmp_path: Path, dsn: str | None = None) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.dsn = dsn
        self.opened: list[Store] = []
        self._count = itertools.count()

    def __call__(self, node: str = "node-a") -> Store:
        self.close()  # a property test's previous example is done with its store
        if self.backend == "sqlite":
            store: Store = SQLiteStore(str(self.tmp_path / f"s{next(self._count)}" / "fastgw.db"))
        else:
            assert self.dsn is not None
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                if conn.execute("SELECT to_regclass('consumers')").fetchone() != (None,):
                    conn.execute(f"TRUNCATE {ROW_TABLES}")
            store = PostgresStore(self.dsn, node=node, connect_timeout=5)
        self.opened.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        """``store``'s database opened again (and migrated): ``store`` is closed first."""
        self.opened.remove(store)
        store.close()
        if isinstance(store, SQLiteStore):
            again: Store = SQLiteStore(store.path)
        else:
            assert self.dsn is not None and isinstance(store, PostgresStore)
            again = PostgresStore(self.dsn, node=store.node, connect_timeout=5)
        self.opened.append(again)
        return again

    def close(self) -> None:
        while self.opened:
            self.opened.pop().close()
