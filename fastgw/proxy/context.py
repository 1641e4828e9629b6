"""What a client connection needs from the worker it runs in, and nothing more.

The HTTP/1 and HTTP/2 connections, the dispatch helpers and the deadline sweep take a ``WorkerContext``:
the Snapshot in force (``holder``), the upstream pools, the request-id source, the write batch, the
completion sinks (``record``), connection admission and a way to run a Task (``spawn``). The process
side (``process/worker.py``: loop start, signals, reloads, the control link) extends it; the proxy layer
never imports it, so protocol code is tested and read without the process around it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

from fastgw.exchange import Exchange
from fastgw.log_line import log_line
from fastgw.proxy_headers.request_ids import IdSource
from fastgw.sinks.base import CHUNK_RECORDS, Record
from fastgw.sinks.fanout import CompletionSinks
from fastgw.snapshot import Snapshot, SnapshotHolder
from fastgw.upstream.pool import PoolManager
from fastgw.upstream.write_batch import WriteBatch

if TYPE_CHECKING:
    from fastgw.verdict import Denial

# Deadline kinds: what a client connection's ``deadline`` is waiting for (proxy/deadlines.py enforces it).
DL_NONE: Final = 0
DL_HEAD: Final = 1
DL_BODY: Final = 2
DL_IDLE: Final = 3
DL_LINGER: Final = 4  # half-closed, draining what the client still sends (proxy/linger.py)

# Connections opened together end up to 10% of max_connection_age apart, so a restart's reconnect wave
# does not come back as one wave at every age.
RETIRE_SPREAD: Final = 0.1


class ClientSide(Protocol):
    """A client connection as admission and retirement see it (HTTP/1 or HTTP/2)."""

    @property
    def peer_ip(self) -> str: ...

    @property
    def multiplexed(self) -> bool:
        """HTTP/2: many exchanges on one connection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    def drain(self) -> None:
        """Shutdown: close when idle, or after the exchanges in flight."""

    def retire(self) -> None:
        """Past ``process.max_connection_age``: end gracefully (HTTP/1 closes after the next response,
        HTTP/2 sends GOAWAY)."""

    def refuse_unanswered(self, denial: Denial) -> None:
        """The stopping worker's drain_timeout passed: each exchange still without a response head is
        answered ``denial`` (a status the client's SDK retries, in its shape, rather than a reset) and
        its handler cancelled; responses already begun are left to the abort that follows."""


class WorkerContext:
    """Per-process state shared by every connection of one worker."""

    sinks: CompletionSinks  # set by the worker once its metrics exist (metrics first, then the access log)

    def __init__(self, snapshot: Snapshot, loop: asyncio.AbstractEventLoop) -> None:
        self.holder = SnapshotHolder(snapshot)
        self.loop = loop
        self.pools = PoolManager(loop)
        self.writes = WriteBatch(loop)  # request and response writes made at each iteration's end
        self.pending: list[Record] = []  # completed exchanges not yet handed to the sinks
        # Exchanges cut while their handler Task ran, completed when it ends (dispatch.complete_when_done)
        self.cut: dict[asyncio.Task[None], Exchange] = {}
        self.ids = IdSource()
        self.via = b"1.1 " + snapshot.server.server_name
        self.connections: set[ClientSide] = set()
        # When each connection is due to be recycled (process.max_connection_age; absent: never).
        self.retire_at: dict[ClientSide, float] = {}
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.draining = False
        # Set when a stopping worker closes the connections left after drain_timeout: what their close
        # cuts short is the gateway's doing, not the client's (handler Tasks are cancelled with
        # CANCELLED_SHUTDOWN).
        self.aborting = False
        self.now = time.monotonic()  # refreshed by every tick: for deadlines where 100 ms grain is enough

    # -- connection accounting -----------------------------------------------------------------------
    def admit(self, conn: ClientSide, max_total: int, max_per_ip: int) -> bool:
        ip = conn.peer_ip
        count = self._per_ip.get(ip, 0)
        if len(self.connections) >= max_total or count >= max_per_ip:
            return False
        self._per_ip[ip] = count + 1
        self.connections.add(conn)
        age = self.holder.current.process.max_connection_age
        if age:
            self.retire_at[conn] = self.now + age * (1.0 - RETIRE_SPREAD * random.random())
        return True

    def replace(self, old: ClientSide, new: ClientSide) -> None:
        """A connection changed protocol (HTTP/2 took over): same client, same admission slot."""
        if old in self.connections:
            self.connections.discard(old)
            self.connections.add(new)
            retire_at = self.retire_at.pop(old, None)
            if retire_at is not None:
                self.retire_at[new] = retire_at

    def release(self, conn: ClientSide) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.retire_at.pop(conn, None)
            ip = conn.peer_ip
            count = self._per_ip.get(ip, 1) - 1
            if count:
                self._per_ip[ip] = count
            else:
                self._per_ip.pop(ip, None)

    def log_event(self, message: str) -> None:
        log_line(message)

    # -- records: the completion sinks (fastgw/sinks/) ----------------------------------------------
    def record(self, record: Record) -> None:
        pending = self.pending
        pending.append(record)
        if len(pending) == CHUNK_RECORDS:  # once per chunk: the callback takes whatever is pending then
            self.loop.call_soon(self._deliver_chunk)

    def _deliver_chunk(self) -> None:
        """A chunk's records to the sinks, after the writes of the iteration that completed them (their
        callback was queued first): the answers leave, then the bookkeeping runs."""
        if self.pending:
            self.flush_records(hold=True)

    def flush_records(self, *, hold: bool = False) -> None:
        """Hand the pending records to the completion sinks: every tick, or every CHUNK_RECORDS records
        (``hold``: not the tick, so the sinks keep what they formatted until it, see AccessLog.take).
        The metrics sink is first and copies the counts to shared memory before the access log sees the
        batch: a ``kill -9`` loses the counts of at most the records completed since the last publishing
        point (one tick, and fewer than BATCH_RECORDS: sinks/fanout.py), and the log lines of those plus
        the lines the writer thread had not yet written."""
        batch = self.pending
        if batch:
            self.pending = []
        self.sinks.deliver(batch, tick=not hold)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a Task the worker keeps a reference to until it ends."""
        task = self.loop.create_task(coro)
        self.writes.reserve()  # what the Task's first step writes leaves in this iteration's batch
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
