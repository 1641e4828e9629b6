"""Upstream failure handling as a client sees it: 502/503/504 problem+json, retry, ejection, balancing."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.clients import ResponseReader, connect, get, request
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream


def two_target_config(a: int, b: int, extra: str = "") -> str:
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [access_log]
        target = "{{log}}"
        [upstreams.u]
        targets = ["127.0.0.1:{a}", "127.0.0.1:{b}"]
        {extra}
        [[routes]]
        name = "r"
        path = "/"
        upstream = "u"
        auth = "none"
        """


def one_target_config(port: int, extra: str = "") -> str:
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [access_log]
        target = "{{log}}"
        [upstreams.u]
        targets = ["127.0.0.1:{port}"]
        {extra}
        [[routes]]
        name = "r"
        path = "/"
        upstream = "u"
        auth = "none"
        """


def test_connection_refused_is_502_problem(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(one_target_config(free_port()))
    resp = get(gw.port, "/")
    assert resp.status == 502
    assert resp.header(b"content-type") == b"application/problem+json"
    # The client learns what happened, never where: no address, port or OS error in the body.
    assert resp.json()["detail"] == "the upstream service could not be reached"
    assert b"127.0.0.1" not in resp.body and b"refused" not in resp.body.lower()
    records = gw.wait_log(1)
    assert records[0]["status"] == 502 and records[0]["denial"] == "upstream.upstream-unavailable"
    assert "cannot connect to 127.0.0.1:" in records[0]["error"] and "refused" in records[0]["error"]


def test_slow_upstream_is_504(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    upstream.delay = 3.0
    gw = gateway_factory(one_target_config(upstream.port, "read_timeout = 0.5"))
    started = time.monotonic()
    resp = get(gw.port, "/")
    elapsed = time.monotonic() - started
    assert resp.status == 504, resp.body
    assert 0.4 <= elapsed < 2.0, f"504 after {elapsed:.2f}s"


def test_upstream_hangup_without_response_is_502(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    upstream.handler = lambda req: None
    gw = gateway_factory(one_target_config(upstream.port, "retry = false"))
    assert get(gw.port, "/").status == 502


def test_reused_connection_dying_before_response_is_retried_once(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    seen: list[bytes] = []

    def handler(req):  # type: ignore[no-untyped-def]
        seen.append(req.target)
        if req.target == b"/2" and seen.count(b"/2") == 1:
            return None  # hang up without a byte: the keep-alive race a retry exists for
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    upstream.handler = handler
    gw = gateway_factory(one_target_config(upstream.port))
    with connect(gw.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().status == 200
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().body == b"ok"
    assert seen == [b"/1", b"/2", b"/2"]
    assert upstream.connections == 2


def test_idle_connection_closed_by_upstream_is_not_used(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(one_target_config(upstream.port, "retry = false"))
    assert get(gw.port, "/1").status == 200

    def close_all() -> None:
        for transport in list(upstream._transports):
            transport.close()

    upstream.loop.call_soon_threadsafe(close_all)
    time.sleep(0.2)
    assert get(gw.port, "/2").status == 200
    assert upstream.connections == 2


def test_non_idempotent_request_is_not_retried(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    calls: list[bytes] = []

    def handler(req):  # type: ignore[no-untyped-def]
        calls.append(req.target)
        return None if req.method == b"POST" else b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    upstream.handler = handler
    gw = gateway_factory(one_target_config(upstream.port))
    resp = gw and get(gw.port, "/post", method="POST", headers="Content-Length: 0\r\n")
    assert resp.status == 502
    assert calls == [b"/post"]


def test_round_robin_and_passive_ejection(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    dead = free_port()
    gw = gateway_factory(two_target_config(upstream.port, dead, "max_failures = 1\neject_seconds = 30"))
    statuses = [get(gw.port, f"/{i}").status for i in range(10)]
    # The one request that picks the dead target is moved to the live one (its connect failed: nothing
    # was sent); the dead target is ejected for 30 s after that failure, so no other request tries it.
    assert statuses == [200] * 10, statuses
    assert len(upstream.requests) == 10
    records = gw.wait_log(10)
    moved = [r for r in records if r.get("attempts")]
    assert len(moved) == 1 and moved[0]["attempts"] == 2, records


def test_connect_failure_is_retried_on_a_sibling_for_every_method(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """A refused connect sent nothing, so even a POST with a body goes to the healthy target; with the
    retry budget at zero (retry_min = 0, retry_budget = 0) the refusal reaches the client as a 502."""
    dead = free_port()
    gw = gateway_factory(two_target_config(dead, upstream.port, "max_failures = 100"))
    for i in range(6):
        raw = f"POST /p{i} HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello".encode()
        resp = request(gw.port, raw)
        assert resp.status == 200, (i, resp.status, resp.body)
    assert [r.body for r in upstream.requests] == [b"hello"] * 6
    assert all(r.target.startswith(b"/p") for r in upstream.requests)
    hosts = {r.header(b"host") for r in upstream.requests}
    assert hosts == {f"127.0.0.1:{upstream.port}".encode()}, hosts  # the head was rebuilt for the sibling

    budget = gateway_factory(
        two_target_config(dead, upstream.port, "max_failures = 100\nretry_min = 0\nretry_budget = 0.0")
    )
    statuses = [get(budget.port, f"/b{i}").status for i in range(4)]
    assert statuses.count(502) == 2 and statuses.count(200) == 2, statuses  # round robin: every other one


def test_least_conn_balances_to_the_idle_target(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    second = TestUpstream()
    try:
        gw = gateway_factory(two_target_config(upstream.port, second.port, 'balance = "least_conn"'))
        for i in range(6):
            assert get(gw.port, f"/{i}").status == 200
        assert len(upstream.requests) + len(second.requests) == 6
        assert (upstream.requests and second.requests) or len(upstream.requests) == 6
    finally:
        second.close()


def test_pool_limit_queues_then_503(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    upstream.delay = 1.5
    gw = gateway_factory(one_target_config(upstream.port, "max_connections = 1\nqueue_timeout = 0.3"))
    first = connect(gw.port)
    first.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)
    resp = get(gw.port, "/queued")
    assert resp.status == 503
    assert resp.json()["detail"] == "the upstream service has no free connection; try again later"
    assert "queue_timeout" in gw.wait_log(1)[0]["error"]
    assert ResponseReader(first).read().status == 200
    first.close()


def test_upstreams_sharing_a_target_keep_their_own_settings(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """Two upstreams naming the same target get a pool each: the /fast upstream's 0.3 s first-byte
    timeout never applies to /reports (5 s), whichever was used last, and each is its own metrics label."""
    upstream.delay = 0.8
    gw = gateway_factory(
        f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [access_log]
        target = "{{log}}"
        [upstreams.fast]
        targets = ["127.0.0.1:{upstream.port}"]
        first_byte_timeout = 0.3
        [upstreams.reports]
        targets = ["127.0.0.1:{upstream.port}"]
        first_byte_timeout = 5
        [[routes]]
        name = "fast"
        path = "/fast"
        upstream = "fast"
        auth = "none"
        [[routes]]
        name = "reports"
        path = "/reports"
        upstream = "reports"
        auth = "none"
        """
    )
    for _ in range(2):  # in turn, so each pool has been used just before the other
        assert get(gw.port, "/fast").status == 504
        assert get(gw.port, "/reports").status == 200
    with connect(gw.port) as sock:  # a keep-alive connection alternating between the two
        reader = ResponseReader(sock)
        for path, status in (("/reports", 200), ("/fast", 504), ("/reports", 200)):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert reader.read(5).status == status, path


