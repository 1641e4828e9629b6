"""Write batching (server.batch_writes): requests and responses ready in one loop iteration are written
together at its end. What a client sees must not change: order, framing, closes, errors, promptness."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.clients import ResponseReader, connect
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
def batched_gateway(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> Gateway:
    flag = "true" if request.param else "false"
    return gateway_factory(
        f"""
        [server]
        batch_writes = {flag}
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [upstreams.backend]
        targets = ["127.0.0.1:{upstream.port}"]
        [[routes]]
        name = "api"
        path = "/api"
        upstream = "backend"
        auth = "none"
        [[routes]]
        name = "small-bodies"
        path = "/small"
        upstream = "backend"
        auth = "none"
        max_body_bytes = 4
        """
    )


def test_each_response_leaves_without_waiting_for_the_tick(batched_gateway: Gateway) -> None:
    """A held write goes out when the iteration's callbacks are done, not at the worker's 100 ms tick:
    40 sequential requests on one connection would take >= 2 s if each hop waited for a tick."""
    with connect(batched_gateway.port) as sock:
        reader = ResponseReader(sock)
        began = time.monotonic()
        for i in range(40):
            sock.sendall(b"GET /api/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            assert reader.read().json()["target"] == f"/api/{i}"
        took = time.monotonic() - began
    assert took < 1.0, f"40 keep-alive requests took {took:.3f} s"


def test_pipelined_responses_keep_their_order_around_refusals(
    batched_gateway: Gateway, upstream: TestUpstream
) -> None:
    """A response held for the batch is written before the next pipelined exchange answers, whether that
    one is proxied, refused at routing (404) or fails on its body (413)."""
    upstream.delay = 0.01
    burst = (
        b"GET /api/1 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /api/2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\ntoo large"
    )
    with connect(batched_gateway.port) as sock:
        sock.sendall(burst)
        reader = ResponseReader(sock)
        first, second, third, fourth = (reader.read() for _ in range(4))
        assert first.status == 200 and first.json()["target"] == "/api/1"
        assert second.status == 404
        assert third.status == 200 and third.json()["target"] == "/api/2"
        assert fourth.status == 413  # its body was read while queued: the connection stays usable
        sock.sendall(b"GET /api/3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().json()["target"] == "/api/3"
    assert [r.target for r in upstream.requests] == [b"/api/1", b"/api/2", b"/api/3"]


def test_a_closing_response_is_written_before_the_close(batched_gateway: Gateway) -> None:
    for head in (
        b"GET /api/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /api/c HTTP/1.0\r\n\r\n",
    ):
        with connect(batched_gateway.port) as sock:
            sock.sendall(head)
            reader = ResponseReader(sock)
            assert reader.read().json()["target"] == "/api/c"
            assert reader.closed()


def test_request_body_bytes_follow_the_held_head(batched_gateway: Gateway, upstream: TestUpstream) -> None:
    """The head is held for the batch; body bytes arriving later in the same iteration must not pass it."""
    with connect(batched_gateway.port) as sock:
        sock.sendall(b"POST /api/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        time.sleep(0.05)
        sock.sendall(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
        resp = ResponseReader(sock).read()
        assert resp.status == 200 and resp.json()["len"] == 11
    assert upstream.requests[-1].body == b"hello world"
