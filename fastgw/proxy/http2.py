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
stream while the client's window is closed (``proxy/h2_output.py``, the connection's state and sending
side, which this module's class extends; ``proxy/h2_stream.py`` has the stream).

Abuse limits (``codec/h2_guard.py`` scans frame headers before h2 buffers anything) end the connection
with GOAWAY ENHANCE_YOUR_CALM; protocol errors the h2 library detects end it with its GOAWAY; a malformed
request (RFC 9113 8.1.1) is a stream error answered 400, and the connection carries on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Final

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

from fastgw.codec.h2_guard import FloodError
from fastgw.codec.h2_request import check_trailers, parse_request
from fastgw.codec.problem import CodecError
from fastgw.codec.serialize import LAST_CHUNK, chunk
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.policy.network import client_from_forwarded
from fastgw.proxy.context import DL_HEAD, DL_NONE
from fastgw.proxy.dispatch import admit, park
from fastgw.proxy.h2_output import H2Output
from fastgw.proxy.h2_stream import H2Stream
from fastgw.proxy.handler import HandlerRun, buffered_body_denial, unchunk
from fastgw.proxy.handler_links import Http2Link
from fastgw.proxy.upstream_call import UpstreamCall
from fastgw.proxy_headers.hop_by_hop import filter_trailers, trailer_lines

_monotonic = time.monotonic


class Http2Connection(H2Output):
    """One client connection speaking HTTP/2; takes over from a ClientConnection that detected it. Its
    state and sending side are in ``proxy/h2_output.py``."""

    multiplexed: ClassVar[bool] = True

    __slots__ = ()

    def start(self, data: bytes) -> None:
        """Begin with what the HTTP/1.1 side already read (the preface and perhaps more)."""
        self.write_out()
        if data:
            self.data_received(data)

    # -- asyncio.Protocol ------------------------------------------------------------------------------
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

    # -- events ----------------------------------------------------------------------------------------
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
            self.run_handler(stream)
        elif outcome is None and ex.route.body_checks:  # type: ignore[union-attr]
            self.hold_body(stream)
        elif outcome is None:
            self.forward(stream)
        elif type(outcome) is Denial:
            stream.fail(outcome)
        else:
            park(self.worker, ex, outcome, stream)  # type: ignore[arg-type]

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

    # -- handler routes (proxy/handler.py) -------------------------------------------------------------
    def run_handler(self, stream: H2Stream) -> None:
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

    def hold_body(self, stream: H2Stream) -> None:
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
            self.forward(stream)

    # -- forwarding ------------------------------------------------------------------------------------
    def forward(self, stream: H2Stream) -> None:
        route = stream.ex.route
        assert route is not None
        group = self.worker.pools.group(route.upstream)
        call = stream.call = UpstreamCall(
            self.worker, stream.ex, group, stream, self.peer, self.via, self.batch
        )
        call.start()

    # -- deadlines (the worker tick) -------------------------------------------------------------------
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

    def refuse_unanswered(self, denial: Denial) -> None:
        for stream in list(self.streams.values()):
            if stream.ex.response_started or stream.sent_end or stream.head is not None:
                continue
            run = stream.handler_run
            if run is not None:
                stream.handler_run = None
                run.cancel(shutdown=True)  # its record says why the exchange ended (handler_api.py)
            try:
                stream.fail(denial)
            except (ProtocolError, StreamClosedError):
                continue  # the client ended the stream or the connection meanwhile: the abort follows
        self.write_now()

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
