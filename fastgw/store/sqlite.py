"""The embedded store: one SQLite database (WAL) in the state directory, written only by the control process.

This issue's tenant is the audit anchor (the last sequence number and MAC of the audit chain, so a
truncated audit file is detectable); consumers, key hashes and usage ledgers join it later behind the same
class. Every write is its own committed transaction: the control path is cold, durability matters more.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Final

import orjson

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS audit_anchor (log TEXT PRIMARY KEY, seq INTEGER NOT NULL, mac TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS consumers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " team TEXT NOT NULL, roles TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY,"
    " consumer_id TEXT NOT NULL REFERENCES consumers(id), prefix TEXT NOT NULL, digest BLOB NOT NULL UNIQUE,"
    " pepper_id TEXT NOT NULL, scopes TEXT NOT NULL, roles TEXT NOT NULL, routes TEXT, created REAL NOT NULL,"
    " expires REAL, revoked REAL, replaced_by TEXT)",
    # Quota counts: `base` before the current run of the gateway (`run_id`: its start time), `run` since.
    "CREATE TABLE IF NOT EXISTS quotas (key_hash INTEGER NOT NULL, period INTEGER NOT NULL,"
    " limit_id TEXT NOT NULL, key TEXT NOT NULL, base INTEGER NOT NULL, run_id REAL NOT NULL,"
    " run INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (key_hash, period))",
)
KEY_COLUMNS: Final = ", ".join(
    [
        *("id", "consumer_id", "prefix", "digest", "pepper_id", "scopes", "roles", "routes"),
        *("created", "expires", "revoked", "replaced_by"),
    ]
)


CONSUMER_COLUMNS: Final = "id, name, team, roles, metadata, created, disabled"
# Columns added after a table's first release: (table, column, declaration). A database made by an older
# version gets them with ALTER TABLE when it is opened (CREATE TABLE IF NOT EXISTS leaves it as it was).
ADDED_COLUMNS: Final = (("consumers", "disabled", "REAL"),)  # when the consumer was disabled; NULL: enabled


def _j(value: Any) -> str:
    return orjson.dumps(value).decode()


def _consumer(r: Any) -> dict[str, Any]:
    return {
        "id": r[0],
        "name": r[1],
        "team": r[2],
        "roles": orjson.loads(r[3]),
        "metadata": orjson.loads(r[4]),
        "created": r[5],
        "disabled": r[6],
    }


def _key(r: Any) -> dict[str, Any]:
    return {
        "id": r[0],
        "consumer_id": r[1],
        "prefix": r[2],
        "digest": bytes(r[3]),
        "pepper_id": r[4],
        "scopes": orjson.loads(r[5]),
        "roles": orjson.loads(r[6]),
        "routes": None if r[7] is None else orjson.loads(r[7]),
        "created": r[8],
        "expires": r[9],
        "revoked": r[10],
        "replaced_by": r[11],
    }


PRIVATE: Final = 0o600  # key hashes, consumers, quota counts: for the gateway's user only


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


class Store:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self.path = path
        _create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            self._db.execute(statement)
        for table, column, declaration in ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @classmethod
    def in_state_dir(cls, state_dir: str) -> Store:
        return cls(os.path.join(state_dir, "fastgw.db"))

    def audit_anchor(self, log: str) -> tuple[int, str] | None:
        row = self._db.execute("SELECT seq, mac FROM audit_anchor WHERE log = ?", (log,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def set_audit_anchor(self, log: str, seq: int, mac: str) -> None:
        self._db.execute(
            "INSERT INTO audit_anchor (log, seq, mac) VALUES (?, ?, ?) "
            "ON CONFLICT (log) DO UPDATE SET seq = excluded.seq, mac = excluded.mac",
            (log, seq, mac),
        )

    # -- consumers and keys ----------------------------------------------------------------------------
    def add_consumer(self, row: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO consumers (id, name, team, roles, metadata, created) VALUES (?, ?, ?, ?, ?, ?)",
            (row["id"], row["name"], row["team"], _j(row["roles"]), _j(row["metadata"]), row["created"]),
        )

    def consumers(self) -> list[dict[str, Any]]:
        rows = self._db.execute(f"SELECT {CONSUMER_COLUMNS} FROM consumers ORDER BY created")
        return [_consumer(r) for r in rows]

    def consumer(self, ref: str) -> dict[str, Any] | None:
        """A consumer by id or by name."""
        row = self._db.execute(
            f"SELECT {CONSUMER_COLUMNS} FROM consumers WHERE id = ? OR name = ? "
            "ORDER BY id = ? DESC, created LIMIT 1",
            (ref, ref, ref),
        ).fetchone()
        return _consumer(row) if row else None

    def set_consumer_disabled(self, consumer_id: str, disabled: float | None) -> None:
        self._db.execute("UPDATE consumers SET disabled = ? WHERE id = ?", (disabled, consumer_id))

    def delete_consumer(self, consumer_id: str) -> None:
        """Remove a consumer and its keys in one transaction (the audit log keeps their history)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM api_keys WHERE consumer_id = ?", (consumer_id,))
            self._db.execute("DELETE FROM consumers WHERE id = ?", (consumer_id,))

    def add_key(self, row: dict[str, Any]) -> None:
        self._db.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                row["consumer_id"],
                row["prefix"],
                row["digest"],
                row["pepper_id"],
                _j(row["scopes"]),
                _j(row["roles"]),
                None if row["routes"] is None else _j(row["routes"]),
                row["created"],
                row["expires"],
                row["revoked"],
                row["replaced_by"],
            ),
        )

    def api_keys(self, consumer_id: str | None = None) -> list[dict[str, Any]]:
        """Every key, or one consumer's, oldest first."""
        if consumer_id is None:
            rows = self._db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created")
        else:
            rows = self._db.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE consumer_id = ? ORDER BY created", (consumer_id,)
            )
        return [_key(r) for r in rows]

    def key(self, key_id: str) -> dict[str, Any] | None:
        row = self._db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _key(row) if row else None

    def update_key(self, key_id: str, **fields: Any) -> None:
        allowed = {"expires", "revoked", "replaced_by", "scopes", "roles", "routes"}
        assert set(fields) <= allowed, fields
        encoded = {
            n: _j(v) if n in ("scopes", "roles") or (n == "routes" and v is not None) else v
            for n, v in fields.items()
        }
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        self._db.execute(f"UPDATE api_keys SET {assignments} WHERE id = ?", (*encoded.values(), key_id))

    # -- quotas -----------------------------------------------------------------------------------------
    def add_quota_counts(
        self, run_id: float, entries: list[tuple[int, int, str, str, int]], now: float
    ) -> None:
        """Add admissions ``(key hash, period, limit id, key, count)`` counted in run ``run_id``, in one
        transaction; the first write of a new run folds the previous run's count into the base."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO quotas (key_hash, period, limit_id, key, base, run_id, run, updated)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (key_hash, period) DO UPDATE SET"
                " base = CASE WHEN run_id = excluded.run_id THEN base ELSE base + run END,"
                " run = CASE WHEN run_id = excluded.run_id THEN run + excluded.run ELSE excluded.run END,"
                " run_id = excluded.run_id, updated = excluded.updated",
                [(h, p, limit, key, run_id, n, now) for h, p, limit, key, n in entries],
            )

    def quota_bases(self, run_id: float, periods: list[int]) -> list[tuple[int, int, int]]:
        """``(key hash, period, count before run_id)`` for the given periods: what a worker adds its
        node's counts of this run to."""
        if not periods:
            return []
        marks = ",".join("?" * len(periods))
        rows = self._db.execute(
            f"SELECT key_hash, period, CASE WHEN run_id = ? THEN base ELSE base + run END"
            f" FROM quotas WHERE period IN ({marks})",
            (run_id, *periods),
        ).fetchall()
        return [(int(h), int(p), int(n)) for h, p, n in rows]

    def quota_counts(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT limit_id, key, period, base + run, updated FROM quotas ORDER BY updated DESC"
        ).fetchall()
        return [{"limit": r[0], "key": r[1], "period": r[2], "count": r[3], "updated": r[4]} for r in rows]

    def forget_quotas(self, before: float) -> None:
        self._db.execute("DELETE FROM quotas WHERE updated < ?", (before,))

    def close(self) -> None:
        self._db.close()