def test_the_newest_idle_connection_is_reused_and_the_oldest_closed_past_idle_timeout(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """At low load one warm connection carries the requests (LIFO), not each the one idle longest; the
    connections a burst opened and the load no longer needs are closed once idle past idle_timeout."""
    idle_timeout = 1.0
    gw = gateway_factory(one_target_config(upstream.port, f"idle_timeout = {idle_timeout}"))
    upstream.delay = 0.3  # four requests at once: four upstream connections
    socks = [connect(gw.port) for _ in range(4)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /burst/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        assert [ResponseReader(sock).read().status for sock in socks] == [200] * 4
    finally:
        for sock in socks:
            sock.close()
    assert upstream.connections == 4
    upstream.delay = 0.0
    before = len(upstream.requests)
    assert all(get(gw.port, f"/one/{i}").status == 200 for i in range(8))
    carried = {req.connection for req in upstream.requests[before:]}
    assert len(carried) == 1, f"one request at a time, one connection: {carried}"
    # Each request closes the oldest idle connection once it is past idle_timeout (nothing else would:
    # no timer), so the three the burst left are gone within that and three more requests.
    deadline = time.monotonic() + idle_timeout + 3
    while upstream.open_connections > 1 and time.monotonic() < deadline:
        assert get(gw.port, "/later").status == 200
        time.sleep(0.05)  # spaced, so idle_timeout passes for the connections not taken
    assert upstream.open_connections == 1
    assert upstream.connections == 4, "the warm connection was never replaced"
