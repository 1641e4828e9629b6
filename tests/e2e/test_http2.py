"""HTTP/2 end to end: h2c with prior knowledge and h2 over TLS (ALPN) through a real gateway to an
HTTP/1.1 test upstream; bodies with flow control both ways, trailers, policies exactly as on HTTP/1.1,
and requests that would smuggle through the HTTP/2-to-HTTP/1.1 translation."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.clients import connect, get, request
from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.upstreams import SeenRequest, TestUpstream
from tests.support.waiting import wait_until


def test_h2c_prior_knowledge_multiplexes_streams_over_http1_upstreams(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    client = H2Client(gw.port)
    sids = [client.start(f"/item/{i}?q={i}", headers=[(b"x-trace-me", b"yes")]) for i in range(20)]
    responses = [client.wait(sid) for sid in sids]
    assert [r.status for r in responses] == [200] * 20
    assert sorted(r.body for r in responses) == sorted(
        b'{"method":"GET","target":"/item/%d?q=%d","len":0}' % (i, i) for i in range(20)
    )
    first = responses[0]
    assert first.header(b"via") == b"1.1 fastgw"  # the hop the response took from the upstream
    assert first.header(b"x-request-id") and first.header(b"date")
    seen = upstream.requests[0]
    assert seen.header(b"host") == b"127.0.0.1:%d" % upstream.port
    assert seen.header(b"x-forwarded-host") == b"localhost"
    assert seen.header(b"via") == b"2 fastgw"  # the client spoke HTTP/2 to us (RFC 9110 7.6.3)
    assert seen.header(b"x-trace-me") == b"yes"
    assert not any(name.startswith(b":") for name, _ in seen.headers)
    records = gw.wait_log(20)
    assert {r["status"] for r in records} == {200}
    assert {r.get("protocol") for r in records} == {"HTTP/2"}
    client.close()
    # The same listener still speaks HTTP/1.1 (and its log lines carry no protocol field).
    assert get(gw.port, "/plain").status == 200
    assert "protocol" not in gw.wait_log(21)[-1]


def test_bodies_both_ways_with_flow_control_and_trailers(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: sixteen times the stream window

    def handler(req: SeenRequest) -> bytes:
        if req.target == b"/download":
            return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
        if req.target == b"/trailers":
            return (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: grpc-status\r\n\r\n"
                b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nset-cookie: a=b\r\n\r\n"
            )
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(len(req.body))), len(req.body))

    upstream.handler = handler
    gw = gateway_factory(basic_config(upstream.port))
    client = H2Client(gw.port)
    # Upload with a content-length, then one of unknown length (goes upstream chunked, with trailers).
    sized = client.start("/upload", method="POST", headers=[(b"content-length", b"%d" % len(big))], end=False)
    client.send_body(sized, big)
    assert client.wait(sized, 20).body == b"%d" % len(big)
    assert upstream.requests[-1].body == big
    unsized = client.start("/stream", method="POST", end=False)
    client.send_body(unsized, b"abc" * 1000, end=False)
    client.conn.send_headers(unsized, [(b"x-checksum", b"42")], end_stream=True)
    client.flush()
    assert client.wait(unsized).body == b"3000"
    seen = upstream.requests[-1]
    assert seen.header(b"transfer-encoding") == b"chunked" and seen.body == b"abc" * 1000
    # Download larger than every window: the gateway sends as the client's windows open.
    down = client.request("/download")
    assert down.status == 200 and down.body == big and down.header(b"content-length") == b"%d" % len(big)
    # Upstream trailers reach the client; framing fields among them do not.
    trailed = client.request("/trailers")
    client.close()
    assert trailed.body == b"hello" and trailed.trailers == [(b"grpc-status", b"0")]


def test_h2_over_tls_by_alpn_and_fallback_to_http1(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    gw = gateway_factory(
        basic_config(upstream.port).replace(
            'bind = "127.0.0.1:{port}"',
            f'bind = "127.0.0.1:{{port}}"\ntls = {{ certificates = [{{ cert = "{certs.server_cert}", '
            f'key = "{certs.server_key}" }}] }}',
        )
    )
    h2_ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    h2_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = H2Client(gw.port, tls=h2_ctx)
    assert client.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
    resp = client.request("/secure")
    assert resp.status == 200 and resp.header(b"strict-transport-security") is not None
    assert upstream.requests[-1].header(b"x-forwarded-proto") == b"https"
    client.close()
    h1_ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    h1_ctx.set_alpn_protocols(["http/1.1"])
    with h1_ctx.wrap_socket(connect(gw.port), server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        sock.sendall(b"GET /fallback HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")


def test_upgrade_h2c_on_http1_is_served_as_http1_and_never_forwarded(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    resp = request(
        gw.port,
        b"GET /up HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    assert resp.status == 200
    seen = upstream.requests[-1]
    assert seen.header(b"upgrade") is None and seen.header(b"http2-settings") is None
    assert seen.header(b"connection") is None


def test_policies_behave_as_on_http1(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    import jwt

    secret = "s" * 40
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra="""
            [[routes]]
            name = "limited"
            path = "/limited"
            upstream = "backend"
            auth = "none"
            limits = [{ name = "burst", rate = 2, per = 60.0, key = "ip" }]

            [[routes]]
            name = "orders"
            path = "/orders"
            upstream = "backend"
            auth = "jwt"
            authorize = { scopes = ["orders:read"] }

            [jwt.issuers.idp]
            issuer = "https://idp.test/"
            audiences = ["orders"]
            algorithms = ["HS256"]
            secret = { env = "H2_TEST_JWT_SECRET" }
            """,
        ),
        env={"H2_TEST_JWT_SECRET": secret},
    )
    client = H2Client(gw.port)
    assert [client.request("/limited/x").status for _ in range(3)] == [200, 200, 429]
    refused = client.responses[max(client.responses)]
    assert refused.header(b"content-type") == b"application/problem+json"
    assert refused.header(b"retry-after") and refused.header(b"ratelimit-policy") == b'"burst";q=2;w=60'
    assert client.request("/orders/1").status == 401
    claims = {"iss": "https://idp.test/", "aud": "orders", "sub": "bob", "exp": int(time.time()) + 60}
    good = jwt.encode({**claims, "scope": "orders:read"}, secret, algorithm="HS256")
    narrow = jwt.encode({**claims, "scope": "profile"}, secret, algorithm="HS256")
    ok = client.request("/orders/1", headers=[(b"authorization", b"Bearer " + good.encode())])
    assert ok.status == 200
    assert upstream.requests[-1].header(b"authorization") is None
    assert upstream.requests[-1].header(b"x-consumer") == b"bob"
    forbidden = client.request("/orders/1", headers=[(b"authorization", b"Bearer " + narrow.encode())])
    assert forbidden.status == 403 and b"insufficient_scope" in (forbidden.header(b"www-authenticate") or b"")
    client.close()


@pytest.mark.parametrize(
    ("headers", "path", "why"),
    [
        ([(b"x-smuggle", b"a\r\nx-injected: 1")], "/s", "CRLF in a value"),
        ([(b"x-smuggle", b"a\x01b")], "/s", "a control character"),
        ([(b"transfer-encoding", b"chunked")], "/s", "a connection-specific field"),
        ([(b"te", b"gzip")], "/s", "te other than trailers"),
        ([(b"X-Upper", b"1")], "/s", "an upper-case name"),
        ([(b"x-sp", b" padded")], "/s", "surrounding whitespace"),
        ([], "/a b HTTP/1.1\r\nx: y", "a request line hidden in :path"),
        ([], "/a b", "a space in :path"),
        ([(b"host", b"other.example")], "/s", ":authority and host that differ"),
        ([(b"content-length", b"1"), (b"content-length", b"2")], "/s", "two content-lengths"),
    ],
)
def test_smuggling_through_translation_is_refused(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    headers: list[tuple[bytes, bytes]],
    path: str,
    why: str,
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    client = H2Client(gw.port, strict=False)
    outcome = client.outcome(client.start(path, headers=headers))
    assert outcome in ("status 400", "closed") or outcome.startswith("reset"), (why, outcome)
    assert upstream.requests == [], why
    client.close()
    # The connection (or a new one, after a connection error) keeps serving well-formed requests.
    fresh = H2Client(gw.port)
    assert fresh.request("/fine").status == 200
    fresh.close()


def test_content_length_mismatch_never_reaches_the_upstream_complete(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    for announced, sent in ((b"3", b"abcdef"), (b"10", b"abc")):
        client = H2Client(gw.port, strict=False)
        sid = client.start("/cl", method="POST", headers=[(b"content-length", announced)], end=False)
        client.conn.send_data(sid, sent, end_stream=True)
        client.flush()
        outcome = client.outcome(sid)
        assert outcome in ("status 400", "closed") or outcome.startswith("reset"), (announced, outcome)
        client.close()
    time.sleep(0.2)  # anything forwarded would have reached the upstream by now
    assert not any(r.body in (b"abcdef", b"abc") for r in upstream.requests)


def _stream_in_flight(gw: Gateway, upstream: TestUpstream) -> tuple[H2Client, int]:
    """A client with one stream the upstream answers 0.5 s late, 0.2 s into the wait."""
    upstream.delay = 0.5
    client = H2Client(gw.port)
    sid = client.start("/slow")
    time.sleep(0.2)
    return client, sid


def test_graceful_goaway_on_drain_lets_the_stream_in_flight_finish(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    client, sid = _stream_in_flight(gw, upstream)
    gw.proc.send_signal(signal.SIGTERM)
    resp = client.wait(sid, 5)
    assert resp.status == 200
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
    assert client.goaway.last_stream_id == sid
    assert client.wait_closed(5)
    client.close()
    assert gw.proc.wait(10) == 0


def test_a_stream_still_unanswered_at_drain_timeout_gets_a_503_not_a_reset(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="drain_timeout = 0.5"))
    client, sid = _stream_in_flight(gw, upstream)
    upstream.delay = 10.0  # the answer would come long after drain_timeout
    late_sid = client.start("/slower")
    wait_until(lambda: len(upstream.requests) >= 2, 5, "both requests at the upstream")
    gw.proc.send_signal(signal.SIGTERM)
    assert client.wait(sid, 5).status == 200  # 0.5 s: within drain_timeout, answered by the upstream
    late = client.wait(late_sid, 5)
    assert late.status == 503 and b"shutting-down" in late.body
    client.close()
    assert gw.proc.wait(10) == 0
    records = {r["path"]: r for r in gw.log_records()}
    assert (records["/slower"]["status"], records["/slower"]["denial"]) == (503, "worker.shutdown")


def test_a_client_goaway_lets_its_streams_in_flight_finish(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    # RFC 9113 6.8: a client going away gracefully (NO_ERROR) is still owed the streams it opened. h2
    # treats any received GOAWAY as the end of sending; the gateway must not drop the answers.
    gw = gateway_factory(basic_config(upstream.port))
    client, sid = _stream_in_flight(gw, upstream)
    client.raw(GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.NO_ERROR).serialize())
    resp = client.wait(sid, 5)
    assert resp.status == 200 and orjson.loads(resp.body)["target"] == "/slow"
    assert client.wait_closed(5)  # then the gateway closes: nothing more will come
    client.close()
    # An error code is not graceful: the streams in flight are abandoned at once.
    aborted, sid = _stream_in_flight(gw, upstream)
    aborted.raw(GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.PROTOCOL_ERROR).serialize())
    assert aborted.wait_closed(5)
    assert aborted.responses[sid].status == 0  # no answer was sent
    aborted.close()


def test_silent_and_idle_connections_are_closed(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="header_timeout = 0.5\nidle_timeout = 0.5"))
    silent = H2Client(gw.port)  # the preface and SETTINGS, then no request at all
    started = time.monotonic()
    assert silent.wait_closed(5)
    silent_s = time.monotonic() - started
    silent.close()
    idle = H2Client(gw.port)
    assert idle.request("/once").status == 200
    started = time.monotonic()
    assert idle.wait_closed(5)
    idle_s = time.monotonic() - started
    assert idle.goaway is not None and idle.goaway.error_code == 0
    idle.close()
    print(f"silent h2 connection closed after {silent_s:.2f}s, idle one after {idle_s:.2f}s")
    assert 0.3 < silent_s < 2.0 and 0.3 < idle_s < 2.0


def test_reload_that_changes_http2_settings_sends_graceful_goaway(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, extra="[http2]\nmax_concurrent_streams = 50"))
    client = H2Client(gw.port)
    assert client.request("/before").status == 200
    gw.config.write_text(
        gw.config.read_text().replace("max_concurrent_streams = 50", "max_concurrent_streams = 20")
    )
    gw.proc.send_signal(signal.SIGHUP)
    assert client.wait_closed(5)
    assert client.goaway is not None and client.goaway.error_code == 0
    client.close()
    fresh = H2Client(gw.port)
    assert fresh.request("/after").status == 200
    assert fresh.conn.remote_settings.max_concurrent_streams == 20
    fresh.close()


def test_an_upstream_that_dies_mid_response_resets_the_stream_and_is_logged(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    def handler(req: SeenRequest) -> bytes | list[bytes]:
        if req.target == b"/cut":
            return [b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial", b"more"]
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    upstream.handler = handler
    upstream.close_after_response = True  # after the second piece: 989 bytes short
    gw = gateway_factory(basic_config(upstream.port))
    client = H2Client(gw.port)
    cut = client.wait(client.start("/cut"))
    assert cut.status == 200 and cut.reset == int(ErrorCodes.INTERNAL_ERROR)
    assert client.request("/after").status == 200  # the connection carries on
    client.close()
    records = {r["path"]: r for r in gw.wait_log(2)}
    assert records["/cut"]["status"] == 200 and records["/cut"]["denial"] == "upstream.upstream-closed"


def test_a_later_transfer_coding_makes_the_body_close_delimited_on_both_protocols(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    # "chunked" then a second Transfer-Encoding field naming another coding: llhttp reads the body until the
    # connection closes, and the framing the gateway derives from the head must agree (it decides whether
    # the body goes on in the chunked-body parser), or the body would be misread as chunks.
    gw = gateway_factory(basic_config(upstream.port))
    upstream.handler = lambda req: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    upstream.close_after_response = True
    raw_body = b"3\r\nabc\r\n0\r\n\r\n"  # the bytes until close, relayed as they are (not decoded as chunks)
    client = H2Client(gw.port)
    response = client.request("/two-codings")
    assert response.status == 200
    assert response.body == raw_body
    client.close()
    resp = get(gw.port, "/two-codings")
    assert resp.status == 200
    assert resp.body == raw_body
