"""The client-side Protocol: bytes in -> codec -> router -> policy chain -> upstream, and back.

Everything on the fast path runs inside ``data_received`` and the upstream Protocol's callbacks: no Task,
no ``await``, no timer per request (DESIGN.md hot-path rules). A Task exists only while a policy's
``Pending`` waits on a cold cache miss.

Per connection, requests are parsed as they arrive and served strictly in order (pipelining): ``active``
is the exchange whose response is in progress, ``queue`` holds parsed requests waiting their turn (their
bodies buffered, bounded by pausing reads). An exchange's head is written upstream together with any body
bytes that arrived in the same read, in one ``write``.

Failure rules: a codec error or a denial of a request whose body was not read ends the connection after
the response (framing is lost otherwise); if response bytes were already sent, the connection is closed
instead of writing a second response (STYLE.md 5).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, ClassVar, Final

from fastgw.codec.http1 import ParserLimits, RequestReader
from fastgw.codec.http1_backends import make_reader
from fastgw.codec.http1_httptools import HttptoolsReader
from fastgw.codec.problem import CodecError, render_problem
from fastgw.codec.serialize import LAST_CHUNK, chunk
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending
from fastgw.policy.network import client_from_forwarded, in_networks
from fastgw.proxy.context import DL_BODY, DL_HEAD, DL_IDLE, DL_NONE
from fastgw.proxy.dispatch import admit, complete, release, resume_chain
from fastgw.proxy.handler import HandlerRun, Http1Link, buffered_body_denial, unchunk
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy_headers.answer import answer_headers
from fastgw.proxy_headers.hop_by_hop import filter_trailers, trailer_lines
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.proxy_headers.response_head import FRAMING_NONE, build_response_head
from fastgw.snapshot import ListenerSettings, UpstreamSettings
from fastgw.tls.server import PeerCertificate, peer_certificate
from fastgw.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.upstream.pool import UpstreamGroup
    from fastgw.upstream.write_batch import WriteBatch

# Final: compiled, a C static (not a module-dict lookup per call)
_monotonic: Final = time.monotonic
_time: Final = time.time

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# Body bytes buffered ahead of the upstream before reads pause: a few socket buffers' worth keeps uploads
# at line rate while the upstream connects, and bounds what one slow upstream makes a connection hold.
BODY_HIGH_WATER: Final = 256 * 1024

# Why reading is paused (a bit each, reading resumes when none is left).
PAUSE_UPSTREAM: Final = 1  # the upstream is not taking the request body fast enough
PAUSE_BUFFER: Final = 2  # body buffered while no upstream connection is attached yet
PAUSE_PIPELINE: Final = 4  # too many pipelined requests queued
PAUSE_CLOSING: Final = 8  # a final response is being written; nothing more will be parsed


class ClientConnection(CallSink):
    multiplexed: ClassVar[bool] = False  # HTTP/2 connections carry many exchanges (proxy/http2.py)

    __slots__ = (
        "_body_hold",
        "_error_tail",
        "_group",
        "_group_key",
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
        "reader",
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
        self._group: UpstreamGroup | None = None  # the last upstream group used, looked up once per route
        self._group_key: UpstreamSettings | None = None
        self._out: list[bytes] = []
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
        self.reader: RequestReader = make_reader(
            server.http1,
            self,
            ParserLimits(
                max_header_bytes=server.max_header_bytes,
                max_header_count=server.max_header_count,
                max_target_bytes=server.max_target_bytes,
            ),
        )

    # -- connection lifecycle --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        self.set_peer(ip)
        worker = self.worker
        server = worker.holder.current.server
        if not worker.admit(self, server.max_connections, server.max_connections_per_ip):
            self.closing = True
            headers = answer_headers(None, (), self.tls, worker.holder.current)
            transport.write(  # type: ignore[attr-defined]
                render_problem(
                    503, "too-many-connections", "connection limit reached", headers=headers, close=True
                )
            )
            transport.close()
            return
        self.deadline = _monotonic() + server.header_timeout
        self.deadline_kind = DL_HEAD
        if self.listener.tls is not None and self.listener.tls.client_auth != "none":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.client_cert = peer_certificate(ssl_object.getpeercert(binary_form=True))

    def set_peer(self, ip: str) -> None:
        """The client's address: the socket's, or the one a PROXY header names (proxy/front.py)."""
        self.peer_ip = ip
        self.client_ip = ip
        trusted = self.worker.holder.current.server.trusted_proxies
        self.peer = ClientPeer(ip.encode(), bool(trusted) and in_networks(ip, trusted), self.peer.proto)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.reader.close()  # breaks the reader <-> connection cycles: freed without the cyclic GC
        self.worker.release(self)
        run = self.handler_run
        if run is not None:
            self.handler_run = None
            run.cancel()  # the handler stops at its next await
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.detach()
            tunnel.close()
        ex = self.active
        if ex is not None:
            self.active = None
            self._drop_call()
            if not ex.status:
                ex.status = 499  # nginx's "client closed request": logged, never sent
            complete(self.worker, ex)
        self.queue.clear()
        self._out.clear()  # held for the loop iteration's batch: nobody left to read it

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self._tunnel_buffer is not None:
            # Waiting for the upstream's 101: keep what the client sends, bounded by pausing reads.
            self._tunnel_buffer.append(data)
            if sum(len(b) for b in self._tunnel_buffer) > BODY_HIGH_WATER:
                self._pause(PAUSE_BUFFER)
            return
        if self.closing or self._error_tail is not None:
            return
        if self.receiving is None and self.deadline_kind != DL_HEAD:
            # The first bytes of a request head (after an idle keep-alive wait, or pipelined behind a
            # response in progress): the head has header_timeout to complete.
            worker = self.worker
            self.deadline_kind = DL_HEAD
            self.deadline = worker.now + worker.holder.current.server.header_timeout  # tick clock
        reader = self.reader
        try:
            if isinstance(reader, HttptoolsReader):
                reader.feed(data)  # the default backend: a compiled, direct call
            else:
                reader.feed(data)  # through the RequestReader Protocol: a generic method call
        except CodecError as err:
            self._codec_error(err)
            return
        self._forward_pending()

    def _forward_pending(self) -> None:
        """Forward the exchange the chain passed during this read, unless a later callback denied it."""
        ex = self._to_forward
        if ex is not None:
            self._to_forward = None
            if ex is self.active and not self.closing:
                self._forward(ex)

    # -- codec sink ------------------------------------------------------------------------------------
    def on_request_head(self, ex: Exchange) -> None:
        if self.closing:
            return
        ex.start = _monotonic()
        ex.client_ip = self.client_ip
        ex.client_cert = self.client_cert
        if self.peer.trusted and ex.xff:
            ex.client_ip = client_from_forwarded(
                ex.xff, self.worker.holder.current.server.trusted_proxies
            ) or (self.client_ip)
        self.receiving = ex
        if ex.chunked or ex.content_length > 0:
            self.deadline_kind = DL_BODY
            self.deadline = ex.start + self.worker.holder.current.server.body_timeout
            self.body_since = ex.start
        else:
            # No body: no client deadline until the response is done (the upstream's own deadlines
            # cover the wait; an exchange may take any time the upstream's timeouts allow).
            self.deadline_kind = DL_NONE
            self.deadline = 0.0
            ex.body_complete = True  # no body: the end callback only confirms it
        if self.active is None:
            self._start(ex)
        else:
            ex.body_buffer = []
            self.queue.append(ex)
            if len(self.queue) >= self.worker.holder.current.server.max_pipelined:
                self._pause(PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        ex = self.receiving
        if ex is None or self.closing:
            return
        ex.body_received += len(data)
        self.deadline = _monotonic() + self.worker.holder.current.server.body_timeout
        route = ex.route
        limit = (
            route.max_body_bytes if route is not None else self.worker.holder.current.server.max_body_bytes
        )
        if ex.body_received > limit:
            self._body_too_large(ex, limit)
            return
        run = self.handler_run
        if run is not None and run.ex is ex:
            run.feed(data)
            return
        framed = chunk(data) if ex.chunked else data
        if ex is self._body_hold:
            ex.body_buffer.append(framed)  # type: ignore[union-attr]  # whole: route.max_body_bytes bounds it
            return
        if ex is self.active and self.upstream is not None:
            self.upstream.write(framed)
        elif ex.body_buffer is not None:
            ex.body_buffer.append(framed)
            if ex.body_received > BODY_HIGH_WATER:
                self._pause(PAUSE_BUFFER)

    def on_request_end(self) -> None:
        ex = self.receiving
        if ex is None or self.closing:
            return
        self.receiving = None
        ex.body_complete = True
        if self.deadline_kind == DL_BODY:
            self.deadline_kind = DL_NONE
            self.deadline = 0.0
        run = self.handler_run
        if run is not None and run.ex is ex:
            run.begin(self.worker.spawn)
            return
        upstream = self.upstream if ex is self.active else None
        if ex.chunked:
            if upstream is not None:
                upstream.write(LAST_CHUNK)
            elif ex.body_buffer is not None:
                ex.body_buffer.append(LAST_CHUNK)
        if ex is self._body_hold:
            self._body_hold = None
            self._check_body(ex)
            return
        if upstream is not None:
            if ex.has_body:
                upstream.request_sent(_monotonic())  # from here the wait for the response is the upstream's
        elif self.active is None and not self.queue:
            self._wait_idle()  # answered before its end callback (a denial): the connection is idle now

    def on_upgrade(self, rest: bytes) -> bool:
        ex = self.receiving if self.receiving is not None else (self.queue[-1] if self.queue else self.active)
        if ex is not None and ex.has_body:
            # The body would be read as the next request (or as tunnel bytes): a smuggling vector.
            self._codec_error(CodecError(400, "bad-request", "upgrade request with a body is not supported"))
            return True
        if ex is not None and ex.upgrade == b"websocket":
            # Everything after the head belongs to the new protocol once the upstream agrees (101).
            self._tunnel_buffer = [rest] if rest else []
            return True
        # An upgrade we decline (h2c, unknown protocols) is served as plain HTTP/1.1.
        if ex is not None:
            ex.upgrade = b""
        return False

    # -- routing and the policy chain ------------------------------------------------------------------
    def _start(self, ex: Exchange) -> None:
        if self._out:
            self.flush()  # the previous response, held for the batch, is written before this one starts
        self.active = ex
        outcome = admit(self.worker, ex)
        if outcome is None and ex.route.handler is not None:  # type: ignore[union-attr]
            self._run_handler(ex)
        elif outcome is None and ex.route.body_checks:  # type: ignore[union-attr]
            self._hold_body(ex)
        elif outcome is None:
            if ex.body_buffer is None and not ex.body_complete:
                ex.body_buffer = []  # body bytes read before the exchange is forwarded wait here
            self._to_forward = ex
        elif type(outcome) is Denial:
            self._deny(ex, outcome)
        else:
            self._park(ex, outcome)  # type: ignore[arg-type]

    def _park(self, ex: Exchange, pending: Pending) -> None:
        """A policy needs I/O: wait for it in a Task (cold path only), then forward or deny."""

        async def resume() -> None:
            denial = await resume_chain(ex, pending)
            if self.closing or self.active is not ex:
                release(ex)  # the client left while the policy waited (its record is written)
            elif denial is not None:
                self._deny(ex, denial)
            elif ex.route.handler is not None:  # type: ignore[union-attr]
                self._run_handler(ex)
            elif ex.route.body_checks:  # type: ignore[union-attr]
                self._hold_body(ex)
                self._forward_pending()
            else:
                self._forward(ex)

        if ex.body_buffer is None:
            ex.body_buffer = []
        self.worker.spawn(resume())

    # -- handler routes (proxy/handler.py) -------------------------------------------------------------
    def _run_handler(self, ex: Exchange) -> None:
        """Buffer the body (what arrived while the route was unknown first), then run the handler."""
        run = self.handler_run = HandlerRun(ex, Http1Link(self))
        buffered = ex.body_buffer
        ex.body_buffer = None
        if buffered:
            for piece in unchunk(buffered) if ex.chunked else buffered:
                run.feed(piece)
        if self._paused:
            self._resume(PAUSE_BUFFER)
        if ex.body_complete:
            run.begin(self.worker.spawn)
        elif ex.expect_continue and self.transport is not None:
            self.transport.write(CONTINUE)

    def _hold_body(self, ex: Exchange) -> None:
        """A proxy route with a BODY policy: its body is buffered whole, checked, then forwarded."""
        if ex.body_buffer is None:
            ex.body_buffer = []
        if ex.body_complete:
            self._check_body(ex)
            return
        self._body_hold = ex
        if self._paused:
            self._resume(PAUSE_BUFFER)
        if ex.expect_continue and self.transport is not None:
            self.transport.write(CONTINUE)

    def _check_body(self, ex: Exchange) -> None:
        """The BODY phase of a proxied request: deny, or forward at the end of this read."""
        denial = buffered_body_denial(ex, ex.body_buffer or [])
        if denial is not None:
            self._fail_active(ex, denial)
        else:
            self._to_forward = ex

    def handler_done(self, ex: Exchange, close: bool) -> None:
        if ex is self.active:
            self._finish(ex, close=close)

    def handler_failed(self, ex: Exchange, denial: Denial) -> None:
        if ex is self.active and not self.closing:
            self._fail_active(ex, denial)

    @property
    def draining(self) -> bool:
        return self.worker.draining

    def log_event(self, message: str) -> None:
        self.worker.log_event(message)

    # -- forwarding ------------------------------------------------------------------------------------
    def _forward(self, ex: Exchange) -> None:
        route = ex.route
        assert route is not None and self.transport is not None
        if ex.expect_continue and not ex.body_complete:
            self.transport.write(CONTINUE)
        call = UpstreamCall(
            self.worker,
            ex,
            self._upstream_group(route.upstream),
            self,
            self.peer,
            self.worker.via,
            self.batch,
        )
        self.call = call
        call.start()

    def _upstream_group(self, settings: UpstreamSettings) -> UpstreamGroup:
        """The worker's group for these settings, looked up once per route change on this connection."""
        if settings is self._group_key and self._group is not None:
            return self._group
        group = self._group = self.worker.pools.group(settings)
        self._group_key = settings
        return group

    def _drop_call(self) -> None:
        """Give up the active exchange's upstream call: its connection (if any) is discarded."""
        call = self.call
        self.upstream = None
        if call is not None:
            self.call = None
            call.abandon()

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
        out = self._out
        if out and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()
            ex = self.active
            if ex is not None:
                ex.response_started = True  # bytes reached the client: no second response is possible

    def write_held(self) -> None:
        """The WriteBatch's call: write the response held for it. A connection that closed since (aborted,
        or the client left) writes nothing; one that closed normally already flushed."""
        if not self.closing:
            self.flush()

    def _discard_unsent(self) -> None:
        """Drop response bytes not yet written, so an error response can replace them."""
        self._out.clear()
        self.chunk_out = False

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

    # -- client write-side flow control (asyncio calls these) -------------------------------------------
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

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # -- responses the gateway writes itself ------------------------------------------------------------
    def _deny(self, ex: Exchange, denial: Denial) -> None:
        ex.denial = denial.reason
        ex.status = denial.status
        close = not ex.body_complete or not ex.keep_alive or self.worker.draining or self.retiring
        body = render_problem(
            denial.status,
            denial.problem,
            denial.detail,
            request_id=ex.request_id,
            headers=answer_headers(ex, denial.headers, self.tls, self.worker.holder.current),
            close=close,
            http10=ex.version == b"1.0",
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
            self._deny(ex, denial)

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
        self.closing = True
        self.flush()
        assert self.transport is not None
        self.transport.write(body)
        self.transport.close()

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
        if self.handler_run is not None:
            self.handler_run.cancel()
            self.handler_run = None
        complete(self.worker, ex)
        self.closing = True
        if self.transport is not None:
            self.transport.abort() if ex.response_started else self.transport.close()

    def _close_now(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # -- deadlines (called by the worker tick) -----------------------------------------------------------
    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        if kind == DL_IDLE or self.transport is None:
            self._close_now()
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
            self._close_now()
