"""The embedded store: one SQLite database (WAL) in the state directory, written only by the control process.

This issue's tenant is the audit anchor (the last sequence number and MAC of the audit chain, so a
truncated audit file is detectable); consumers, key hashes and usage ledgers join it later behind the same
class. Every write is its own committed transaction: the control path is cold, durability matters more.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Final

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS audit_anchor (log TEXT PRIMARY KEY, seq INTEGER NOT NULL, mac TEXT NOT NULL)",
)


class Store:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            self._db.execute(statement)

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

    def close(self) -> None:
        self._db.close()
