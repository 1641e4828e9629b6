"""A worker's control link hands its ledger book on in reports of bounded size: a book gathered while the
control process was away for long (one row per distinct consumer, key, model, route and day) used to go as
one report, which past ~600k rows exceeded the channel's frame limit: the control process dropped the
channel on every resend, and quota reports and reloads with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgw.codec.control_messages import ControlMessage, LedgerReport
from fastgw.control.channel import encode
from fastgw.control.ledger_spool import WORKER_LEFT_PREFIX
from fastgw.process.control_link import ControlLink
from fastgw.sinks.ledger_book import BOOK_ROWS_MAX, LEDGER


class StubWorker:
    """What ControlLink reads of its worker before it connects."""

    holder: Any = None
    pools: Any = None
    slot = 0
    draining = False

    def on_tick(self, subscriber: Callable[[float], None]) -> None:
        pass

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        raise AssertionError("not started")

    def export_metrics(self) -> dict[str, Any]:
        return {}

    def apply_config(self, data: bytes, source: str) -> Any:
        raise AssertionError("no reloads here")


class Channel:
    """The link's end of the channel: what it sent, as framed bytes would go."""

    transport = None

    def __init__(self) -> None:
        self.sent: list[ControlMessage] = []

    def send(self, message: ControlMessage) -> bool:
        self.sent.append(message)
        return True


@pytest.fixture
def book() -> Iterator[int]:
    """The worker's (process-global) ledger book holding 2.5 reports' worth of distinct rows."""
    rows = 2 * BOOK_ROWS_MAX + BOOK_ROWS_MAX // 2
    LEDGER.take()
    for i in range(rows):
        LEDGER.pending[("2026-12-07", f"c{i}", f"k_{i}", "", "m", "oa", "llm")] = [1, 10, 5, 0, 0, 500, 0, 0]
    yield rows
    LEDGER.take()


def test_a_large_book_goes_as_reports_of_bounded_size_each_row_once(book: int) -> None:
    link = ControlLink(StubWorker(), "/nonexistent")
    channel = Channel()
    link.channel = channel  # type: ignore[assignment]
    link.send_ledger()
    reports = [m for m in channel.sent if isinstance(m, LedgerReport)]
    assert [len(r.entries) for r in reports] == [BOOK_ROWS_MAX, BOOK_ROWS_MAX, BOOK_ROWS_MAX // 2]
    assert [r.seq for r in reports] == [1, 2, 3] and sorted(link.unacked) == [1, 2, 3]
    assert len({entry[1] for r in reports for entry in r.entries}) == book  # every row, once
    assert max(len(encode(r)) for r in reports) < 2 * 1024 * 1024  # ~1 MiB each at most
    assert not LEDGER.pending
    link._acknowledged(3)
    assert not link.unacked


def test_a_stop_without_a_control_process_keeps_a_large_book_in_bounded_batches(
    book: int, tmp_path: Path
) -> None:
    link = ControlLink(StubWorker(), "/nonexistent")
    link.keep_unreported(str(tmp_path))
    [left] = tmp_path.glob(f"{WORKER_LEFT_PREFIX}*")
    batches = [orjson.loads(line) for line in left.read_bytes().splitlines()]
    assert [(b["seq"], len(b["rows"])) for b in batches] == [
        (1, BOOK_ROWS_MAX),
        (2, BOOK_ROWS_MAX),
        (3, BOOK_ROWS_MAX // 2),
    ]
    assert sum(row[7] for b in batches for row in b["rows"]) == book  # requests: each row once


def test_a_large_quota_book_goes_one_bounded_report_at_a_time_each_admission_once() -> None:
    """Quota admissions kept through a long store outage (the control process acknowledges a report only
    once it is in the store) went as one report: past the frame limit, the channel was dropped on every
    resend, reloads and key pushes with it."""
    from fastgw.codec.control_messages import QuotaAck, QuotaReport
    from fastgw.counters.quota import QUOTAS
    from fastgw.process.control_link import QUOTA_REPORT_ROWS

    QUOTAS.take()
    rows = 2 * QUOTA_REPORT_ROWS + 100
    for i in range(rows):
        QUOTAS.add(1000 + i, 20000, 2)
    link = ControlLink(StubWorker(), "/nonexistent")
    channel = Channel()
    link.channel = channel  # type: ignore[assignment]
    try:
        assert link.send_quotas()
        assert not link.send_quotas()  # one at a time: the next waits for this one's acknowledgement
        for _ in range(2):  # each acknowledgement sends the next full report at once
            sent = [m for m in channel.sent if isinstance(m, QuotaReport)]
            link._on_message(channel, QuotaAck(seq=sent[-1].seq))  # type: ignore[arg-type]
        assert link.send_quotas()  # the rest, as the tick sends what the book holds
        link._on_message(channel, QuotaAck(seq=link.quota_seq))  # type: ignore[arg-type]
        reports = [m for m in channel.sent if isinstance(m, QuotaReport)]
        assert [len(r.entries) for r in reports] == [QUOTA_REPORT_ROWS, QUOTA_REPORT_ROWS, 100]
        assert max(len(encode(r)) for r in reports) < 2 * 1024 * 1024
        counted = {(e[0], e[1]): e[4] for r in reports for e in r.entries}
        assert len(counted) == rows and set(counted.values()) == {2}  # every key once, its whole count
        assert not QUOTAS.pending and link.quota_unacked is None
    finally:
        QUOTAS.take()
