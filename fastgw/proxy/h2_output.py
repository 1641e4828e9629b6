"""The HTTP/2 connection's state and its sending side: frames out within the client's flow-control
windows, backpressure to upstreams, the end of each stream, and GOAWAY.

Response bytes wait in their stream while the client's window is closed, and the upstream's reads pause
above ``http2.stream_buffer``; a client that stops reading pauses every upstream of the connection, is
dropped after ``server.send_timeout``, and at once if ``http2.max_outbound_buffer`` bytes pile up. What
h2 queues is written once per loop iteration, with the worker's other held writes (``write_soon``).

:class:`H2Output` is the base of ``Http2Connection`` (``proxy/http2.py``: frames in, events, routing
and forwarding); one object at run time, split by concept.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, Protocol

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import RemoteSettingsChanged, WindowUpdated
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from fastgw.codec.h2_guard import FrameGuard
from fastgw.codec.hpack_decoder import RequestDecoder
from fastgw.codec.hpack_encoder import ResponseEncoder
from fastgw.proxy.context import DL_HEAD, DL_IDLE, DL_LINGER
from fastgw.proxy.dispatch import complete, complete_when_done
from fastgw.proxy.h2_stream import H2Stream, H2StreamHost
from fastgw.proxy.linger import start_linger
from fastgw.snapshot import Http2Settings, ListenerSettings

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


class H2Output(H2StreamHost):
    """An HTTP/2 connection's state and what it sends (see the module doc)."""

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

    # -- flow control: the client reading (asyncio calls the first two) and its windows -----------------
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

    # -- sending ---------------------------------------------------------------------------------------
    def ack(self, stream: H2Stream) -> None:
        """Hand the stream's received body bytes back to the client's flow-control windows."""
        if stream.unacked and self.streams.get(stream.sid) is stream:
            self.h2.acknowledge_received_data(stream.unacked, stream.sid)
        stream.unacked = 0

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

    def write_now(self) -> None:
        """A handler's flush: written now unless the client stopped reading (then the batch's call or
        the resume writes it, and only those may abandon the connection for its outbound buffer, never
        the handler's own Task). The batch's call later finds nothing left to write."""
        if not self.write_paused:
            self.write_held()

    def write_out(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing() and self.deadline_kind != DL_LINGER:
            transport.write(data)  # (half-closed: nothing more may be written, whatever h2 queued)
            if self.write_paused and transport.get_write_buffer_size() > self.limits.max_outbound_buffer:
                self._abandon(None, "h2.outbound_buffer", "client stopped reading")

    # -- the end of a stream ---------------------------------------------------------------------------
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
            start_linger(self)  # (drains WINDOW_UPDATEs, PINGs: proxy/linger.py)
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
        pending = None
        if run is not None:
            stream.handler_run = None
            pending = run.cancel(self.worker.aborting)  # the handler stops at its next await
        # Callers hand over live streams only (finished ones left ``streams`` in _finish), so this is the
        # stream's one record, whether or not END_STREAM or RST_STREAM already went out.
        stream.sent_end = True
        ex = stream.ex
        if not ex.status:
            ex.status = 499  # nginx's "client closed request": logged, never sent
        complete_when_done(self.worker, ex, pending)

    # -- ending the connection -------------------------------------------------------------------------
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
        start_linger(self)
