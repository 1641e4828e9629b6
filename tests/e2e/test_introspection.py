"""OAuth2 introspection (RFC 7662) against a wire-true fake authorization server."""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import Gateway, SeenRequest, TestUpstream, basic_config, get, json_response


@pytest.fixture
def idp() -> Iterator[TestUpstream]:
    server = TestUpstream()
    answers = {
        "good-token": {"active": True, "sub": "alice", "scope": "orders:read", "exp": int(time.time()) + 600},
        "dead-token": {"active": False},
    }

    def handler(req: SeenRequest) -> bytes | None:
        form = urllib.parse.parse_qs(req.body.decode())
        token = form.get("token", [""])[0]
        if token == "hang-up":
            return None
        body = orjson.dumps(answers.get(token, {"active": False}))
        return json_response(body)

    server.handler = handler
    yield server
    server.close()


def test_introspection_checks_caches_and_fails_closed(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    (tmp_path / "client.secret").write_text("s3cr3t&=\n")
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra=f"""
            [[routes]]
            name = "orders"
            path = "/orders"
            upstream = "backend"
            auth = "introspection"
            authorize = {{ scopes = ["orders:read"] }}

            [introspection]
            url = "http://127.0.0.1:{idp.port}/oauth2/introspect"
            client_id = "fastgw"
            client_secret = {{ file = "{tmp_path / "client.secret"}" }}
            timeout = 1.0
            """,
        )
    )
    ok = get(gw.port, "/orders/1", headers="Authorization: Bearer good-token\r\n")
    assert ok.status == 200
    call = idp.requests[-1]
    assert call.method == b"POST" and call.target == b"/oauth2/introspect"
    assert call.header(b"authorization") == b"Basic " + base64.b64encode(b"fastgw:s3cr3t%26%3D")
    assert urllib.parse.parse_qs(call.body.decode())["token"] == ["good-token"]
    seen = upstream.requests[-1]
    assert seen.header(b"authorization") is None and seen.header(b"x-consumer") == b"alice"
    for _ in range(5):  # cached: no more calls for the same token
        assert get(gw.port, "/orders/1", headers="Authorization: Bearer good-token\r\n").status == 200
    assert len(idp.requests) == 1
    dead = get(gw.port, "/orders/1", headers="Authorization: Bearer dead-token\r\n")
    assert dead.status == 401 and b'error="invalid_token"' in (dead.header(b"www-authenticate") or b"")
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer dead-token\r\n").status == 401
    assert len(idp.requests) == 2  # the inactive answer was cached too
    down = get(gw.port, "/orders/1", headers="Authorization: Bearer hang-up\r\n")
    assert down.status == 503 and down.header(b"retry-after") == b"1"  # fail closed
    assert get(gw.port, "/open").status == 200  # other routes unaffected

    # Concurrent requests with one new token share one introspection call.
    idp.delay = 0.3
    calls_before = len(idp.requests)
    results: list[int] = []

    def one() -> None:
        results.append(get(gw.port, "/orders/2", headers="Authorization: Bearer fresh-token\r\n").status)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [401] * 6
    assert len(idp.requests) - calls_before == 1
