"""OAuth2 introspection (RFC 7662) against a wire-true fake authorization server."""

from __future__ import annotations

import base64
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import SeenRequest, TestUpstream, json_response
from tests.support.waiting import wait_until

_FOR_US = {"aud": ["api://other", "api://orders"], "iss": "https://as.example.test/"}


@pytest.fixture
def idp() -> Iterator[TestUpstream]:
    server = TestUpstream()
    answers = {
        "good-token": {"active": True, "sub": "alice", "scope": "orders:read", "exp": int(time.time()) + 600},
        "dead-token": {"active": False},
        # Active, but naming its holder with a NUL (PostgreSQL's text refuses it) or a scope with a control
        # character (no header can carry it)
        "nul-subject": {"active": True, "sub": "ali\u0000ce", "exp": int(time.time()) + 600},
        "control-scope": {"active": True, "sub": "bob", "scope": "orders:read x\u0001y"},
        # Active, yet no token for this gateway (RFC 7662 4): past its exp, before its nbf, a refresh token
        # (Keycloak's "typ", RFC 7662's token_type), a DPoP-bound one, another resource's, another issuer's
        "expired-active": {"active": True, "sub": "carol", "exp": int(time.time()) - 5},
        "early-active": {"active": True, "sub": "carol", "nbf": int(time.time()) + 600},
        "refresh-typ": {"active": True, "sub": "carol", "typ": "Refresh", **_FOR_US},
        "refresh-type": {"active": True, "sub": "carol", "token_type": "refresh_token", **_FOR_US},
        "dpop-type": {"active": True, "sub": "carol", "token_type": "DPoP", **_FOR_US},
        "billing-aud": {"active": True, "sub": "carol", "aud": "api://billing", "iss": _FOR_US["iss"]},
        "other-iss": {"active": True, "sub": "carol", "aud": "api://orders", "iss": "https://evil.test/"},
        "for-us": {"active": True, "sub": "dan", "token_type": "Bearer", **_FOR_US},
    }

    def handler(req: SeenRequest) -> bytes | None:
        form = urllib.parse.parse_qs(req.body.decode())
        token = form.get("token", [""])[0]
        if token == "hang-up":
            return None
        if token == "garbled-answer":  # a 200 that is no introspection answer (RFC 7662 2.2: no "active")
            return json_response(b'{"error": "temporarily_unavailable"}')
        if token == "list-answer":
            return json_response(b"[]")
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
    # A 200 without a boolean "active" is the server failing, not a verdict: 503, and not cached as
    # inactive (the token is asked about again, and would pass once the server answers properly).
    for garbled in ("garbled-answer", "list-answer"):
        calls = len(idp.requests)
        for _ in range(2):
            answer = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {garbled}\r\n")
            assert answer.status == 503, (garbled, answer.status)
        assert len(idp.requests) - calls == 2
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
    # The outage (the hang-up, then the garbled answers) was logged once, and its end once.
    where = f"introspection endpoint http://127.0.0.1:{idp.port}/oauth2/introspect"
    err = gw.stderr()
    assert err.count(f"{where} unavailable") == 1, err
    assert err.count(f"{where} answers again") == 1, err


def introspection_config(upstream_port: int, idp_port: int, secret: Path, extra: str = "") -> str:
    secret.write_text("s3cr3t\n")
    return basic_config(
        upstream_port,
        extra=f"""
        [[routes]]
        name = "orders"
        path = "/orders"
        upstream = "backend"
        auth = "introspection"

        [introspection]
        url = "http://127.0.0.1:{idp_port}/oauth2/introspect"
        client_id = "fastgw"
        client_secret = {{ file = "{secret}" }}
        timeout = 2.0
        {extra}
        """,
    )


def test_an_active_token_naming_no_usable_identity_is_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    gw = gateway_factory(introspection_config(upstream.port, idp.port, tmp_path / "client.secret"))
    seen = len(upstream.requests)
    for token in ("nul-subject", "control-scope"):
        refused = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token}\r\n")
        assert refused.status == 401, token
        assert b'error="invalid_token"' in (refused.header(b"www-authenticate") or b"")
    assert len(upstream.requests) == seen
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer good-token\r\n").status == 200


def test_an_active_answer_for_a_token_the_gateway_must_not_take_is_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    """ "active": true is the server's word that the token is live; whether it is a bearer access token,
    within its exp and nbf by the gateway's clock, and meant for this gateway is for the gateway to check.
    An active answer past its exp passed its first request (cached until exp, already behind)."""
    gw = gateway_factory(introspection_config(upstream.port, idp.port, tmp_path / "client.secret"))
    assert "introspection.audiences is empty" in gw.stderr()  # no audience named: warned
    seen = len(upstream.requests)
    refusals = {
        "expired-active": b"has expired",
        "early-active": b"is not valid yet",
        "refresh-typ": b"is not an access token",
        "refresh-type": b"is not an access token",
        "dpop-type": b"is not an access token",
    }
    for token, detail in refusals.items():
        for _ in range(2):  # and the refusal is kept
            refused = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token}\r\n")
            assert refused.status == 401 and detail in refused.body, (token, refused.body)
            assert b'error="invalid_token"' in (refused.header(b"www-authenticate") or b"")
    assert len(upstream.requests) == seen
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer good-token\r\n").status == 200
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer billing-aud\r\n").status == 200
    calls = len(idp.requests)

    def asked_again() -> bool:
        assert get(gw.port, "/orders/1", headers="Authorization: Bearer early-active\r\n").status == 401
        return len(idp.requests) > calls

    # A not-yet-valid token's refusal is kept 1 s, not negative_ttl (10 s): it may become valid meanwhile.
    wait_until(asked_again, 3.0, "the early token asked about again")


