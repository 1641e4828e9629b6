"""The upstream client Protocol: writes one request at a time, parses the response, streams it back.

It never pipelines: one request per connection at a time, so a response can always be matched to its
request and a reused connection that turns out dead can be retried safely. The response is parsed by
llhttp (strict: ``Content-Length`` with ``Transfer-Encoding``, repeated lengths and garbage are errors and
become a 502, never relayed). Two llhttp gaps are closed here: it has no header-size limit (the bytes
received since the response began bound its head; trailer fields are counted) and it cannot be told a
response answers a HEAD, so after a HEAD response's head the
parser is replaced and any body bytes make the connection unusable.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import httptools
from mypy_extensions import mypyc_attr

from fastgw.codec.framing import lower_field_name, section_size
from fastgw.proxy_headers import FRAMING_NONE

if TYPE_CHECKING:
    from fastgw.upstream.pool import TargetPool

MAX_RESPONSE_HEAD: Final = 65536  # bytes of upstream response head before it is a 502
MAX_RESPONSE_HEADERS: Final = 200
_NO_CALLBACKS: Final = object()  # the protocol of a closed connection's parser, which is never fed
_monotonic: Final = time.monotonic  # Final: compiled, a C static (not a module attribute per call)


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseSink(asyncio.Protocol):
    """What a response is streamed to: the HTTP/1.1 client connection, or an HTTP/2 stream.

    A base class, not a typing.Protocol: compiled code calls a compiled base class's methods through its
    vtable, where a call on a Protocol type is a generic method lookup and call with argument parsing (~300
    instructions by callgrind; three a response). It derives asyncio.Protocol only because mypyc allows a
    compiled class one base and the client connection must be an asyncio.Protocol. Interpreted subclasses
    (the HTTP/2 stream) are called through Python, as before.
    """

    def on_upstream_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> int:
        """The response head; returns its framing: a Content-Length, FRAMING_NONE or FRAMING_CHUNKED."""
        raise NotImplementedError

    def on_upstream_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_upstream_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def on_upstream_end(self, reusable: bool) -> None:
        raise NotImplementedError

    def on_upstream_error(self, status: int, problem: str, detail: str, retryable: bool) -> None:
        raise NotImplementedError

    def on_upstream_upgrade(self, rest: bytes) -> None:
        raise NotImplementedError

    def on_upstream_tunnel_data(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def pause_client_reading(self) -> None:
        raise NotImplementedError

    def resume_client_reading(self) -> None:
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_fed",
        "_headers",
        "_in_head",
        "_interim",
        "_no_body",
        "_parser",
        "_until_close",
        "closed",
        "deadline",
        "got_response_bytes",
        "pool",
        "reused",
        "sink",
        "transport",
        "tunnel",
        "upgrading",
        "upstream_keep_alive",
    )

    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._fed = 0  # bytes received since the response began: bounds its head
        self._in_head = False
        self._interim = False
        self._no_body = False
        self._until_close = False
        self.closed = False
        self.reused = False
        self.tunnel = False
        self.upgrading = False
        self.got_response_bytes = False
        self.upstream_keep_alive = True
        self.deadline = 0.0

    # -- used by the pool and the client connection ----------------------------------------------------
    def transport_set_limits(self, high: int) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=high)

    def start(self, sink: ResponseSink, payload: bytes, no_body: bool, now: float) -> None:
        """Send one request head (and any body already buffered) and stream its response to ``sink``.

        ``now`` (monotonic) starts the read timeout.
        """
        self.sink = sink
        self._no_body = no_body
        self._fed = 0
        self._in_head = True
        self.got_response_bytes = False
        self.deadline = now + self.pool.settings.read_timeout
        assert self.transport is not None
        self.transport.write(payload)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def detach(self) -> None:
        self.sink = None
        self.deadline = 0.0
        self.reused = True

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: a protocol error (or a late body); it cannot be reused.
            self.close()
            self.pool.forget_idle(self)
            return
        if self.tunnel:
            sink.on_upstream_tunnel_data(data)
            return
        self.got_response_bytes = True
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            sink.on_upstream_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            detail = str(exc.__context__) if isinstance(exc, httptools.HttpParserCallbackError) else str(exc)
            self.pool.record_failure()
            self._fail(
                sink, 502, "bad-upstream-response", f"invalid response from {self.pool.label}: {detail}"
            )
            return
        if self.sink is not None:
            # Still waiting for the rest of the response: the read timeout restarts from this read.
            if (self._in_head and self._fed > MAX_RESPONSE_HEAD) or (
                self._headers and not self._in_head and section_size(self._headers) > MAX_RESPONSE_HEAD
            ):  # a head (or trailer section) still growing after this read
                self.pool.record_failure()
                self._fail(
                    sink, 502, "bad-upstream-response", f"response head from {self.pool.label} too large"
                )
                return
            self.deadline = _monotonic() + self.pool.settings.read_timeout
            sink.flush()  # what this read added (a response that ended was flushed by on_upstream_end)

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        # The parser holds this connection (its callbacks): replace it so no cycle is left to the cyclic GC.
        self._parser = httptools.HttpResponseParser(_NO_CALLBACKS)
        sink = self.sink
        if sink is None:
            if not was_closed:
                self.pool.forget_idle(self)
            return
        if self.tunnel:
            self.sink = None
            sink.on_upstream_end(False)
            return
        if self._until_close:
            # A close-delimited body (RFC 9112 6.3 rule 8) ends here. httptools exposes no llhttp_finish(),
            # so this framing is tracked here rather than by the parser.
            self._finish(sink)
            return
        retryable = self.reused and not self.got_response_bytes
        if not retryable:
            self.pool.record_failure()
        self._fail(
            sink,
            502,
            "upstream-closed",
            f"{self.pool.label} closed the connection before responding",
            retryable,
        )

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_client_reading()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_client_reading()

    def on_deadline(self) -> None:
        sink = self.sink
        if sink is not None:
            self.pool.record_failure()
            self._fail(
                sink,
                504,
                "upstream-timeout",
                f"{self.pool.label} sent nothing for {self.pool.settings.read_timeout:g}s",
            )

    def _fail(
        self, sink: ResponseSink, status: int, problem: str, detail: str, retryable: bool = False
    ) -> None:
        self.sink = None
        self.deadline = 0.0
        self.pool.discard(self)
        sink.on_upstream_error(status, problem, detail, retryable)

    # -- llhttp callbacks (no on_message_begin/on_status: each callback is a Python call per response) ---
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((lower_field_name(name), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        self._headers = []
        if len(headers) > MAX_RESPONSE_HEADERS or (
            self._fed > MAX_RESPONSE_HEAD and section_size(headers) > MAX_RESPONSE_HEAD
        ):
            raise ValueError(
                f"response header section exceeds {MAX_RESPONSE_HEAD} bytes or {MAX_RESPONSE_HEADERS} lines"
            )
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue / 103 Early Hints: not relayed (we answered 100 ourselves)
            return
        self._in_head = False
        self.upstream_keep_alive = parser.should_keep_alive()
        sink = self.sink
        if sink is None:
            return
        self.upgrading = status == 101
        # The sink reads Content-Length and Transfer-Encoding while it filters the head (one pass).
        framing = sink.on_upstream_head(status, headers)
        self._until_close = framing == FRAMING_NONE and not self._no_body and status not in (101, 204, 304)
        if self._no_body and status != 101:
            # A HEAD response has no body whatever its headers say; llhttp cannot be told, so start a fresh
            # parser for the next response and report completion now.
            self._parser = httptools.HttpResponseParser(self)
            self._finish(sink)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is None:
            self.close()  # body bytes after a HEAD response: this connection's framing is not trustworthy
            return
        sink.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.upgrading:
            return  # llhttp completes a 101 head, then raises HttpParserUpgrade: the tunnel starts there
        sink = self.sink
        if sink is not None:
            self._finish(sink)

    def _finish(self, sink: ResponseSink) -> None:
        self._until_close = False
        self.sink = None
        self.deadline = 0.0
        trailers = self._headers  # llhttp reports a chunked body's trailer fields through on_header
        if trailers:
            self._headers = []
            sink.on_upstream_trailers(trailers)
        sink.on_upstream_end(self.upstream_keep_alive and not self.closed)
