"""One forwarded exchange's trip to an upstream, written once for HTTP/1, HTTP/2 and handlers.

An :class:`UpstreamCall` picks the target, gets a connection (an idle one, a new connect, or a place in
the pool's queue), sends the request head and the body bytes buffered so far, and relays the response to
the client side through a :class:`CallSink` (the HTTP/1 connection, an HTTP/2 stream, or the async client
of ``proxy/client.py``). It owns the two transparent retries: a connect that failed goes to a sibling
target (nothing was sent, so any method may; the head is rebuilt for the new target), and a reused
keep-alive connection that died before answering is retried once on a fresh connection (idempotent,
small, whole request). Both stay within the upstream's retry budget. When the response ends, the call
releases the connection to its pool (or discards it); when the client side gives up, :meth:`abandon`
discards it.

One call per exchange, never reused: a pool's ready callback is a bound method of the call that asked,
so a callback arriving after its exchange ended (``done``) cannot attach to a later exchange on the
same keep-alive client connection; it hands the connection back instead.

Hot path (compiled, fastgw/native.py): one object per forwarded request; the ready callback (a bound
method) is made only when a connection must be waited for; no Task, no await, no closure.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.dispatch import (
    connect_retry_target,
    retarget,
    retry_allowed,
    upstream_denial,
    upstream_request,
)
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.upstream.connection import UpstreamConnection
from fastgw.upstream.response_reader import ResponseSink

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.upstream.pool import TargetPool, UpstreamGroup
    from fastgw.upstream.write_batch import WriteBatch

_monotonic: Final = time.monotonic  # Final: compiled, a C static


@mypyc_attr(allow_interpreted_subclasses=True)
class CallSink(asyncio.Protocol):
    """The client side of an :class:`UpstreamCall`: where its response goes.

    A base class, not a typing.Protocol, for the same reason as ``ResponseSink`` (compiled calls go
    through the vtable); it derives asyncio.Protocol because the HTTP/1 connection, compiled, may have
    one base only and must be a Protocol.
    """

    def call_wanted(self) -> bool:
        """Whether the client side still waits for this response (a connect finished or failed)."""
        raise NotImplementedError

    def call_connection(self, conn: UpstreamConnection | None) -> None:
        """The connection now carrying the request (later body bytes go to it), or None while a retry
        waits for another one."""
        raise NotImplementedError

    def call_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        """The response head (see ``ResponseSink.on_upstream_head``); returns its framing."""
        raise NotImplementedError

    def call_body(self, data: bytes) -> None:
        raise NotImplementedError

    def call_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def call_end(self) -> None:
        """The response is complete; the upstream connection was already released or discarded."""
        raise NotImplementedError

    def call_error(self, denial: Denial) -> None:
        """The upstream failed and no retry is left: answer ``denial`` (or abort if the response began).
        The connection is gone already."""
        raise NotImplementedError

    def call_upgrade(self, rest: bytes) -> bool:
        """The upstream switched protocols (101); False refuses (a 502 follows)."""
        return False

    def call_tunnel_data(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        """What the last upstream read added may be written now."""
        raise NotImplementedError

    def pause_client_reading(self) -> None:
        raise NotImplementedError

    def resume_client_reading(self) -> None:
        raise NotImplementedError


class UpstreamCall(ResponseSink):
    """One exchange forwarded to one upstream (see the module doc); the upstream connection's sink."""

    __slots__ = (
        "batch",
        "client_head",
        "conn",
        "done",
        "ex",
        "group",
        "payload",
        "peer",
        "retry_payload",
        "sink",
        "via",
        "worker",
    )

    def __init__(
        self,
        worker: WorkerContext,
        ex: Exchange,
        group: UpstreamGroup,
        sink: CallSink,
        peer: ClientPeer,
        via: bytes,
        batch: WriteBatch | None,
    ) -> None:
        self.worker = worker
        self.ex = ex
        self.group = group
        self.sink = sink
        self.peer = peer
        self.via = via
        self.batch = batch
        self.conn: UpstreamConnection | None = None
        self.payload = b""  # the request head (and body so far) waiting for a connection
        self.retry_payload: bytes | None = None  # the whole request, kept for the keep-alive retry
        self.done = False  # the exchange ended (answered, failed or abandoned): callbacks do nothing
        # A handler's request (proxy/client.py, ``ex.route`` is None): its head behind the request line,
        # without Host, which names each target; b"" for a proxied exchange.
        self.client_head = b""

    # -- getting a connection ---------------------------------------------------------------------------
    def start(self) -> None:
        """Pick a target, build the head with the body buffered in ``ex.body_buffer``, and send it as soon
        as a connection is had. Body bytes arriving before that wait in ``ex.body_buffer``."""
        ex = self.ex
        pool = self.group.pick()
        parts = self.head_for(pool)
        buffered = ex.body_buffer
        if buffered:
            parts.extend(buffered)
        ex.body_buffer = None if ex.body_complete else []
        payload = b"".join(parts)
        # Kept for a transparent retry only if it holds the whole request (the other rules are checked
        # when a retry is wanted, off the fast path).
        self.retry_payload = payload if ex.body_complete else None
        ex.upstream_start = now = _monotonic()
        self.payload = payload
        conn = pool.take_idle(now)
        if conn is None:
            conn = pool.acquire(self.on_ready, now=now)
        if conn is not None:
            self.attach(conn)

    def head_for(self, pool: TargetPool) -> list[bytes]:
        """The request head for ``pool``'s target, as pieces to join."""
        ex = self.ex
        if ex.route is None:  # a handler's own request: only Host depends on the target
            ex.upstream_addr = pool.label_bytes
            line = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (ex.method, ex.target, pool.label_bytes)
            return [line, self.client_head]
        return upstream_request(self.worker, ex, pool, self.peer, self.via)

    def on_ready(self, conn: UpstreamConnection | None, status: int, problem: str, detail: str) -> None:
        """The pool's answer to a wait: a connection, or why none could be had."""
        if conn is None:
            if self.done or self.ex.response_started or not self.sink.call_wanted():
                return
            pool = connect_retry_target(self.group, self.ex, status, problem)
            if pool is None:
                self._give_up(status, problem, detail)
                return
            # Nothing was sent: the request goes to a sibling target, head rebuilt for it.
            self.payload = self.retarget(self.payload, pool)
            if self.retry_payload is not None:
                self.retry_payload = self.payload
            retry = pool.acquire(self.on_ready)
            if retry is not None:
                self.attach(retry)
            return
        if self.done or self.conn is not None or not self.sink.call_wanted():
            conn.pool.release(conn)  # the exchange ended (or the client left) while we were connecting
            return
        self.attach(conn)

    def retarget(self, payload: bytes, pool: TargetPool) -> bytes:
        """``payload`` (a head and the body bytes behind it) with the head rebuilt for ``pool``."""
        if self.ex.route is None:
            body_at = payload.find(b"\r\n\r\n") + 4
            return b"".join(self.head_for(pool)) + payload[body_at:]
        return retarget(self.worker, self.ex, payload, pool, self.peer, self.via)

    def attach(self, conn: UpstreamConnection) -> None:
        """Send the pending head and every body byte received so far; later bytes go straight to ``conn``."""
        ex = self.ex
        payload = self.payload
        self.payload = b""
        if ex.body_buffer:
            payload += b"".join(ex.body_buffer)
        ex.body_buffer = None
        self.conn = conn
        ex.bytes_out = 0
        conn.start(self, payload, ex.method == b"HEAD", ex.upstream_start, self.batch, ex.body_complete)
        self.sink.call_connection(conn)

    def abandon(self) -> None:
        """The client side gives up mid-exchange: the connection's framing is unknown, so it is closed."""
        self.done = True
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.detach()
            conn.pool.discard(conn)

    def abort(self, status: int, problem: str, detail: str) -> None:
        """Fail the exchange now, without a retry (an answer the client side cannot relay)."""
        if self.done:
            return
        self.abandon()
        self.sink.call_connection(None)
        self._give_up(status, problem, detail)

    def _give_up(self, status: int, problem: str, detail: str) -> None:
        ex = self.ex
        self.done = True
        ex.upstream_ms = (_monotonic() - ex.upstream_start) * 1000.0
        self.sink.call_error(upstream_denial(ex, status, problem, detail))

    # -- ResponseSink: the upstream connection's callbacks -----------------------------------------------
    def on_upstream_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        ex = self.ex
        ex.upstream_ms = (_monotonic() - ex.upstream_start) * 1000.0
        return self.sink.call_head(status, head, lines)

    def on_upstream_body(self, data: bytes) -> None:
        self.sink.call_body(data)

    def on_upstream_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.sink.call_trailers(fields)

    def on_upstream_end(self, reusable: bool) -> None:
        conn = self.conn
        self.conn = None
        self.done = True
        if conn is not None:
            conn.reused = True  # sink and deadline were cleared by the upstream when it finished
            if not conn.tunnel:
                if reusable and self.ex.body_complete:
                    conn.pool.release(conn, self.worker.now)  # the tick clock: no clock call
                else:
                    conn.pool.discard(conn)
        self.sink.call_end()

    def on_upstream_error(self, status: int, problem: str, detail: str, retryable: bool) -> None:
        """The connection failed (it was discarded already); retry once if the rules allow."""
        self.conn = None
        if self.done:
            return
        ex = self.ex
        payload = self.retry_payload
        if (
            retryable
            and payload is not None
            and not ex.response_started
            and retry_allowed(ex, self.group.settings)
            and self.group.allow_retry()
        ):
            # A reused keep-alive connection died before answering: retry once on a fresh connection,
            # within the upstream's retry budget.
            self.retry_payload = None
            self.sink.call_connection(None)
            pool = self.group.pick()
            self.payload = self.retarget(payload, pool)
            conn = pool.acquire(self.on_ready, fresh=True)
            if conn is not None:
                self.attach(conn)
            return
        self.sink.call_connection(None)
        self._give_up(status, problem, detail)

    def on_upstream_upgrade(self, rest: bytes) -> None:
        if self.done:
            return
        if not self.sink.call_upgrade(rest):
            self.abort(502, "bad-upstream-response", "unexpected upgrade from upstream")

    def on_upstream_tunnel_data(self, data: bytes) -> None:
        self.sink.call_tunnel_data(data)

    def flush(self) -> None:
        self.sink.flush()

    def pause_client_reading(self) -> None:
        self.sink.pause_client_reading()

    def resume_client_reading(self) -> None:
        self.sink.resume_client_reading()
