"""The access-log sink: one JSON line per completed exchange (access_line.py), formatted on the loop,
written by a writer thread.

Hot-path rule 3: a request only appends its completed Exchange to a list (~0.14 us; the Exchange is the
record, no copy is made). Every 100 ms the worker tick formats the batch (~1 us a record: a bytes
template, orjson only for the rare fields) and hands the bytes to the writer thread through a
``queue.SimpleQueue`` (its ``put`` never blocks the loop); the thread only does the blocking ``write``, so
a slow disk never stalls the loop.
Formatting stays on the loop because formatting in the writer thread would make the two threads fight
for the GIL (forced switches every 5 ms), which costs each request more than the formatting itself.
Under pressure the writer's queue is bounded (a :class:`~fastgw.sinks.base.Backlog` of ``max_pending``
records): batches beyond it are dropped and counted (``fastgw_sink_dropped_total``), never allowed to
grow memory.

Crash bound: the worker hands its lines to the writer every tick (``TICK_SECONDS``, 100 ms: batches
formatted between ticks are held until then), and the writer writes and flushes each hand-off at once. So a
``kill -9`` of a worker loses the lines of the records it completed since its last tick, plus any hand-off
the writer had not yet written (none on a healthy disk; at most ``max_pending`` records while the disk
stalls). The metrics sink comes before this one (sinks/fanout.py), so the worker's counters reach shared
memory before its lines reach the writer, and the log never shows a request the metrics lost.
``tests/e2e/test_metrics_crash.py`` checks the bound with ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from typing import Final

from fastgw.access_line import format_batch
from fastgw.log_line import log_line
from fastgw.sinks.base import Backlog, Record, Sink
from fastgw.snapshot import AccessLogSettings

# A line shows these fields of a record, in order: time, snapshot, request_id, client, method, path, query
# (when configured), route, status, upstream, upstream_ms, total_ms, bytes_in, bytes_out, then denial,
# shadow, client_cert and protocol when they apply.
HOLD_BYTES: Final = 256 * 1024  # formatted lines held between ticks before the writer gets them anyway
_REOPEN: Final = "reopen"
_STOP: Final = "stop"


PIPE_BUF: Final = 4096  # POSIX: pipe writes up to this size are atomic


def write_atomic_lines(fd: int, data: bytes) -> None:
    """Write whole lines in chunks of at most PIPE_BUF bytes (a longer line alone).

    Several workers share stdout (a pipe to journald or a terminal): a pipe write over PIPE_BUF may be
    split and interleaved with another worker's, tearing JSON lines apart. Chunks under it never are.
    """
    start, end = 0, len(data)
    while start < end:
        stop = start + PIPE_BUF
        if stop < end:
            cut = data.rfind(b"\n", start, stop)
            stop = cut + 1 if cut >= start else data.find(b"\n", stop) + 1 or end
        else:
            stop = end
        view = memoryview(data)[start:stop]
        while view:
            view = view[os.write(fd, view) :]
        start = stop


class AccessLog(Sink):
    __slots__ = (
        "_failing",
        "_held",
        "_held_bytes",
        "_held_count",
        "_include_query",
        "_queue",
        "_redact",
        "_target",
        "_thread",
        "backlog",
        "enabled",
        "write_failures",
    )
    name = "access_log"

    def __init__(self, settings: AccessLogSettings) -> None:
        self.enabled = settings.target != "off"
        self._target = settings.target
        self._include_query = settings.include_query
        self._redact = settings.redact_query
        # Records formatted (held or queued) and not yet written; the writer thread finishes them, and
        # alone writes write_failures.
        self.backlog = Backlog(settings.max_pending)
        self.write_failures = 0
        self._failing = False  # the writer could not open or write the file: logged once, until it can
        self._queue: queue.SimpleQueue[tuple[int, bytes] | str] = queue.SimpleQueue()
        self._held: list[bytes] = []  # formatted lines not yet handed to the writer (see take)
        self._held_count = 0
        self._held_bytes = 0
        self._thread: threading.Thread | None = None
        if self.enabled:
            if self._target != "stdout":  # fail at start-up, not in the thread, if it cannot be opened
                os.close(os.open(self._target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
            self._thread = threading.Thread(target=self._run, name="fastgw-access-log", daemon=True)
            self._thread.start()

    @property
    def dropped(self) -> int:
        return self.backlog.dropped

    def take(self, batch: list[Record]) -> None:
        """A batch from the worker (every CHUNK_RECORDS records, and at the tick): formatted now, handed
        to the writer thread at the tick, or at a publishing point once HOLD_BYTES of lines are held, so
        the writer wakes ~10 times a second instead of once per batch (each wake costs the loop a GIL
        hand-over). The writer's queue is bounded by ``max_pending`` records: past it, batches are
        dropped and counted rather than allowed to grow memory while the disk is stuck."""
        if not batch or not self.backlog.admit(len(batch)):
            return
        data = format_batch(batch, self._include_query, self._redact)
        self._held.append(data)
        self._held_count += len(batch)
        self._held_bytes += len(data)

    def publish(self) -> None:
        """A publishing point: lines past HOLD_BYTES go to the writer now (their counts are published)."""
        if self._held_bytes >= HOLD_BYTES:
            self.release()

    def flush(self) -> None:
        self.release()

    def release(self) -> None:
        """Hand every formatted line held so far to the writer thread, in one write."""
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._queue.put((self._held_count, data))
            self._held = []
            self._held_count = 0
            self._held_bytes = 0

    def reopen(self) -> None:
        """Reopen the log file (SIGUSR1, after logrotate moved it)."""
        self.release()  # lines formatted before the signal end the old file
        self._queue.put(_REOPEN)

    def close(self) -> None:
        """Write everything pending and stop the writer thread."""
        if self._thread is None:
            return
        self.release()
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._thread = None

    def _open(self) -> int | None:
        """The log's file descriptor (stdout's for ``stdout``), or None when it cannot be opened now:
        logged, and tried again at the next batch (records meanwhile count as write failures)."""
        if self._target == "stdout":
            return sys.stdout.fileno()
        try:
            return os.open(self._target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log_line(
                    f"access log {self._target}: cannot open ({exc.strerror}); lines are lost until it can"
                )
            return None

    def _run(self) -> None:
        fd = self._open()
        torn = False  # a failed write stopped inside a line: the next write starts a new one
        while True:
            item = self._queue.get()
            if item == _STOP:
                break
            if item == _REOPEN:
                if fd is not None and self._target != "stdout":
                    with contextlib.suppress(OSError):  # (NFS may report a failed write here): the new one
                        os.close(fd)
                fd = self._open()
                continue
            assert isinstance(item, tuple)
            count, data = item
            if fd is None:
                fd = self._open()  # a reopen that failed (a directory renamed, made unwritable) is retried
            if fd is None:
                self.write_failures += count
                self.backlog.finish(count)
                continue
            if self._target == "stdout":
                try:
                    write_atomic_lines(fd, data)
                except OSError:
                    self.write_failures += count
            else:
                torn = self._write(fd, b"\n" + data if torn else data, count)
            self.backlog.finish(count)
        if fd is not None and self._target != "stdout":
            os.close(fd)

    def _write(self, fd: int, data: bytes, count: int) -> bool:
        """One batch to the file, whole or as far as it goes (a full disk writes part of it): the lines
        not written count as failures, logged once per outage. Whether it stopped inside a line."""
        view = memoryview(data)
        try:
            while view:  # O_APPEND: each write lands at the end, whole unless the disk is full
                view = view[os.write(fd, view) :]
        except OSError as exc:
            written = len(data) - len(view)
            lost = min(count, data.count(b"\n", written))  # each line not written whole ends past it
            self.write_failures += lost
            if not self._failing:
                self._failing = True
                log_line(
                    f"access log {self._target}: write failed ({exc.strerror}); lines are lost until it can"
                )
            return written > 0 and data[written - 1] != 10
        if self._failing:
            self._failing = False
            log_line(f"access log {self._target}: writing again")
        return False
