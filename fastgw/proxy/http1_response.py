"""The HTTP/1.1 client connection's state and its response side: the upstream call's sink, the answers
the gateway writes itself, and what follows the end of an exchange (the next pipelined request, the idle
wait, or closing).

One connection object is made of three classes, one module per concept, lowest first:
:class:`Http1Response` here; ``Http1Deadlines`` (``proxy/http1_deadlines.py``: deadlines, backpressure
both ways, malformed input); ``ClientConnection`` (``proxy/http1.py``: reading requests, routing, the
policy chain, forwarding). Compiled (fastgw/native.py), a subclass calls its bases' methods natively and
reads their attributes at fixed offsets, as within one class; the two request-side methods this module
calls (``_start``, ``_forward_pending``) are declared here and reached through the class's vtable.

A response's bytes collect in ``_out`` and leave in one write: when the upstream's read has been relayed
(``flush``), or with the loop iteration's other writes (``upstream/write_batch.py``). If response bytes
already reached the client, a failure closes the connection instead of writing a second response
(STYLE.md 5).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

from fastgw.codec.problem import render_problem
from fastgw.codec.serialize import LAST_CHUNK, chunk
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.context import DL_HEAD, DL_IDLE, DL_LINGER, DL_NONE
from fastgw.proxy.dispatch import complete, complete_when_done
from fastgw.proxy.handler import HandlerRun
from fastgw.proxy.linger import start_linger
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy_headers.answer import answer_headers
from fastgw.proxy_headers.hop_by_hop import filter_trailers, trailer_lines
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.proxy_headers.response_head import FRAMING_NONE, build_response_head
from fastgw.snapshot import ListenerSettings
from fastgw.tls.server import PeerCertificate
from fastgw.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.upstream.write_batch import WriteBatch

# Why reading is paused (a bit each, reading resumes when none is left).
PAUSE_UPSTREAM: Final = 1  # the upstream is not taking the request body fast enough
PAUSE_BUFFER: Final = 2  # body buffered while no upstream connection is attached yet
PAUSE_PIPELINE: Final = 4  # too many pipelined requests queued
PAUSE_CLOSING: Final = 8  # a final response is being written; nothing more will be parsed

# A handler's response bytes held for the iteration's end beyond this are written at once: the
# transport then sees them and pauses the handler's writes (backpressure), however fast it writes.
HANDLER_HOLD_MAX: Final = 64 * 1024


class Http1Response(CallSink):
    """The state of an HTTP/1.1 client connection and its response side (see the module doc)."""

    __slots__ = (
        "_body_hold",
        "_error_tail",
        "_held_bytes",
        "_out",
        "_paused",
        "_paused_at",
        "_to_forward",
        "_tunnel_buffer",
        "active",
        "batch",
        "body_since",
        "call",
        "chunk_out",
        "client_cert",
        "client_ip",
        "closing",
        "deadline",
        "deadline_kind",
        "handler_run",
        "listener",
        "peer",
        "peer_ip",
        "queue",
        "receiving",
        "retiring",
        "send_deadline",
        "tls",
        "transport",
        "tunnel",
        "upstream",
        "worker",
    )

    def __init__(self, worker: WorkerContext, listener: ListenerSettings) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.active: Exchange | None = None
        self.receiving: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.upstream: UpstreamConnection | None = None  # the active exchange's, once its call has one
        self.call: UpstreamCall | None = None  # the active exchange's, once forwarded
        self.tunnel: UpstreamConnection | None = None
        self._tunnel_buffer: list[bytes] | None = None
        self._to_forward: Exchange | None = None
        self.handler_run: HandlerRun | None = None  # the exchange in flight is on a handler route
        self._body_hold: Exchange | None = None  # a proxied body buffered whole for a BODY policy
        self._out: list[bytes] = []
        self._held_bytes = 0  # a handler's bytes in _out (hold), written at once past HANDLER_HOLD_MAX
        self._paused = 0
        self._paused_at = 0.0  # when the upstream stopped taking the body (reads paused on its account)
        # A codec error behind complete pipelined requests: written after their responses, then close.
        self._error_tail: bytes | None = None
        self.chunk_out = False
        self.closing = False
        self.retiring = False  # past process.max_connection_age: the next response closes (retire)
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        self.send_deadline = 0.0
        self.body_since = 0.0
        self.peer_ip = ""
        self.client_ip = ""
        self.peer = ClientPeer(b"", False, b"https" if listener.tls is not None else b"http")
        self.tls = listener.tls is not None
        self.client_cert: PeerCertificate | None = None
        snapshot = worker.holder.current
        server = snapshot.server
        # Writes held to the end of the loop iteration (upstream/write_batch.py), unless configured off; an
        # HTTP/2 connection taking over this one keeps the choice.
        self.batch: WriteBatch | None = worker.writes if server.batch_writes else None

    # -- the request side, in proxy/http1.py -----------------------------------------------------------
    def _start(self, ex: Exchange) -> None:
        """Route ``ex``, run its chain and send it on its way (``ClientConnection``)."""
        raise NotImplementedError

    def _forward_pending(self) -> None:
        """Forward the exchange the chain passed during this read (``ClientConnection``)."""
        raise NotImplementedError

    # -- the upstream call's sink ----------------------------------------------------------------------
    def call_wanted(self) -> bool:
        return not self.closing

    def call_connection(self, conn: UpstreamConnection | None) -> None:
        self.upstream = conn
        if conn is not None and self._paused:
            self._resume(PAUSE_BUFFER)

    def call_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        ex = self.active
        if ex is None:
            return FRAMING_NONE
        route = ex.route
        assert route is not None
        ex.status = status
        client_head, self.chunk_out, close, framing = build_response_head(
            ex, route, status, head, lines, self.worker.via, self.worker.draining or self.retiring, self.tls
        )
        if close:
            ex.keep_alive = False
        ex.bytes_out += len(client_head)
        self._out.append(client_head)
        return framing

    def call_body(self, data: bytes) -> None:
        ex = self.active
        if ex is None:
            return
        ex.bytes_out += len(data)
        self._out.append(chunk(data) if self.chunk_out else data)

    def call_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        if self.chunk_out and self.active is not None:
            self._out.append(trailer_lines(filter_trailers(fields)))
            self.chunk_out = False  # the last chunk is written: call_end adds nothing

    def call_end(self) -> None:
        ex = self.active
        self.upstream = None
        if ex is None:
            return
        if self.chunk_out:
            self._out.append(LAST_CHUNK)
            self.chunk_out = False
        batch = self.batch
        if batch is None or self.tunnel is not None:
            self.flush()
        elif self._out:
            batch.hold_client(self)  # written at the end of the loop iteration: write_held
        if self.tunnel is not None:
            self.tunnel = None  # the upstream ended the tunnel (a call ends only then): so does the client
            self._finish(ex, close=True)
            return
        self._finish(ex, close=not ex.keep_alive)

    def call_error(self, denial: Denial) -> None:
        ex = self.active
        self.upstream = None
        self.call = None
        if ex is not None:
            self._fail_active(ex, denial)

    def call_upgrade(self, rest: bytes) -> bool:
        ex = self.active
        upstream = self.upstream
        if ex is None or upstream is None or ex.status != 101:
            return False
        self.tunnel = upstream
        if rest:
            self._out.append(rest)
        self.flush()
        pending = self._tunnel_buffer or []
        self._tunnel_buffer = None
        for data in pending:
            upstream.write(data)
        self.deadline_kind = DL_NONE
        if self._paused:
            self._resume(PAUSE_BUFFER)
        return True

    def call_tunnel_data(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def flush(self) -> None:
        self._held_bytes = 0
        out = self._out
        if out and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()
            ex = self.active
            if ex is not None:
                ex.response_started = True  # bytes reached the client: no second response is possible

    def hold(self, data: bytes) -> None:
        """Response bytes of a handler (proxy/handler_links.py's Http1Link), written with the loop iteration's
        other writes, or at once when batching is off. Held bytes go before anything written later."""
        out = self._out
        batch = self.batch
        out.append(data)
        self._held_bytes += len(data)
        if batch is None or self._held_bytes > HANDLER_HOLD_MAX:
            self.flush()
        elif len(out) == 1:
            batch.hold_client(self)

    def write_held(self) -> None:
        """The WriteBatch's call: write the response held for it. A connection that closed since (aborted,
        or the client left) writes nothing; one that closed normally already flushed."""
        if not self.closing:
            self.flush()

    def _discard_unsent(self) -> None:
        """Drop response bytes not yet written, so an error response can replace them."""
        self._out.clear()
        self.chunk_out = False

    def _drop_call(self) -> None:
        """Give up the active exchange's upstream call: its connection (if any) is discarded."""
        call = self.call
        self.upstream = None
        if call is not None:
            self.call = None
            call.abandon()

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # -- responses the gateway writes itself -----------------------------------------------------------
    def deny(self, ex: Exchange, denial: Denial) -> None:
        ex.denial = denial.reason
        ex.status = denial.status
        close = not ex.body_complete or not ex.keep_alive or self.worker.draining or self.retiring
        route = ex.route
        own = None
        if route is not None and route.error_body is not None:  # an llm route: its SDKs' error shape
            own = route.error_body(ex, denial.status, denial.problem, denial.detail)
        body = render_problem(
            denial.status,
            denial.problem,
            denial.detail,
            request_id=ex.request_id,
            headers=answer_headers(ex, denial.headers, self.tls, self.worker.holder.current),
            close=close,
            http10=ex.version == b"1.0",
            own=own,
        )
        ex.bytes_out = len(body)
        ex.response_started = True
        self.flush()
        assert self.transport is not None
        self.transport.write(body)
        self._finish(ex, close=close)

    def _fail_active(self, ex: Exchange, denial: Denial) -> None:
        """End the exchange in flight with an error: its upstream connection (if any) is discarded, bytes
        not yet written are dropped, then the error is answered -- or, if response bytes already reached
        the client, the connection is aborted (a second response is never written)."""
        self._drop_call()
        self._discard_unsent()
        if ex.response_started:
            ex.denial = denial.reason
            self._abort(ex)
        else:
            self.deny(ex, denial)

    # -- completion ------------------------------------------------------------------------------------
    def _finish(self, ex: Exchange, *, close: bool) -> None:
        self.active = None
        self.handler_run = None
        self._body_hold = None
        self.upstream = None
        self.call = None
        complete(self.worker, ex)
        if close or self.closing:
            self._close_now()
            return
        if self.queue:
            self._resume(PAUSE_PIPELINE)
            while self.queue and self._idle() and not self.closing:
                self._start(self.queue.popleft())
                self._forward_pending()
            return
        tail = self._error_tail
        if tail is not None:
            self._out.append(tail)  # the error behind the complete requests, after the last response
            self._close_now()
            return
        if self.receiving is None and self.deadline_kind != DL_HEAD:
            self._wait_idle()  # (DL_HEAD: the next head has begun; its own deadline runs)

    def _wait_idle(self) -> None:
        """Nothing in progress: the client has idle_timeout to start its next request."""
        worker = self.worker
        self.deadline_kind = DL_IDLE
        self.deadline = worker.now + worker.holder.current.server.idle_timeout  # tick clock: 100 ms grain

    def _idle(self) -> bool:
        """No exchange in progress. A call, so that each test of the loop in _finish reads ``active``
        afresh: mypy keeps the narrowing of ``self.active = None`` across ``_start`` (which sets it), and the
        compiled build (fastgw/native.py) would check the attribute against that stale type."""
        return self.active is None

    def _abort(self, ex: Exchange) -> None:
        """The response cannot be completed: close without writing anything more."""
        self.active = None
        pending = None
        if self.handler_run is not None:
            pending = self.handler_run.cancel()
            self.handler_run = None
        complete_when_done(self.worker, ex, pending)
        self.closing = True
        if self.transport is not None:
            self.transport.abort() if ex.response_started else self.transport.close()

    def _close_now(self, linger: bool = True) -> None:
        """Write what is held and close. ``linger``: the client may still be sending (a request body,
        pipelined requests), so half-close and drain first (proxy/linger.py); an idle keep-alive
        connection closes at once, so that clients' pooled idle sockets do not hold up a shutdown, and
        so does one with an exchange still in flight (nothing may be written after the half-close)."""
        if self.deadline_kind == DL_LINGER:
            return  # closing already, by the lingering deadline
        self.closing = True
        self._tunnel_buffer = None  # an upgrade refused: what the client sends now is dropped too
        self.flush()
        transport = self.transport
        if transport is None:
            return
        if not linger or self.active is not None:
            transport.close()
            return
        start_linger(self)
