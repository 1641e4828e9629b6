"""CORS preflights answered before authentication, CORS headers on responses, and security headers."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.api_keys import issue, keys_config
from tests.support.certificates import client_context
from tests.support.clients import Response, ResponseReader, get
from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.ports import free_port
from tests.support.upstreams import SeenRequest, TestUpstream, ok_response
from tests.support.waiting import wait_until

APP = "https://app.example.com"


def cors_config(upstream_port: int, secrets: Path) -> str:
    return (
        keys_config(upstream_port, free_port(), secrets)
        + f"""
        [[routes]]
        name = "browser"
        path = "/browser"
        upstream = "backend"
        auth = "api_key"
        methods = ["GET", "POST"]
        cors = {{ allow_origins = ["{APP}"], allow_methods = ["GET", "POST"], expose_headers = ["x-trace"] }}
        """
    )


def preflight(
    port: int, origin: str, method: str = "POST", headers: str = "x-api-key, content-type"
) -> Response:
    extra = f"Origin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n"
    if headers:
        extra += f"Access-Control-Request-Headers: {headers}\r\n"
    return get(port, "/browser/items", headers=extra, method="OPTIONS")


def test_preflight_is_answered_before_authentication(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    secrets_dir: Path,
) -> None:
    gw = gateway_factory(cors_config(upstream.port, secrets_dir))
    before = len(upstream.requests)
    ok = preflight(gw.port, APP)
    assert ok.status == 204
    assert ok.header(b"access-control-allow-origin") == APP.encode()
    assert ok.header(b"access-control-allow-methods") == b"GET, POST"
    assert ok.header(b"access-control-allow-headers") == b"x-api-key, content-type"
    assert ok.header(b"access-control-max-age") == b"600"
    assert ok.header(b"vary") == b"Origin"
    assert ok.header(b"content-length") is None and ok.body == b""
    # refused, each with its reason; none reached the upstream, none needed a key
    assert preflight(gw.port, "https://evil.example").status == 403
    assert preflight(gw.port, APP, method="DELETE").status == 403
    bad_header = preflight(gw.port, APP, headers="x-secret")
    assert bad_header.status == 403 and "x-secret" in bad_header.json()["detail"]
    assert len(upstream.requests) == before
    records = gw.wait_log(4)
    assert [r.get("denial") for r in records[-4:]] == [
        "cors.preflight",
        "cors.origin",
        "cors.method",
        "cors.headers",
    ]


def test_cors_headers_on_actual_responses(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    secrets_dir: Path,
) -> None:
    gw = gateway_factory(cors_config(upstream.port, secrets_dir))
    key, _ = issue(gw, "web")
    header = f"X-API-Key: {key}\r\nOrigin: {APP}\r\n"
    wait_until(lambda: get(gw.port, "/browser/x", headers=header).status == 200, 5, "the key")
    resp = get(gw.port, "/browser/x", headers=header)
    assert resp.header(b"access-control-allow-origin") == APP.encode()
    assert resp.header(b"access-control-expose-headers") == b"x-trace"
    assert resp.header(b"vary") == b"Origin"
    other = get(gw.port, "/browser/x", headers=f"X-API-Key: {key}\r\nOrigin: https://evil.example\r\n")
    assert other.status == 200 and other.header(b"access-control-allow-origin") is None


def test_security_headers_replace_upstream_copies_and_hsts_only_over_tls(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    def handler(req: SeenRequest) -> bytes:
        resp = ok_response(req)
        return resp.replace(
            b"\r\n\r\n", b"\r\nserver: leaky/1.0\r\nx-content-type-options: sniff-away\r\n\r\n", 1
        )

    upstream.handler = handler
    certs = write_dev_certificates(tmp_path / "certs")
    tls_port = free_port()
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra=f"""
            [security_headers]
            frame_options = "DENY"
            remove = ["server"]

            [[listeners]]
            name = "tls"
            bind = "127.0.0.1:{tls_port}"
            tls = {{ certificates = [{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}] }}
            """,
        )
    )
    plain = get(gw.port, "/x")
    assert plain.header(b"x-content-type-options") == b"nosniff"
    assert [v for k, v in plain.headers if k == b"x-content-type-options"] == [b"nosniff"]
    assert plain.header(b"referrer-policy") == b"strict-origin-when-cross-origin"
    assert plain.header(b"x-frame-options") == b"DENY"
    assert plain.header(b"server") is None
    assert plain.header(b"strict-transport-security") is None  # never over plain HTTP
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    with client_context(certs).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        secure = ResponseReader(sock).read()  # type: ignore[arg-type]
    assert secure.header(b"strict-transport-security") == b"max-age=31536000"


def _h1(port: int, raw: bytes, tls: ssl.SSLContext | None) -> Response:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    with tls.wrap_socket(sock, server_hostname="localhost") if tls is not None else sock as conn:
        conn.sendall(raw)
        return ResponseReader(conn).read()  # type: ignore[arg-type]


def _h2(
    port: int, path: str, method: str, headers: list[tuple[bytes, bytes]], tls: ssl.SSLContext | None
) -> Any:
    if tls is not None:
        tls.set_alpn_protocols(["h2"])
    client = H2Client(port, tls=tls)
    try:
        return client.request(path, method=method, headers=headers)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"])
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_gateway_made_answers_carry_cors_and_security_headers(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    secrets_dir: Path,
    tmp_path: Path,
    protocol: str,
    secure: bool,
) -> None:
    """A browser app must be able to read its own 401 (CORS), and a denial is as hardened as a proxied
    response: security headers always, HSTS over TLS. Answers outside a route get the security headers."""
    certs = write_dev_certificates(tmp_path / "certs")
    tls_port = free_port()
    gw = gateway_factory(
        cors_config(upstream.port, secrets_dir)
        + f"""
        [[listeners]]
        name = "tls"
        bind = "127.0.0.1:{tls_port}"
        tls = {{ certificates = [{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}] }}
        """
    )
    port, tls = (tls_port, client_context(certs)) if secure else (gw.port, None)

    def ask(
        method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, Callable[[bytes], list[bytes]]]:
        if protocol == "h2":
            resp = _h2(port, path, method, headers, tls)
            fields = resp.headers
        else:
            lines = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            resp = _h1(
                port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + lines + b"\r\n", tls
            )
            fields = resp.headers
        return resp.status, lambda name: [v for k, v in fields if k == name]

    status, header = ask("GET", "/browser/x", [(b"origin", APP.encode())])  # no key
    assert status == 401 and header(b"www-authenticate")
    assert header(b"access-control-allow-origin") == [APP.encode()]
    assert header(b"access-control-expose-headers") == [b"x-trace"] and header(b"vary") == [b"Origin"]
    assert header(b"referrer-policy") == [b"strict-origin-when-cross-origin"]
    assert header(b"x-content-type-options") == [b"nosniff"]  # once: the problem's own is not repeated
    assert header(b"strict-transport-security") == ([b"max-age=31536000"] if secure else [])
    status, header = ask("GET", "/browser/x", [(b"origin", b"https://evil.example")])
    assert status == 401 and header(b"access-control-allow-origin") == [] and header(b"vary") == [b"Origin"]
    # The preflight keeps its own CORS headers, not doubled by the route's hook.
    status, header = ask(
        "OPTIONS", "/browser/x", [(b"origin", APP.encode()), (b"access-control-request-method", b"GET")]
    )
    assert status == 204 and header(b"access-control-allow-origin") == [APP.encode()]
    assert header(b"vary") == [b"Origin"]
    # Refused before any route is chosen (405 from the router): security headers, no CORS.
    status, header = ask("DELETE", "/browser/x", [(b"origin", APP.encode())])
    assert status == 405 and header(b"access-control-allow-origin") == []
    assert header(b"referrer-policy") == [b"strict-origin-when-cross-origin"]
    assert header(b"strict-transport-security") == ([b"max-age=31536000"] if secure else [])
    if protocol == "http/1.1":  # a request that cannot be parsed: no route, same hardening
        broken = _h1(port, b"GET /x HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n", tls)
        assert (
            broken.status == 400 and broken.header(b"referrer-policy") == b"strict-origin-when-cross-origin"
        )
        assert broken.header(b"strict-transport-security") == (b"max-age=31536000" if secure else None)


def test_connection_limit_answer_carries_security_headers(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, server="max_connections_per_ip = 1"))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as first:
        first.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert ResponseReader(first).read().status == 200  # admitted and held open
        refused = get(gw.port, "/x")
    assert refused.status == 503 and refused.header(b"referrer-policy") == b"strict-origin-when-cross-origin"
