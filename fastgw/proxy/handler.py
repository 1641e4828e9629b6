"""Runs a handler route's handler and hands its response to the client's link (HTTP/1.1 or HTTP/2:
proxy/handler_links.py).

A connection that admitted an exchange on a handler route (``route.handler`` is set) hands it to a
:class:`HandlerRun`: the request body is buffered (the route's ``max_body_bytes`` bounds it, enforced by the
connection as for proxied bodies), the BODY phase runs on it, then the handler runs as one Task (spawned
through the worker, DESIGN.md: a Task per request is fine off the fast path) and writes through this
module's :class:`ResponseWriter` for the client's protocol, wrapped by the route's response filters.

Flow control: ``write`` returns only once the client takes more (HTTP/1.1: the transport is not paused;
HTTP/2: the stream's buffer is under ``http2.stream_buffer``), so a client that does not read holds the
handler, not memory. The connection cancels the Task when the client goes away (connection lost, stream
reset). A handler that raises gets a 500 problem response if nothing was sent yet, else its connection
(HTTP/1.1) or stream (HTTP/2) is aborted; the worker log names the exception's type and the request id,
the client never sees more than "internal error".
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from fastgw.codec.serialize import LAST_CHUNK
from fastgw.exchange import Exchange
from fastgw.handler_api import CANCELLED_CLIENT_GONE, CANCELLED_SHUTDOWN, Fields, ResponseFilter, Upstreams
from fastgw.policy.chain import Denial, run_body_checks
from fastgw.proxy_headers.hop_by_hop import filter_trailers
from fastgw.snapshot import Route

HANDLER_ERROR: Final = Denial(500, "internal-error", "the request could not be completed", "handler.error")
NO_RESPONSE: Final = Denial(
    500, "internal-error", "the request could not be completed", "handler.no_response"
)
# Fields a handler may not set: the gateway frames the response and owns the connection.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class ClientLink(Protocol):
    """What a response writer needs from its connection (HTTP/1.1) or stream (HTTP/2)."""

    def send_head(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]], length: int) -> None:
        """Send the head; ``length`` is the body's Content-Length, or -1 for unknown."""

    def send_body(self, data: bytes) -> bool:
        """Send body bytes; False while the client is not taking more (then ``wake`` follows)."""

    def send_end(self, ex: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        """End the response; the exchange completes (logged, metrics) when its last byte is out."""

    def fail(self, ex: Exchange, denial: Denial) -> None:
        """Answer ``denial`` if nothing was sent yet, else abort the connection or stream."""

    def flush(self) -> None:
        """Write what the head and body sends hold now (ResponseWriter.flush)."""

    def log_event(self, message: str) -> None: ...

    def upstreams(self) -> Upstreams:
        """The worker's upstream pools, for the handler's own requests (proxy/client.py)."""
        ...


class Writer:
    """The ResponseWriter a handler gets: applies the route's rules and response filters, then hands the
    bytes to its ClientLink; ``write`` waits while the client does not read."""

    __slots__ = ("_filters", "_link", "_waiter", "ended", "ex", "length", "started")

    def __init__(self, ex: Exchange, link: ClientLink, filters: list[ResponseFilter]) -> None:
        self.ex = ex
        self._link = link
        self._filters = filters
        self._waiter: asyncio.Future[None] | None = None
        self.started = False
        self.ended = False
        self.length = -1

    def start(self, status: int, headers: Fields) -> None:
        if self.started:
            raise RuntimeError("response already started")
        if not 200 <= status <= 599:
            raise ValueError(f"a handler answers with a final status, not {status}")
        fields = [(name.lower(), value) for name, value in headers]
        for f in self._filters:
            f.on_head(status, fields)
        length = -1
        kept = []
        for name, value in fields:
            if name == b"content-length":
                length = int(value)
            elif name not in _FRAMING:
                kept.append((name, value))
        self.started = True
        self.length = length
        self.ex.status = status
        self._link.send_head(self.ex, status, kept, length)

    async def write(self, data: bytes) -> None:
        if not self.started or self.ended:
            raise RuntimeError("write outside the response body (before start or after end)")
        for f in self._filters:
            data = f.on_chunk(data)
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        if not data or self.ex.method == b"HEAD":
            return
        self.ex.bytes_out += len(data)
        if not self._link.send_body(data):
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def wake(self) -> None:
        """The client takes more again (the link's flow control)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def end(self, trailers: Fields | None = None) -> None:
        if self.ended:
            return
        if not self.started:
            raise RuntimeError("end before start")
        filters = self._filters
        for i, f in enumerate(filters):
            tail = f.on_end()
            for later in filters[i + 1 :]:
                tail = later.on_chunk(tail)
            await self._send(tail)
        self.ended = True
        self._link.send_end(self.ex, filter_trailers(list(trailers)) if trailers else None)

    def flush(self) -> None:
        if self.started and not self.ended:
            self._link.flush()


class HandlerRun:
    """One exchange on a handler route: its buffered body, then its handler Task."""

    __slots__ = ("_begun", "_body", "_cancelled", "_task", "ex", "link", "writer")

    def __init__(self, ex: Exchange, link: ClientLink) -> None:
        self.ex = ex
        self.link = link
        route = ex.route
        assert route is not None
        filters = [f for f in (m.response_filter(ex) for m in route.response_filters) if f is not None]
        self.writer = Writer(ex, link, filters)
        self._body: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._begun = False

    def feed(self, data: bytes) -> None:
        """Request body bytes (the connection enforces the route's max_body_bytes before)."""
        self._body.append(data)

    def begin(self, spawn: Spawn) -> None:
        """The body is complete: run the BODY phase, then the handler in its own Task (once: a request
        without a body is complete at admission, and its end callback comes after)."""
        if self._begun:
            return
        self._begun = True
        ex = self.ex
        route = ex.route
        assert route is not None and route.handler is not None
        body = b"".join(self._body)
        self._body = []
        if route.body_checks:
            denial = run_body_checks(route.body_checks, ex, body)
            if denial is not None:
                self.link.fail(ex, denial)
                return
        self._task = spawn(self._run(route, body))

    async def _run(self, route: Route, body: bytes) -> None:
        if self._cancelled:
            return
        handler = route.handler
        assert handler is not None
        ex = self.ex
        writer = self.writer
        try:
            await handler.handle(ex, body, writer, self.link.upstreams())
            if not writer.started:
                self.link.fail(ex, NO_RESPONSE)
            elif not writer.ended:
                await writer.end()
        except asyncio.CancelledError:
            raise  # the client went away: the connection logged the exchange (499)
        except Exception as exc:
            self._task = None  # finishing now: nothing left to cancel
            self.link.log_event(
                f"handler of route {route.name} failed on request {ex.request_id.decode('latin-1')}: "
                f"{type(exc).__name__}"
            )
            ex.error_detail = type(exc).__name__
            self.link.fail(ex, HANDLER_ERROR)

    def cancel(self, shutdown: bool = False) -> asyncio.Task[None] | None:
        """The client is gone, or the exchange ended otherwise (``shutdown``: the stopping worker closed
        it): stop the handler at its next await, its CancelledError saying which (handler_api.py).
        Returns the Task when it was still running: its record is final once it is done
        (dispatch.complete_when_done)."""
        self._cancelled = True
        task = self._task
        self._task = None
        if task is None or task.done():
            return None
        task.cancel(CANCELLED_SHUTDOWN if shutdown else CANCELLED_CLIENT_GONE)
        return task


class Spawn(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


def unchunk(framed: list[bytes]) -> list[bytes]:
    """The raw body of pieces this gateway framed as chunks for an upstream (a request that waited
    before its route was known: parked by a Pending, or pipelined): each piece is one chunk we made."""
    out = []
    for piece in framed:
        if piece == LAST_CHUNK:
            continue
        if piece.startswith(b"0\r\n"):  # the last chunk, with trailers: data chunks never start with 0
            continue
        out.append(piece[piece.index(b"\r\n") + 2 : -2])
    return out


def buffered_body_denial(ex: Exchange, framed: list[bytes]) -> Denial | None:
    """The BODY phase of a proxied request whose body was buffered whole for it (framed for the
    upstream, as the connection keeps it)."""
    route = ex.route
    assert route is not None
    body = b"".join(unchunk(framed) if ex.chunked else framed)
    return run_body_checks(route.body_checks, ex, body)
