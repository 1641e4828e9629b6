"""A worker's end of the control channel: reload orders, cache pushes and metric pulls from the control
process.

The worker connects to the control socket the supervisor bound, says hello (slot, pid, snapshot id) and
then answers orders. Losing the channel (the control process died or restarts) changes nothing for
traffic: the worker keeps serving on its Snapshot and reconnects every second; the control process
re-orders a reload if the worker's snapshot is not the one in force.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol, cast

from fastgw.atomic_file import write_whole
from fastgw.codec.control_messages import (
    QUOTA_RESEND_SECONDS,
    Ack,
    AuditNote,
    CachePush,
    ControlMessage,
    Health,
    Hello,
    LedgerAck,
    LedgerReport,
    MessageError,
    MetricsExport,
    MetricsPull,
    QuotaAck,
    QuotaBases,
    QuotaReport,
    Reload,
)
from fastgw.control.channel import ChannelProtocol
from fastgw.control.ledger_spool import WORKER_LEFT_PREFIX, WORKER_LEFT_SUFFIX, batch_line
from fastgw.counters.quota import QUOTAS
from fastgw.log_line import log_line
from fastgw.proxy.caches import CACHES
from fastgw.sinks.audit_notes import AUDIT_NOTES
from fastgw.sinks.ledger_book import BOOK_ROWS_MAX, FLUSH_SECONDS, LEDGER
from fastgw.snapshot import Snapshot, SnapshotHolder
from fastgw.upstream.pool import PoolManager

RECONNECT_SECONDS: Final = 1.0
# Before the first tables came (a worker starting beside its control process, which opens the store and
# migrates it first), a connect is tried this often, and a starting worker waits at most FIRST_TABLES
# seconds for them before it takes requests: without the API key table it refused valid keys with 401.
FIRST_RECONNECT_SECONDS: Final = 0.05
FIRST_TABLES_SECONDS: Final = 2.0
# At exit, how long a worker without a channel waits to connect for its last reports: a local Unix
# socket accepts at once when the control process is up; longer would only delay the stop.
LAST_CONNECT_SECONDS: Final = 1.0
# At exit, how long the last reports may take to leave: the control process reads a few hundred KiB in
# milliseconds; one second bounds a control process that has stopped reading.
DRAIN_SECONDS: Final = 1.0
# Ledger reports sent and not yet acknowledged (written or spooled by the control process) that a worker
# keeps to send again: one is usual (a report every FLUSH_SECONDS, acknowledged in milliseconds); past
# this many the control process has stopped answering, and the book keeps adding up (merged rows)
# instead of holding more reports of up to BOOK_ROWS_MAX rows each.
UNACKED_REPORTS_MAX: Final = 8
# Quota admissions per report (~100 bytes each: ~1 MiB): a book a long store outage filled (one row per
# distinct quota key and period) goes as several reports, one at a time, never one message past the
# channel's 64 MiB frame limit (the control process would drop the channel on every resend).
QUOTA_REPORT_ROWS: Final = 8192


class LinkedWorker(Protocol):
    """What the link needs from its worker (process/worker.py's Worker): a protocol, so the worker can
    import this module without an import cycle."""

    holder: SnapshotHolder
    pools: PoolManager
    slot: int
    draining: bool

    def on_tick(self, subscriber: Callable[[float], None]) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...
    def export_metrics(self) -> dict[str, Any]: ...
    def apply_config(self, data: bytes, source: str) -> Snapshot: ...


class ControlLink:
    def __init__(self, worker: LinkedWorker, address: str) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None  # the link's own Task (start): it lives to the end
        self.address = address
        self.channel: ChannelProtocol | None = None
        self._lost: asyncio.Future[None] | None = None
        # This worker run's ledger batch numbers (made here, after the fork, so every worker has its own).
        self.ledger_writer = secrets.token_hex(8)
        self.ledger_seq = 0
        self.unacked: dict[int, LedgerReport] = {}  # sent, not yet acknowledged: sent again on reconnect
        # Quota reports go one at a time (the store keeps a writer's highest batch number, so a later
        # one written first would make this one look written): the one sent and not yet acknowledged.
        self.quota_writer = "quota-" + self.ledger_writer
        self.quota_seq = 0
        self.quota_unacked: QuotaReport | None = None
        self.quota_resend_at = 0.0  # monotonic
        self.told = asyncio.Event()  # the control process's first tables (keys, quota bases) arrived
        worker.on_tick(self.flush_quotas)
        worker.on_tick(self.flush_ledger)
        worker.on_tick(self.send_audit_notes)

    def start(self) -> None:
        self.task = self.worker.spawn(self._run())

    async def _run(self) -> None:
        while not self.worker.draining:
            if await self._connect():
                assert self._lost is not None
                await self._lost
                self.channel = None
            await asyncio.sleep(RECONNECT_SECONDS if self.told.is_set() else FIRST_RECONNECT_SECONDS)

    async def first_tables(self, beat: Callable[[float], None] | None) -> None:
        """At the worker's start, before it accepts: wait (up to FIRST_TABLES_SECONDS) for the control
        process's first tables, beating the heartbeat meanwhile (the supervisor kills a silent worker)."""
        deadline = time.monotonic() + FIRST_TABLES_SECONDS
        while not self.told.is_set() and (now := time.monotonic()) < deadline:
            if beat is not None:
                beat(now)
            try:
                async with asyncio.timeout(min(0.05, deadline - now)):
                    await self.told.wait()
            except TimeoutError:
                pass

    async def _connect(self) -> bool:
        """One try at a channel to the control process (it says Hello); False if none answers."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, self.address)
            self._lost = loop.create_future()
            _, channel = await loop.create_unix_connection(
                lambda: ChannelProtocol(self._on_message, self._on_lost), sock=sock
            )
        except OSError:
            sock.close()
            return False
        self.channel = channel
        current = self.worker.holder.current
        channel.send(Hello(slot=self.worker.slot, pid=os.getpid(), snapshot=current.id))
        for report in self.unacked.values():  # a control process killed before writing them: its successor
            channel.send(report)
        if self.quota_unacked is not None:
            self._send_quota_report(channel, self.quota_unacked)
        return True

    async def linked(self) -> None:
        """At exit: a channel to send the last quota counts and ledger sums on, trying once more now if
        there is none (up to LAST_CONNECT_SECONDS). A control process replaced just before the stop
        would otherwise never get them: the reconnect loop sleeps RECONNECT_SECONDS between tries and
        ends when the worker drains (found by the ledger's control kill -9 test)."""
        if self.channel is not None:
            return
        try:
            async with asyncio.timeout(LAST_CONNECT_SECONDS):
                await self._connect()
        except TimeoutError:
            pass

    def _on_lost(self, channel: ChannelProtocol) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _on_message(self, channel: ChannelProtocol, message: ControlMessage) -> None:
        if isinstance(message, Reload):
            self._reload(channel, message)
        elif isinstance(message, CachePush):
            try:
                CACHES.apply(message)
            except MessageError as exc:  # the control process is broken: say so, keep the rest
                sys.stderr.write(f"fastgw[worker {self.worker.slot} {os.getpid()}]: {exc}\n")
            if message.full is not None:
                self.told.set()
        elif isinstance(message, Health):
            self.worker.pools.set_health(message.upstream, message.target, message.healthy)
        elif isinstance(message, MetricsPull):
            channel.send(MetricsExport(seq=message.seq, data=self.worker.export_metrics()))
        elif isinstance(message, QuotaBases):
            QUOTAS.apply_bases([list(entry) for entry in message.entries])
            self.told.set()
        elif isinstance(message, LedgerAck):
            self._acknowledged(message.seq)
        elif isinstance(message, QuotaAck):
            if self.quota_unacked is not None and self.quota_unacked.seq == message.seq:
                self.quota_unacked = None
                if len(QUOTAS.pending) >= QUOTA_REPORT_ROWS:  # a book a long outage filled: on at once
                    self.send_quotas()
        else:
            sys.stderr.write(f"fastgw[worker {self.worker.slot}]: unexpected {message.TAG} message\n")

    def flush_quotas(self, now: float) -> None:
        """Worker tick subscriber: send the quota admissions once per ``quota_flush`` interval."""
        if self.quota_unacked is not None:
            channel = self.channel
            if channel is not None and time.monotonic() >= self.quota_resend_at:
                self._send_quota_report(channel, self.quota_unacked)
        elif QUOTAS.pending and now >= QUOTAS.due:
            QUOTAS.due = now + self.worker.holder.current.quota_flush
            self.send_quotas()

    def send_quotas(self) -> bool:
        """Hand this worker's quota admissions to the control process as one numbered report, kept until
        it is acknowledged; while one is unacknowledged, or the control process is away, the quota book
        keeps adding them up. True when a report was sent."""
        channel = self.channel
        if channel is None or self.quota_unacked is not None:
            return False
        entries = QUOTAS.take()
        if not entries:
            return False
        if len(entries) > QUOTA_REPORT_ROWS:  # the rest stays in the book, sent once this one is in
            for key_hash, code, _limit, _value, count in entries[QUOTA_REPORT_ROWS:]:
                QUOTAS.add(int(key_hash), int(code), int(count))  # type: ignore[call-overload]
            entries = entries[:QUOTA_REPORT_ROWS]
        self.quota_seq += 1
        admissions = tuple(_admission(entry) for entry in entries)
        report = QuotaReport(writer=self.quota_writer, seq=self.quota_seq, entries=admissions)
        self.quota_unacked = report
        self._send_quota_report(channel, report)
        return True

    def _send_quota_report(self, channel: ChannelProtocol, report: QuotaReport) -> None:
        self.quota_resend_at = time.monotonic() + QUOTA_RESEND_SECONDS
        channel.send(report)  # a channel closing meanwhile: sent again on the next one

    def flush_ledger(self, now: float) -> None:
        """Worker tick subscriber: send the usage ledger's sums every FLUSH_SECONDS (sooner when full)."""
        if LEDGER.pending and (now >= LEDGER.due or LEDGER.full):
            LEDGER.due = now + FLUSH_SECONDS
            self.send_ledger()

    def send_ledger(self) -> None:
        """Hand this worker's ledger sums to the control process as numbered reports of up to
        BOOK_ROWS_MAX rows each, kept until acknowledged; while the control process is away the book
        keeps adding them up. One report per book would pass the channel's frame limit once a long
        absence gathered ~600k distinct rows: the control process would drop the channel on every
        resend, quota reports and reloads with it."""
        channel = self.channel
        if channel is None or len(self.unacked) >= UNACKED_REPORTS_MAX:
            return
        for report in self._numbered(LEDGER.take()):
            channel.send(report)  # a channel closing meanwhile: sent again on the next one

    def _numbered(self, rows: list[tuple[Any, ...]]) -> list[LedgerReport]:
        """``rows`` as the next numbered reports, BOOK_ROWS_MAX rows at most each (~1 MiB), kept until
        acknowledged."""
        reports = []
        for start in range(0, len(rows), BOOK_ROWS_MAX):
            self.ledger_seq += 1
            entries = tuple(rows[start : start + BOOK_ROWS_MAX])
            report = LedgerReport(writer=self.ledger_writer, seq=self.ledger_seq, entries=entries)
            self.unacked[report.seq] = report
            reports.append(report)
        return reports

    def keep_unreported(self, state_dir: str) -> None:
        """At stop, after ``drained``: the ledger reports no control process acknowledged and the sums
        never sent, written to the state directory for the next control process (control/ledger.py),
        which adds them once each (by their numbers) whether or not one of them reached the store."""
        if not self.unacked and not LEDGER.pending:
            return
        self._numbered(LEDGER.take())
        reports = [self.unacked[seq] for seq in sorted(self.unacked)]
        count = sum(len(report.entries) for report in reports)
        lines = b"".join(batch_line(r.writer, r.seq, r.entries) for r in reports)
        path = os.path.join(state_dir, f"{WORKER_LEFT_PREFIX}{self.ledger_writer}{WORKER_LEFT_SUFFIX}")
        try:
            write_whole(path, lines)
        except OSError as exc:
            log_line(f"USAGE LEDGER LOST {count} rows at stop: no control process, and {exc}")
            return
        log_line(f"{count} usage ledger rows no control process took at stop kept in {path}")

    def _acknowledged(self, seq: int) -> None:
        """Forget the reports up to ``seq``: the control process wrote or spooled them, in order."""
        unacked = self.unacked
        for sent in [sent for sent in unacked if sent <= seq]:
            del unacked[sent]

    def send_audit_notes(self, now: float = 0.0) -> None:
        """Worker tick subscriber: the events queued for the audit log (kept for later when it is away)."""
        if not AUDIT_NOTES.pending:
            return
        notes = AUDIT_NOTES.take()
        channel = self.channel
        for index, (event, fields) in enumerate(notes):
            if channel is None or not channel.send(AuditNote(event=event, fields=fields)):
                AUDIT_NOTES.give_back(notes[index:])
                return

    async def drained(self) -> None:
        """Wait (up to DRAIN_SECONDS) until the ledger and quota reports are acknowledged and the rest
        has left for the control process: at exit, the last quota counts and ledger sums must not die in
        this process's socket buffer, nor in a control process killed before it wrote them."""
        deadline = time.monotonic() + DRAIN_SECONDS
        await asyncio.sleep(0)
        while (channel := self.channel) is not None and time.monotonic() < deadline:
            transport = channel.transport
            acknowledged = not self.unacked and self.quota_unacked is None
            if acknowledged and (transport is None or not transport.get_write_buffer_size()):
                return
            await asyncio.sleep(0.01)

    def _reload(self, channel: ChannelProtocol, message: Reload) -> None:
        from fastgw.config.loader import ConfigError

        try:
            snapshot = self.worker.apply_config(message.config.encode(), message.source)
        except ConfigError as exc:
            sys.stderr.write(f"fastgw[worker {self.worker.slot} {os.getpid()}]: reload failed: {exc}\n")
            channel.send(Ack(seq=message.seq, ok=False, error=str(exc)))
            return
        channel.send(Ack(seq=message.seq, ok=True, snapshot=snapshot.id))


def _admission(entry: list[object]) -> tuple[int, int, str, str, int]:
    """One of QuotaBook.take's rows as QuotaReport carries it."""
    key_hash, period, limit_id, key, count = entry
    return cast(int, key_hash), cast(int, period), str(limit_id), str(key), cast(int, count)
