"""routes.request_size end to end: a route's own body limit, answered 413 problem+json before the
upstream sees the body (Content-Length: at once; chunked: when the running total passes it), and 411
for a body of unknown length where the route requires Content-Length."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tests.support.clients import connect, read_until_closed
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import TestUpstream

LIMIT = 1000


def send(gw: Gateway, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """One request on its own connection (Connection: close): status, head and body of the answer."""
    with connect(gw.port) as sock:
        sock.sendall(head + body)
        raw = read_until_closed(sock)
    head_out, _, body_out = raw.partition(b"\r\n\r\n")
    return int(head_out.split(b" ", 2)[1]), head_out.lower(), body_out


def post(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % length


def chunked_post() -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunks(*sizes: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (n, b"a" * n) for n in sizes) + b"0\r\n\r\n"


@pytest.fixture
def limited(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> Gateway:
    route = f"[routes.request_size]\nmax_body_bytes = {LIMIT}"
    return gateway_factory(basic_config(upstream.port, route=route))


def test_a_declared_length_over_the_limit_is_refused_before_the_upstream_is_called(
    limited: Gateway, upstream: TestUpstream
) -> None:
    status, _, _ = send(limited, post(LIMIT), b"a" * LIMIT)
    assert status == 200 and len(upstream.requests) == 1  # at the limit: forwarded
    status, head, body = send(limited, post(LIMIT + 1), b"a" * (LIMIT + 1))
    assert status == 413 and b"content-type: application/problem+json" in head
    problem = orjson.loads(body)
    assert problem["status"] == 413 and str(LIMIT) in problem["detail"]
    assert len(upstream.requests) == 1  # the upstream never saw the refused request


def test_a_chunked_body_is_refused_when_its_running_total_passes_the_limit(
    limited: Gateway, upstream: TestUpstream
) -> None:
    status, _, _ = send(limited, chunked_post(), chunks(400, 400))
    assert status == 200 and len(upstream.requests) == 1
    status, head, body = send(limited, chunked_post(), chunks(400, 400, 400))
    assert status == 413 and b"application/problem+json" in head
    assert orjson.loads(body)["status"] == 413
    assert len(upstream.requests) == 1  # no complete request with the oversized body reached it


def test_a_route_that_requires_content_length_refuses_chunked_bodies_with_411(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    route = f"[routes.request_size]\nmax_body_bytes = {LIMIT}\nrequire_content_length = true"
    gw = gateway_factory(basic_config(upstream.port, route=route))
    status, head, body = send(gw, chunked_post(), chunks(10))
    assert status == 411 and b"application/problem+json" in head
    assert orjson.loads(body)["status"] == 411
    assert upstream.requests == []
    status, _, _ = send(gw, post(10), b"a" * 10)
    assert status == 200 and len(upstream.requests) == 1


def test_other_routes_keep_the_server_limit(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    extra = f"""
[[routes]]
name = "small"
path = "/upload"
upstream = "backend"
auth = "none"
[routes.request_size]
max_body_bytes = {LIMIT}
"""
    gw = gateway_factory(basic_config(upstream.port, extra=extra))
    assert send(gw, post(LIMIT + 1), b"a" * (LIMIT + 1))[0] == 413
    big = b"POST /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
    assert send(gw, big, b"a" * (LIMIT + 1))[0] == 200
