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
full spool refuses is dropped, counted and logged, never silently (docs/llm-usage.md). A batch the store
refuses for what it holds (a value out of a column's range: ``refused_for_its_data``), ``REJECTED_TRIES``
times in a row, is set aside in ``REJECTED_FILE``, logged and counted, rather than holding every later
batch behind it for good; any other failure (locked, read-only, full, away) is an outage: it waits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from fastgw.control.ledger_spool import (
    SPOOL_FILE,
    WORKER_LEFT_PREFIX,
    WORKER_LEFT_SUFFIX,
    LedgerSpool,
    SpooledBatch,
    batch_line,
)
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
# A spooled batch the store refused for its data this many times in a row is set aside: three tries
# (0.5 + 1 + 2 s apart), so one odd answer never costs a batch.
REJECTED_TRIES: Final = 3
REJECTED_FILE: Final = "ledger-rejected.jsonl"  # beside the spool: batches set aside, kept for a person
# At stop, the longest the control process goes on replaying the spool into a store that answers (the
# supervisor kills it STOP_GRACE after the workers' drain): the rest waits for the next start.
STOP_REPLAY_SECONDS: Final = 2.0


class LedgerWriter:
    def __init__(self, store: Store, log: Callable[[str], None], state_dir: str) -> None:
        self.store = store
        self.log = log
        self.spool = LedgerSpool(os.path.join(state_dir, SPOOL_FILE), log)
        self.down = False  # the last write failed: spool without trying until a replay succeeds
        self.dropped = 0  # rows the full spool (or a spool write that failed) refused
        self.skipped = 0  # replayed batches the store had already applied
        self.replayed = 0  # batches replayed since the spool last emptied
        self.announced = False  # "cannot be written" was logged, its recovery not yet
        self._rejections: tuple[tuple[str, int], int] = (("", 0), 0)  # (writer, seq), refusals in a row
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST_SECONDS
        self._logged = {"down": 0.0, "full": 0.0}
        try:
            store.delete_rows_before("ledger_batches", "updated", time.time() - BATCHES_KEEP_SECONDS)
        except Exception as exc:  # the store is down at start: trimming waits for the next start
            log(f"usage ledger: cannot trim old batch numbers: {exc}")
        self._adopt_workers_reports(state_dir)
        if self.spool.pending:
            log(
                f"usage ledger: {self.spool.rows} rows in {self.spool.batches} batches spooled in"
                f" {self.spool.path} by an earlier run: replaying them"
            )
            self._schedule(0.0)

    def _adopt_workers_reports(self, state_dir: str) -> None:
        """Reports workers left in the state directory when they stopped with no control process to
        take them: onto the spool, replayed with it."""
        try:
            names = sorted(os.listdir(state_dir))
        except OSError:
            return
        for name in names:
            if name.startswith(WORKER_LEFT_PREFIX) and name.endswith(WORKER_LEFT_SUFFIX):
                path = os.path.join(state_dir, name)
                try:
                    added, refused = self.spool.adopt(path)
                except OSError as exc:
                    self.log(f"USAGE LEDGER: cannot take the reports of {path}: {exc}")
                    continue
                self.dropped += refused
                self.log(f"usage ledger: {added} reports a stopped worker left in {path} spooled")

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
            return
        self._recovered()

    def _keep(self, rows: list[list[Any]], batch: Batch, exc: Exception | None) -> None:
        full = False
        try:
            full = not self.spool.append(batch[0], batch[1], rows)
        except OSError as error:  # a full or read-only state disk: nothing of the batch was kept
            exc = exc or error
            self.dropped += len(rows)
            self.log(f"USAGE LEDGER LOST {len(rows)} rows: cannot write the spool {self.spool.path}: {error}")
        if full:
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
        first = not self.announced
        self.down = self.announced = True
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
                if self._rejected(batch, exc):
                    continue
                self._failed(exc)
                self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)
                return False
            self.spool.consumed(batch)
            self._rejections = (("", 0), 0)
            self.skipped += not applied
            self.replayed += 1
            if replayed >= REPLAY_SLICE:
                self._schedule(0.0)
                return True
        if self.replayed:
            self._recovered()
        self.replayed = 0
        self.spool.clear()
        self.down = False  # the next report tries the store itself (nothing spooled waits before it)
        self._delay = RETRY_FIRST_SECONDS
        return True

    def finish(self, seconds: float = STOP_REPLAY_SECONDS) -> None:
        """At stop: what the spool holds, into the store while it answers (up to ``seconds``), so that
        ``fastgw usage`` shows it now rather than after the next start. A store still away: kept."""
        end = time.monotonic() + seconds
        while self.spool.pending and time.monotonic() < end and self.replay():
            pass
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _recovered(self) -> None:
        """A write reached the store: say so once after an outage that was logged."""
        if self.announced:
            self.announced = False
            self.log(f"usage ledger: the store is written again; {self.replayed} spooled batches replayed")

    def _rejected(self, batch: SpooledBatch, exc: Exception) -> bool:
        """Whether ``batch`` is set aside: the store refused it for its data REJECTED_TRIES times in a
        row, so every later batch would wait on it. Only a data error counts: a store that can be read
        but not written (SQLite locked or on a full disk, PostgreSQL read-only) is an outage."""
        if not refused_for_its_data(exc):
            self._rejections = (("", 0), 0)
            return False
        which, tries = self._rejections
        tries = tries + 1 if which == (batch.writer, batch.seq) else 1
        self._rejections = ((batch.writer, batch.seq), tries)
        if tries < REJECTED_TRIES:
            return False
        rows = len(batch.rows)
        path = os.path.join(os.path.dirname(self.spool.path), REJECTED_FILE)
        line = batch_line(batch.writer, batch.seq, batch.rows, error=str(exc))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as error:  # kept in the spool, tried again: never dropped unwritten
            self.log(f"USAGE LEDGER: cannot set batch {batch.seq} of {batch.writer} aside in {path}: {error}")
            return False
        self.dropped += rows
        self.log(
            f"USAGE LEDGER REJECTED batch {batch.seq} of {batch.writer} ({rows} rows): the store refused it"
            f" {tries} times ({exc}); set aside in {path}; later batches go on"
        )
        self.spool.consumed(batch)
        self._rejections = (("", 0), 0)
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


def refused_for_its_data(exc: BaseException) -> bool:
    """Whether the store refused a write for what it holds rather than for its own state: a number out
    of a column's range (SQLite's OverflowError, PostgreSQL's SQLSTATE class 22), a constraint (class 23,
    sqlite3's IntegrityError, DataError). Locked, read-only, full or unreachable stores are not."""
    for error in (exc, exc.__cause__):
        if isinstance(error, OverflowError):
            return True
        state = getattr(error, "sqlstate", None)  # psycopg's errors carry it
        if isinstance(state, str) and state[:2] in ("22", "23"):
            return True
        kind = type(error)
        if kind.__module__ == "sqlite3" and kind.__name__ in ("IntegrityError", "DataError"):
            return True
    return False
