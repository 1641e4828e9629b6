"""HTTP/1.1 proxying behaviour a client sees, through a real gateway process, on both parser backends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.clients import ResponseReader, connect, get, request
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import SeenRequest, TestUpstream
from tests.support.waiting import wait_until


def test_get_is_proxied_with_forwarding_headers(gateway: Gateway, upstream: TestUpstream) -> None:
    resp = get(gateway.port, "/hello?x=1", "User-Agent: t\r\n")
    assert resp.status == 200
    assert resp.json() == {"method": "GET", "target": "/hello?x=1", "len": 0}
    seen = upstream.requests[-1]
    assert seen.header(b"host") == f"127.0.0.1:{upstream.port}".encode()
    assert seen.header(b"x-forwarded-for") == b"127.0.0.1"
    assert seen.header(b"x-forwarded-proto") == b"http"
    assert seen.header(b"x-forwarded-host") == b"test"
    assert seen.header(b"via") == b"1.1 fastgw"
    assert seen.header(b"user-agent") == b"t"
    rid = resp.header(b"x-request-id")
    assert rid and seen.header(b"x-request-id") == rid
    assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", seen.header(b"traceparent") or b"")
    assert resp.header(b"via") == b"1.1 fastgw"
    assert resp.header(b"date")


def test_spoofed_forwarding_headers_are_overwritten(gateway: Gateway, upstream: TestUpstream) -> None:
    get(
        gateway.port,
        "/",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
        "Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n",
    )
    seen = upstream.requests[-1]
    assert seen.all(b"x-forwarded-for") == [b"127.0.0.1"]
    assert seen.all(b"x-forwarded-proto") == [b"http"]
    assert seen.all(b"x-forwarded-host") == [b"test"]
    assert seen.header(b"forwarded") is None
    assert seen.header(b"x-real-ip") is None


def test_dropped_headers_spelled_with_underscores_are_dropped_too(
    gateway: Gateway, upstream: TestUpstream
) -> None:
    """Servers that read headers through a CGI/WSGI environ (HTTP_X_CONSUMER) take X_Consumer for
    X-Consumer: a client's X_Consumer_Roles: admin reached them as the gateway's identity header."""
    get(
        gateway.port,
        "/",
        "X_Consumer: admin\r\nX_Consumer_Roles: admin\r\nX_Forwarded_For: 6.6.6.6\r\n"
        "X_Real_IP: 6.6.6.6\r\nX_Custom_Thing: kept\r\n",
    )
    seen = upstream.requests[-1]
    names = {name.lower().replace(b"_", b"-") for name, _ in seen.headers}
    assert not names & {b"x-consumer", b"x-consumer-roles", b"x-real-ip"}, seen.headers
    assert seen.all(b"x-forwarded-for") == [b"127.0.0.1"]
    assert seen.header(b"x_custom_thing") == b"kept"  # a name no dropped one: forwarded as it came


def test_safe_request_id_and_traceparent_are_kept(gateway: Gateway, upstream: TestUpstream) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = get(gateway.port, "/", f"X-Request-Id: abc-123\r\ntraceparent: {tp}\r\n")
    seen = upstream.requests[-1]
    assert resp.header(b"x-request-id") == b"abc-123"
    assert seen.header(b"x-request-id") == b"abc-123"
    assert seen.header(b"traceparent") == tp.encode()
    unsafe = get(gateway.port, "/", "X-Request-Id: <script>\r\ntraceparent: 00-zz\r\n")
    assert unsafe.header(b"x-request-id") != b"<script>"
    assert upstream.requests[-1].header(b"traceparent") != b"00-zz"


def test_hop_by_hop_headers_removed_both_ways(gateway: Gateway, upstream: TestUpstream) -> None:
    upstream.handler = lambda req: (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-secret-resp\r\nx-secret-resp: 1\r\n"
        b"keep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nx-fine: yes\r\n\r\nok"
    )
    resp = get(
        gateway.port,
        "/",
        "Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 1\r\n"
        "Proxy-Authorization: Basic Zm9v\r\nTE: trailers\r\nX-Kept: k\r\n",
    )
    seen = upstream.requests[-1]
    for name in (b"x-secret", b"keep-alive", b"proxy-authorization", b"te"):
        assert seen.header(name) is None, name
    assert seen.header(b"x-kept") == b"k"
    assert resp.header(b"x-secret-resp") is None
    assert resp.header(b"keep-alive") is None
    assert resp.header(b"proxy-authenticate") is None
    assert resp.header(b"x-fine") == b"yes"


def test_keep_alive_reuses_client_and_upstream_connections(gateway: Gateway, upstream: TestUpstream) -> None:
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        for i in range(20):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            assert reader.read().json()["target"] == f"/{i}"
    assert upstream.connections == 1


def test_pipelined_responses_come_back_in_order(gateway: Gateway, upstream: TestUpstream) -> None:
    upstream.delay = 0.01
    burst = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(10))
    burst += b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    with connect(gateway.port) as sock:
        sock.sendall(burst)
        reader = ResponseReader(sock)
        targets = [reader.read().json()["target"] for _ in range(11)]
    assert targets == [f"/p{i}" for i in range(10)] + ["/body"]
    assert upstream.requests[-1].body == b"hello"


def test_content_length_and_chunked_request_bodies(gateway: Gateway, upstream: TestUpstream) -> None:
    resp = request(gateway.port, b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
    assert resp.json()["len"] == 11
    assert upstream.requests[-1].body == b"hello world"
    raw = (
        b"POST /ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    resp = request(gateway.port, raw)
    assert resp.status == 200
    seen = upstream.requests[-1]
    assert seen.body == b"hello world"
    assert seen.header(b"transfer-encoding") == b"chunked"


def test_chunked_and_close_delimited_responses_are_reframed(gateway: Gateway, upstream: TestUpstream) -> None:
    upstream.handler = lambda req: (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    resp = get(gateway.port, "/")
    assert resp.body == b"abcde"
    assert resp.header(b"transfer-encoding") == b"chunked"
    upstream.handler = lambda req: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-close"
    upstream.close_after_response = True
    resp = get(gateway.port, "/")
    assert resp.body == b"until-close"
    assert resp.header(b"transfer-encoding") == b"chunked"
    # An HTTP/1.0 client gets a close-delimited body instead.
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        resp10 = reader.read()
        assert resp10.body == b"until-close"
        assert resp10.header(b"transfer-encoding") is None


def test_head_204_304_have_no_body(gateway: Gateway, upstream: TestUpstream) -> None:
    upstream.handler = lambda req: (
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
        if req.method == b"HEAD"
        else b"HTTP/1.1 204 No Content\r\n\r\n"
        if req.target == b"/204"
        else b"HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n"
    )
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = reader.read(head=True)
        assert head.status == 200 and head.header(b"content-length") == b"1000"
        sock.sendall(b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().status == 204
        sock.sendall(b"GET /304 HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = reader.read()
        assert resp.status == 304 and resp.header(b"transfer-encoding") is None
        # The connection is still in sync: a fourth request works.
        upstream.handler = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().body == b"ok"
        assert reader.buffer == b""


def test_connection_close_and_http10(gateway: Gateway, upstream: TestUpstream) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = ResponseReader(sock)
        resp = reader.read()
        assert resp.status == 200 and resp.header(b"connection") == b"close"
        assert reader.closed()
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read().status == 200
        assert reader.closed()
    with connect(gateway.port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reader = ResponseReader(sock)
        resp = reader.read()
        assert resp.header(b"connection") == b"keep-alive"
        sock.sendall(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert reader.read().json()["target"] == "/again"


def test_expect_100_continue_after_checks(gateway: Gateway, upstream: TestUpstream) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        sock.settimeout(5)
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        resp = ResponseReader(sock).read()
        assert resp.json()["len"] == 4
    assert upstream.requests[-1].header(b"expect") is None


def test_expect_100_denied_never_reads_body(gateway: Gateway, upstream: TestUpstream) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n"
        )
        reader = ResponseReader(sock)
        resp = reader.read()
        assert resp.status == 413
        assert b"100 Continue" not in resp.raw_head
        assert resp.header(b"connection") == b"close"
        assert reader.closed()
    assert upstream.requests == []


@contextmanager
def echoing_tunnel(gateway: Gateway, upstream: TestUpstream) -> Iterator[ResponseReader]:
    """A WebSocket upgrade through the gateway to an upstream that echoes, checked with one ping."""
    upstream.handler = lambda req: (
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    with connect(gateway.port) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        reader = ResponseReader(sock)
        assert reader.read().status == 101
        sock.sendall(b"ping")
        deadline = time.monotonic() + 5
        while b"echo:ping" not in reader.buffer and time.monotonic() < deadline:
            reader._fill(deadline)
        assert reader.buffer == b"echo:ping"
        reader.buffer = b""
        yield reader


def test_websocket_upgrade_tunnels_both_ways(gateway: Gateway, upstream: TestUpstream) -> None:
    with echoing_tunnel(gateway, upstream):
        pass
    seen = upstream.requests[-1]
    assert seen.header(b"upgrade") == b"websocket"
    assert seen.header(b"sec-websocket-key") == b"dGhlIHNhbXBsZSBub25jZQ=="


def test_a_tunnel_the_upstream_closes_is_closed_to_the_client_and_logged(
    gateway: Gateway, upstream: TestUpstream
) -> None:
    with echoing_tunnel(gateway, upstream) as reader:
        upstream.drop_connections()
        assert reader.closed(), "the client's side of the tunnel stayed open after the upstream closed"
    record = gateway.wait_log(1)[-1]
    assert record["path"] == "/ws" and record["status"] == 101


def test_h2c_upgrade_is_never_forwarded(gateway: Gateway, upstream: TestUpstream) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        reader = ResponseReader(sock)
        assert reader.read().json()["target"] == "/a"
        assert reader.read().json()["target"] == "/b"
    first = upstream.requests[0]
    assert first.header(b"upgrade") is None
    assert first.header(b"http2-settings") is None


def test_404_and_405_are_problem_json(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(
        f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [upstreams.u]
        targets = ["127.0.0.1:{upstream.port}"]
        [[routes]]
        name = "api"
        path = "/api"
        methods = ["GET", "POST"]
        upstream = "u"
        auth = "none"
        """
    )
    resp = get(gw.port, "/other")
    assert resp.status == 404
    assert resp.header(b"content-type") == b"application/problem+json"
    problem = resp.json()
    assert problem["status"] == 404 and problem["type"].endswith("/not-found")
    assert problem["request_id"] == resp.header(b"x-request-id").decode()  # type: ignore[union-attr]
    resp = get(gw.port, "/api/x", method="DELETE")
    assert resp.status == 405
    assert resp.header(b"allow") == b"GET, POST, HEAD"
    assert get(gw.port, "/apix").status == 404  # prefixes match whole segments
    assert get(gw.port, "/api/x").status == 200


