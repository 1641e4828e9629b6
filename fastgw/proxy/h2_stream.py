"""One HTTP/2 stream: its Exchange, its upstream call's sink, a handler's response, and what waits to be
sent either way.

An :class:`H2Stream` is the sink of its exchange's :class:`~fastgw.proxy.upstream_call.UpstreamCall`
(the response head, body and trailers wait here for the client's flow-control window), the side
a handler's response writer talks to (``proxy/handler_links.py``'s ``Http2Link``), and the side a parked
exchange returns to (``proxy/dispatch.py``'s ``park``). What it needs of its connection, :class:`H2StreamHost`
declares: the connection (``proxy/http2.py``) extends it, so this module does not import the connection's
(no import cycle).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from fastgw.codec.problem import problem_fields
from fastgw.codec.serialize import DATE
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.handler import HandlerRun
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy_headers.answer import answer_headers
from fastgw.proxy_headers.hop_by_hop import filter_trailers
from fastgw.proxy_headers.response_head import FRAMING_NONE, build_h2_response_headers, field_pairs
from fastgw.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.snapshot import Http2Settings


class H2StreamHost(asyncio.Protocol):
    """What a stream uses of its connection: ``Http2Connection`` (``proxy/http2.py``, through
    ``proxy/h2_output.py``) sets these attributes and implements these methods."""

    __slots__ = ()

    worker: WorkerContext
    streams: dict[int, H2Stream]  # the open streams, by id
    limits: Http2Settings
    via: bytes
    tls: bool
    closing: bool
    write_paused: bool  # the client is not reading (asyncio paused writing)

    def ack(self, stream: H2Stream) -> None:
        """Hand the stream's received body bytes back to the client's flow-control windows."""
        raise NotImplementedError

    def pump(self, stream: H2Stream) -> None:
        """Send what the stream has, within the client's windows."""
        raise NotImplementedError

    def write_soon(self) -> None:
        """Write what is queued at the end of this loop iteration."""
        raise NotImplementedError

    def write_now(self) -> None:
        """Write what h2 has queued now (a handler's flush), not at the loop iteration's end."""
        raise NotImplementedError

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        """End a stream whose response cannot be completed."""
        raise NotImplementedError

    def run_handler(self, stream: H2Stream) -> None:
        raise NotImplementedError

    def hold_body(self, stream: H2Stream) -> None:
        raise NotImplementedError

    def forward(self, stream: H2Stream) -> None:
        raise NotImplementedError


