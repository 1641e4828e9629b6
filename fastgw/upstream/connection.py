"""The upstream client Protocol: writes one request at a time and streams its response back.

It never pipelines: one request per connection at a time, so a response can always be matched to its
request and a reused connection that turns out dead can be retried safely. The response is parsed by
llhttp, strictly (``upstream/response_reader.py``, the base of :class:`UpstreamConnection`, has its
callbacks and the rules); here are the socket, the request, the parser's feeding (and its switch to a
:class:`~fastgw.upstream.response_reader.ChunkedTail` when a chunked body may carry trailer fields), the
head-size bound and the first-byte and read deadlines.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import httptools

from fastgw.codec.framing import section_size
from fastgw.upstream.response_reader import (
    CHUNKED_HEAD,
    MAX_RESPONSE_HEAD,
    ChunkedTail,
    ResponseReader,
    ResponseSink,
)

if TYPE_CHECKING:
    from fastgw.snapshot import UpstreamSettings
    from fastgw.upstream.write_batch import WriteBatch

_NO_CALLBACKS: Final = object()  # the protocol of a closed connection's parser, which is never fed
_monotonic: Final = time.monotonic  # Final: compiled, a C static (not a module attribute per call)


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


class UpstreamConnection(ResponseReader):
    """One connection to an upstream target (see the module doc)."""

    __slots__ = (
        "_body_done",
        "_fed",
        "_held",
        "got_response_bytes",
        "pool",
        "reused",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: ConnectionHome) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._held = b""  # a request written by the loop iteration's WriteBatch (upstream/write_batch.py)
        self._fed = 0  # bytes received since the response began: bounds its head
        self._body_done = True  # the request (head and body) is all handed to write()
        self.reused = False
        self.tunnel = False
        self.got_response_bytes = False
        super().__init__()  # last: it hands ``self`` to the parser (see ResponseReader.__init__)

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
                    self._parser = httptools.HttpResponseParser(ChunkedTail(self))
                    self._parser.feed_data(CHUNKED_HEAD)
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

    def unsolicited(self) -> None:
        """A response head nobody asked for (bytes behind the last response): the connection's framing
        cannot be trusted, so it is closed, and nothing of that head is kept for a later response."""
        self._headers = []
        self._buf = b""
        if not self.closed:
            self.close()
            self.pool.forget_idle(self)
