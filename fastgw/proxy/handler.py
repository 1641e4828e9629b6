"""Runs a handler route's handler and carries its response to the client, over HTTP/1.1 or HTTP/2.

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

from fastgw.codec.serialize import DATE, LAST_CHUNK, NO_BODY_STATUSES, chunk, status_line
from fastgw.exchange import Exchange
from fastgw.handler_api import Fields, ResponseFilter, Upstreams
from fastgw.policy.chain import Denial, run_body_checks
from fastgw.proxy.client import UpstreamClient
from fastgw.proxy.context import WorkerContext
from fastgw.proxy_headers.hop_by_hop import filter_trailers, header_lines, trailer_lines
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

    def cancel(self) -> None:
        """The client is gone (or the exchange ended otherwise): stop the handler at its next await."""
        self._cancelled = True
        task = self._task
        self._task = None
        if task is not None and not task.done():
            task.cancel()


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


# -- heads ----------------------------------------------------------------------------------------------
def route_fields(ex: Exchange, route: Route, fields: list[tuple[bytes, bytes]], tls: bool) -> None:
    """Append what every response on ``route`` carries (as a proxied one would): the route's added
    response headers, HSTS over TLS, the policies' on_response headers, the handler's own limits'
    (``ex.answer_headers``) and the request id. The handler's own fields named in the route's removals
    go first."""
    drop = route.drop_response
    fields[:] = [field for field in fields if field[0] not in drop]
    if not any(name == b"date" for name, _ in fields):
        fields.append((b"date", DATE.value[6:-2]))
    fields.extend(route.add_response)
    if tls and route.hsts:
        fields.append((b"strict-transport-security", route.hsts[27:-2]))
    for hook in route.response_hooks:
        hook.on_response(ex, fields)
    if ex.answer_headers:
        fields.extend(ex.answer_headers)
    fields.append((b"x-request-id", ex.request_id))


def http1_head(
    ex: Exchange, status: int, fields: list[tuple[bytes, bytes]], length: int, close: bool
) -> tuple[bytes, bool, bool]:
    """The HTTP/1.x head of a handler's response: (bytes, chunked, close). Without a length the body is
    chunked for HTTP/1.1 and close-delimited for HTTP/1.0."""
    chunked = False
    framing = b""
    if length >= 0:
        framing = b"content-length: %d\r\n" % length
    elif not (ex.method == b"HEAD" or status in NO_BODY_STATUSES):
        if ex.version == b"1.1":
            chunked = True
            framing = b"transfer-encoding: chunked\r\n"
        else:
            close = True
    if close:
        framing += b"connection: close\r\n"
    elif ex.version == b"1.0":
        framing += b"connection: keep-alive\r\n"
    return status_line(status) + header_lines(fields) + framing + b"\r\n", chunked, close


def http1_body(data: bytes, chunked: bool) -> bytes:
    return chunk(data) if chunked else data


def http1_end(chunked: bool, trailers: list[tuple[bytes, bytes]] | None) -> bytes:
    if not chunked:
        return b""
    return trailer_lines(trailers) if trailers else LAST_CHUNK


# -- the two protocols ----------------------------------------------------------------------------------
class Http1Side(Protocol):
    """What :class:`Http1Link` needs of proxy/http1.py's ClientConnection."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def retiring(self) -> bool: ...
    @property
    def closing(self) -> bool: ...
    @property
    def send_deadline(self) -> float:
        """Non-zero while asyncio has paused writing (the client is not reading)."""

    @property
    def draining(self) -> bool: ...

    @property
    def worker(self) -> WorkerContext: ...

    def hold(self, data: bytes) -> None:
        """Queue response bytes for the end of the loop iteration (http1_response.py)."""

    def handler_done(self, ex: Exchange, close: bool) -> None: ...
    def handler_failed(self, ex: Exchange, denial: Denial) -> None: ...
    def log_event(self, message: str) -> None: ...