def test_route_header_rules_and_strip_prefix(gateway_factory, upstream: TestUpstream) -> None:  # type: ignore[no-untyped-def]
    upstream.handler = lambda req: b"HTTP/1.1 200 OK\r\nserver: secret/1.0\r\ncontent-length: 0\r\n\r\n"
    gw = gateway_factory(
        f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [upstreams.u]
        targets = ["127.0.0.1:{upstream.port}"]
        [[routes]]
        name = "svc"
        path = "/svc/"
        strip_prefix = true
        preserve_host = true
        upstream = "u"
        auth = "none"
        request_headers = {{ set = {{ "x-env" = "prod" }}, remove = ["x-debug"] }}
        response_headers = {{ set = {{ "x-frame-options" = "DENY" }}, remove = ["server"] }}
        """
    )
    resp = get(gw.port, "/svc/items/1?q=2", "X-Debug: 1\r\nX-Env: spoofed\r\n")
    seen: SeenRequest = upstream.requests[-1]
    assert seen.target == b"/items/1?q=2"
    assert seen.header(b"host") == b"test"
    assert seen.all(b"x-env") == [b"prod"]
    assert seen.header(b"x-debug") is None
    assert resp.header(b"server") is None
    assert resp.header(b"x-frame-options") == b"DENY"
    get(gw.port, "/svc")
    assert upstream.requests[-1].target == b"/"


def test_path_is_normalised_once_and_forwarded_as_routed(gateway: Gateway, upstream: TestUpstream) -> None:
    get(gateway.port, "/a/./b/../c//d/%7Euser")
    assert upstream.requests[-1].target == b"/a/c/d/~user"
    for bad in ("/a%2fb", "/..%5c/x", "/..;/admin", "/a%00"):
        resp = get(gateway.port, bad)
        assert resp.status == 400, bad
        assert resp.header(b"content-type") == b"application/problem+json"


def test_access_log_line(gateway: Gateway, upstream: TestUpstream) -> None:
    resp = get(gateway.port, "/logged?secret=1")
    record = wait_until(
        lambda: [r for r in gateway.log_records() if r.get("path") == "/logged"], 5, "the access-log line"
    )[0]
    assert record["status"] == 200
    assert record["method"] == "GET"
    assert record["route"] == "main"
    assert record["client"] == "127.0.0.1"
    assert record["request_id"] == resp.header(b"x-request-id").decode()  # type: ignore[union-attr]
    assert record["upstream"] == f"127.0.0.1:{upstream.port}"
    assert "query" not in record  # query strings can carry secrets: off by default
    assert record["snapshot"] and record["total_ms"] >= record["upstream_ms"] >= 0
    assert record["bytes_out"] > 0


def test_access_log_redacts_credentials_in_the_query(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        basic_config(upstream.port).replace(
            '[access_log]\n        target = "{log}"',
            '[access_log]\n        target = "{log}"\n        include_query = true\n'
            '        redact_query = ["api_key", "session"]',
        )
    )
    target = "/q?page=2&api_key=abc123&API%5FKEY=def456&Session=s3&sessionx=keep&session"
    assert (
        get(gw.port, target, headers="Cookie: sid=topsecret\r\nAuthorization: Bearer tok-999\r\n").status
        == 200
    )
    record = gw.wait_log(1)[0]
    assert (
        record["query"] == "page=2&api_key=REDACTED&API%5FKEY=REDACTED&Session=REDACTED&sessionx=keep&session"
    )
    text = gw.access_log.read_text()
    for secret in ("abc123", "def456", "s3&", "topsecret", "tok-999"):
        assert secret not in text, secret
    # The upstream still receives the request unchanged: redaction is for the log only.
    assert upstream.requests[-1].target == target.encode()


def test_upstream_head_is_relayed_as_received_across_reads_and_interim_responses(
    gateway: Gateway, upstream: TestUpstream
) -> None:
    # llhttp validates the head; the gateway then relays its field lines as they came (case, spacing) from
    # the bytes received, however the reads split them, after a leading CRLF and two interim responses.
    head = (
        b"\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: A b\r\nCONNECTION: X-Hidden\r\nX-Hidden: 1\r\nSERVER: s\r\n"
        b"Content-Length: 2\r\nDate: Sun, 22 Nov 2026 18:00:00 GMT\r\nx-tail:  spaced\r\n\r\nok"
    )
    cuts = [3, 30, len(head) - 60, len(head) - 5]
    pieces = [head[a:b] for a, b in zip([0, *cuts], [*cuts, len(head)], strict=True)]
    upstream.handler = lambda req: pieces if req.target == b"/split" else None
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /split HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = reader.read()
        assert resp.status == 200
        assert resp.body == b"ok"
        assert b"\r\nX-Mixed-Case: A b\r\n" in resp.raw_head
        assert b"\r\nSERVER: s\r\n" in resp.raw_head
        assert b"\r\nx-tail:  spaced\r\n" in resp.raw_head
        assert resp.header(b"x-hidden") is None  # named in Connection, whatever the case
        assert resp.header(b"connection") is None
        assert resp.header(b"link") is None  # the 103's field is not merged into the final response
        assert [v for n, v in resp.headers if n == b"date"] == [b"Sun, 22 Nov 2026 18:00:00 GMT"]
        assert resp.header(b"via") == b"1.1 fastgw"
        upstream.handler = lambda req: b"HTTP/1.1 204 No Content\r\nX-Second: 2\r\n\r\n"
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        second = reader.read()
        assert second.status == 204
        assert second.header(b"x-second") == b"2"
    assert upstream.connections == 1


def test_chunked_response_trailers_reach_the_client_then_the_connection_is_reused(
    gateway: Gateway, upstream: TestUpstream
) -> None:
    chunked = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n3\r\nabc\r\n",
        b"2\r\nde\r\n0\r\nX-Checksum: 42\r\nContent-Type: evil\r\n\r\n",
    ]
    upstream.handler = lambda req: chunked if req.target == b"/chunked" else ok_length(req)
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /chunked HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n")
        raw = b""
        deadline = time.monotonic() + 5
        while not (b"\r\n0\r\n" in raw and raw.endswith(b"\r\n\r\n")):
            assert time.monotonic() < deadline, raw
            raw += sock.recv(65536)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        # Content-Type is never relayed as a trailer field (RFC 9110 6.5.1).
        assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-checksum: 42\r\n\r\n"
        # The next response on the same upstream connection is parsed from its own head again.
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        after = ResponseReader(sock).read()
        assert after.status == 200
        assert after.body == b"/after"
        assert after.header(b"x-checksum") is None
    assert upstream.connections == 1


def ok_length(req: SeenRequest) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(req.target), req.target)


def test_a_response_nobody_asked_for_closes_the_upstream_connection(
    gateway: Gateway, upstream: TestUpstream
) -> None:
    # A chunked response with a trailer, then (same write) a second response head the gateway never asked
    # for: that connection's framing cannot be trusted, and nothing of the extra head may reach a client.
    extra = b"HTTP/1.1 200 OK\r\nX-Junk: 1\r\nContent-Length: 0\r\n\r\n"
    upstream.handler = lambda req: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: 1\r\n\r\n" + extra
        if req.target == b"/first"
        else b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnext\r\n0\r\n\r\n"
    )
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().body == b"ok"
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = b""
        deadline = time.monotonic() + 5
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            assert time.monotonic() < deadline, raw
            raw += sock.recv(65536)
        assert b"junk" not in raw.lower()
        assert raw.endswith(b"\r\n4\r\nnext\r\n0\r\n\r\n")
    assert upstream.connections == 2
