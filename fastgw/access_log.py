"""Access log: one JSON line per request, built from a tuple on the loop, formatted in a writer thread.

Hot-path rule 3: the loop only appends a tuple to a list (~0.1 us). The worker tick hands the whole list to
the writer thread every 100 ms through an ``aiologic.SimpleQueue`` (one cross-thread hand-off per tick, not
per request); the thread formats the batch with orjson and writes it in one call. Moving work to a thread
does not make it free (the GIL), so ``bench/`` measures the log on and off. Under pressure the pending list
is bounded: records beyond ``max_pending`` are dropped and counted, never allowed to grow memory.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
from typing import IO, Any, Final

import aiologic
import orjson

from fastgw.snapshot import AccessLogSettings

FIELDS: Final = (
    "time", "snapshot", "request_id", "client", "method", "path", "query", "route", "status",
    "upstream", "upstream_ms", "total_ms", "bytes_in", "bytes_out", "denial", "shadow",
)
Record = tuple[Any, ...]
_REOPEN: Final = "reopen"
_STOP: Final = "stop"


def _text(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def format_record(record: Record, include_query: bool) -> bytes:
    doc = {name: _text(value) for name, value in zip(FIELDS, record, strict=True)}
    doc["time"] = datetime.datetime.fromtimestamp(record[0], datetime.UTC).isoformat(timespec="milliseconds")
    if not include_query or not doc["query"]:
        del doc["query"]
    if not doc["denial"]:
        del doc["denial"]
    if doc["shadow"] is None:
        del doc["shadow"]
    return orjson.dumps(doc)


class AccessLog:
    __slots__ = ("_include_query", "_max", "_pending", "_queue", "_target", "_thread", "dropped", "enabled")

    def __init__(self, settings: AccessLogSettings) -> None:
        self.enabled = settings.target != "off"
        self._target = settings.target
        self._include_query = settings.include_query
        self._max = settings.max_pending
        self._pending: list[Record] = []
        self.dropped = 0
        self._queue: aiologic.SimpleQueue[list[Record] | str] = aiologic.SimpleQueue()
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._open()  # fail at start-up, not in the thread, if the file cannot be opened
            self._thread = threading.Thread(target=self._run, name="fastgw-access-log", daemon=True)
            self._thread.start()

    def record(self, record: Record) -> None:
        pending = self._pending
        if len(pending) < self._max:
            pending.append(record)
        else:
            self.dropped += 1

    def flush(self) -> None:
        """Hand the pending batch to the writer thread (called by the worker tick)."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._queue.put(batch)

    def reopen(self) -> None:
        """Reopen the log file (SIGUSR1, after logrotate moved it)."""
        self._queue.put(_REOPEN)

    def close(self) -> None:
        """Write everything pending and stop the writer thread."""
        if self._thread is None:
            return
        self.flush()
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._thread = None

    def _open(self) -> IO[bytes]:
        if self._target == "stdout":
            return sys.stdout.buffer
        fd = os.open(self._target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        return os.fdopen(fd, "ab")

    def _run(self) -> None:
        out = self._open()
        include_query = self._include_query
        while True:
            item = self._queue.green_get()
            if item == _STOP:
                break
            if item == _REOPEN:
                if out is not sys.stdout.buffer:
                    out.close()
                out = self._open()
                continue
            assert isinstance(item, list)
            lines = [format_record(record, include_query) for record in item]
            lines.append(b"")
            try:
                out.write(b"\n".join(lines))
                out.flush()
            except OSError:
                self.dropped += len(item)
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
