"""Retention: each kind of record named in ``[retention] days`` is trimmed to its age, once at start
and then daily, by the control process (the only process that writes the store and the audit log); each
run is audited with what it removed, per kind (counts only).

Two sorts of target: store tables (store/tables.py RETAINED_TABLES: rows whose time column is older are
deleted, on every backend that has the table; quota counts by key and period, Store.forget_quotas) and
files (rotated audit and access log files, FILE.*, whose modification time is older; the live file is
never touched: the audit chain and open log handles stay whole). In a cluster every node runs it; a row
another node removed first is simply not there.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time
from collections.abc import Callable
from typing import Final

from fastgw.counters.quota import MONTH, QUOTAS, period_bounds
from fastgw.snapshot import Snapshot
from fastgw.store.base import Store, StoreError
from fastgw.store.tables import RETAINED_TABLES

DAY_SECONDS: Final = 86400
RUN_EVERY_SECONDS: Final = DAY_SECONDS  # "enforced daily"; a restart runs it at once too


def rotated_files(live: str, before: float) -> list[str]:
    """LIVE.* (rotated copies, by logrotate or by hand) not modified since ``before``; never LIVE."""
    found = []
    for path in glob.glob(glob.escape(live) + ".*"):
        try:
            if os.path.isfile(path) and os.stat(path).st_mtime < before:
                found.append(path)
        except OSError:
            continue  # removed meanwhile
    return sorted(found)


class Retention:
    def __init__(
        self,
        store: Store,
        snapshot: Callable[[], Snapshot],
        audit: Callable[..., None],
        log: Callable[[str], None],
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._audit = audit
        self._log = log

    def _files(self, kind: str, snapshot: Snapshot) -> str | None:
        """The live file whose rotated copies ``kind`` names; None when there is none."""
        if kind == "audit_files":
            return snapshot.audit.file
        target = snapshot.access_log.target
        return None if target in ("stdout", "off") else target

    def _remove(self, kind: str, before: float, snapshot: Snapshot, now: float) -> int:
        if kind == "quotas":  # a run's old row goes only with its key and period's newer ones (quota_sql.py)
            # Never a count of a period still running: a month's key idle for longer than quotas_days
            # would get a fresh allowance for the rest of its month. A row written before this month
            # began belongs to no running period.
            _period, month_start, _end = period_bounds(QUOTAS.period(MONTH, now)[0])
            return self._store.forget_quotas(min(before, month_start))
        if kind in RETAINED_TABLES:
            table, column = RETAINED_TABLES[kind]
            if not self._store.has_table(table):
                return 0
            return self._store.delete_rows_before(table, column, before)
        live = self._files(kind, snapshot)
        removed = 0
        for path in rotated_files(live, before) if live else []:
            os.unlink(path)
            removed += 1
        return removed

    def enforce(self, now: float | None = None) -> dict[str, int]:
        """One run: what each configured kind lost (-1: it failed, and the log says why)."""
        snapshot = self._snapshot()
        now = time.time() if now is None else now
        removed: dict[str, int] = {}
        for kind, days in sorted(snapshot.retention.items()):
            try:
                removed[kind] = self._remove(kind, now - days * DAY_SECONDS, snapshot, now)
            except (StoreError, OSError) as exc:
                self._log(f"retention of {kind} failed (next try in a day): {exc}")
                removed[kind] = -1
        if removed:
            self._audit("retention", days=dict(sorted(snapshot.retention.items())), removed=removed)
        return removed

    async def daily(self) -> None:
        """Enforce now and every day after, until cancelled (the control process stops)."""
        while True:
            self.enforce()
            await asyncio.sleep(RUN_EVERY_SECONDS)
