"""The embedded store: one SQLite database (WAL) in the state directory, written only by the control
process (the command line reads it, and ``fastgw store migrate`` may upgrade it).

It holds the audit anchor, consumers, API key digests, encrypted provider keys and quota counts behind
the ``Store`` protocol (store/base.py); opening it applies the pending migrations (store/migrations.py)
unless told not to. Every write is its own committed transaction unless grouped with ``transaction()``:
the control path is cold, durability matters more. This is the only module that imports sqlite3.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

from fastgw.store.base import (
    ApiKey,
    AuditAnchor,
    Batch,
    ChangeFeed,
    ConflictError,
    Consumer,
    Migration,
    ProviderCredential,
    QuotaAdmission,
    QuotaBase,
    QuotaCount,
    StoreError,
    UsageDelta,
    UsageQuery,
    UsageTotal,
)
from fastgw.store.migrations import MIGRATIONS
from fastgw.store.quota_sql import (
    COUNTS_SQL,
    add_counts_rows,
    add_counts_sql,
    bases_from,
    bases_sql,
    counts_from,
    forget_sql,
)
from fastgw.store.rows import (
    CONSUMER_COLUMNS,
    CREDENTIAL_COLUMNS,
    KEY_COLUMNS,
    consumer_row,
    consumer_values,
    credential_row,
    credential_values,
    key_changes,
    key_row,
    key_values,
)
from fastgw.store.table_sql import delete_before_sql, insert_rows_sql, replace_values_sql, select_rows_sql
from fastgw.store.usage_sql import claim_batch
from fastgw.store.usage_sql import select as usage_select
from fastgw.store.usage_sql import totals as usage_totals
from fastgw.store.usage_sql import upsert as usage_upsert
from fastgw.store.usage_sql import upsert_rows as usage_rows

FILE_NAME: Final = "fastgw.db"
PRIVATE: Final = 0o600  # key hashes, consumers, quota counts: for the gateway's user only
VERSIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " applied REAL NOT NULL)"
)


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite would create it 0644 less the umask,
    and gives its -wal and -shm files the database file's mode), and tighten one left looser."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE:
            os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(path + suffix, PRIVATE)
        except FileNotFoundError:
            pass


class SQLiteStore:
    """The ``Store`` protocol over one SQLite file.

    Raises:
        StoreError: from the constructor when the file cannot be opened or migrated (nothing is left
        half-applied: each migration is one transaction), and from every method on a database error."""

    def __init__(self, path: str, *, migrate: bool = True) -> None:
        self.path = path
        self.where = path  # for messages (Store.where)
        self._depth = 0  # nesting of transaction() blocks; only the outermost begins and commits
        # None after a failed ROLLBACK closed the connection (_roll_back): the next use opens a fresh one.
        self._db: sqlite3.Connection | None = None
        self._closed = False  # by close(): never reopened
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            _create_private(path)
            # One URI for the first open and every reopen: "file://" and an absolute path (an empty
            # authority, so a path that begins with "//" stays a path), mode=rw so that a reopen never
            # creates a new empty database where the file went away (_create_private made it here).
            self._uri = f"file://{quote(os.path.abspath(path))}?mode=rw"
            db = self._db = sqlite3.connect(
                self._uri, uri=True, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        try:
            self._run("PRAGMA journal_mode=WAL")  # kept in the file: a reopened connection finds it
            self._run("PRAGMA synchronous=FULL")
            self._check_known()
            if migrate:
                self.migrate()
        except StoreError:
            db.close()
            raise

    @classmethod
    def in_state_dir(cls, state_dir: str, *, migrate: bool = True) -> SQLiteStore:
        return cls(os.path.join(state_dir, FILE_NAME), migrate=migrate)

    # -- plumbing: every sqlite3 call goes through here, so its errors become StoreError ------------------
    def _connection(self) -> sqlite3.Connection:
        """The store's connection; after a failed ROLLBACK closed it, a fresh one to the same file, which
        must still be there (mode=rw: a database that went away is an error, never a new empty one)."""
        if self._db is not None:
            return self._db
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        try:
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot reopen the database: {exc}") from exc
        try:
            db.execute("PRAGMA synchronous=FULL")  # per connection
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"{self.path}: cannot reopen the database: {exc}") from exc
        self._db = db
        return db

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db = self._connection()
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise ConflictError(f"{self.path}: {exc}") from exc
            raise StoreError(f"{self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        db = self._connection()
        try:
            db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # IMMEDIATE takes the write lock at once, so two migrators (or writers) queue instead of one
        # failing at its first write.
        self._run("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._roll_back()  # the block's error is the one to report
            raise
        self._depth = 0
        try:
            self._run("COMMIT")
        except BaseException:
            # A COMMIT that fails busy, or on a deferred constraint, leaves the transaction open: every
            # later BEGIN would fail ("within a transaction") and later writes would join the dead one.
            self._roll_back()  # the COMMIT's error is the one to report
            raise

    def _roll_back(self) -> None:
        """End the transaction a failed block or COMMIT left open (SQLite ends some itself: a full disk);
        never raises, so the caller's error is the one reported. A ROLLBACK that fails too (a disk I/O
        error) would leave the connection inside the transaction, holding the write lock, and every later
        change would fail until a restart: the connection is closed instead (SQLite then discards what the
        transaction wrote and releases the lock), and the next use opens a fresh one (_connection), so the
        store recovers once the fault clears."""
        db = self._db
        if db is None or not db.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        if db.in_transaction:
            self._db = None
            with contextlib.suppress(sqlite3.Error):
                db.close()

    # -- migrations -------------------------------------------------------------------------------------
    def _applied(self) -> set[int]:
        if not self._run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"):
            return set()  # a new database, or one from before versioned migrations
        return {int(row[0]) for row in self._run("SELECT version FROM schema_migrations")}

    def _check_known(self) -> None:
        newer = self._applied() - {m.version for m in MIGRATIONS}
        if newer:
            raise StoreError(
                f"{self.path}: schema version {max(newer)} is newer than this fastgw knows"
                f" ({MIGRATIONS[-1].version}): upgrade fastgw, or restore a backup of the database"
            )

    def _has_column(self, table: str, column: str) -> bool:
        return column in {row[1] for row in self._run(f"PRAGMA table_info({table})")}

    def _present(self, migration: Migration) -> bool:
        """Whether the step's column is there already (a database from before versioned migrations)."""
        return migration.adds_column is not None and self._has_column(*migration.adds_column)

    def pending_migrations(self) -> list[Migration]:
        """A step whose effect is already present comes with no statements: it would only be recorded."""
        applied = self._applied()
        return [
            replace(m, statements=()) if self._present(m) else m
            for m in MIGRATIONS
            if m.version not in applied
        ]

    def migrate(self) -> list[Migration]:
        if not self.pending_migrations():
            return []  # the usual case: no write lock taken, so a reader beside the gateway never waits
        done = []
        for migration in MIGRATIONS:
            with self.transaction():
                self._run(VERSIONS_TABLE)
                if self._run("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
                    continue  # applied before, or by a concurrent migrator while we waited for the lock
                if not self._present(migration):
                    for statement in migration.statements:
                        self._run(statement)
                self._run(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
            done.append(migration)
        return done

    def close(self) -> None:
        self._closed = True
        if self._db is not None:
            self._db.close()

    def change_feed(self) -> ChangeFeed | None:
        """None: a SQLite store has one node, whose control process is its only writer."""
        return None

    # -- audit anchors ----------------------------------------------------------------------------------
    def audit_anchor(self, log: str) -> AuditAnchor | None:
        rows = self._run("SELECT seq, mac FROM audit_anchor WHERE log = ?", (log,))
        return AuditAnchor(log, int(rows[0][0]), str(rows[0][1])) if rows else None

    def set_audit_anchor(self, log: str, seq: int, mac: str) -> None:
        self._run(
            "INSERT INTO audit_anchor (log, seq, mac) VALUES (?, ?, ?) "
            "ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, mac = excluded.mac",
            (log, seq, mac),
        )

    # -- consumers and keys -----------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self._run(
            f"INSERT INTO consumers ({CONSUMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            consumer_values(consumer),
        )

    def consumers(self) -> list[Consumer]:
        return [
            consumer_row(r) for r in self._run(f"SELECT {CONSUMER_COLUMNS} FROM consumers ORDER BY created")
        ]

    def consumer(self, ref: str) -> Consumer | None:
        rows = self._run(
            f"SELECT {CONSUMER_COLUMNS} FROM consumers WHERE id = ? OR name = ? "
            "ORDER BY id = ? DESC, created LIMIT 1",
            (ref, ref, ref),
        )
        return consumer_row(rows[0]) if rows else None

    def set_consumer_disabled(self, consumer_id: str, disabled: float | None) -> None:
        self._run("UPDATE consumers SET disabled = ? WHERE id = ?", (disabled, consumer_id))

    def delete_consumer(self, consumer_id: str) -> None:
        with self.transaction():
            self._run("DELETE FROM api_keys WHERE consumer_id = ?", (consumer_id,))
            self._run("DELETE FROM consumers WHERE id = ?", (consumer_id,))

    def add_key(self, key: ApiKey) -> None:
        self._run(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            key_values(key),
        )

    def api_keys(self, consumer_id: str | None = None) -> list[ApiKey]:
        if consumer_id is None:
            rows = self._run(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created")
        else:
            rows = self._run(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE consumer_id = ? ORDER BY created", (consumer_id,)
            )
        return [key_row(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        rows = self._run(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return key_row(rows[0]) if rows else None

    def key_for_update(self, key_id: str) -> ApiKey | None:
        """transaction() began IMMEDIATE: this connection holds the write lock, so the row cannot change."""
        assert self._depth, "key_for_update belongs inside transaction()"
        return self.key(key_id)

    def consumer_for_update(self, ref: str) -> Consumer | None:
        assert self._depth, "consumer_for_update belongs inside transaction()"
        return self.consumer(ref)

    def update_key(self, key: ApiKey) -> None:
        self._run(
            "UPDATE api_keys SET scopes = ?, roles = ?, routes = ?, expires = ?, revoked = ?, replaced_by = ?"
            " WHERE id = ?",
            key_changes(key),
        )

    # -- provider credentials -------------------------------------------------------------------------
    def provider_credentials(self) -> list[ProviderCredential]:
        rows = self._run(f"SELECT {CREDENTIAL_COLUMNS} FROM provider_credentials ORDER BY provider")
        return [credential_row(r) for r in rows]

    def provider_credential(self, provider: str) -> ProviderCredential | None:
        rows = self._run(
            f"SELECT {CREDENTIAL_COLUMNS} FROM provider_credentials WHERE provider = ?", (provider,)
        )
        return credential_row(rows[0]) if rows else None

    def put_provider_credential(self, row: ProviderCredential) -> None:
        self._run(
            f"INSERT INTO provider_credentials ({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (provider) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,"
            " ciphertext = excluded.ciphertext, prefix = excluded.prefix, updated = excluded.updated",
            credential_values(row),
        )

    def delete_provider_credential(self, provider: str) -> bool:
        with self.transaction():
            found = bool(self._run("SELECT 1 FROM provider_credentials WHERE provider = ?", (provider,)))
            self._run("DELETE FROM provider_credentials WHERE provider = ?", (provider,))
        return found

    # -- whole tables ---------------------------------------------------------------------------------
    def has_table(self, table: str) -> bool:
        return bool(self._run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))

    def count_rows(self, table: str) -> int:
        return int(self._run(f"SELECT count(*) FROM {table}")[0][0])

    def read_rows(
        self, table: str, columns: Sequence[str], where: tuple[str, Sequence[Any]] | None = None
    ) -> list[tuple[Any, ...]]:
        query = select_rows_sql(table, columns, where, "?")
        if query is None:
            return []
        rows = self._run(*query)
        return [tuple(r) for r in rows]

    def replace_values(self, table: str, column: str, old: Sequence[Any], new: Any) -> int:
        if not old:
            return 0
        return len(self._run(replace_values_sql(table, column, len(old), "?"), (new, *old)))

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        with self.transaction():
            before = self.count_rows(table)
            self._run_many(insert_rows_sql(table, columns, "?"), rows)
            return self.count_rows(table) - before

    def delete_rows_before(self, table: str, column: str, before: float) -> int:
        return len(self._run(delete_before_sql(table, column, "?"), (before,)))

    # -- quotas: one row per key, period and run (store/quota_sql.py) ------------------------------------
    def add_quota_counts(
        self, run_id: float, admissions: Sequence[QuotaAdmission], now: float, batch: Batch | None = None
    ) -> bool:
        with self.transaction():
            if batch is not None and not self._run(claim_batch("?"), (*batch, now)):
                return False  # written before: a re-sent report adds nothing
            self._run_many(add_counts_sql("?"), add_counts_rows(run_id, admissions, now))
        return True

    def quota_bases(self, run_id: float, periods: Sequence[int]) -> list[QuotaBase]:
        if not periods:
            return []
        return bases_from(self._run(bases_sql(len(periods), "?"), (run_id, *periods)))

    def quota_counts(self) -> list[QuotaCount]:
        return counts_from(self._run(COUNTS_SQL))

    def forget_quotas(self, before: float) -> int:
        return len(self._run(forget_sql("?"), (before, before)))

    # -- the usage ledger (store/usage_sql.py) ------------------------------------------------------------
    def add_usage(self, deltas: Sequence[UsageDelta], now: float, batch: Batch | None = None) -> bool:
        with self.transaction():
            if batch is not None and not self._run(claim_batch("?"), (*batch, now)):
                return False  # applied before: a replayed batch adds nothing
            self._run_many(usage_upsert("?"), usage_rows(deltas, now))
        return True

    def usage(self, query: UsageQuery) -> list[UsageTotal]:
        sql, params = usage_select(query, "?")
        return usage_totals(query, self._run(sql, params))
