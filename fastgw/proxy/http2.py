"""The HTTP/2 client Protocol: frames in -> h2 events -> one Exchange per stream -> HTTP/1.1 upstreams.

A connection becomes HTTP/2 in one of two ways, both decided by the front protocol (``proxy/front.py``)
before any request is parsed: ALPN chose ``h2`` during the TLS handshake, or a cleartext connection
opened with the HTTP/2 preface (h2c with prior knowledge, RFC 9113 3.3). ``Upgrade: h2c`` on HTTP/1.1
is declined and served as HTTP/1.1 (it is never forwarded upstream).

Each stream is an ordinary Exchange: :mod:`fastgw.proxy.dispatch` routes it and runs the same policy
chain, and it is proxied over the worker's HTTP/1.1 upstream pools, so a route behaves the same on both
protocols. :class:`H2Stream` is the upstream's response sink for one stream.

Flow control both ways: request body bytes are acknowledged to the client (WINDOW_UPDATE) only once an
upstream connection has taken them, so a stream buffers at most its window; response bytes wait in the
stream while the client's window is closed, and the upstream read pauses above ``http2.stream_buffer``.
A client that stops reading pauses every upstream of the connection, is dropped after
``server.send_timeout``, and at once if ``http2.max_outbound_buffer`` bytes pile up.

Abuse limits (``codec/h2_guard.py`` scans frame headers before h2 buffers anything) end the connection
with GOAWAY ENHANCE_YOUR_CALM; protocol errors the h2 library detects end it with its GOAWAY; a malformed
request (RFC 9113 8.1.1) is a stream error answered 400, and the connection carries on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from fastgw.codec.h2_guard import FloodError, FrameGuard
from fastgw.codec.h2_request import check_trailers, parse_request
from fastgw.codec.hpack_decoder import RequestDecoder
from fastgw.codec.hpack_encoder import ResponseEncoder
from fastgw.codec.problem import CodecError, problem_fields
from fastgw.codec.serialize import DATE, LAST_CHUNK, chunk
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending
from fastgw.policy.network import client_from_forwarded
from fastgw.proxy.context import DL_HEAD, DL_IDLE, DL_NONE
from fastgw.proxy.dispatch import admit, complete, release, resume_chain
from fastgw.proxy.handler import HandlerRun, Http2Link, buffered_body_denial, unchunk
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy_headers.answer import answer_headers
from fastgw.proxy_headers.hop_by_hop import filter_trailers, trailer_lines
from fastgw.proxy_headers.response_head import FRAMING_NONE, build_h2_response_headers, field_pairs
from fastgw.snapshot import Http2Settings, ListenerSettings
from fastgw.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.proxy_headers.request_head import ClientPeer
    from fastgw.tls.server import PeerCertificate
    from fastgw.upstream.write_batch import WriteBatch

_monotonic = time.monotonic

_LARGEST_WINDOW: Final = 2**31 - 1


class AcceptedClient(Protocol):
    """The HTTP/1 connection an HTTP/2 connection takes over (h2c prior knowledge, ALPN h2, Upgrade):
    what was learned at accept. A protocol, so this module does not import proxy/http1.py."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    @property
    def peer_ip(self) -> str: ...
    @property
    def peer(self) -> ClientPeer: ...
    @property
    def client_ip(self) -> str: ...
    @property
    def client_cert(self) -> PeerCertificate | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def batch(self) -> WriteBatch | None: ...


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

    def __init__(self, conn: Http2Connection, sid: int, ex: Exchange) -> None:
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

    # -- the upstream call's sink --------------------------------------------------------------------
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

    # -- a handler's response (proxy/handler.py's Http2Link) -------------------------------------------
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

    # -- answers the gateway writes itself --------------------------------------------------------------
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
        fields, body = problem_fields(denial.status, denial.problem, denial.detail, ex.request_id, headers)
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


