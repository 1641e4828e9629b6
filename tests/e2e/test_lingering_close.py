"""A connection the gateway ends while the client is still sending keeps its last bytes.

Closing a socket with unread bytes in it (or with bytes arriving after the close) makes the kernel send
RST and discard what it had not yet transmitted. Each test here leaves the gateway a response larger
than the client's small receive buffer still to send when it closes, while the client keeps sending,
so a plain close loses the response's tail (and HTTP/2's GOAWAY) every time; a lingering close
(proxy/linger.py) delivers all of it, then an orderly end of stream.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

from hyperframe.frame import WindowUpdateFrame

from fastgw.proxy.linger import LINGER_SECONDS
from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.upstreams import SeenRequest, TestUpstream

BIG = 2 * 1024 * 1024  # far beyond what the small receive buffer and the kernel's send queue hold together
RCVBUF = 4096


def big_upstream(upstream: TestUpstream) -> None:
    body = b"z" * BIG

    def handler(req: SeenRequest) -> bytes:
        if req.target.startswith(b"/big"):
            return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (BIG, body)
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    upstream.handler = handler


def small_buffer_socket(port: int) -> socket.socket:
    """A client socket whose receive window stays small (set before connect, as TCP requires)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


class Sender(threading.Thread):
    """Calls ``send`` every 5 ms until stopped or the connection is gone (``ended``: the send's error):
    a client still uploading, or acknowledging what it reads."""

    def __init__(self, send: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.stop = threading.Event()
        self.ended: OSError | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.send()
            except TimeoutError:
                continue  # the socket's timeout, which the reading side sets: not the end
            except OSError as err:
                self.ended = err
                return
            time.sleep(0.005)

    def ends_within(self, seconds: float) -> bool:
        """Whether the gateway closed the connection for good within ``seconds`` (a send failed)."""
        self.join(seconds)
        return isinstance(self.ended, (ConnectionResetError, BrokenPipeError))


@contextmanager
def sending(send: Callable[[], None]) -> Iterator[Sender]:
    sender = Sender(send)
    sender.start()
    try:
        yield sender
    finally:
        sender.stop.set()
        sender.join(5)


def read_to_end(sock: socket.socket) -> bytes:
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def test_http1_response_before_close_arrives_whole_while_the_client_keeps_sending(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    big_upstream(upstream)
    gw = gateway_factory(basic_config(upstream.port))
    with closing(small_buffer_socket(gw.port)) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # Bytes after a request that closes the connection: the gateway must read and drop them, not let
        # them turn its close into a reset.
        with sending(lambda: sock.sendall(b"X" * 512)):
            gw.wait_log(1)  # the gateway has the whole response and ended the exchange: it is closing now
            received = read_to_end(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(body) == BIG


def test_http1_refusal_of_an_upload_arrives_while_the_upload_goes_on(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="max_body_bytes = 1024"))
    with closing(small_buffer_socket(gw.port)) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        with sending(lambda: sock.sendall(b"u" * 16384)) as uploader:
            received = read_to_end(sock)
            # The upload goes on after the answer and its FIN: the gateway drops it for at most its
            # linger bound (checked on its 100 ms tick), then closes, and the next send fails.
            assert uploader.ends_within(LINGER_SECONDS + 1.0), (
                f"still read past the linger bound: {uploader.ended}"
            )
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"content-too-large" in received
    assert upstream.requests == []


def test_http2_goaway_and_last_response_arrive_while_the_client_keeps_sending(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    big_upstream(upstream)
    gw = gateway_factory(basic_config(upstream.port, extra="[http2]\nmax_requests_per_connection = 1"))
    sock = small_buffer_socket(gw.port)
    client = H2Client(gw.port, sock=sock)
    # Windows as large as the response: the gateway queues all of it at once, then GOAWAY, then closes.
    client.conn.increment_flow_control_window(BIG)
    sid = client.start("/big")
    client.conn.increment_flow_control_window(BIG, sid)
    client.flush()
    # WINDOW_UPDATEs, as a client reading a download sends them (a byte each: the windows above already
    # cover the whole response, so the client's own accounting stays right).
    update = WindowUpdateFrame(0, window_increment=1).serialize()
    try:
        with sending(lambda: client.raw(update)) as acknowledger:
            gw.wait_log(1)  # the stream is answered and the request budget spent: the gateway is closing
            response = client.wait(sid, timeout=10)
            assert response.status == 200
            assert len(response.body) == BIG
            assert client.goaway is not None and client.goaway.error_code == 0
            assert client.wait_closed(5)
            # A client that keeps the connection open and sending is closed at the linger bound.
            assert acknowledger.ends_within(LINGER_SECONDS + 1.0), (
                f"read past its bound: {acknowledger.ended}"
            )
    finally:
        client.close()


def test_http1_refusal_at_the_connection_limit_arrives_while_the_client_keeps_sending(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """A connection over max_connections is refused at accept with a 503: the client has often sent its
    request by then, so a plain close resets the connection and the 503 is lost with it."""
    gw = gateway_factory(basic_config(upstream.port, server="max_connections_per_ip = 1"))
    with closing(small_buffer_socket(gw.port)) as first:
        first.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.recv(65536).startswith(b"HTTP/1.1 200")  # admitted, and keeps its slot
        with closing(small_buffer_socket(gw.port)) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            with sending(lambda: sock.sendall(b"u" * 16384)) as uploader:
                received = read_to_end(sock)
                assert uploader.ends_within(LINGER_SECONDS + 1.0), f"read past its bound: {uploader.ended}"
    assert received.startswith(b"HTTP/1.1 503"), received[:200]
    assert b"too-many-connections" in received
    assert [req.target for req in upstream.requests] == [b"/held"]
