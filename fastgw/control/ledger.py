"""The usage ledger's control-process half: workers' ``LedgerReport`` sums written to the store, and the
queries behind ``GET /usage`` (admin_usage.py).

Each report is one batch numbered by its worker (writer, seq): the writer a random id of the worker's
run, the numbers rising. A batch is added in one transaction that also records it as the writer's
highest applied (store/usage_sql.py), so a batch written twice is added once. Once a report is written
or spooled the control process acknowledges it (LedgerAck); the worker sends unacknowledged reports
again to a successor of a control process killed before it wrote them, and those already written are
skipped by their number. While the store cannot be written (a PostgreSQL outage, a locked SQLite file),
batches go to the spool in the state directory (control/ledger_spool.py: fsynced, bounded) instead, in
order, and are replayed, in order, once it can: tried again with backoff, automatically. A control
process killed meanwhile loses nothing spooled: its successor replays the spool at start. A batch the
full spool refuses is dropped, counted and logged, never silently (docs/llm-usage.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from fastgw.control.ledger_spool import SPOOL_FILE, LedgerSpool
from fastgw.store.base import Batch, Store, UsageDelta, UsageQuery, UsageTotal

# Replay retries while the store stays away: the first soon after a failure, doubling up to the most, so
# recovery is noticed within RETRY_MAX_SECONDS while a down PostgreSQL (each try waits up to 2 s for a
# connection, store/postgres.py) costs the control process little.
RETRY_FIRST_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 5.0
# Batches replayed per turn of the event loop: a spool of an hour's outage is replayed in slices, so the
# admin API and the workers' pushes are served in between.
REPLAY_SLICE: Final = 50
# While the store is away, one log line a minute says how much is spooled (the first failure is logged
# at once); a full spool says so at most once a minute too.
LOG_EVERY_SECONDS: Final = 60.0
# How long a writer's batch number is kept after its last batch: its spooled or re-sent batches can be
# replayed (and skipped when applied) until then. Writers are worker runs (one per worker start), few.
BATCHES_KEEP_SECONDS: Final = 30 * 86400


class LedgerWriter:
    def __init__(self, store: Store, log: Callable[[str], None], state_dir: str) -> None:
        self.store = store
        self.log = log
        self.spool = LedgerSpool(os.path.join(state_dir, SPOOL_FILE), log)
        self.down = False  # the last write failed: spool without trying until a replay succeeds
        self.dropped = 0  # rows the full spool (or a spool write that failed) refused
        self.skipped = 0  # replayed batches the store had already applied
        self.replayed = 0  # batches replayed since the spool last emptied
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST_SECONDS
        self._logged = {"down": 0.0, "full": 0.0}
        try:
            store.delete_rows_before("ledger_batches", "updated", time.time() - BATCHES_KEEP_SECONDS)
        except Exception as exc:  # the store is down at start: trimming waits for the next start
            log(f"usage ledger: cannot trim old batch numbers: {exc}")
        if self.spool.pending:
            log(
                f"usage ledger: {self.spool.rows} rows in {self.spool.batches} batches spooled in"
                f" {self.spool.path} by an earlier run: replaying them"
            )
            self._schedule(0.0)

    def write(self, entries: Sequence[Sequence[Any]], batch: Batch) -> None:
        """One worker's report, numbered ``batch`` by its worker: into the store, or (store away, or
        batches waiting) onto the spool."""
        if not entries:
            return
        if self.down or self.spool.pending:  # behind what waits, so batches reach the store in order
            self._keep([list(entry) for entry in entries], batch, None)
            return
        try:
            self.store.add_usage([UsageDelta(*entry) for entry in entries], time.time(), batch)
        except Exception as exc:  # it may have committed or not: the spooled copy is skipped if it did
            self._keep([list(entry) for entry in entries], batch, exc)

    def _keep(self, rows: list[list[Any]], batch: Batch, exc: Exception | None) -> None:
        try:
            kept = self.spool.append(batch[0], batch[1], rows)
        except OSError as error:  # a full or read-only state disk
            kept, exc = False, exc or error
            self.log(f"USAGE LEDGER LOST {len(rows)} rows: cannot write the spool {self.spool.path}: {error}")
        if not kept:
            self.dropped += len(rows)
            now = time.monotonic()
            if now - self._logged["full"] >= LOG_EVERY_SECONDS:
                self._logged["full"] = now
                self.log(
                    f"USAGE LEDGER SPOOL FULL ({self.spool.size} bytes of {self.spool.max_bytes}): dropped"
                    f" {len(rows)} rows; {self.dropped} dropped since start (fastgw_ledger_dropped_rows)"
                )
        if exc is not None:
            self._failed(exc)
        self._schedule(self._delay)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        first = not self.down
        self.down = True
        if first or now - self._logged["down"] >= LOG_EVERY_SECONDS:
            self._logged["down"] = now
            self.log(
                f"USAGE LEDGER: the store cannot be written ({exc}); {self.spool.rows} rows in"
                f" {self.spool.batches} batches spooled in {self.spool.path}, replayed when it can"
            )

    def _schedule(self, delay: float) -> None:
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test): replay() is called by hand
            return
        self._retry = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._retry = None
        if not self.replay():
            self._schedule(self._delay)

    def replay(self) -> bool:
        """Write spooled batches to the store, in order, up to REPLAY_SLICE; True when the spool is empty
        (or a slice went through and the rest follows at once)."""
        for replayed, batch in enumerate(self.spool.read(), start=1):
            try:
                deltas = [UsageDelta(*row) for row in batch.rows]
            except TypeError as exc:  # a damaged line that still parses: skipped, never retried forever
                self.log(f"usage ledger spool: skipped batch {batch.seq} of {batch.writer}: {exc}")
                self.spool.consumed(batch)
                continue
            try:
                applied = self.store.add_usage(deltas, time.time(), (batch.writer, batch.seq))
            except Exception as exc:
                self._failed(exc)
                self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)
                return False
            self.spool.consumed(batch)
            self.skipped += not applied
            self.replayed += 1
            if replayed >= REPLAY_SLICE:
                self._schedule(0.0)
                return True
        if self.down or self.replayed:
            self.log(f"usage ledger: the store is written again; {self.replayed} spooled batches replayed")
        self.replayed = 0
        self.spool.clear()
        self.down = False
        self._delay = RETRY_FIRST_SECONDS
        return True

    def gauges(self) -> dict[str, float]:
        """For /metrics: rows waiting in the spool (alert when it stays above 0), its bytes, rows dropped."""
        return {
            "fastgw_ledger_spooled_rows": self.spool.rows,
            "fastgw_ledger_spool_bytes": self.spool.size,
            "fastgw_ledger_dropped_rows": self.dropped,
        }

    def usage(self, query: UsageQuery) -> list[UsageTotal]:
        return self.store.usage(query)
