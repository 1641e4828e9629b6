"""CORS preflights answered before authentication, CORS headers on responses, and security headers."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from fastgw.tls.dev_certs import write_dev_certificates
from tests.conftest import (
    Gateway,
    Response,
    ResponseReader,
    SeenRequest,
    TestUpstream,
    basic_config,
    free_port,
    get,
    ok_response,
    wait_until,
)
from tests.e2e.test_api_keys import issue, keys_config
from tests.e2e.test_tls import client_context

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
