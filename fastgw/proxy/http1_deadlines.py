"""The HTTP/1.1 client connection's deadlines and backpressure, and what a stall or malformed input ends in.

Deadlines are plain floats that the worker's 100 ms tick compares with the clock (``proxy/deadlines.py``):
the head (``server.header_timeout``), the body (``body_timeout`` between reads and ``body_min_rate``
overall), the idle keep-alive wait and the client's reading of the response (``send_timeout``).
Backpressure runs both ways: an upstream that does not take the request body pauses the client's reads
(and stops the client's body clocks: the stall is the upstream's), a client that does not read the
response pauses the upstream's reads. The second of the three classes of the connection
(``proxy/http1_response.py`` explains the split).
"""

from __future__ import annotations

import time
from typing import Final

from fastgw.codec.problem import CodecError, render_problem
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.context import DL_BODY, DL_HEAD, DL_IDLE, DL_NONE
from fastgw.proxy.http1_response import PAUSE_CLOSING, PAUSE_UPSTREAM, Http1Response
from fastgw.proxy_headers.answer import answer_headers

# Final: compiled, a C static (not a module-dict lookup per call)
_monotonic: Final = time.monotonic
_time: Final = time.time


class Http1Deadlines(Http1Response):
    """Deadlines, backpressure and the errors they end in (see the module doc)."""

    __slots__ = ()

    # -- backpressure: the upstream's side -------------------------------------------------------------
    def pause_client_reading(self) -> None:
        """The upstream is not taking the body: reads pause, and the client's body clocks stop (the
        stall is the upstream's; its connection's read timeout runs meanwhile)."""
        if not self._paused & PAUSE_UPSTREAM:
            self._paused_at = _monotonic()
            if self.deadline_kind == DL_BODY:
                self.deadline = 0.0
        self._pause(PAUSE_UPSTREAM)

    def resume_client_reading(self) -> None:
        if self._paused & PAUSE_UPSTREAM:
            now = _monotonic()
            self.body_since += now - self._paused_at  # the paused span does not count against the rate
            if self.deadline_kind == DL_BODY:
                self.deadline = now + self.worker.holder.current.server.body_timeout
        self._resume(PAUSE_UPSTREAM)

    # -- client write-side flow control (asyncio calls these) ------------------------------------------
    def pause_writing(self) -> None:
        self.send_deadline = _monotonic() + self.worker.holder.current.server.send_timeout
        upstream = self.upstream or self.tunnel
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.send_deadline = 0.0
        if self.handler_run is not None:
            self.handler_run.writer.wake()
        upstream = self.upstream or self.tunnel
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()

    # -- malformed or oversized input ------------------------------------------------------------------
    def _body_too_large(self, ex: Exchange, limit: int) -> None:
        if ex is self.active:
            reason = f"request body exceeds {limit} bytes"
            self._fail_active(ex, Denial(413, "content-too-large", reason, "body.too_large"))
        else:
            # A queued request's body overflowed: answer what is in flight, then refuse and close.
            self._close_now()

    def refuse(self, err: CodecError) -> None:
        """Malformed bytes before the first request (a bad PROXY header, proxy/front.py)."""
        self._codec_error(err)

    def _codec_error(self, err: CodecError, stalled: bool = False) -> None:
        """Malformed input (or a head that did not arrive in time): nothing more is parsed; the complete
        requests before it are answered in order, then the error, then the connection closes (RFC 9112
        9.6). ``stalled``: the client's silence, not its bytes, is the error (408)."""
        self._pause(PAUSE_CLOSING)
        active = self.active
        broken = self.receiving
        self.receiving = None
        if active is not None and broken is active:
            # The request in flight is itself broken (bad chunk, oversized): it cannot be completed.
            self._to_forward = None
            self.queue.clear()
            denial = Denial(err.status, err.problem, err.detail, "codec." + err.problem)
            if stalled:
                active.stalled_side = "client"
            self._fail_active(active, denial)
            return
        if broken is not None and self.queue and self.queue[-1] is broken:
            self.queue.pop()  # a queued request whose body is broken: never answered, never forwarded
        headers = answer_headers(None, (), self.tls, self.worker.holder.current)
        body = render_problem(err.status, err.problem, err.detail, headers=headers, close=True)
        record = Exchange(b"", b"", b"", [])  # what is known of a request that could not be parsed
        record.snapshot_id = self.worker.holder.current.id_bytes
        record.client_ip = self.peer_ip
        record.client_cert = self.client_cert
        record.status = err.status
        record.bytes_out = len(body)
        record.denial = "codec." + err.problem
        if stalled:
            record.stalled_side = "client"
        record.ended = _time()
        self.worker.record(record)
        if active is not None:
            # Complete requests come first: the one in flight (forwarded now if this read passed its chain)
            # and those queued behind it. The error follows the last of them, unless that one closes the
            # connection anyway (Connection: close, HTTP/1.0): a client expects nothing after it.
            last = self.queue[-1] if self.queue else active
            self._error_tail = body if last.keep_alive else b""
            self._forward_pending()
            return
        self._out.append(body)
        self._close_now()  # lingers: the client may still be sending the rest of what was refused

    # -- deadlines (called by the worker tick) ---------------------------------------------------------
    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        if kind == DL_IDLE or self.transport is None:
            self._close_now(linger=False)
            return
        if kind == DL_HEAD:
            err = CodecError(408, "request-timeout", "request head not received in time")
            self._codec_error(err, stalled=True)
            return
        ex = self.active
        if ex is not None and ex is self.receiving:
            ex.stalled_side = "client"
            self._fail_active(
                ex, Denial(408, "request-timeout", "request body not received in time", "body.timeout")
            )
        else:
            # A queued request's body stalled: the responses before it are written, then the 408 follows.
            err = CodecError(408, "request-timeout", "request body not received in time")
            self._codec_error(err, stalled=True)

    def on_send_timeout(self) -> None:
        """The client stopped reading for send_timeout: the response cannot be delivered; drop the
        connection (the exchange is logged 499 with the client as the side that stalled)."""
        self.send_deadline = 0.0
        ex = self.active
        if ex is not None:
            ex.stalled_side = "client"
            ex.denial = "send.timeout"
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def check_body_rate(self, now: float, min_rate: int, grace: float) -> None:
        ex = self.receiving
        if ex is None or self.deadline_kind != DL_BODY or self._paused & PAUSE_UPSTREAM:
            return
        elapsed = now - self.body_since
        if elapsed > grace and ex.body_received < min_rate * elapsed:
            self.deadline = now  # expire at once: the tick calls on_deadline
            self.on_deadline(now)

    def retire(self) -> None:
        """Past process.max_connection_age: the next response carries Connection: close, so no request
        is cut off; an idle connection is left to the idle timeout."""
        self.retiring = True

    def drain(self) -> None:
        """Shutdown: close now if idle; otherwise the response in flight ends with Connection: close."""
        if self.active is None and not self.queue and self.tunnel is None:
            self._close_now(linger=False)
