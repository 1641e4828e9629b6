"""A handler's response onto the client's protocol: the HTTP/1.1 link (a head, chunked or sized body, held
for the loop iteration's write batch) and the HTTP/2 link (HEADERS and DATA through the stream's windows),
both behind proxy/handler.py's ClientLink, with the route's own response fields added to the head.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from fastgw.codec.serialize import DATE, LAST_CHUNK, NO_BODY_STATUSES, chunk, status_line
from fastgw.exchange import Exchange
from fastgw.handler_api import Upstreams
from fastgw.policy.chain import Denial
from fastgw.proxy.client import UpstreamClient
from fastgw.proxy.context import WorkerContext
from fastgw.proxy_headers.hop_by_hop import header_lines, trailer_lines
from fastgw.proxy_headers.response_head import append_route_fields
from fastgw.snapshot import Route


def route_fields(ex: Exchange, route: Route, fields: list[tuple[bytes, bytes]], tls: bool) -> None:
    """Append what every response on ``route`` carries (as a proxied one would): the route's added
    response headers, HSTS over TLS, the policies' on_response headers, the handler's own limits'
    (``ex.answer_headers``) and the request id. The handler's own fields named in the route's removals
    go first."""
    drop = route.drop_response
    fields[:] = [field for field in fields if field[0] not in drop]
    if not any(name == b"date" for name, _ in fields):
        fields.append((b"date", DATE.value[6:-2]))
    append_route_fields(ex, route, fields, tls)
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

    def flush(self) -> None:
        """Write the queued response bytes now."""

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

    def flush(self) -> None:
        if self.conn.transport is not None and not self.conn.closing:
            self.conn.flush()

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
    def write_now(self) -> None:
        """Write what h2 has queued for the connection now, not at the loop iteration's end."""

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

    def flush(self) -> None:
        if self.stream.live():
            self.stream.write_now()

    def fail(self, ex: Exchange, denial: Denial) -> None:
        self.stream.fail(denial)

    def log_event(self, message: str) -> None:
        self.stream.log_event(message)

    def upstreams(self) -> Upstreams:
        return UpstreamClient(self.stream.worker)
