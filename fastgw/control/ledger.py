"""The usage ledger's control-process half: workers' ``LedgerReport`` sums written to the store, and the
queries behind ``GET /usage`` (admin_usage.py).

Each report is added in one transaction (an upsert that adds, store/usage_sql.py) and then dropped: a
report is never written twice. A write that fails (a locked or full disk, PostgreSQL away) keeps the sums
in memory and adds them to the next write, up to ``RETRY_ROWS_MAX`` rows; beyond that they are dropped,
counted and logged, never silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from fastgw.store.base import Store, UsageDelta, UsageQuery, UsageTotal

# Rows kept across failed writes: a store away for minutes with thousands of active consumer/model
# combinations must not grow the control process without bound; 100k rows are ~30 MiB.
RETRY_ROWS_MAX: Final = 100_000


class LedgerWriter:
    def __init__(self, store: Store, log: Callable[[str], None]) -> None:
        self.store = store
        self.log = log
        self.unwritten: list[UsageDelta] = []  # sums of failed writes, tried again with the next report
        self.dropped = 0  # rows given up after RETRY_ROWS_MAX

    def write(self, entries: Sequence[Sequence[Any]]) -> None:
        deltas = [*self.unwritten, *(UsageDelta(*entry) for entry in entries)]
        self.unwritten = []
        try:
            self.store.add_usage(deltas, time.time())
        except Exception as exc:  # loud, and kept for the next report
            keep = deltas[-RETRY_ROWS_MAX:]
            self.dropped += len(deltas) - len(keep)
            self.unwritten = keep
            self.log(f"USAGE LEDGER WRITE FAILED ({len(deltas)} rows kept for the next try): {exc}")

    def usage(self, query: UsageQuery) -> list[UsageTotal]:
        return self.store.usage(query)
