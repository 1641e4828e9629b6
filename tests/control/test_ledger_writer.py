"""The control process's ledger writer: each report is written once; while the store cannot be written,
reports go to the spool on disk and are replayed, in order, once it can; a batch replayed after it was
already committed (a crash between the commit and emptying the spool) or re-sent by its worker (a control
process killed before it acknowledged) is not counted twice; a full spool refuses new batches loudly."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.control.ledger import REJECTED_FILE, LedgerWriter
from fastgw.control.ledger_spool import SPOOL_FILE, WORKER_LEFT_PREFIX, WORKER_LEFT_SUFFIX, LedgerSpool
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


class RefusingStore(FlakyStore):
    """Refuses any batch with a row of consumer ``poison``, as a store refuses a value out of its range
    (SQLite's OverflowError, PostgreSQL's bigint out of range), while it answers everything else."""

    def add_usage(self, deltas: Sequence[UsageDelta], now: float, batch: Batch | None = None) -> bool:
        if any(d.consumer == "poison" for d in deltas):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return super().add_usage(deltas, now, batch)


def test_a_batch_the_store_refuses_is_set_aside_and_the_rest_go_on(tmp_path: Path) -> None:
    """A batch the store would never take was retried forever: every later report spooled behind it,
    the spool filled, then every report was dropped, while the store was up."""
    worker = Worker()
    store = RefusingStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    writer.write([entry(1)], worker.next())
    writer.write([entry(5, "poison")], worker.next())  # refused: spooled, as for an outage
    writer.write([entry(2)], worker.next())  # behind it, in order
    assert requests(store) == 1 and writer.spool.batches == 2
    assert not writer.replay() and not writer.replay()  # twice refused while the store answers
    assert writer.replay()  # the third time it is set aside; the batch behind it is written
    assert requests(store) == 3 and writer.spool.batches == 0
    assert writer.gauges()["fastgw_ledger_dropped_rows"] == 1
    assert any("USAGE LEDGER REJECTED batch 2" in line for line in logged)
    [kept] = (tmp_path / REJECTED_FILE).read_text().splitlines()
    assert '"poison"' in kept and "too large" in kept
    assert (tmp_path / REJECTED_FILE).stat().st_mode & 0o777 == 0o600
    store.close()


def test_a_store_that_reads_but_cannot_write_is_an_outage_never_a_refusal(tmp_path: Path) -> None:
    """SQLite locked or on a full disk, PostgreSQL read-only: reads work, writes fail. Those batches
    wait for the store; only a refusal for the batch's data sets one aside."""
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    store.down = True  # raises StoreError("database is locked") on writes; reads answer
    writer.write([entry(1)], worker.next())
    for _ in range(5):
        assert not writer.replay()
    assert store.usage(UsageQuery()) == []  # the store reads
    assert writer.spool.batches == 1 and not (tmp_path / REJECTED_FILE).exists()
    assert sum("cannot be written" in line for line in logged) == 1  # once, not per try
    store.down = False
    assert writer.replay() and requests(store) == 1
    store.close()


def test_reports_a_stopped_worker_left_are_added_once_at_the_next_start(tmp_path: Path) -> None:
    """A worker that stopped with no control process to take its reports wrote them to the state
    directory (process/control_link.py keep_unreported): the next control process spools and replays
    them; one of them already in the store, or the file taken twice (a crash before its removal), adds
    nothing twice."""
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    first = worker.next()
    LedgerWriter(store, lambda line: None, str(tmp_path)).write([entry(1)], first)  # reached the store
    lines = [
        orjson.dumps({"writer": w, "seq": n, "rows": [list(entry(r))]})
        for (w, n), r in ((first, 1), (worker.next(), 2), (worker.next(), 4))
    ]
    left = tmp_path / f"{WORKER_LEFT_PREFIX}4242{WORKER_LEFT_SUFFIX}"
    left.write_bytes(b"\n".join(lines) + b"\n")
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append, str(tmp_path))
    assert not left.exists() and writer.spool.batches == 3
    assert any("3 reports a stopped worker left" in line for line in logged)
    assert writer.replay() and requests(store) == 7
    left.write_bytes(b"\n".join(lines) + b"\n")  # as if the file had outlived a crash
    assert LedgerWriter(store, logged.append, str(tmp_path)).replay() and requests(store) == 7
    store.close()


def test_a_stop_writes_what_the_spool_holds_while_the_store_answers(tmp_path: Path) -> None:
    """A control process stopped with batches spooled (the store back moments ago, its retry not yet
    due) left them for the next start, so ``fastgw usage`` missed them until then; one whose store is
    still away keeps them and stops trying at once."""
    worker = Worker()
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    writer = LedgerWriter(store, lambda line: None, str(tmp_path))
    store.down = True
    for size in (1, 2, 4):
        writer.write([entry(size)], worker.next())
    writer.finish(seconds=60.0)  # returns at the first failed try
    assert requests(store) == 0 and writer.spool.batches == 3
    store.down = False
    writer.finish()
    assert requests(store) == 7 and (tmp_path / SPOOL_FILE).stat().st_size == 0
