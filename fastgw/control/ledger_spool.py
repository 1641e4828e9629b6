"""The usage ledger's spool: report batches the store could not take, kept on disk in the state directory
until it can, so a store outage (PostgreSQL down, a locked SQLite file) and a control process killed
meanwhile lose nothing (control/ledger.py replays them, in order, once the store answers).

One JSON line per batch, ``{"writer": W, "seq": N, "rows": [[day, consumer, ..., errors], ...]}``,
appended and fsynced before the batch counts as kept; the file is created 0600 (it names consumers and
keys) and only ever appended to while the store is down, then emptied once every batch is in the store.
A crash can therefore leave at most a torn last line: it is cut off (and logged) when the spool is next
opened. A line that does not parse elsewhere (disk damage) is skipped with a log line.

Bound: ``SPOOL_BYTES_MAX`` of batches not yet replayed. Past it, new batches are refused (dropped,
counted, logged), never the oldest: the file stays append-only, so nothing already kept can be lost by
rewriting it under a crash. An append that fails (a full or failing state disk) cuts what it wrote
before raising, so the next batch starts on a line of its own: a fragment left in the middle of the file
would swallow the batch after it (one unparsable line) and, past ``size``, end the replay early.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

SPOOL_FILE: Final = "ledger-spool.jsonl"
# Reports a worker could not hand over before it stopped (no control process ran: PostgreSQL down at its
# start, a control process restarting), in the spool's line format, one file per worker run (named by
# its writer id, unique per run: a reused pid never overwrites one): the next control process appends
# them to its spool at start (control/ledger.py), then removes the file.
WORKER_LEFT_PREFIX: Final = "ledger-worker-"
WORKER_LEFT_SUFFIX: Final = ".jsonl"
# The spool's most bytes. A busy node (8 workers, each flushing 100 distinct rows every 2 s at ~200 bytes
# a row) spools ~80 KB/s, so 256 MiB holds about an hour of outage: long enough for a database restart or
# a failover, small beside a state disk. Replay reads one line at a time, so memory stays small.
SPOOL_BYTES_MAX: Final = 256 * 1024 * 1024


def batch_line(writer: str, seq: int, rows: Sequence[Sequence[Any]], **more: Any) -> bytes:
    """One batch as a line of the spool (and of the files beside it: a stopped worker's reports, the
    batches set aside), ``more`` fields after its own."""
    return orjson.dumps({"writer": writer, "seq": seq, "rows": rows, **more}) + b"\n"  # tuples: arrays


def parse_batch_line(line: bytes) -> tuple[str, int, list[list[Any]]]:
    """(writer, seq, rows) of a line ``batch_line`` wrote; ValueError for anything else."""
    try:
        data = orjson.loads(line)
        return str(data["writer"]), int(data["seq"]), list(data["rows"])
    except (KeyError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    writer: str
    seq: int
    rows: list[list[Any]]
    end: int  # the file offset just past this batch's line


class LedgerSpool:
    """The spool file at ``path``: append batches, read them back from where replay stopped, clear."""

    def __init__(self, path: str, log: Callable[[str], None], max_bytes: int = SPOOL_BYTES_MAX) -> None:
        self.path = path
        self.log = log
        self.max_bytes = max_bytes
        self.replayed = 0  # the offset up to which batches are in the store (this run)
        self.rows = 0  # rows spooled and not yet replayed
        self.batches = 0
        self._torn = False  # an append failed and its bytes may still be past ``size``
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)  # an older file with wider rights: it names consumers and keys
        self.size = self._cut_torn_tail()
        for batch in self.read():
            self.rows += len(batch.rows)
            self.batches += 1

    def _cut_torn_tail(self) -> int:
        """Drop a last line without its newline (a crash mid-append), so the next append starts clean."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        keep = size
        while keep > 0:
            start = max(0, keep - 65536)
            chunk = os.pread(self._fd, keep - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep < size:
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            self.log(
                f"usage ledger spool {self.path}: skipped a torn last line ({size - keep} bytes): a crash"
            )
        return keep

    @property
    def pending(self) -> bool:
        return self.replayed < self.size

    def adopt(self, path: str) -> tuple[int, int]:
        """Append the batches of a worker's file (WORKER_LEFT_PREFIX) and remove it: (batches added, rows
        the full spool refused). A batch written before (from this file by a control process killed
        before removing it, or from the worker's channel) is skipped at replay by its number."""
        with open(path, "rb") as file:
            lines = file.read().splitlines()
        added = refused = 0
        for line in lines:
            try:
                writer, seq, rows = parse_batch_line(line)
            except ValueError as exc:
                self.log(f"usage ledger: skipped a line of {path} that does not parse ({exc})")
                continue
            if not self.append(writer, seq, rows):
                self.log(f"USAGE LEDGER SPOOL FULL: {len(rows)} rows of {path} dropped")
                refused += len(rows)
                continue
            added += 1
        os.unlink(path)
        return added, refused

    def append(self, writer: str, seq: int, rows: list[list[Any]]) -> bool:
        """Keep one batch, durably (fsync) before returning True; False when the bound refuses it.
        Raises OSError when the disk does (nothing of the batch is kept then)."""
        line = batch_line(writer, seq, rows)
        if self.size - self.replayed + len(line) > self.max_bytes:
            return False
        if self._torn:
            os.ftruncate(self._fd, self.size)  # the last failure's bytes; raises if it still cannot
            self._torn = False
        try:
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError:
            self._torn = True
            try:
                os.ftruncate(self._fd, self.size)
                self._torn = False
            except OSError:
                pass  # cut before the next append instead
            raise
        self.size += len(line)
        self.rows += len(rows)
        self.batches += 1
        return True

    def read(self, start: int | None = None) -> Iterator[SpooledBatch]:
        """The batches from ``start`` (default: where replay stopped), in the order they were spooled."""
        offset = self.replayed if start is None else start
        with open(self.path, "rb") as file:
            file.seek(offset)
            for line in file:
                offset += len(line)
                if offset > self.size:
                    return  # appended while we read: the next replay takes it
                try:
                    batch = SpooledBatch(*parse_batch_line(line), offset)
                except ValueError as exc:
                    self.log(f"usage ledger spool {self.path}: skipped a line that does not parse ({exc})")
                    continue
                yield batch

    def consumed(self, batch: SpooledBatch) -> None:
        """``batch`` is in the store (or was before): replay goes on after it."""
        self.replayed = batch.end
        self.rows -= len(batch.rows)
        self.batches -= 1

    def clear(self) -> None:
        """Every batch is in the store: empty the file (a crash before this replays what is already there,
        which the store skips by batch number)."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.size = self.replayed = self.rows = self.batches = 0

    def close(self) -> None:
        os.close(self._fd)
