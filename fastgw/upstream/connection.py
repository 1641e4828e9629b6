"""The upstream client Protocol: writes one request at a time, parses the response, streams it back.

It never pipelines: one request per connection at a time, so a response can always be matched to its
request and a reused connection that turns out dead can be retried safely. The response is parsed by
llhttp (strict: ``Content-Length`` with ``Transfer-Encoding``, repeated lengths, bare LF, obs-fold and
garbage are errors and become a 502, never relayed). Two llhttp gaps are closed here: it has no
header-size limit (the bytes received since the response began bound its head; trailer fields are
counted) and it cannot be told a response answers a HEAD, so after a HEAD response's head the parser is
replaced and any body bytes make the connection unusable.

The parser is given no ``on_header`` callback, so llhttp validates the head without calling Python once
per field line (two bytes objects, a Cython-to-Python call and a tuple each). When llhttp reports the
head complete it has accepted every byte of it: the head is cut from the bytes received (one ``split``)
and handed to the sink as lines. Trailer fields of a chunked body do need the callback, so such a
response's body goes on in a second parser, primed with a chunked head, that has one
(:class:`_ChunkedTail`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import httptools
from mypy_extensions import mypyc_attr

from fastgw.codec.framing import lower_field_name, section_size
from fastgw.proxy_headers.response_head import FRAMING_CHUNKED, FRAMING_NONE

if TYPE_CHECKING:
    from fastgw.snapshot import UpstreamSettings
    from fastgw.upstream.write_batch import WriteBatch

MAX_RESPONSE_HEAD: Final = 65536  # bytes of upstream response head before it is a 502
MAX_RESPONSE_HEADERS: Final = 200
_NO_CALLBACKS: Final = object()  # the protocol of a closed connection's parser, which is never fed
# What primes a _ChunkedTail's parser: it then expects chunks, as the response's own parser did.
_CHUNKED_HEAD: Final = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
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

    def on_upstream_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        """The response head, validated by llhttp: ``head`` runs from the status line to the CRLF that ends
        the last field line, and ``lines`` is ``head.split(b"\\r\\n")`` (the status line, each field line,
        then an empty string). Returns its framing: a Content-Length, FRAMING_NONE or FRAMING_CHUNKED."""
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


class _ChunkedTail:
    """llhttp callbacks for the body of a chunked response and its trailer fields (see the module doc)."""

    __slots__ = ("conn", "primed")

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.primed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.primed:  # a trailer field (the priming head's own field is not one)
            self.conn.trailer_field(name, value)

    def on_headers_complete(self) -> None:
        if self.primed:  # a second head after the chunked response, in the same read: nobody asked for it
            self.conn.unsolicited()
        self.primed = True

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.chunked_tail_complete()


class ConnectionHome:
    """What an upstream connection needs from the pool that opened it (``TargetPool`` in pool.py, which
    extends this): declared here so that this module does not import the pool (no import cycle), with
    native method dispatch when compiled."""

    __slots__ = ("label", "settings")

    settings: UpstreamSettings
    label: str

    def forget_idle(self, conn: UpstreamConnection) -> None:
        """An idle connection that the upstream closed."""
        raise NotImplementedError

    def discard(self, conn: UpstreamConnection) -> None:
        """A connection in use that will not be reused."""
        raise NotImplementedError

    def release(self, conn: UpstreamConnection, now: float = 0.0) -> None:
        """A connection whose exchange ended cleanly: back to the idle list (or to a waiter)."""
        raise NotImplementedError

    def record_failure(self) -> None:
        """A failed exchange with the target (health and circuit breaking)."""
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body_at",
        "_body_done",
        "_buf",
        "_fed",
        "_head_at",
        "_headers",
        "_held",
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

    def __init__(self, pool: ConnectionHome) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []  # trailer fields of a chunked body
        # While a head is incomplete: the bytes received of it (with the read being parsed), and where the
        # head starts in them (after an interim 1xx response, the next head starts behind it).
        self._buf = b""
        self._head_at = 0
        self._body_at = -1  # where a chunked body starts in _buf, while the parser is being switched
        self._held = b""  # a request written by the loop iteration's WriteBatch (upstream/write_batch.py)
        self._fed = 0  # bytes received since the response began: bounds its head
        self._in_head = False
        self._interim = False
        self._no_body = False
        self._body_done = True  # the request (head and body) is all handed to write()
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

    def start(
        self,
        sink: ResponseSink,
        payload: bytes,
        no_body: bool,
        now: float,
        batch: WriteBatch | None = None,
        body_done: bool = True,
    ) -> None:
        """Send one request head (and any body already buffered) and stream its response to ``sink``.

        ``now`` (monotonic) starts the first-byte timeout if ``body_done`` (the whole request is in
        ``payload``); otherwise the client is still sending its body, a wait that is the client's
        (its body deadline runs), and :meth:`request_sent` starts the clock when the body is complete.
        With ``batch`` the payload is written at the end of the loop iteration, together with the
        iteration's other writes (upstream/write_batch.py).
        """
        self.sink = sink
        self._no_body = no_body
        self._fed = 0
        self._buf = b""
        self._head_at = 0
        self._body_at = -1
        self._in_head = True
        self.got_response_bytes = False
        self._body_done = body_done
        self.deadline = now + self.pool.settings.first_byte_timeout if body_done else 0.0
        assert self.transport is not None
        if batch is None:
            self.transport.write(payload)
        else:
            self._held = payload
            batch.hold_upstream(self)

    def request_sent(self, now: float) -> None:
        """The client's request body is complete: from now on, waiting for the response is the upstream's
        (first byte) -- unless it already began answering, and its read timeout runs."""
        self._body_done = True
        if self.sink is not None and not self.got_response_bytes:
            self.deadline = now + self.pool.settings.first_byte_timeout

    def stalled_taking_body(self, now: float) -> None:
        """The upstream stopped reading the request body (its socket buffer is full): the stall is its own,
        so its read timeout runs while the client, whose reads are paused, is not blamed."""
        if self.sink is not None and not self.deadline:
            self.deadline = now + self.pool.settings.read_timeout

    def taking_body_again(self) -> None:
        """The upstream reads the body again: while the client is still sending, its clock stops until the
        body ends (or it answers); once the body is all written, the first-byte wait starts."""
        if self.sink is not None and not self.got_response_bytes:
            self.deadline = _monotonic() + self.pool.settings.first_byte_timeout if self._body_done else 0.0

    def write(self, data: bytes) -> None:
        if self._held:
            self.write_held()  # the request head goes first
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_held(self) -> None:
        held = self._held
        if held:
            self._held = b""
            if self.transport is not None and not self.closed:
                self.transport.write(held)

    def close(self) -> None:
        self._held = b""  # a request never sent: the connection is gone with it
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
        if self._in_head:
            buf = self._buf
            self._buf = buf + data if buf else data
            self._head_at = 0
        while True:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self.tunnel = True
                sink.on_upstream_upgrade(data[exc.args[0] :])
            except httptools.HttpParserError as exc:
                if self._body_at >= 0:
                    # A chunked body follows the head: go on with a parser that reports trailer fields.
                    data = self._buf[self._body_at :]
                    self._buf = b""
                    self._body_at = -1
                    self._parser = httptools.HttpResponseParser(_ChunkedTail(self))
                    self._parser.feed_data(_CHUNKED_HEAD)
                    if data and self.sink is not None:
                        continue
                    break
                detail = (
                    str(exc.__context__) if isinstance(exc, httptools.HttpParserCallbackError) else str(exc)
                )
                self.pool.record_failure()
                self._fail(
                    sink, 502, "bad-upstream-response", f"invalid response from {self.pool.label}: {detail}"
                )
                return
            break
        if self._in_head and self._head_at:
            self._buf = self._buf[self._head_at :]  # an interim response ended in this read, the next did not
            self._head_at = 0
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
            self.stalled_taking_body(_monotonic())
            self.sink.pause_client_reading()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.taking_body_again()
            self.sink.resume_client_reading()

    def on_deadline(self) -> None:
        sink = self.sink
        if sink is not None:
            self.pool.record_failure()
            settings = self.pool.settings
            waited = settings.read_timeout if self.got_response_bytes else settings.first_byte_timeout
            self._fail(sink, 504, "upstream-timeout", f"{self.pool.label} sent nothing for {waited:g}s")

    def _fail(
        self, sink: ResponseSink, status: int, problem: str, detail: str, retryable: bool = False
    ) -> None:
        self.sink = None
        self.deadline = 0.0
        self.pool.discard(self)
        sink.on_upstream_error(status, problem, detail, retryable)

    # -- llhttp callbacks (no on_header, see the module doc; no on_message_begin/on_status) -------------
    def trailer_field(self, name: bytes, value: bytes) -> None:
        self._headers.append((lower_field_name(name), value))

    def unsolicited(self) -> None:
        """A response head nobody asked for (bytes behind the last response): the connection's framing
        cannot be trusted, so it is closed, and nothing of that head is kept for a later response."""
        self._headers = []
        self._buf = b""
        if not self.closed:
            self.close()
            self.pool.forget_idle(self)

    def chunked_tail_complete(self) -> None:
        """A chunked response ended: the next response is parsed without on_header again."""
        self._parser = httptools.HttpResponseParser(self)
        self.on_message_complete()

    def on_headers_complete(self) -> None:
        parser = self._parser
        buf = self._buf
        start = self._head_at
        size = len(buf)
        while start < size and (buf[start] == 0x0D or buf[start] == 0x0A):
            start += 1  # llhttp skips CR and LF before a status line
        # llhttp accepted the head: it ends at the first empty line, and every line ends in CRLF.
        blank = buf.find(b"\r\n\r\n", start)
        if blank < 0:
            raise ValueError("response head without its end")  # cannot happen: llhttp saw the end
        end = blank + 2
        self._head_at = end + 2
        head = buf[start:end]
        lines = head.split(b"\r\n")
        if len(lines) - 2 > MAX_RESPONSE_HEADERS or end - start > MAX_RESPONSE_HEAD:
            raise ValueError(
                f"response header section exceeds {MAX_RESPONSE_HEAD} bytes or {MAX_RESPONSE_HEADERS} lines"
            )
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/"):
            raise ValueError("not an HTTP/1.x status line")  # llhttp also takes RTSP/ and ICE/ ones
        # llhttp accepted "HTTP/d.d ddd": the status is read here, not by a method call (~700 instructions).
        status = (status_line[9] - 48) * 100 + (status_line[10] - 48) * 10 + status_line[11] - 48
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue / 103 Early Hints: not relayed (we answered 100 ourselves)
            return
        self._in_head = False
        self.upstream_keep_alive = parser.should_keep_alive()
        sink = self.sink
        if sink is None:
            self.unsolicited()
            return
        self.upgrading = status == 101
        # The sink reads Content-Length and Transfer-Encoding while it filters the head (one pass).
        framing = sink.on_upstream_head(status, head, lines)
        self._until_close = framing == FRAMING_NONE and not self._no_body and status not in (101, 204, 304)
        if self._no_body and status != 101:
            # A HEAD response has no body whatever its headers say; llhttp cannot be told, so start a fresh
            # parser for the next response and report completion now.
            self._buf = b""
            self._parser = httptools.HttpResponseParser(self)
            self._finish(sink)
        elif framing == FRAMING_CHUNKED and status not in (101, 204, 304):
            # Trailer fields may follow: stop this parser here; data_received switches to a _ChunkedTail.
            self._body_at = self._head_at
            raise RuntimeError("a chunked body follows")  # told apart from errors by _body_at
        else:
            self._buf = b""

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
