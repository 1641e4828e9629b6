"""A blocking HTTP/2 test client on h2 over a real socket (cleartext prior knowledge, or TLS with ALPN).

``strict=False`` turns h2's own outbound checks off, so tests can send what a hostile client would
(CRLF in values, connection-specific fields, upper-case names); ``raw`` writes frames h2 would never
produce (floods, CONTINUATION without end).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError


@dataclass
class H2Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # the RST_STREAM error code, if the stream was reset
    ended: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        strict: bool = True,
        timeout: float = 5.0,
        settings: dict[int, int] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """``sock``: a socket already connected to ``port`` (one with its own buffer sizes)."""
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:  # the server may close or reset before the preface went out: no socket leaks then
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
            self.sock = sock
            self.conn = H2Connection(
                H2Configuration(
                    client_side=True,
                    header_encoding=None,
                    validate_outbound_headers=strict,
                    normalize_outbound_headers=strict,
                )
            )
            if settings:
                self.conn.local_settings.update(settings)
            self.conn.initiate_connection()
            self.responses: dict[int, H2Response] = {}
            self.goaway: ConnectionTerminated | None = None
            self.closed = False
            self._unread = bytearray()  # a frame's first part, until the rest is read
            self.flush()
        except BaseException:
            sock.close()
            raise

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: bytes = b"localhost",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.responses[sid] = H2Response()
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        """Send ``body`` as the windows allow, reading (and acknowledging) while they are closed."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.pump(0.2)
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout: float) -> bool:
        """Read and handle one batch of frames; False when the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return True
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self._unread += data
        try:
            events = self._receive_frames()
        except ProtocolError:
            self.closed = True
            return False
        for event in events:
            sid = getattr(event, "stream_id", 0)
            resp = self.responses.setdefault(sid, H2Response()) if sid else None
            if isinstance(event, ResponseReceived) and resp is not None:
                resp.headers = list(event.headers)  # type: ignore[arg-type]
                resp.status = int(dict(resp.headers)[b":status"])
            elif isinstance(event, DataReceived) and resp is not None:
                resp.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, TrailersReceived) and resp is not None:
                resp.trailers = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, StreamEnded) and resp is not None:
                resp.ended = True
            elif isinstance(event, StreamReset) and resp is not None:
                resp.reset = int(event.error_code or 0)
                resp.ended = True
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event
        try:
            self.flush()
        except OSError:
            self.closed = True
            return False
        return True

    def _receive_frames(self) -> list[Event]:
        """Hand h2 the whole frames read so far, one at a time: after a graceful GOAWAY (RFC 9113 6.8) h2
        refuses every later frame, while the streams it covers are still owed their responses (nghttp2
        and browsers read them), so the connection is put back in its open state before the next frame."""
        events: list[Event] = []
        buf = self._unread
        while len(buf) >= 9:
            end = 9 + int.from_bytes(buf[:3], "big")
            if len(buf) < end:
                break
            frame = bytes(buf[:end])
            del buf[:end]
            for event in self.conn.receive_data(frame):
                events.append(event)
                if isinstance(event, ConnectionTerminated) and event.error_code == 0:
                    self.conn.state_machine.state = ConnectionState.CLIENT_OPEN
        return events

    def wait(self, sid: int, timeout: float = 5.0) -> H2Response:
        deadline = time.monotonic() + timeout
        while not self.responses[sid].ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {sid} did not end within {timeout}s: {self.responses[sid]}")
            if not self.pump(0.2) and not self.responses[sid].ended:
                raise AssertionError(f"connection closed before stream {sid} ended (goaway: {self.goaway})")
        return self.responses[sid]

    def outcome(self, sid: int, timeout: float = 5.0) -> str:
        """How a stream the server may refuse ended: 'status NNN', 'reset N' or 'closed'."""
        deadline = time.monotonic() + timeout
        resp = self.responses[sid]
        while not resp.ended and time.monotonic() < deadline:
            if not self.pump(0.2):
                break
        if resp.status and resp.ended:
            return f"status {resp.status}"
        if resp.reset is not None:
            return f"reset {resp.reset}"
        if self.closed:
            return "closed"
        raise AssertionError(f"stream {sid} neither ended nor was refused within {timeout}s")

    def request(self, path: str, **kw: object) -> H2Response:
        return self.wait(self.start(path, **kw))  # type: ignore[arg-type]

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read until the server closes the connection (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pump(0.2):
                return True
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