def test_introspection_audiences_and_issuer(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    extra = 'audiences = ["api://orders"]\n        issuer = "https://as.example.test/"'
    gw = gateway_factory(introspection_config(upstream.port, idp.port, tmp_path / "client.secret", extra))
    assert "introspection.audiences is empty" not in gw.stderr()
    for token, detail in (
        ("billing-aud", b"not meant for this gateway"),
        ("good-token", b"from another issuer"),  # an answer without iss (or aud) names neither
        ("other-iss", b"from another issuer"),
    ):
        refused = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token}\r\n")
        assert refused.status == 401 and detail in refused.body, (token, refused.body)
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer for-us\r\n").status == 200
    assert upstream.requests[-1].header(b"x-consumer") == b"dan"


def test_a_random_token_flood_costs_at_most_the_throttle_allowance(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    """1,000 random opaque tokens from one address, 20 connections at once, 2 workers: the authorization
    server sees at most block_after calls per worker (failures plus calls still in flight are counted
    before each call), the rest are refused with 429 before any call."""
    block_after = 8
    gw = gateway_factory(
        introspection_config(upstream.port, idp.port, tmp_path / "client.secret")
        + f"""
        [auth_throttle]
        slow_after = 4
        delay = 0.01
        block_after = {block_after}
        block_seconds = 60
        """,
        workers=2,
    )
    idp.delay = 0.02  # calls overlap: the bound must hold for calls in flight, not only answered ones
    statuses: list[int] = []

    def client(n: int) -> None:
        with connect(gw.port, 10) as sock:
            reader = ResponseReader(sock)
            for i in range(50):
                token = base64.urlsafe_b64encode(os.urandom(24)).decode()
                head = f"GET /orders/{n}-{i} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
                sock.sendall(head.encode())
                statuses.append(reader.read(10).status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 1000 and set(statuses) <= {401, 429}
    assert len(idp.requests) <= block_after * 2, len(idp.requests)
    assert statuses.count(429) >= 1000 - block_after * 2


def test_malformed_and_oversized_tokens_never_reach_the_server(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    gw = gateway_factory(
        introspection_config(upstream.port, idp.port, tmp_path / "client.secret", "max_token_bytes = 64")
    )
    for token in ("a" * 65, "not,a;token", 'quo"te', "pad=ding", "=start"):
        bad = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token}\r\n")
        assert bad.status == 401, token
        assert b'error="invalid_token"' in (bad.header(b"www-authenticate") or b"")
    assert idp.requests == []
    ok = get(gw.port, "/orders/1", headers="Authorization: Bearer good-token\r\n")
    assert ok.status == 200 and len(idp.requests) == 1
    assert get(gw.port, "/orders/1", headers="Authorization: Bearer a.b-c_d~e+f/g==\r\n").status == 401
    assert len(idp.requests) == 2  # every b64token character is allowed, padding only at the end


def test_introspection_calls_in_flight_are_capped_per_worker(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    delay = 0.2
    arrivals: list[float] = []
    answer = idp.handler

    def timed(req: SeenRequest) -> bytes | None:
        arrivals.append(time.monotonic())
        return answer(req)

    idp.handler = timed
    idp.delay = delay
    gw = gateway_factory(
        introspection_config(upstream.port, idp.port, tmp_path / "client.secret", "max_concurrent = 2")
    )
    results: list[int] = []

    def one(i: int) -> None:
        results.append(get(gw.port, f"/orders/{i}", headers=f"Authorization: Bearer tok{i}\r\n").status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [401] * 6 and len(arrivals) == 6
    # A call starts only once an earlier one was answered (at arrival + delay): at most 2 within any delay.
    peak = max(sum(1 for a in arrivals if t - delay < a <= t) for t in arrivals)
    assert peak == 2, arrivals


def test_plain_http_introspection_url_needs_loopback_or_allow_insecure_http(tmp_path: Path) -> None:
    """Tokens and the gateway's client secret go to the endpoint: plain http:// on another host is a
    config error naming the key, unless the operator says allow_insecure_http; loopback is accepted with a
    warning (issue 20, item 7)."""
    from fastgw.config.compiler import compile_config
    from fastgw.config.loader import ConfigError

    secret = tmp_path / "client.secret"
    secret.write_text("s3cret-of-the-gateway\n")

    def compile_with(url: str, extra: str = "") -> list[str]:
        config = f"""
[[listeners]]
bind = "127.0.0.1:8080"
[state]
dir = "{tmp_path / "state"}"
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "introspection"
[introspection]
url = "{url}"
client_id = "gateway"
client_secret = {{ file = "{secret}" }}
{extra}
"""
        return compile_config(config.encode(), str(tmp_path / "gw.toml")).warnings

    with pytest.raises(ConfigError, match=r"introspection\.url: is plain http://"):
        compile_with("http://auth.example.test/introspect")
    allowed = compile_with("http://auth.example.test/introspect", "allow_insecure_http = true")
    assert any("introspection.url is plain http" in w for w in allowed)
    assert any("introspection.url is plain http" in w for w in compile_with("http://127.0.0.1:9/i"))
    assert not any("plain http" in w for w in compile_with("https://auth.example.test/introspect"))
    # An empty issuer or audience would refuse every token: a config error naming the key.
    with pytest.raises(ConfigError, match=r"introspection\.issuer: must not be empty"):
        compile_with("https://auth.example.test/introspect", 'issuer = ""')
    with pytest.raises(ConfigError, match=r"introspection\.audiences\[1\]: must not be empty"):
        compile_with("https://auth.example.test/introspect", 'audiences = ["api", ""]')
