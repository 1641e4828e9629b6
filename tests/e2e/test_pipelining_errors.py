"""Complete requests before bad bytes are answered, then the error, then the close (RFC 9112 9.6).

One read can hold a complete request followed by bytes the parser refuses (garbage, a broken second
request, bytes after ``Connection: close``). The complete requests are forwarded and answered in order at
once; only then comes the 400 (unless the last complete request closes the connection anyway), and the
connection closes. Nothing waits for a timeout.
"""

from __future__ import annotations

import time

from tests.support.clients import ResponseReader, connect, read_until_closed
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream

FAST = 2.0  # far below header_timeout (10 s): an answer that waits for a deadline fails the test


def _exchange(gw: Gateway, raw: bytes) -> tuple[list[int], bytes, float]:
    """Send ``raw`` in one write; the statuses of the responses read until the close, and the time."""
    started = time.monotonic()
    with connect(gw.port) as sock:
        sock.sendall(raw)
        data = read_until_closed(sock, 10)
    elapsed = time.monotonic() - started
    statuses = []
    rest = data
    while rest.startswith(b"HTTP/1."):
        head, _, rest = rest.partition(b"\r\n\r\n")
        statuses.append(int(head[9:12]))
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        rest = rest[length:]
    return statuses, data, elapsed


def test_complete_request_then_garbage(gateway: Gateway, upstream: TestUpstream) -> None:
    statuses, data, elapsed = _exchange(
        gateway, b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nBLAH\x01\x02 garbage\r\n\r\n"
    )
    assert statuses == [200, 400], data
    assert elapsed < FAST, elapsed
    assert [r.target for r in upstream.requests] == [b"/first"]


def test_two_complete_requests_then_a_broken_one(gateway: Gateway, upstream: TestUpstream) -> None:
    raw = (
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    statuses, data, elapsed = _exchange(gateway, raw)
    assert statuses == [200, 200, 400], data
    assert elapsed < FAST, elapsed
    assert [r.target for r in upstream.requests] == [b"/a", b"/b"]


def test_bytes_after_connection_close_are_ignored(gateway: Gateway, upstream: TestUpstream) -> None:
    """After a request that ends the connection, the client expects nothing more: one response, close."""
    raw = b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: t\r\n\r\n"
    statuses, data, elapsed = _exchange(gateway, raw)
    assert statuses == [200], data
    assert elapsed < FAST, elapsed
    assert [r.target for r in upstream.requests] == [b"/last"]


def test_bytes_after_an_http10_request_are_ignored(gateway: Gateway, upstream: TestUpstream) -> None:
    statuses, data, elapsed = _exchange(gateway, b"GET /old HTTP/1.0\r\nHost: t\r\n\r\nxyz\r\n\r\n")
    assert statuses == [200], data
    assert elapsed < FAST, elapsed
    assert [r.target for r in upstream.requests] == [b"/old"]


def test_request_with_body_then_garbage(gateway: Gateway, upstream: TestUpstream) -> None:
    raw = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\x00\x00\x00 not http\r\n\r\n"
    statuses, data, elapsed = _exchange(gateway, raw)
    assert statuses == [200, 400], data
    assert elapsed < FAST, elapsed
    assert [(r.target, r.body) for r in upstream.requests] == [(b"/p", b"abc")]


def test_slow_upstream_then_garbage_keeps_order(gateway: Gateway, upstream: TestUpstream) -> None:
    """The error waits for the response in flight, however long the upstream takes (within its own
    timeouts), and follows it."""
    upstream.delay = 0.5
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n\x16\x03\x01 tls hello?\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read(5).status == 200
        assert reader.read(5).status == 400
        assert reader.closed(5)