class Http1Link:
    """A handler's response on an HTTP/1.x connection, handed to the connection's own output: held to the
    end of the loop iteration with its other writes (upstream/write_batch.py), so a small answer leaves
    in one write and a stream's events read together leave together."""

    __slots__ = ("chunked", "close", "conn")

    def __init__(self, conn: Http1Side) -> None:
        self.conn = conn
        self.chunked = False
        self.close = False

    def _check_open(self) -> None:
        if self.conn.transport is None or self.conn.closing:
            raise ConnectionResetError("the client closed the connection")

    def send_head(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]], length: int) -> None:
        conn = self.conn
        route = ex.route
        assert route is not None
        self._check_open()
        route_fields(ex, route, headers, conn.tls)
        close = not ex.keep_alive or conn.draining or conn.retiring
        head, self.chunked, self.close = http1_head(ex, status, headers, length, close)
        ex.bytes_out += len(head)
        ex.response_started = True
        conn.hold(head)

    def send_body(self, data: bytes) -> bool:
        self._check_open()
        self.conn.hold(http1_body(data, self.chunked))
        return self.conn.send_deadline == 0.0

    def send_end(self, ex: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        tail = http1_end(self.chunked, trailers)
        if tail:
            self._check_open()
            self.conn.hold(tail)
        self.conn.handler_done(ex, self.close)

    def fail(self, ex: Exchange, denial: Denial) -> None:
        self.conn.handler_failed(ex, denial)

    def log_event(self, message: str) -> None:
        self.conn.log_event(message)

    def upstreams(self) -> Upstreams:
        return UpstreamClient(self.conn.worker)


class H2Side(Protocol):
    """What :class:`Http2Link` needs of proxy/h2_stream.py's H2Stream (and, through it, its connection)."""

    ex: Exchange
    head: list[tuple[bytes, bytes]] | None
    out_bytes: int
    ended: bool
    trailers: list[tuple[bytes, bytes]] | None

    def append_out(self, data: bytes) -> None: ...
    def live(self) -> bool:
        """The stream is still open on a live connection."""

    def flow_blocked(self) -> bool:
        """More than ``http2.stream_buffer`` waits for the client's window, or writes are paused."""

    @property
    def tls(self) -> bool: ...

    def flush(self) -> None: ...
    def fail(self, denial: Denial) -> None: ...
    def log_event(self, message: str) -> None: ...

    @property
    def worker(self) -> WorkerContext: ...


class Http2Link:
    """A handler's response on an HTTP/2 stream: HEADERS, DATA within the client's windows, then
    END_STREAM (or trailers); the stream completes the exchange when the last frame is out."""

    __slots__ = ("stream",)

    def __init__(self, stream: H2Side) -> None:
        self.stream = stream

    def _live(self) -> H2Side:
        stream = self.stream
        if not stream.live():
            raise ConnectionResetError("the client reset the stream")
        return stream

    def send_head(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]], length: int) -> None:
        stream = self._live()
        route = ex.route
        assert route is not None
        route_fields(ex, route, headers, stream.tls)
        if length >= 0:
            headers.append((b"content-length", b"%d" % length))
        stream.head = [(b":status", b"%d" % status), *headers]
        stream.flush()

    def send_body(self, data: bytes) -> bool:
        stream = self._live()
        stream.append_out(data)
        stream.flush()
        return not stream.flow_blocked()

    def send_end(self, ex: Exchange, trailers: list[tuple[bytes, bytes]] | None) -> None:
        stream = self._live()
        stream.trailers = trailers or None
        stream.ended = True
        stream.flush()

    def fail(self, ex: Exchange, denial: Denial) -> None:
        self.stream.fail(denial)

    def log_event(self, message: str) -> None:
        self.stream.log_event(message)

    def upstreams(self) -> Upstreams:
        return UpstreamClient(self.stream.worker)
