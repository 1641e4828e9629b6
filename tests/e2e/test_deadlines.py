"""The per-worker tick closes slow, idle and stuck connections; times are polled, not slept."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.support.clients import ResponseReader, connect
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import TestUpstream


def _closed_within(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return time.monotonic() - started, data


def test_slow_header_gets_408(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="header_timeout = 0.5"))
    with connect(gw.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        elapsed, data = _closed_within(sock, 5)
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert 0.4 <= elapsed < 2.0, f"closed after {elapsed:.2f}s"


def test_idle_keep_alive_is_closed(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="idle_timeout = 0.5"))
    with connect(gw.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read().status == 200
        started = time.monotonic()
        assert reader.closed(5)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0, f"idle connection closed after {elapsed:.2f}s"


def test_body_trickle_below_min_rate_gets_408(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="body_timeout = 0.5\nbody_min_rate = 10000"))
    with connect(gw.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        got = b""
        sock.settimeout(0.1)
        # One byte every 50 ms keeps the per-read idle timer happy but stays far below 10 kB/s.
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
            except TimeoutError:
                pass
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 408"), got[:100]
    assert elapsed < 2.5, f"slow body cut after {elapsed:.2f}s"


def test_client_that_stops_reading_is_dropped(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    big = b"x" * (8 * 1024 * 1024)
    upstream.handler = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
    gw = gateway_factory(basic_config(upstream.port, server="send_timeout = 0.5"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(2.0)  # never read: the gateway's send buffer fills and the send deadline passes
    sock.settimeout(5)
    total = 0
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    assert total < len(big), "the whole body arrived although the client stopped reading"
    records = gw.wait_log(1)
    assert records[0]["bytes_out"] < len(big)
