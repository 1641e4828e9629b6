"""The control process's ledger writer: each report is written once; while the store cannot be written,
reports go to the spool on disk and are replayed, in order, once it can; a batch replayed after it was
already committed (a crash between the commit and emptying the spool) or re-sent by its worker (a control
process killed before it acknowledged) is not counted twice; a full spool refuses new batches loudly."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.control.ledger import LedgerWriter
from fastgw.control.ledger_spool import SPOOL_FILE, LedgerSpool
from fastgw.store.base import Batch, StoreError, UsageDelta, UsageQuery
from fastgw.store.sqlite import SQLiteStore


class FlakyStore(SQLiteStore):
    """A real SQLite store whose writes raise while ``down``, as a locked disk or a PostgreSQL away does;
    ``commit_then_fail`` commits the next write and then raises, as a connection lost during COMMIT."""

    down = False
    commit_then_fail = False

    def add_usage(self, deltas: Sequence[UsageDelta], now: float, batch: Batch | None = None) -> bool:
        if self.down:
            raise StoreError("database is locked")
        applied = super().add_usage(deltas, now, batch)
        if self.commit_then_fail:
            self.commit_then_fail = False
            raise StoreError("server closed the connection unexpectedly")
        return applied


def entry(requests: int, consumer: str = "acme") -> tuple[object, ...]:
    return ("2025-06-10", consumer, "k_1", "blue", "m", "oa", "llm", requests, 10, 5, 0, 0, 500, 0, 0)


class Worker:
    """Numbers its reports as a worker's control link does: its run's id, rising."""

    def __init__(self, name: str = "5f0c1e9a2b7d4c38") -> None:  # token_hex(8), as a worker run's
        self.name = name
        self.seq = 0

    def next(self) -> tuple[str, int]:
        self.seq += 1
        return (self.name, self.seq)


def requests(store: SQLiteStore) -> int:
    totals = store.usage(UsageQuery())
    return totals[0].requests if totals else 0


def test_reports_written_while_the_store_is_down_are_spooled_and_replayed_in_order(tmp_path: Path) -> None:
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    writer.write([entry(1)], worker.next())
    store.down = True
    writer.write([entry(2)], worker.next())
    writer.write([entry(4), entry(8, "zeta")], worker.next())  # not tried: spooled behind the first
    assert "USAGE LEDGER: the store cannot be written" in logged[-1]
    assert writer.gauges()["fastgw_ledger_spooled_rows"] == 3
    spool = tmp_path / SPOOL_FILE
    assert spool.stat().st_mode & 0o777 == 0o600
    assert [b.seq for b in writer.spool.read(0)] == [2, 3]
    assert not writer.replay()  # still down: kept
    assert requests(store) == 1
    store.down = False
    assert writer.replay()
    assert requests(store) == 15
    assert spool.stat().st_size == 0 and writer.gauges()["fastgw_ledger_spooled_rows"] == 0
    assert "the store is written again; 2 spooled batches replayed" in logged[-1]
    writer.write([entry(16)], worker.next())  # straight to the store again
    assert requests(store) == 31 and spool.stat().st_size == 0
    store.close()


def test_a_write_that_committed_but_failed_is_not_counted_twice(tmp_path: Path) -> None:
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    writer = LedgerWriter(store, lambda line: None, str(tmp_path))
    store.commit_then_fail = True
    writer.write([entry(1)], worker.next())  # committed, but the writer saw an error: spooled as well
    assert writer.spool.rows == 1
    assert writer.replay()
    assert requests(store) == 1 and writer.skipped == 1
    store.close()


def test_a_spool_left_by_a_killed_control_process_is_replayed_once_by_its_successor(tmp_path: Path) -> None:
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    first = LedgerWriter(store, lambda line: None, str(tmp_path))
    store.down = True
    first.write([entry(1)], worker.next())
    first.write([entry(2)], worker.next())
    store.down = False
    # The first batch reached the store, then the process died before emptying the spool.
    [one, _] = first.spool.read(0)
    assert store.add_usage([UsageDelta(*row) for row in one.rows], time.time(), (one.writer, one.seq))
    logged: list[str] = []
    successor = LedgerWriter(store, logged.append, str(tmp_path))  # the restart
    assert "2 rows in 2 batches spooled" in logged[0] and "by an earlier run" in logged[0]
    successor.write([entry(4)], worker.next())  # behind the spooled batches
    assert successor.replay()
    assert requests(store) == 7 and successor.skipped == 1
    # Replaying the same (now empty) spool again adds nothing.
    assert successor.replay() and requests(store) == 7
    store.close()


def test_a_full_spool_refuses_new_batches_loudly(tmp_path: Path) -> None:
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    writer.spool.close()
    writer.spool = LedgerSpool(str(tmp_path / SPOOL_FILE), logged.append, max_bytes=300)
    store.down = True
    writer.write([entry(1)], worker.next())
    writer.write([entry(2), entry(2, "zeta")], worker.next())  # past 300 bytes: dropped, never silently
    assert writer.spool.rows == 1 and writer.gauges()["fastgw_ledger_dropped_rows"] == 2
    assert any("USAGE LEDGER SPOOL FULL" in line and "dropped 2 rows" in line for line in logged)
    store.down = False
    assert writer.replay() and requests(store) == 1
    store.close()


# Steps of the property below: a report from one of two workers, the store going down or up, a write that
# commits and then fails, a replay, a crash (the control process replaced: a new writer over the same
# spool) and a re-send (a worker sending its last report again, as it does to the successor of a control
# process killed before it acknowledged the report, written or not).
STEPS = st.lists(
    st.sampled_from(["report", "report2", "down", "up", "commit_then_fail", "replay", "crash", "resend"]),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(STEPS)
def test_whatever_fails_and_whenever_it_crashes_every_report_is_counted_once(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    workers = {"report": Worker("w1"), "report2": Worker("w2")}
    state = tmp_path_factory.mktemp("state")
    store = FlakyStore(str(state / "fastgw.db"))
    writer = LedgerWriter(store, lambda line: None, str(state))
    sent = 0
    last: tuple[list[tuple[object, ...]], tuple[str, int]] | None = None
    for n, step in enumerate(steps, start=1):
        if step in workers:
            last = ([entry(n)], workers[step].next())
            writer.write(*last)
            sent += n
        elif step in ("down", "up"):
            store.down = step == "down"
        elif step == "commit_then_fail":
            store.commit_then_fail = True
        elif step == "replay":
            writer.replay()
        elif step == "resend":
            if last is not None:
                writer.write(*last)
        else:
            writer.spool.close()
            writer = LedgerWriter(store, lambda line: None, str(state))
    store.down = store.commit_then_fail = False
    assert writer.replay()
    assert requests(store) == sent
    writer.spool.close()
    store.close()


def test_a_spooled_batch_whose_rows_are_damaged_is_skipped_not_retried_forever(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    writer.spool.append("old-run", 1, [["2025-06-10", "acme"]])  # parses, but is not a ledger row
    writer.spool.append("old-run", 2, [list(entry(3))])
    assert writer.replay()
    assert requests(store) == 3
    assert any("skipped batch 1 of old-run" in line for line in logged)
    store.close()
