"""Request and response writes held to the end of the loop iteration, then made back to back.

Why: a write to a loopback or LAN socket wakes the process reading it. When that process's CPU is idle,
the kernel wakes the CPU with an inter-processor interrupt, and on a virtual machine sending an IPI
costs the sender a VM exit. A gateway that writes each request and response the moment it is ready
spaces its writes by one request's processing; whenever its peers (the upstream, the clients) are
faster than that, their CPU goes idle between two writes and nearly every write pays for a wake-up.
Holding the writes of one iteration's callbacks and making them together at its end lets the first
wake the peers' CPU and the rest find it awake (the measurements are in commit ff2b462's message).

A request or response waits at most for the rest of its iteration; an idle loop runs the batch at once
(``call_soon`` runs before the loop polls again). Only the fast path's writes are held: a whole request
head (with its buffered body) and a response completed in one go. Every other write on the same
connection writes what is held first, so bytes never change order (ClientConnection.flush,
UpstreamConnection.write).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class HeldWrites(Protocol):
    """A connection (client or upstream, HTTP/1 or HTTP/2) with a write held for the iteration's end.
    A protocol, so this module imports none of the connection classes (no import cycle)."""

    def write_held(self) -> None: ...


class WriteBatch:
    """One per worker: the connections holding a write, written by one callback per loop iteration."""

    __slots__ = ("_clients", "_h2", "_loop", "_scheduled", "_upstreams")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scheduled = False
        self._upstreams: list[HeldWrites] = []
        self._clients: list[HeldWrites] = []
        self._h2: list[HeldWrites] = []

    def hold_upstream(self, conn: HeldWrites) -> None:
        if not self._scheduled:
            self._schedule()
        self._upstreams.append(conn)

    def hold_client(self, conn: HeldWrites) -> None:
        if not self._scheduled:
            self._schedule()
        self._clients.append(conn)

    def hold_h2(self, conn: HeldWrites) -> None:
        """An HTTP/2 connection with frames queued in h2 (always held: the frames of every stream that
        progressed in the iteration then leave in one write)."""
        if not self._scheduled:
            self._schedule()
        self._h2.append(conn)

    def reserve(self) -> None:
        """Run the batch after the callbacks queued so far. For Tasks: a Task's step runs in the loop's
        ready phase, and a ``write_all`` first scheduled from inside it runs only after one more poll
        (two per handler request: its upstream request and its answer, each a system call and a loop
        pass later). Called where an I/O callback starts or wakes a Task (the handler's spawn, an
        upstream response's head or body arriving), so the writes that step holds leave with this
        iteration's. If the batch was already scheduled before the Task, the step's writes wait for
        the next pass, as before: under load the batch is full anyway."""
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop.call_soon(self.write_all)

    def write_all(self) -> None:
        """Requests first (the upstream's work starts sooner), then responses. A connection that wrote
        or closed since it was held finds nothing left to write."""
        self._scheduled = False
        upstreams = self._upstreams
        if upstreams:
            self._upstreams = []
            for upstream in upstreams:
                upstream.write_held()
        clients = self._clients
        if clients:
            self._clients = []
            for client in clients:
                client.write_held()
        streams = self._h2
        if streams:
            self._h2 = []
            for h2 in streams:
                h2.write_held()
