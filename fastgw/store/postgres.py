"""The shared store: one PostgreSQL database for every node of a cluster, through psycopg 3. The only
modules that import psycopg are this one and store/pg_*.py.

Same ``Store`` protocol as SQLite (store/base.py), same rows (store/rows.py), its own schema steps with
the same versions (store/pg_migrations.py), applied under a PostgreSQL advisory lock so that nodes
starting together queue instead of racing. Every write of consumers, API keys or provider keys also takes
the next change number, logs what it touched and NOTIFYs the number, all in its own transaction: nodes
learn of it only once it is committed, and in commit order (the ``ChangeFeed`` half of this class).

The DSN is a secret: no message here includes it, only the host, port and database it names. Calls are
synchronous, as SQLite's (the control path is cold); store/pg_keeper.py keeps the connection, remakes a
broken one, and while the database is unreachable fails calls at once and reconnects in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg

from fastgw.store.base import (
    ApiKey,
    AuditAnchor,
    Batch,
    Change,
    ChangeFeed,
    CommitUnknownError,
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
from fastgw.store.pg_connect import connect_once, describe, first_line
from fastgw.store.pg_keeper import ConnectionKeeper
from fastgw.store.pg_migrations import CHANGE_CHANNEL, PG_MIGRATIONS
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
from fastgw.store.usage_sql import claim_batch, select, totals, upsert, upsert_rows

# Any 64-bit number held by nobody else: the advisory lock that serialises migrators ("fastgw" in hex).
MIGRATION_LOCK: Final = 0x66617374677700
# Errors that mean "another writer got there first", not "the database failed": answered 409.
_ERRORS: Final = psycopg.errors
CONFLICTS: Final = (_ERRORS.UniqueViolation, _ERRORS.DeadlockDetected, _ERRORS.SerializationFailure)
VERSIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " applied DOUBLE PRECISION NOT NULL)"
)


class PostgresStore:
    """The ``Store`` and ``ChangeFeed`` protocols over one PostgreSQL database.

    Raises:
        StoreError: from the constructor when the database cannot be reached within ``connect_timeout``
        or migrated, and from every method on a database error or an unreachable database."""

    def __init__(self, dsn: str, *, node: str, migrate: bool = True, connect_timeout: float = 10.0) -> None:
        self.where = describe(dsn)
        self.node = node  # who wrote a change, and whose audit anchor is whose
        self._conn: psycopg.Connection[Any] | None = None  # the connection of the open transaction() block
        connect_once(dsn, connect_timeout)
        self._keeper = ConnectionKeeper(dsn, self.where)
        try:
            self._check_known()
            if migrate:
                self.migrate()
        except StoreError:
            self._keeper.close()
            raise

    # -- plumbing: every driver call goes through here, so its errors become StoreError -----------------
    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, CONFLICTS):
            return ConflictError(f"{self.where}: {first_line(exc)}")
        return StoreError(f"{self.where}: {first_line(exc)}")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._conn is not None:
            yield self._conn
            return
        with self._keeper.connection() as conn:
            yield conn

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._conn is not None:
            yield  # joins the outer block
            return
        committing = False
        try:
            with self._keeper.connection() as conn, conn.transaction():
                self._conn = conn
                try:
                    yield
                finally:
                    self._conn = None
                committing = True  # the block is done: what fails from here on is the COMMIT
        except psycopg.Error as exc:  # the commit itself, or the connection, failed
            if committing and conn.broken:
                # A server that answers and refuses the COMMIT made nothing; a connection lost while the
                # COMMIT ran leaves the outcome unknown.
                raise CommitUnknownError(f"{self.where}: {first_line(exc)}") from exc
            raise self._error(exc) from exc

    # -- migrations -------------------------------------------------------------------------------------
    def _applied(self) -> set[int]:
        if self._run("SELECT to_regclass('schema_migrations')")[0][0] is None:
            return set()
        return {int(row[0]) for row in self._run("SELECT version FROM schema_migrations")}

    def _check_known(self) -> None:
        newer = self._applied() - {m.version for m in PG_MIGRATIONS}
        if newer:
            raise StoreError(
                f"{self.where}: schema version {max(newer)} is newer than this fastgw knows"
                f" ({PG_MIGRATIONS[-1].version}): upgrade fastgw on this node"
            )

    def pending_migrations(self) -> list[Migration]:
        applied = self._applied()
        return [m for m in PG_MIGRATIONS if m.version not in applied]

    def migrate(self) -> list[Migration]:
        if not self.pending_migrations():
            return []  # the usual start: no lock taken
        done = []
        for migration in PG_MIGRATIONS:
            with self.transaction():
                # Held to this step's commit: a second node starting now waits here (as long as the
                # first takes: not the keeper's lock_timeout), then finds the step recorded and skips it.
                self._run("SET LOCAL lock_timeout = 0")
                self._run("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                self._run(VERSIONS_TABLE)
                if self._run("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)):
                    continue
                for statement in migration.statements:
                    self._run(statement)
                self._run(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, time.time()),
                )
            done.append(migration)
        return done

    def close(self) -> None:
        self._keeper.close()

    # -- the change log (ChangeFeed) ----------------------------------------------------------------------
    def change_feed(self) -> ChangeFeed | None:
        return self

    def _changed(self, kind: str, ref: str, digests: Sequence[bytes | None] = (None,)) -> None:
        """Take the next change number for the write in progress (inside its transaction), log what it
        touched and announce the number to every listening node at commit."""
        seq = int(self._run("UPDATE change_counter SET seq = seq + 1 RETURNING seq")[0][0])
        now = time.time()
        for digest in digests:
            self._run(
                "INSERT INTO changes (seq, node, kind, ref, digest, at) VALUES (%s, %s, %s, %s, %s, %s)",
                (seq, self.node, kind, ref, digest, now),
            )
        self._run("SELECT pg_notify(%s, %s)", (CHANGE_CHANNEL, str(seq)))

    def last_change(self) -> int:
        return int(self._run("SELECT seq FROM change_counter")[0][0])

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        rows = self._run(
            "SELECT seq, node, kind, ref, digest, at FROM changes WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [
            Change(int(r[0]), r[1], r[2], r[3], None if r[4] is None else bytes(r[4]), r[5]) for r in rows
        ]

    def forget_changes(self, before: float) -> None:
        self._run("DELETE FROM changes WHERE at < %s", (before,))

    # -- audit anchors: one per node and log ------------------------------------------------------------
    def audit_anchor(self, log: str) -> AuditAnchor | None:
        rows = self._run("SELECT seq, mac FROM audit_anchor WHERE log = %s", (f"{self.node}|{log}",))
        return AuditAnchor(log, int(rows[0][0]), str(rows[0][1])) if rows else None

    def set_audit_anchor(self, log: str, seq: int, mac: str) -> None:
        self._run(
            "INSERT INTO audit_anchor (log, seq, mac) VALUES (%s, %s, %s)"
            " ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, mac = excluded.mac",
            (f"{self.node}|{log}", seq, mac),
        )

    # -- consumers and keys -----------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        with self.transaction():
            self._run(
                f"INSERT INTO consumers ({CONSUMER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                consumer_values(consumer),
            )
            self._changed("consumer", consumer.id)

    def consumers(self) -> list[Consumer]:
        rows = self._run(f"SELECT {CONSUMER_COLUMNS} FROM consumers ORDER BY created, id")
        return [consumer_row(r) for r in rows]

    def consumer(self, ref: str) -> Consumer | None:
        if "\0" in ref:
            return None  # no row holds NUL (text refuses it): asking would be an error, not a miss
        rows = self._run(
            f"SELECT {CONSUMER_COLUMNS} FROM consumers WHERE id = %s OR name = %s"
            " ORDER BY (id = %s) DESC, created LIMIT 1",
            (ref, ref, ref),
        )
        return consumer_row(rows[0]) if rows else None

    def set_consumer_disabled(self, consumer_id: str, disabled: float | None) -> None:
        with self.transaction():
            self._run("UPDATE consumers SET disabled = %s WHERE id = %s", (disabled, consumer_id))
            self._changed("consumer", consumer_id)

    def delete_consumer(self, consumer_id: str) -> None:
        with self.transaction():
            gone = self._run("DELETE FROM api_keys WHERE consumer_id = %s RETURNING digest", (consumer_id,))
            self._run("DELETE FROM consumers WHERE id = %s", (consumer_id,))
            # The keys' rows are gone: their digests travel in the log, so other nodes can drop them.
            self._changed("consumer", consumer_id, [bytes(r[0]) for r in gone] or [None])

    def add_key(self, key: ApiKey) -> None:
        with self.transaction():
            self._run(
                f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})", key_values(key)
            )
            self._changed("key", key.id, [key.digest])

    def api_keys(self, consumer_id: str | None = None) -> list[ApiKey]:
        if consumer_id is None:
            rows = self._run(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created, id")
        else:
            rows = self._run(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE consumer_id = %s ORDER BY created, id",
                (consumer_id,),
            )
        return [key_row(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        if "\0" in key_id:
            return None
        rows = self._run(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", (key_id,))
        return key_row(rows[0]) if rows else None

    def key_for_update(self, key_id: str) -> ApiKey | None:
        assert self._conn is not None, "key_for_update belongs inside transaction()"
        if "\0" in key_id:
            return None
        rows = self._run(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s FOR UPDATE", (key_id,))
        return key_row(rows[0]) if rows else None

    def consumer_for_update(self, ref: str) -> Consumer | None:
        assert self._conn is not None, "consumer_for_update belongs inside transaction()"
        if "\0" in ref:
            return None
        rows = self._run(
            f"SELECT {CONSUMER_COLUMNS} FROM consumers WHERE id = %s OR name = %s"
            " ORDER BY (id = %s) DESC, created LIMIT 1 FOR UPDATE",
            (ref, ref, ref),
        )
        return consumer_row(rows[0]) if rows else None

    def update_key(self, key: ApiKey) -> None:
        with self.transaction():
            digest = self._run(
                "UPDATE api_keys SET scopes = %s, roles = %s, routes = %s, expires = %s, revoked = %s,"
                " replaced_by = %s WHERE id = %s RETURNING digest",
                key_changes(key),
            )
            if digest:
                self._changed("key", key.id, [bytes(digest[0][0])])

    # -- provider credentials ---------------------------------------------------------------------------
    def provider_credentials(self) -> list[ProviderCredential]:
        rows = self._run(f"SELECT {CREDENTIAL_COLUMNS} FROM provider_credentials ORDER BY provider")
        return [credential_row(r) for r in rows]

    def provider_credential(self, provider: str) -> ProviderCredential | None:
        rows = self._run(
            f"SELECT {CREDENTIAL_COLUMNS} FROM provider_credentials WHERE provider = %s", (provider,)
        )
        return credential_row(rows[0]) if rows else None

    def put_provider_credential(self, row: ProviderCredential) -> None:
        with self.transaction():
            self._run(
                f"INSERT INTO provider_credentials ({CREDENTIAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (provider) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,"
                " ciphertext = excluded.ciphertext, prefix = excluded.prefix, updated = excluded.updated",
                credential_values(row),
            )
            self._changed("provider", row.provider)

    def delete_provider_credential(self, provider: str) -> bool:
        with self.transaction():
            found = bool(
                self._run("DELETE FROM provider_credentials WHERE provider = %s RETURNING 1", (provider,))
            )
            if found:
                self._changed("provider", provider)
        return found

    # -- whole tables ---------------------------------------------------------------------------------
    def has_table(self, table: str) -> bool:
        return self._run("SELECT to_regclass(%s)", (table,))[0][0] is not None

    def count_rows(self, table: str) -> int:
        return int(self._run(f"SELECT count(*) FROM {table}")[0][0])

    def read_rows(
        self, table: str, columns: Sequence[str], where: tuple[str, Sequence[Any]] | None = None
    ) -> list[tuple[Any, ...]]:
        query = select_rows_sql(table, columns, where, "%s")
        if query is None:
            return []
        rows = self._run(*query)
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def replace_values(self, table: str, column: str, old: Sequence[Any], new: Any) -> int:
        if not old:
            return 0
        return len(self._run(replace_values_sql(table, column, len(old), "%s"), (new, *old)))

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        sql = insert_rows_sql(table, columns, "%s")
        try:
            with self.transaction():
                before = self.count_rows(table)
                if rows:
                    with self._connection() as conn, conn.cursor() as cur:
                        cur.executemany(sql, rows)
                return self.count_rows(table) - before
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def delete_rows_before(self, table: str, column: str, before: float) -> int:
        return len(self._run(delete_before_sql(table, column, "%s"), (before,)))

    # -- quotas: a row per key, period and run: nodes never write the same row (store/quota_sql.py) ----
    def add_quota_counts(
        self, run_id: float, admissions: Sequence[QuotaAdmission], now: float, batch: Batch | None = None
    ) -> bool:
        if not admissions and batch is None:
            return True
        try:
            with self.transaction(), self._connection() as conn, conn.cursor() as cur:
                if batch is not None and not self._run(claim_batch("%s"), (*batch, now)):
                    return False  # written before: a re-sent report adds nothing
                if admissions:
                    cur.executemany(add_counts_sql("%s"), add_counts_rows(run_id, admissions, now))
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        return True

    def quota_bases(self, run_id: float, periods: Sequence[int]) -> list[QuotaBase]:
        if not periods:
            return []
        return bases_from(self._run(bases_sql(len(periods), "%s"), (run_id, *periods)))

    def quota_counts(self) -> list[QuotaCount]:
        return counts_from(self._run(COUNTS_SQL))

    def forget_quotas(self, before: float) -> int:
        return len(self._run(forget_sql("%s"), (before, before)))

    # -- the usage ledger (store/usage_sql.py) ------------------------------------------------------------
    def add_usage(self, deltas: Sequence[UsageDelta], now: float, batch: Batch | None = None) -> bool:
        try:
            with self.transaction(), self._connection() as conn, conn.cursor() as cur:
                if batch is not None and not self._run(claim_batch("%s"), (*batch, now)):
                    return False  # applied before: a replayed batch adds nothing
                if deltas:
                    cur.executemany(upsert("%s"), upsert_rows(deltas, now))
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        return True

    def usage(self, query: UsageQuery) -> list[UsageTotal]:
        sql, params = select(query, "%s")
        return totals(query, self._run(sql, params))
