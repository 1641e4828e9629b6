"""kind = "static" end to end: a real gateway (supervisor, control process, worker) answers fixed
responses itself, after the route's policies, over HTTP/1.1 and h2c, and logs them like any request."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.clients import get, request
from tests.support.gateways import Gateway
from tests.support.h2client import H2Client
from tests.support.ports import free_port

KEY_RE = re.compile(r"fgw_[0-9A-Za-z]{49}")


def static_config(admin_port: int, secrets_dir: Path) -> str:
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"

        [access_log]
        target = "{{log}}"

        [[routes]]
        name = "health"
        path = "/health"
        match = "exact"
        kind = "static"
        auth = "none"
        handler = {{ body = "ok\\n", headers = {{ cache-control = "no-store" }} }}

        [[routes]]
        name = "status"
        path = "/status"
        kind = "static"
        auth = "api_key"
        [routes.handler]
        status = 503
        body = "down for maintenance"
        headers = {{ retry-after = "120" }}

        [admin]
        bind = "127.0.0.1:{admin_port}"
        token = {{ file = "{secrets_dir / "admin.token"}" }}

        [keys]
        pepper = {{ file = "{secrets_dir / "pepper"}" }}

        [api_key]
        headers = ["X-API-Key"]
        """


def cli(gw: Gateway, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "fastgw", *args, "--config", str(gw.config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def static_gateway(gateway_factory: Callable[..., Gateway], secrets_dir: Path) -> Gateway:
    return gateway_factory(static_config(free_port(), secrets_dir))


def test_static_route_over_http1_with_head_and_access_log(static_gateway: Gateway) -> None:
    gw = static_gateway
    resp = get(gw.port, "/health")
    assert resp.status == 200
    assert resp.body == b"ok\n"
    assert resp.header(b"content-type") == b"text/plain; charset=utf-8"
    assert resp.header(b"cache-control") == b"no-store"
    assert resp.header(b"x-request-id")
    head = request(gw.port, b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n", head=True)
    assert head.status == 200
    assert head.header(b"content-length") == b"3"
    assert head.body == b""
    records = gw.wait_log(2)
    assert [(r["route"], r["status"], r["method"]) for r in records] == [
        ("health", 200, "GET"),
        ("health", 200, "HEAD"),
    ]


def test_api_key_protected_static_route_401_then_200(static_gateway: Gateway) -> None:
    gw = static_gateway
    denied = get(gw.port, "/status")
    assert denied.status == 401
    assert denied.header(b"content-type") == b"application/problem+json"
    cli(gw, "consumers", "create", "ops")
    key = KEY_RE.search(cli(gw, "keys", "create", "ops"))
    assert key
    resp = get(gw.port, "/status", headers=f"X-API-Key: {key.group(0)}\r\n")
    assert resp.status == 503  # the configured answer, reached only with a valid key
    assert resp.body == b"down for maintenance"
    assert resp.header(b"retry-after") == b"120"
    records = gw.wait_log(2)
    assert [(r["route"], r["status"]) for r in records] == [("status", 401), ("status", 503)]
    assert records[0]["denial"] and "denial" not in records[1]


def test_static_route_over_h2c(static_gateway: Gateway) -> None:
    client = H2Client(static_gateway.port)
    try:
        resp = client.request("/health")
        head = client.request("/health", method="HEAD")
        denied = client.request("/status")
    finally:
        client.close()
    assert resp.status == 200 and resp.body == b"ok\n"
    assert resp.header(b"cache-control") == b"no-store"
    assert head.status == 200 and head.body == b"" and head.header(b"content-length") == b"3"
    assert denied.status == 401
    assert [r["status"] for r in static_gateway.wait_log(3)] == [200, 200, 401]
