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

This module is the request side of the connection: reading requests, routing, the policy chain, handler
routes and forwarding. The connection's state, its response side and completion are in
``proxy/http1_response.py``; deadlines, backpressure and malformed input in ``proxy/http1_deadlines.py``
(one class each, this one the last; ``http1_response.py`` explains the split).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar, Final

from fastgw.codec.http1 import ParserLimits, RequestReader
from fastgw.codec.http1_backends import make_reader
from fastgw.codec.http1_httptools import HttptoolsReader
from fastgw.codec.problem import CodecError, render_problem
from fastgw.codec.serialize import LAST_CHUNK, chunk
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.policy.network import client_from_forwarded, in_networks
from fastgw.proxy.context import DL_BODY, DL_HEAD, DL_NONE
from fastgw.proxy.dispatch import admit, complete_when_done, park
from fastgw.proxy.handler import HandlerRun, buffered_body_denial, unchunk
from fastgw.proxy.handler_links import Http1Link
from fastgw.proxy.http1_deadlines import Http1Deadlines
from fastgw.proxy.http1_response import PAUSE_BUFFER, PAUSE_PIPELINE
from fastgw.proxy.linger import linger_refused
from fastgw.proxy.upstream_call import UpstreamCall
from fastgw.proxy_headers.answer import answer_headers
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.snapshot import ListenerSettings, UpstreamSettings
from fastgw.tls.server import peer_certificate

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.upstream.pool import UpstreamGroup

# Final: compiled, a C static (not a module-dict lookup per call)
_monotonic: Final = time.monotonic

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# Body bytes buffered ahead of the upstream before reads pause: a few socket buffers' worth keeps uploads
# at line rate while the upstream connects, and bounds what one slow upstream makes a connection hold.
BODY_HIGH_WATER: Final = 256 * 1024


class ClientConnection(Http1Deadlines):
    """One HTTP/1.x client connection (see the module doc); its state is declared in
    ``proxy/http1_response.py``."""

    multiplexed: ClassVar[bool] = False  # HTTP/2 connections carry many exchanges (proxy/http2.py)

    __slots__ = ("_group", "_group_key", "reader")

    def __init__(self, worker: WorkerContext, listener: ListenerSettings) -> None:
        super().__init__(worker, listener)
        self._group: UpstreamGroup | None = None  # the last upstream group used, looked up once per route
        self._group_key: UpstreamSettings | None = None
        server = worker.holder.current.server
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
            linger_refused(transport, worker.loop)  # type: ignore[arg-type]
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
        pending = None
        if run is not None:
            self.handler_run = None
            pending = run.cancel(self.worker.aborting)  # the handler stops at its next await
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
            complete_when_done(self.worker, ex, pending)
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
                self.forward(ex)

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
            self.run_handler(ex)
        elif outcome is None and ex.route.body_checks:  # type: ignore[union-attr]
            self.hold_body(ex)
        elif outcome is None:
            if ex.body_buffer is None and not ex.body_complete:
                ex.body_buffer = []  # body bytes read before the exchange is forwarded wait here
            self._to_forward = ex
        elif type(outcome) is Denial:
            self.deny(ex, outcome)
        else:
            park(self.worker, ex, outcome, self)  # type: ignore[arg-type]

    # -- a parked exchange's return (dispatch.park) ----------------------------------------------------
    def still_waiting(self, ex: Exchange) -> bool:
        return not self.closing and self.active is ex

    def resumed(self) -> None:
        self._forward_pending()  # a body held whole and already checked is forwarded now

    # -- handler routes (proxy/handler.py) -------------------------------------------------------------
    def run_handler(self, ex: Exchange) -> None:
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

    def hold_body(self, ex: Exchange) -> None:
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

    def refuse_unanswered(self, denial: Denial) -> None:
        ex = self.active
        if ex is None or ex.response_started or self.closing or self.transport is None:
            return
        run = self.handler_run
        if run is not None:
            self.handler_run = None
            run.cancel(shutdown=True)  # its record says why the exchange ended (handler_api.py)
        self._fail_active(ex, denial)  # written now (deny), the connection closed after it

    @property
    def draining(self) -> bool:
        return self.worker.draining

    def log_event(self, message: str) -> None:
        self.worker.log_event(message)

    # -- forwarding ------------------------------------------------------------------------------------
    def forward(self, ex: Exchange) -> None:
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