class H2Stream(CallSink):
    """One stream: its Exchange, its upstream call and what waits to be sent either way."""

    __slots__ = (
        "body_deadline",
        "body_hold",
        "call",
        "conn",
        "ended",
        "ex",
        "handler_run",
        "head",
        "hold_acks",
        "out",
        "out_bytes",
        "sent_end",
        "sid",
        "trailers",
        "trailers_in",
        "unacked",
        "upstream",
        "upstream_paused",
    )

    def __init__(self, conn: H2StreamHost, sid: int, ex: Exchange) -> None:
        self.conn = conn
        self.sid = sid
        self.ex = ex
        self.upstream: UpstreamConnection | None = None  # the call's, once it has one
        self.call: UpstreamCall | None = None
        ex.body_buffer = []  # request body framed for the upstream, waiting for a connection
        self.unacked = 0  # flow-controlled bytes received but not yet handed back to the client
        self.hold_acks = False  # the upstream is not taking the body fast enough
        self.body_deadline = 0.0
        self.head: list[tuple[bytes, bytes]] | None = None  # response headers not yet sent
        self.out: deque[bytes] = deque()  # response body waiting for the client's window
        self.out_bytes = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None  # the response's, for the client
        self.trailers_in: list[tuple[bytes, bytes]] | None = None  # the request's, for the upstream
        self.ended = False  # the response is complete on our side (upstream done, or an error answer)
        self.sent_end = False  # END_STREAM went out
        self.upstream_paused = False
        self.handler_run: HandlerRun | None = None  # a handler route's exchange (proxy/handler.py)
        self.body_hold = False  # the body is buffered whole for a BODY policy, then forwarded

    # -- the upstream call's sink ----------------------------------------------------------------------
    def call_wanted(self) -> bool:
        return not self.ended and self.conn.streams.get(self.sid) is self

    def call_connection(self, conn: UpstreamConnection | None) -> None:
        self.upstream = conn
        if conn is not None and self.unacked and not self.hold_acks:
            self.conn.ack(self)

    def call_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        ex = self.ex
        route = ex.route
        assert route is not None
        if status == 101:
            if self.call is not None:
                self.call.abort(502, "bad-upstream-response", "unexpected upgrade from upstream")
            return FRAMING_NONE
        ex.status = status
        conn = self.conn
        self.head, framing = build_h2_response_headers(
            ex, route, status, field_pairs(lines), conn.worker.via, conn.tls
        )
        return framing

    def call_body(self, data: bytes) -> None:
        self.ex.bytes_out += len(data)
        self.out.append(data)
        self.out_bytes += len(data)

    def call_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.trailers = filter_trailers(fields) or None

    def call_end(self) -> None:
        self.upstream = None
        self.ended = True
        self.flush()

    def call_error(self, denial: Denial) -> None:
        self.upstream = None
        self.fail(denial)
        self.conn.write_soon()

    def flush(self) -> None:
        self.conn.pump(self)
        self.conn.write_soon()

    def write_now(self) -> None:
        self.conn.write_now()

    def pause_client_reading(self) -> None:
        self.hold_acks = True

    def resume_client_reading(self) -> None:
        self.hold_acks = False
        if self.unacked:
            self.conn.ack(self)
            self.conn.write_soon()

    def drop_upstream(self) -> None:
        """Give up the upstream call mid-exchange: its connection's framing is unknown, so it is closed."""
        call = self.call
        self.upstream = None
        if call is not None:
            self.call = None
            call.abandon()

    # -- a handler's response (proxy/handler_links.py's Http2Link) -------------------------------------------
    def append_out(self, data: bytes) -> None:
        self.out.append(data)
        self.out_bytes += len(data)

    def live(self) -> bool:
        return not self.conn.closing and self.conn.streams.get(self.sid) is self

    @property
    def worker(self) -> WorkerContext:
        return self.conn.worker

    def flow_blocked(self) -> bool:
        return self.conn.write_paused or self.out_bytes > self.conn.limits.stream_buffer

    @property
    def tls(self) -> bool:
        return self.conn.tls

    def log_event(self, message: str) -> None:
        self.conn.worker.log_event(message)

    # -- a parked exchange's return (dispatch.park; ``ex`` is this stream's) ---------------------------
    def still_waiting(self, ex: Exchange) -> bool:
        return self.conn.streams.get(self.sid) is self  # not reset while the policy waited

    def deny(self, ex: Exchange, denial: Denial) -> None:
        self.fail(denial)

    def run_handler(self, ex: Exchange) -> None:
        self.conn.run_handler(self)

    def hold_body(self, ex: Exchange) -> None:
        self.conn.hold_body(self)

    def forward(self, ex: Exchange) -> None:
        self.conn.forward(self)

    def resumed(self) -> None:
        self.conn.write_soon()

    # -- answers the gateway writes itself -------------------------------------------------------------
    def fail(self, denial: Denial) -> None:
        """Answer with a problem response, or reset the stream if the response already started."""
        if self.conn.streams.get(self.sid) is not self:
            return  # reset or finished meanwhile
        ex = self.ex
        self.drop_upstream()
        ex.denial = denial.reason
        if ex.response_started or self.sent_end:
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
            return
        ex.status = denial.status
        conn = self.conn
        headers = answer_headers(ex, denial.headers, conn.tls, conn.worker.holder.current)
        route = ex.route
        own = None
        if route is not None and route.error_body is not None:  # an llm route: its SDKs' error shape
            own = route.error_body(ex, denial.status, denial.problem, denial.detail)
        fields, body = problem_fields(
            denial.status, denial.problem, denial.detail, ex.request_id, headers, own
        )
        self.head = [(b":status", b"%d" % denial.status), (b"date", DATE.value[6:-2]), *fields]
        self.out.clear()
        self.out_bytes = 0
        self.trailers = None
        if body:
            self.out.append(body)
            self.out_bytes = len(body)
        ex.bytes_out = len(body)
        self.ended = True
        self.conn.pump(self)