class Http2Connection(asyncio.Protocol):
    """One client connection speaking HTTP/2; takes over from a ClientConnection that detected it."""

    multiplexed: ClassVar[bool] = True

    __slots__ = (
        "answered",
        "batch",
        "client_cert",
        "client_ip",
        "closing",
        "deadline",
        "deadline_kind",
        "goaway_sent",
        "guard",
        "h2",
        "last_stream",
        "limits",
        "listener",
        "max_frame",
        "open_state",
        "peer",
        "peer_goaway",
        "peer_ip",
        "requests",
        "send_deadline",
        "streams",
        "tls",
        "transport",
        "upstream",
        "via",
        "worker",
        "write_paused",
        "write_pending",
    )

    def __init__(self, worker: WorkerContext, listener: ListenerSettings, origin: AcceptedClient) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = origin.transport
        self.peer_ip = origin.peer_ip
        self.peer = origin.peer
        self.client_ip = origin.client_ip
        self.client_cert = origin.client_cert
        self.tls = origin.tls
        snapshot = worker.holder.current
        self.limits: Http2Settings = snapshot.http2
        self.via = b"2 " + snapshot.server.server_name
        self.guard = FrameGuard(self.limits)
        self.streams: dict[int, H2Stream] = {}
        self.upstream = None  # the HTTP/1.1 sweep looks here; streams keep their own
        self.requests = 0
        # Whether a stream has been answered to its end. Until then the connection has not completed a
        # request, and between streams it is held by header_timeout, not idle_timeout (_maybe_idle).
        self.answered = False
        self.goaway_sent = False
        self.peer_goaway = False  # the client sent a graceful GOAWAY: close once its streams end
        self.open_state: ConnectionState | None = None  # h2's state before it read a client's GOAWAY
        self.last_stream = 0
        self.closing = False
        self.write_paused = False
        self.write_pending = False
        # Requests to upstreams are held for the iteration's batch too, as the connection this one took
        # over decided (server.batch_writes).
        self.batch: WriteBatch | None = origin.batch
        self.send_deadline = 0.0
        self.deadline = _monotonic() + snapshot.server.header_timeout
        self.deadline_kind = DL_HEAD
        self.h2 = self._start_h2()
        self.max_frame = self.h2.max_outbound_frame_size

    def _start_h2(self) -> H2Connection:
        limits = self.limits
        h2c = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,  # we build them; names are lower-case, values checked
                normalize_outbound_headers=False,
                validate_inbound_headers=False,  # codec/h2_request.py checks the same rules, faster
                normalize_inbound_headers=False,
            )
        )
        h2c.encoder = ResponseEncoder()  # type: ignore[assignment]
        h2c.decoder = RequestDecoder(limits.max_header_list_size)  # type: ignore[assignment]
        h2c.local_settings.update(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            }
        )
        h2c.local_settings.acknowledge()  # in force from the first frame, not only after the client's ACK
        h2c.initiate_connection()
        # The connection window covers every stream's window, so a stream that waits on a slow upstream
        # never blocks the others (memory stays bounded by streams x window).
        total = min(limits.max_concurrent_streams * limits.initial_window_size, _LARGEST_WINDOW)
        if total > 65535:
            h2c.increment_flow_control_window(total - 65535)
        return h2c

    def start(self, data: bytes) -> None:
        """Begin with what the HTTP/1.1 side already read (the preface and perhaps more)."""
        self.write_out()
        if data:
            self.data_received(data)

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # set via set_protocol
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.release(self)
        for stream in list(self.streams.values()):
            self._abort_stream(stream)
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.guard.scan(data, self.worker.now)
        except FloodError as flood:
            self._abandon(ErrorCodes.ENHANCE_YOUR_CALM, "h2.flood", str(flood))
            return
        cut = self.guard.goaway_end
        if cut >= 0:
            # The client sent GOAWAY. h2 then drops its unsent output and refuses to send or receive more,
            # so write what is queued, hand h2 the bytes up to the GOAWAY alone (_on_terminated may put it
            # back in the state it had), then the rest.
            self.write_out()
            self.open_state = self.h2.state_machine.state
            if not self._receive(data[:cut]):
                return
            data = data[cut:]
        if data and not self._receive(data):
            return
        self.write_out()

    def _receive(self, data: bytes) -> bool:
        """Feed h2 and handle its events; False when the connection ended."""
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as err:
            # h2 has queued its GOAWAY; whatever else this read held is lost with the connection.
            self._abandon(None, "h2.protocol_error", str(err) or type(err).__name__)
            return False
        try:
            for event in events:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, event)
                    if self.closing:
                        return False
        except (ProtocolError, StreamClosedError) as err:  # a state we did not foresee: end cleanly
            self._abandon(ErrorCodes.INTERNAL_ERROR, "h2.internal_error", repr(err))
            return False
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self.send_deadline = _monotonic() + self.worker.holder.current.server.send_timeout
        for stream in self.streams.values():
            self._upstream_reading(stream, pause=True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.send_deadline = 0.0
        for stream in list(self.streams.values()):
            self.pump(stream)
        self.write_out()

    # -- events -----------------------------------------------------------------------------------------
    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        if self.goaway_sent and sid > self.last_stream:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self.requests += 1
        self.deadline_kind = DL_NONE
        self.deadline = 0.0
        ended = event.stream_ended is not None
        now = _monotonic()
        server = self.worker.holder.current.server
        try:
            ex = parse_request(event.headers, ended, server.max_target_bytes, server.max_header_count)
        except CodecError as err:
            ex = Exchange(b"", b"", b"2", [])
            ex.body_complete = ended
            ex.start = now
            ex.client_ip = self.client_ip
            stream = H2Stream(self, sid, ex)
            self.streams[sid] = stream
            stream.fail(Denial(err.status, err.problem, err.detail, "codec." + err.problem))
            return
        ex.start = now
        ex.client_cert = self.client_cert
        ex.client_ip = self.client_ip
        if self.peer.trusted and ex.xff:
            ex.client_ip = client_from_forwarded(ex.xff, server.trusted_proxies) or self.client_ip
        stream = H2Stream(self, sid, ex)
        self.streams[sid] = stream
        if not ended:
            stream.body_deadline = now + server.body_timeout
        if self.requests >= self.limits.max_requests_per_connection:
            self.go_away()  # this stream is the last one served; the client opens a new connection
        outcome = admit(self.worker, ex)
        if outcome is None and ex.route.handler is not None:  # type: ignore[union-attr]
            self._run_handler(stream)
        elif outcome is None and ex.route.body_checks:  # type: ignore[union-attr]
            self._hold_body(stream)
        elif outcome is None:
            self._forward(stream)
        elif type(outcome) is Denial:
            stream.fail(outcome)
        else:
            self.worker.spawn(self._resume(stream, outcome))  # type: ignore[arg-type]

    async def _resume(self, stream: H2Stream, pending: Pending) -> None:
        denial = await resume_chain(stream.ex, pending)
        if self.streams.get(stream.sid) is not stream:
            release(stream.ex)  # the stream was reset while the policy waited (its record is written)
            return
        if denial is not None:
            stream.fail(denial)
        elif stream.ex.route.handler is not None:  # type: ignore[union-attr]
            self._run_handler(stream)
        elif stream.ex.route.body_checks:  # type: ignore[union-attr]
            self._hold_body(stream)
        else:
            self._forward(stream)
        self.write_soon()

    def _on_data(self, event: DataReceived) -> None:
        sid = event.stream_id
        size = event.flow_controlled_length
        stream = self.streams.get(sid)
        if stream is None or (stream.sent_end and stream.ex.body_complete):
            if size:
                self.h2.acknowledge_received_data(size, sid)
            return
        data = event.data
        ex = stream.ex
        ex.body_received += len(data)
        server = self.worker.holder.current.server
        stream.body_deadline = _monotonic() + server.body_timeout
        route = ex.route
        limit = route.max_body_bytes if route is not None else server.max_body_bytes
        if ex.body_received > limit or (ex.content_length >= 0 and ex.body_received > ex.content_length):
            self.h2.acknowledge_received_data(size, sid)
            reason = f"request body exceeds {limit} bytes"
            stream.fail(Denial(413, "content-too-large", reason, "body.too_large"))
            return
        if stream.ended:  # already answered (a denial): the body is read and dropped
            self.h2.acknowledge_received_data(size, sid)
            return
        run = stream.handler_run
        if run is not None:  # buffered whole (bounded by the route's max_body_bytes): acknowledged at once
            run.feed(data)
            if size:
                self.h2.acknowledge_received_data(size, sid)
            return
        if stream.body_hold:  # the same, framed for the upstream it goes to after the BODY phase
            if data and ex.body_buffer is not None:
                ex.body_buffer.append(chunk(data) if ex.chunked else data)
            if size:
                self.h2.acknowledge_received_data(size, sid)
            return
        if data:
            framed = chunk(data) if ex.chunked else data
            upstream = stream.upstream
            if upstream is not None and not stream.hold_acks:
                upstream.write(framed)
                if size:
                    self.h2.acknowledge_received_data(size, sid)
                return
            if upstream is not None:
                upstream.write(framed)  # its transport buffers; the client waits for our WINDOW_UPDATE
            elif ex.body_buffer is not None:
                ex.body_buffer.append(framed)
        stream.unacked += size

    def _on_trailers(self, event: TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        try:
            check_trailers(event.headers)
        except CodecError:
            self.reset(stream, ErrorCodes.PROTOCOL_ERROR)
            return
        if stream.ex.chunked:
            stream.trailers_in = filter_trailers(event.headers)

    def _on_stream_end(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        ex = stream.ex
        ex.body_complete = True
        stream.body_deadline = 0.0
        if ex.content_length >= 0 and ex.body_received != ex.content_length and not stream.ended:
            stream.fail(Denial(400, "bad-framing", "body shorter than content-length", "codec.bad-framing"))
            return
        run = stream.handler_run
        if run is not None and not stream.ended:
            run.begin(self.worker.spawn)
            self.write_soon()
            return
        if ex.chunked and not stream.ended:
            last = trailer_lines(stream.trailers_in) if stream.trailers_in else LAST_CHUNK
            upstream = stream.upstream
            if upstream is not None:
                upstream.write(last)
            elif ex.body_buffer is not None:
                ex.body_buffer.append(last)
        if stream.body_hold and not stream.ended:
            stream.body_hold = False
            self._check_body(stream)
            return
        if stream.upstream is not None and not stream.ended:
            stream.upstream.request_sent(_monotonic())  # the wait for the response is the upstream's now
        if stream.sent_end:
            self._finish(stream)

    def _on_reset(self, event: StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            self._abort_stream(stream)
        self._maybe_idle()

    def _on_window(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None and (stream.out or stream.head is not None):
                self.pump(stream)
        else:
            for stream in list(self.streams.values()):
                if stream.out:
                    self.pump(stream)

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self.max_frame = self.h2.max_outbound_frame_size
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            for stream in list(self.streams.values()):
                if stream.out:
                    self.pump(stream)

    def _on_terminated(self, event: ConnectionTerminated) -> None:
        if event.error_code == ErrorCodes.NO_ERROR and self.streams and self.open_state is not None:
            # A graceful GOAWAY from the client (RFC 9113 6.8): it opens no more streams, but the ones in
            # flight are owed their responses. h2 treats any received GOAWAY as the end of sending, so put
            # its connection state back; the connection closes when the last stream ends (_maybe_idle).
            self.h2.state_machine.state = self.open_state
            self.open_state = None
            self.peer_goaway = True
            return
        # A GOAWAY with an error (or with nothing in flight): nothing more is sent on this connection.
        self.closing = True
        for stream in list(self.streams.values()):
            self._abort_stream(stream)
        self.streams.clear()
        self.write_out()
        if self.transport is not None:
            self.transport.close()

    # -- handler routes (proxy/handler.py) -----------------------------------------------------------------
    def _run_handler(self, stream: H2Stream) -> None:
        """Buffer the body (what arrived while a policy waited first), then run the handler."""
        ex = stream.ex
        run = stream.handler_run = HandlerRun(ex, Http2Link(stream))
        held = ex.body_buffer or []
        for piece in unchunk(held) if ex.chunked else held:
            run.feed(piece)
        ex.body_buffer = None
        self.ack(stream)
        if ex.body_complete:
            run.begin(self.worker.spawn)

    def _hold_body(self, stream: H2Stream) -> None:
        """A proxy route with a BODY policy: its body is buffered whole, checked, then forwarded."""
        self.ack(stream)  # what arrived while a policy waited: buffered whole from here on
        if stream.ex.body_complete:
            self._check_body(stream)
        else:
            stream.body_hold = True

    def _check_body(self, stream: H2Stream) -> None:
        denial = buffered_body_denial(stream.ex, stream.ex.body_buffer or [])
        if denial is not None:
            stream.fail(denial)
        else:
            self._forward(stream)

    # -- forwarding ---------------------------------------------------------------------------------------
    def _forward(self, stream: H2Stream) -> None:
        route = stream.ex.route
        assert route is not None
        group = self.worker.pools.group(route.upstream)
        call = stream.call = UpstreamCall(
            self.worker, stream.ex, group, stream, self.peer, self.via, self.batch
        )
        call.start()

    def ack(self, stream: H2Stream) -> None:
        """Hand the stream's received body bytes back to the client's flow-control windows."""
        if stream.unacked and self.streams.get(stream.sid) is stream:
            self.h2.acknowledge_received_data(stream.unacked, stream.sid)
        stream.unacked = 0

    # -- sending --------------------------------------------------------------------------------------------
    def pump(self, stream: H2Stream) -> None:
        """Send what the stream has (head, body within the client's window, trailers, END_STREAM)."""
        if stream.sent_end or self.closing or self.streams.get(stream.sid) is not stream:
            return
        h2c = self.h2
        sid = stream.sid
        out = stream.out
        head = stream.head
        if head is not None:
            stream.head = None
            stream.ex.response_started = True
            if stream.ended and not out and stream.trailers is None:
                h2c.send_headers(sid, head, end_stream=True)
                self._sent_end(stream)
                return
            h2c.send_headers(sid, head)
        if out and not self.write_paused:
            window = h2c.local_flow_control_window(sid)
            max_frame = self.max_frame
            while out and window > 0:
                data = out[0]
                size = len(data)
                if size <= window and size <= max_frame:
                    out.popleft()
                    last = stream.ended and not out and stream.trailers is None
                    h2c.send_data(sid, data, end_stream=last)
                    if last:
                        self._sent_end(stream)
                        return
                else:
                    size = min(window, max_frame)
                    h2c.send_data(sid, data[:size])
                    out[0] = data[size:]
                window -= size
                stream.out_bytes -= size
        if stream.ended and not out:
            if stream.trailers is not None:
                h2c.send_headers(sid, stream.trailers, end_stream=True)
            else:
                h2c.end_stream(sid)
            self._sent_end(stream)
            return
        self._upstream_reading(
            stream, pause=self.write_paused or stream.out_bytes > self.limits.stream_buffer
        )

    def _upstream_reading(self, stream: H2Stream, *, pause: bool) -> None:
        run = stream.handler_run
        if run is not None and not pause:
            run.writer.wake()  # a handler waiting in write() may send more
        upstream = stream.upstream
        if pause == stream.upstream_paused or upstream is None or upstream.transport is None:
            return
        stream.upstream_paused = pause
        if pause:
            upstream.transport.pause_reading()
        elif not upstream.closed:
            upstream.transport.resume_reading()

    def _sent_end(self, stream: H2Stream) -> None:
        stream.sent_end = True
        if not stream.ex.body_complete:
            # The answer came before the whole request body (a denial, a 413): stop the client sending
            # it (RFC 9113 8.1), and give back the window its unread bytes held.
            self.ack(stream)
            try:
                self.h2.reset_stream(stream.sid, ErrorCodes.NO_ERROR)
            except StreamClosedError:
                pass  # the client ended or reset it meanwhile
            stream.ex.body_complete = True
            stream.drop_upstream()
        self._finish(stream)

    def _finish(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.sid, None) is None:
            return
        self.answered = True
        stream.call = None  # the call points back at its stream: a cycle only the GC would free
        stream.handler_run = None
        complete(self.worker, stream.ex)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.streams:
            return
        if self.goaway_sent or self.peer_goaway:
            self.closing = True
            self.write_out()
            if self.transport is not None:
                self.transport.close()
            return
        worker = self.worker
        server = worker.holder.current.server
        if not self.answered:
            # Every stream so far was reset before its answer (a rapid reset too slow or too short for
            # the flood limit): keep-alive is for clients that were served; this one still owes a request.
            self.deadline_kind = DL_HEAD
            self.deadline = worker.now + server.header_timeout
            return
        self.deadline_kind = DL_IDLE
        self.deadline = worker.now + server.idle_timeout

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        """End a stream whose response cannot be completed."""
        if self.streams.get(stream.sid) is stream and not stream.sent_end:
            self.h2.reset_stream(stream.sid, code)
            stream.sent_end = True
        self._abort_stream(stream)
        self.streams.pop(stream.sid, None)
        self._maybe_idle()

    def _abort_stream(self, stream: H2Stream) -> None:
        """A stream ends unfinished (reset by either side, or the connection is gone): log it once."""
        stream.drop_upstream()
        run = stream.handler_run
        if run is not None:
            stream.handler_run = None
            run.cancel()  # the handler stops at its next await
        # Callers hand over live streams only (finished ones left ``streams`` in _finish), so this is the
        # stream's one record, whether or not END_STREAM or RST_STREAM already went out.
        stream.sent_end = True
        ex = stream.ex
        if not ex.status:
            ex.status = 499  # nginx's "client closed request": logged, never sent
        complete(self.worker, ex)

    def write_soon(self) -> None:
        """Write what h2 has queued once this loop iteration's callbacks are done, with the worker's
        other held writes (upstream/write_batch.py): the responses of every upstream that answered in the
        same iteration leave in one ``write``."""
        if not self.write_pending:
            self.write_pending = True
            self.worker.writes.hold_h2(self)

    def write_held(self) -> None:
        self.write_pending = False
        self.write_out()

    def write_out(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
            if self.write_paused and transport.get_write_buffer_size() > self.limits.max_outbound_buffer:
                self._abandon(None, "h2.outbound_buffer", "client stopped reading")

    # -- ending the connection ------------------------------------------------------------------------------
    def go_away(self) -> None:
        """Graceful GOAWAY (drain, request budget, changed HTTP/2 settings): streams already opened finish,
        newer ones are refused, and the connection closes when the last one ends."""
        if self.goaway_sent or self.closing:
            return
        self.goaway_sent = True
        self.last_stream = self.h2.highest_inbound_stream_id
        frame = GoAwayFrame(0, last_stream_id=self.last_stream, error_code=0)
        self.write_out()
        if self.transport is not None:
            self.transport.write(frame.serialize())
        if not self.streams:
            self._maybe_idle()

    def _abandon(self, code: ErrorCodes | None, reason: str, detail: str) -> None:
        """End the connection now: GOAWAY with ``code`` (h2 queued its own when None), then close."""
        if self.closing:
            return
        if code is not None:
            try:
                self.h2.close_connection(error_code=code)
            except ProtocolError:
                pass
        try:
            self.write_out()
        except ProtocolError:
            pass
        self.closing = True
        for stream in list(self.streams.values()):
            stream.ex.denial = reason
            self._abort_stream(stream)
        self.streams.clear()
        self.worker.log_event(f"HTTP/2 connection from {self.peer_ip} closed ({reason}): {detail}")
        if self.transport is not None:
            self.transport.close()

    # -- deadlines (the worker tick) ------------------------------------------------------------------------
    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        if kind == DL_HEAD:
            self._abandon(None, "h2.timeout", "no request in time")
            if self.transport is not None:
                self.transport.abort()
            return
        self.go_away()  # idle

    def on_tick(self, now: float) -> None:
        """Per-stream deadlines: silent upstreams (504) and stalled request bodies (408)."""
        for stream in list(self.streams.values()):
            upstream = stream.upstream
            if upstream is not None and upstream.deadline and now >= upstream.deadline:
                upstream.on_deadline()
            elif (
                stream.body_deadline
                and now >= stream.body_deadline
                and not stream.ex.body_complete
                and not stream.unacked  # bytes we hold back: the stall is the upstream's, not the client's
            ):
                stream.body_deadline = 0.0
                stream.ex.stalled_side = "client"
                stream.fail(
                    Denial(408, "request-timeout", "request body not received in time", "body.timeout")
                )
        self.write_soon()

    def on_send_timeout(self) -> None:
        """The client stopped reading for send_timeout: every stream's response is undeliverable."""
        self.send_deadline = 0.0
        for stream in self.streams.values():
            stream.ex.stalled_side = "client"
            stream.ex.denial = "send.timeout"
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def drain(self) -> None:
        self.go_away()

    def retire(self) -> None:
        """Past process.max_connection_age: GOAWAY; the streams in flight finish."""
        self.go_away()


_HANDLERS: Final[dict[type, Any]] = {
    RequestReceived: Http2Connection._on_request,
    DataReceived: Http2Connection._on_data,
    StreamEnded: Http2Connection._on_stream_end,
    TrailersReceived: Http2Connection._on_trailers,
    StreamReset: Http2Connection._on_reset,
    WindowUpdated: Http2Connection._on_window,
    RemoteSettingsChanged: Http2Connection._on_settings,
    ConnectionTerminated: Http2Connection._on_terminated,
}
