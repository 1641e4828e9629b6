"""Request smuggling and malformed input, end to end: refused with 4xx problem+json and the connection
closed, nothing reaches the upstream; upstream responses with ambiguous framing become 502, never relayed.
"""

from __future__ import annotations

import time

import pytest

from tests.support.clients import ResponseReader, connect, get, request
from tests.support.gateways import Gateway, basic_config
from tests.support.malformed_requests import REFUSED
from tests.support.upstreams import TestUpstream

# The connection-level cases of the codec table, sent through a real gateway.
SMUGGLING = [c for c in REFUSED if c[0] not in ("connect",)]


@pytest.mark.parametrize(("name", "raw", "status"), SMUGGLING, ids=[c[0] for c in SMUGGLING])
def test_refused_and_closed(
    gateway: Gateway, upstream: TestUpstream, name: str, raw: bytes, status: object
) -> None:
    # A valid request follows each bad one on the same connection: it must never be executed.
    follow = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    with connect(gateway.port) as sock:
        sock.sendall(raw + follow)
        reader = ResponseReader(sock)
        resp = reader.read()
        allowed = status if isinstance(status, tuple) else (status,)
        assert resp.status in allowed, resp.body
        assert resp.header(b"content-type") == b"application/problem+json"
        assert resp.header(b"connection") == b"close"
        assert reader.closed()
    assert [r.target for r in upstream.requests] == []


def test_oversized_headers_431(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(basic_config(upstream.port, server="max_header_bytes = 2048"))
    resp = request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert resp.status == 431
    assert upstream.requests == []


def test_oversized_target_414(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(basic_config(upstream.port, server="max_target_bytes = 256"))
    assert request(gw.port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nHost: a\r\n\r\n").status == 414


def test_oversized_body_413_without_reading(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(basic_config(upstream.port, server="max_body_bytes = 1000"))
    with connect(gw.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")  # body never sent
        reader = ResponseReader(sock)
        resp = reader.read()
        assert resp.status == 413
        assert reader.closed()
    # A chunked body that grows past the limit is cut off too, and a request refused in the same read as
    # its head never reaches the upstream (not even its head).
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b"x" * 1024
        + b"\r\n"
    )
    with connect(gw.port) as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        assert reader.read().status == 413
        assert reader.closed()
    time.sleep(0.2)
    assert upstream.connections == 0
    assert upstream.requests == []


def test_route_body_limit_overrides_server(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(basic_config(upstream.port, route="max_body_bytes = 10"))
    assert (
        request(gw.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world").status == 413
    )
    assert (
        request(gw.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhelloworld").status == 200
    )


BAD_UPSTREAM = [
    ("cl and te", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
    ("garbage", b"THIS IS NOT HTTP\r\n\r\n"),
    ("bad status line", b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
    ("header injection", b"HTTP/1.1 200 OK\r\nx-a: b\rset-cookie: evil\r\ncontent-length: 0\r\n\r\n"),
    ("oversized head", b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70000 + b"\r\ncontent-length: 0\r\n\r\n"),
    ("bad chunk", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
    ("bare LF", b"HTTP/1.1 200 OK\nx-a: b\nset-cookie: evil\ncontent-length: 0\n\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nx-a: b\r\n set-cookie: evil\r\ncontent-length: 0\r\n\r\n"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nset-cookie : evil\r\ncontent-length: 0\r\n\r\n"),
    ("not HTTP", b"RTSP/1.0 200 OK\r\nset-cookie: evil\r\ncontent-length: 0\r\n\r\n"),
    ("bad trailer", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx a: b\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "raw"), BAD_UPSTREAM, ids=[c[0] for c in BAD_UPSTREAM])
def test_ambiguous_upstream_responses_become_502(
    gateway: Gateway, upstream: TestUpstream, name: str, raw: bytes
) -> None:
    upstream.handler = lambda req: raw
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        reader = ResponseReader(sock)
        resp = reader.read()
        assert resp.status == 502
        assert resp.header(b"content-type") == b"application/problem+json"
        assert b"evil" not in resp.raw_head


def test_bad_chunk_after_head_aborts_connection(gateway: Gateway, upstream: TestUpstream) -> None:
    # The head and a good chunk go out first; the broken chunk arrives after they were relayed.
    upstream.handler = lambda req: [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"zz\r\n",
    ]
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        reader = ResponseReader(sock)
        with pytest.raises(AssertionError, match="closed"):
            reader.read()


def test_gateway_survives_and_serves_after_bad_input(gateway: Gateway, upstream: TestUpstream) -> None:
    for raw, _ in [(c[1], c[2]) for c in SMUGGLING[:5]]:
        request(gateway.port, raw)
    assert get(gateway.port, "/still-alive").status == 200
