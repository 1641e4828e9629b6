"""Remote key sets against a real local JWKS / OIDC discovery server, through the compiled JWT policy.

In-process: a policy's ``check`` is synchronous; a ``Pending`` (cold JWKS fetch) is awaited here the way a
connection would park the request. The identity provider is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import secrets
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, run_chain
from fastgw.policy.jwt_auth import JwtAuth
from fastgw.snapshot import Snapshot
from tests.support.upstreams import SeenRequest, TestUpstream, json_response

ISS = "https://idp.example.test/"
SVC_ISSUER = """
[jwt.issuers.svc]
issuer = "svc"
audiences = []
algorithms = ["HS256"]
secret = { env = "SVC_SECRET" }
"""


def jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d["kid"] = kid
    return d


class Idp:
    """A JWKS (and discovery) server whose documents and availability the test changes."""

    def __init__(self) -> None:
        self.server = TestUpstream()
        self.port = self.server.port
        self.keys: list[dict[str, Any]] = []
        self.discovery: dict[str, Any] = {"issuer": ISS, "jwks_uri": f"http://127.0.0.1:{self.port}/keys"}
        self.up = True
        self.server.handler = self.handle

    def handle(self, req: SeenRequest) -> bytes | None:
        if not self.up:
            return None
        if req.target == b"/.well-known/openid-configuration":
            return json_response(json.dumps(self.discovery).encode())
        if str(self.discovery["jwks_uri"]).endswith(req.target.decode()):  # only the current URL
            return json_response(json.dumps({"keys": self.keys}).encode())
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    def fetches(self, path: bytes) -> int:
        return sum(1 for r in self.server.requests if r.target == path)


@pytest.fixture(autouse=True, scope="module")
def _allocation_sites() -> Iterator[None]:
    """Trace allocations in this module: CI has reported an unclosed transport at the end of one of its
    tests three times (never locally); with tracing on, the warning names where the transport was made."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(8)
    yield
    if started:
        gc.collect()  # what this module left is reported now, while its allocation sites are known
        tracemalloc.stop()


@pytest.fixture
def idp() -> Iterator[Idp]:
    server = Idp()
    yield server
    server.server.close()


def compile_with(
    tmp_path: Path, issuer: str, *, routes: str = "", extra: str = "", throttle: str = "enabled = false"
) -> Snapshot:
    route = routes or '[[routes]]\nname = "r"\npath = "/"\nupstream = "u"\nauth = "jwt"'
    config = f"""
[[listeners]]
bind = "127.0.0.1:8080"
[state]
dir = "{tmp_path / "state"}"
[upstreams.u]
targets = ["127.0.0.1:9"]
{route}
[auth_throttle]
{throttle}
[jwt]
negative_ttl = 30.0
{extra}
[jwt.issuers.idp]
issuer = "{ISS}"
audiences = []
algorithms = ["ES256"]
{issuer}
"""
    return compile_config(config.encode(), str(tmp_path / "gw.toml"))


def jwt_policy(snapshot: Snapshot) -> JwtAuth:
    policy = snapshot.routes[0].chain[0]
    assert isinstance(policy, JwtAuth)
    return policy


def remote_policy(
    tmp_path: Path, idp: Idp, min_interval: float, *, extra: str = "", throttle: str = "enabled = false"
) -> JwtAuth:
    """The jwt policy of an issuer whose keys are ``idp``'s JWKS, fetched at most every ``min_interval``
    seconds; the background refresh is 600 s off, so a test sees the fetches its requests ask for."""
    url = f'jwks_url = "http://127.0.0.1:{idp.port}/keys"'
    issuer = f"{url}\njwks_min_interval = {min_interval}\njwks_refresh = 600{extra}"
    return jwt_policy(compile_with(tmp_path, issuer, throttle=throttle))


async def outcome(policy: JwtAuth, token: str, *, spawned: bool = False, client_ip: str = "") -> str:
    """The reason a token is refused ("ok" when it passes), awaiting a JWKS fetch as a connection would
    (``spawned``: in a Task of its own, as the worker runs a parked request: it starts a loop iteration
    later)."""
    ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", b"Bearer " + token.encode())])
    ex.client_ip = client_ip
    result = policy.check(ex)
    if isinstance(result, Pending):
        if spawned:
            result = await asyncio.get_running_loop().create_task(result.awaitable)  # type: ignore[arg-type]
        else:
            result = await result.awaitable
    return result.reason if isinstance(result, Denial) else "ok"


def token(key: ec.EllipticCurvePrivateKey, kid: str, **claims: Any) -> str:
    body = {"iss": ISS, "sub": "alice", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def test_random_kid_flood_is_rate_bounded_and_a_rotated_kid_works_at_once(tmp_path: Path, idp: Idp) -> None:
    """1,000 random-kid tokens cause at most one JWKS fetch per jwks_min_interval; a kid published in
    the middle of the flood works within a second (its earlier refusal is not kept for negative_ttl)."""
    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key_a, "a")]
    interval = 0.5
    policy = remote_policy(tmp_path, idp, interval)
    rotated = token(key_b, "b")

    async def flood() -> tuple[float, int, float]:
        assert await outcome(policy, token(key_a, "a")) == "ok"
        assert await outcome(policy, rotated) == "jwt.kid"  # not published yet: refused, and remembered
        before = idp.fetches(b"/keys")
        began = time.monotonic()
        published_at, works_after = 0.0, -1.0
        for i in range(1000):
            forged = token(key_a, secrets.token_hex(8))
            assert await outcome(policy, forged) == "jwt.kid"
            if i == 500:
                idp.keys = [jwk(key_a, "a"), jwk(key_b, "b")]  # the provider rotates a key in
                published_at = time.monotonic()
            if published_at and works_after < 0 and await outcome(policy, rotated) == "ok":
                works_after = time.monotonic() - published_at
            await asyncio.sleep(0.004)  # ~1,000 tokens in ~5 s
        return time.monotonic() - began, idp.fetches(b"/keys") - before, works_after

    took, fetches, works_after = asyncio.run(flood())
    assert fetches <= took / interval + 2, (fetches, took)
    assert 0 <= works_after < 1.0, works_after
    print(
        f"\n{fetches} JWKS fetches for 1000 random kids in {took:.1f} s;"
        f" the new kid worked {works_after:.2f} s after its publication"
    )


def test_a_kid_first_seen_in_the_cooldown_works_once_the_key_is_learned(tmp_path: Path, idp: Idp) -> None:
    """No flood: one early token, refused in the cooldown, is accepted as soon as the next fetch (asked
    for by that refusal, at the end of the cooldown) brings its key."""
    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key_a, "a")]
    policy = remote_policy(tmp_path, idp, 0.3)
    early = token(key_b, "b")

    async def scenario() -> float:
        assert await outcome(policy, token(key_a, "a")) == "ok"  # the first fetch: cooldown starts
        idp.keys = [jwk(key_a, "a"), jwk(key_b, "b")]
        published = time.monotonic()
        assert await outcome(policy, early) == "jwt.kid"  # in the cooldown: refused, a fetch is asked for
        while time.monotonic() - published < 2.0:
            if await outcome(policy, early) == "ok":
                return time.monotonic() - published
            await asyncio.sleep(0.02)
        return -1.0

    took = asyncio.run(scenario())
    assert 0 <= took < 1.0, took


def test_a_kid_given_new_key_material_works_without_waiting_for_the_background_refresh(
    tmp_path: Path, idp: Idp
) -> None:
    """A provider that reuses a kid for a new key: a token signed with the new key failed its signature
    under the old one until the next background refresh (jwks_refresh, an hour by default). A failed
    signature under a fetched key now asks for a fetch, as an unknown kid does (as rate-bounded)."""
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(old, "a")]
    policy = remote_policy(tmp_path, idp, 1.0)

    async def scenario() -> None:
        assert await outcome(policy, token(old, "a")) == "ok"
        fetched = idp.fetches(b"/keys")
        deadline = time.monotonic() + 5.0
        while idp.fetches(b"/keys") == fetched:  # the background loop's first fetch, a cooldown later
            assert time.monotonic() < deadline, "the background refreshes never fetched"
            await asyncio.sleep(0.02)
        idp.keys = [jwk(new, "a")]  # its next one is jwks_refresh (600 s) away
        await asyncio.sleep(1.05)  # past the cooldown
        assert await outcome(policy, token(new, "a")) == "ok"
        assert await outcome(policy, token(old, "a", sub="bob")) == "jwt.signature"  # the old key is gone
        fetches, began = idp.fetches(b"/keys"), time.monotonic()
        for _ in range(20):  # forged signatures: refused, at most one fetch per cooldown
            assert await outcome(policy, token(old, "a", sub=secrets.token_hex(4))) == "jwt.signature"
        assert idp.fetches(b"/keys") <= fetches + 1 + (time.monotonic() - began) / 1.0

    asyncio.run(scenario())


def test_requests_parked_behind_a_fetch_never_start_another_within_the_cooldown(
    tmp_path: Path, idp: Idp
) -> None:
    """A request whose kid is unknown while a fetch is in flight waits for that fetch; its coroutine
    may start only after the fetch ended, and then started a fetch of its own whatever the cooldown:
    50 clients sending random kids chained fetches back to back against a slow provider."""
    key = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key, "a")]
    interval = 1.0
    policy = remote_policy(tmp_path, idp, interval)

    async def flood() -> tuple[float, int]:
        assert await outcome(policy, token(key, "a")) == "ok"
        idp.server.delay = 0.1  # each fetch takes a while: requests park behind it
        before = idp.fetches(b"/keys")
        began = time.monotonic()

        async def client() -> None:
            while time.monotonic() - began < 2.5:
                kid = secrets.token_hex(8)
                assert await outcome(policy, token(key, kid), spawned=True) in ("jwt.kid", "ok")
                await asyncio.sleep(0.001)

        await asyncio.gather(*(client() for _ in range(50)))
        return time.monotonic() - began, idp.fetches(b"/keys") - before

    took, fetches = asyncio.run(flood())
    assert fetches <= took / interval + 2, (fetches, took)


def test_forged_tokens_that_waited_for_a_fetch_count_as_failed_authentications(
    tmp_path: Path, idp: Idp
) -> None:
    """An unknown kid (or a failed signature) waits for a fetch of the keys; its 401 then went back
    through the Pending, which [auth_throttle] never saw: a flood of forged tokens timed past the
    cooldown was never slowed nor blocked."""
    key = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key, "a")]
    policy = remote_policy(
        tmp_path,
        idp,
        0.05,
        throttle="window = 60.0\nslow_after = 2\ndelay = 0.01\nblock_after = 3\nblock_seconds = 60.0",
    )

    # An address of its own: the worker's failure table is the process's, which later tests share.
    address = "192.0.2.77"

    async def flood() -> list[str]:
        assert await outcome(policy, token(key, "a"), client_ip=address) == "ok"
        reasons = []
        for _ in range(5):
            await asyncio.sleep(0.06)  # past the cooldown: each waits for a fetch
            reasons.append(await outcome(policy, token(key, secrets.token_hex(8)), client_ip=address))
        return reasons

    reasons = asyncio.run(flood())
    assert reasons[:3] == ["jwt.kid"] * 3 and reasons[3:] == ["auth_throttle.blocked"] * 2, reasons


def test_an_unknown_kid_while_the_provider_is_down_is_503_then_401_once_it_answers(
    tmp_path: Path, idp: Idp
) -> None:
    """Keys fetched, then the provider goes away and a token names a kid the keys lack: maybe a key
    rotated in during the outage, so the gateway cannot tell, and says so (503, not cached, not a failed
    authentication); once the provider answers, the same token is the client's error (401)."""
    key = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key, "a")]
    policy = remote_policy(tmp_path, idp, 0.1)
    unknown = token(key, "zzz")

    async def scenario() -> None:
        assert await outcome(policy, token(key, "a")) == "ok"
        idp.up = False
        await asyncio.sleep(0.15)
        assert await outcome(policy, unknown) == "jwt.keys_unavailable"  # the fetch it made failed
        assert await outcome(policy, unknown) == "jwt.keys_unavailable"  # in the cooldown: still 503
        assert await outcome(policy, token(key, "a", sub="bob")) == "ok"  # known keys keep serving
        idp.up = True
        await asyncio.sleep(0.15)
        assert await outcome(policy, unknown) == "jwt.kid"

    asyncio.run(scenario())


def test_routes_bind_issuers_and_audiences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(key, "a")]}))
    monkeypatch.setenv("SVC_SECRET", "s" * 40)
    routes = """
[[routes]]
name = "orders"
path = "/orders"
upstream = "u"
auth = "jwt"
jwt = { issuers = ["idp"], audiences = ["api://orders"] }
[[routes]]
name = "internal"
path = "/internal"
upstream = "u"
auth = "jwt"
jwt = { issuers = ["svc"] }
[[routes]]
name = "both"
path = "/both"
upstream = "u"
auth = "jwt"
jwt = { issuers = ["idp", "svc"] }
"""
    svc = SVC_ISSUER
    snapshot = compile_with(tmp_path, f'jwks_file = "{tmp_path / "jwks.json"}"\n{svc}', routes=routes)
    chains = {r.name: r.chain for r in snapshot.routes}
    idp_orders = token(key, "a", aud="api://orders")
    idp_other = token(key, "a", aud="api://billing")
    svc_token = jwt.encode({"iss": "svc", "sub": "batch", "exp": int(time.time()) + 300}, "s" * 40, "HS256")

    def reason(route: str, credential: str) -> str:
        ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", b"Bearer " + credential.encode())])
        _, result = run_chain(chains[route], ex)
        assert not isinstance(result, Pending)
        return result.reason if result is not None else "ok"

    assert reason("orders", idp_orders) == "ok"
    assert reason("orders", svc_token) == "jwt.route_issuer"
    assert reason("orders", idp_other) == "jwt.route_audience"
    assert reason("internal", svc_token) == "ok"
    assert reason("internal", idp_orders) == "jwt.route_issuer"  # cached as good by another route: still no
    assert reason("both", svc_token) == "ok" and reason("both", idp_other) == "ok"


@pytest.mark.parametrize(
    ("routes", "svc", "message"),
    [
        ("", True, "routes[0].jwt.issuers: 2 JWT issuers are configured (idp, svc): name those this route"),
        ('jwt = { issuers = ["corp"] }', False, "routes[0].jwt.issuers[0]: unknown issuer 'corp'"),
        ("jwt = { issuers = [] }", False, "routes[0].jwt.issuers: needs at least one issuer name"),
    ],
)
def test_route_binding_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routes: str, svc: bool, message: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(key, "a")]}))
    monkeypatch.setenv("SVC_SECRET", "s" * 40)
    route = f'[[routes]]\nname = "r"\npath = "/"\nupstream = "u"\nauth = "jwt"\n{routes}'
    second = SVC_ISSUER
    with pytest.raises(ConfigError, match=re.escape(message)):
        compile_with(
            tmp_path, f'jwks_file = "{tmp_path / "jwks.json"}"\n' + (second if svc else ""), routes=route
        )


def test_plain_http_identity_provider_urls(tmp_path: Path) -> None:
    for url_key in ("jwks_url", "discovery_url"):
        with pytest.raises(ConfigError, match=rf"jwt.issuers.idp.{url_key}: is plain http://"):
            compile_with(tmp_path, f'{url_key} = "http://idp.example.test/keys"')
        allowed = compile_with(
            tmp_path, f'{url_key} = "http://idp.example.test/keys"\nallow_insecure_http = true'
        )
        assert (
            f"jwt.issuers.idp.{url_key} is plain http: its keys are not protected in transit"
            in allowed.warnings
        )
        loopback = compile_with(tmp_path, f'{url_key} = "http://127.0.0.1:9/keys"')
        assert any("plain http" in w for w in loopback.warnings)


def test_discovery_checks_the_issuer_and_finds_a_moved_jwks_uri(
    tmp_path: Path, idp: Idp, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key, "a")]
    discovery = f'discovery_url = "http://127.0.0.1:{idp.port}/.well-known/openid-configuration"'
    options = "\njwks_min_interval = 0.1\njwks_refresh = 600\ndiscovery_refresh = 600"
    # OIDC Discovery 4.3: a document naming another issuer is not this issuer's.
    idp.discovery["issuer"] = "https://evil.example.test/"
    policy = jwt_policy(compile_with(tmp_path, discovery + options))
    assert asyncio.run(outcome(policy, token(key, "a"))) == "jwt.keys_unavailable"
    assert idp.fetches(b"/keys") == 0
    assert "is not the configured 'https://idp.example.test/'" in capsys.readouterr().err
    # A plain-http jwks_uri on another host is refused even when discovered over loopback.
    idp.discovery = {"issuer": ISS, "jwks_uri": "http://idp.example.test/keys"}
    policy = jwt_policy(compile_with(tmp_path, discovery + options))
    assert asyncio.run(outcome(policy, token(key, "a"))) == "jwt.keys_unavailable"
    assert "its jwks_uri is plain http://" in capsys.readouterr().err

    idp.discovery = {"issuer": ISS, "jwks_uri": f"http://127.0.0.1:{idp.port}/keys"}
    policy = jwt_policy(compile_with(tmp_path / "moved", discovery + options))

    async def scenario() -> None:
        assert await outcome(policy, token(key, "a")) == "ok"
        # The provider moves its key set: the old URL answers 404. The failed fetch makes the next one
        # read the discovery document again, which names the new URL.
        idp.discovery["jwks_uri"] = f"http://127.0.0.1:{idp.port}/keys2"
        key_b = ec.generate_private_key(ec.SECP256R1())
        idp.keys = [jwk(key, "a"), jwk(key_b, "b")]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if await outcome(policy, token(key_b, "b", sub=secrets.token_hex(4))) == "ok":
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the moved jwks_uri was never discovered")

    asyncio.run(scenario())
    assert idp.fetches(b"/keys2") >= 1


def test_stale_keys_are_logged_exported_and_bounded_by_jwks_max_stale(
    tmp_path: Path, idp: Idp, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastgw.metrics.exposition import GatewayCollector
    from fastgw.policy.jwks import STALE

    key = ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key, "a")]
    url = f'jwks_url = "http://127.0.0.1:{idp.port}/keys"\njwks_min_interval = 0.1\njwks_refresh = 600'
    policy = jwt_policy(compile_with(tmp_path, url + "\njwks_max_stale = 1"))
    remote = policy.issuers[ISS].remote
    assert remote is not None

    async def scenario() -> None:
        assert await outcome(policy, token(key, "a")) == "ok"
        idp.up = False
        assert not await remote.refresh()
        assert await outcome(policy, token(key, "a", sub="bob")) == "ok"  # stale beats down
        collector = GatewayCollector()
        collector.exports = [{"jwks_stale": dict(STALE)}]
        family = next(m for m in collector.collect() if m.name == "fastgw_jwks_stale_seconds")
        assert [s.labels for s in family.samples] == [{"issuer": "idp"}]
        await asyncio.sleep(1.1)  # past jwks_max_stale: the keys verify nothing any more
        assert await outcome(policy, token(key, "a", sub="carol")) == "jwt.keys_unavailable"

    asyncio.run(scenario())
    err = capsys.readouterr().err
    assert "fetching the JWKS of issuer 'idp' failed" in err and "serving stale keys fetched 0 s ago" in err
    # A worker or snapshot started later does not take keys older than jwks_max_stale either.
    later = jwt_policy(compile_with(tmp_path, url + "\njwks_max_stale = 1"))
    assert asyncio.run(outcome(later, token(key, "a", sub="dave"))) == "jwt.keys_unavailable"
    fresh_enough = jwt_policy(compile_with(tmp_path, url + "\njwks_max_stale = 600"))
    assert asyncio.run(outcome(fresh_enough, token(key, "a", sub="erin"))) == "ok"
    STALE.clear()


def test_a_set_with_a_malformed_key_is_a_failed_fetch_and_the_refreshes_go_on(
    tmp_path: Path, idp: Idp, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RSA key whose modulus is not one makes PyJWK raise InvalidKeyError, which is no PyJWKError: it
    escaped the fetch, killed the background refreshes for good and left every request waiting on the
    shared fetch hanging. Now it is one failed fetch: the last keys serve, an unknown kid is refused at
    once, and the refreshes bring the fixed set."""
    from fastgw.policy.jwks import STALE

    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(key_a, "a")]
    refresh = 0.3
    url = f'jwks_url = "http://127.0.0.1:{idp.port}/keys"'
    policy = jwt_policy(compile_with(tmp_path, f"{url}\njwks_min_interval = 0.1\njwks_refresh = {refresh}"))

    async def scenario() -> float:
        assert await outcome(policy, token(key_a, "a")) == "ok"  # keys learned, refreshes running
        idp.keys = [{"kty": "RSA", "kid": "k9", "n": "x", "e": "AQAB"}]
        async with asyncio.timeout(5):  # never a hang
            assert await outcome(policy, token(key_b, "b", sub="early")) == "jwt.kid"
        assert await outcome(policy, token(key_a, "a", sub="bob")) == "ok"  # the last good keys serve
        await asyncio.sleep(2 * refresh)  # background refreshes meet the malformed set again
        idp.keys = [jwk(key_a, "a"), jwk(key_b, "b")]
        fixed = time.monotonic()
        for i in range(200):
            if await outcome(policy, token(key_b, "b", sub=f"later-{i}")) == "ok":
                return time.monotonic() - fixed
            await asyncio.sleep(0.02)
        return -1.0

    took = asyncio.run(scenario())
    assert 0 <= took < 2 * refresh + 1.0, took  # a refresh or a kid-driven fetch, not a restart
    err = capsys.readouterr().err
    assert "fetching the JWKS of issuer 'idp' failed (the JWKS: keys[0]:" in err, err
    assert "Task exception was never retrieved" not in err
    STALE.clear()


def test_a_cached_token_is_verified_again_once_its_key_is_removed_or_past_max_stale(
    tmp_path: Path, idp: Idp
) -> None:
    """A token verified once was served from the cache until its exp: after the IdP removed its key (a
    leaked key rotated out), and after its issuer's keys passed jwks_max_stale (docs: 401 from then)."""
    from fastgw.policy.jwks import STALE

    leaked, kept = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    idp.keys = [jwk(leaked, "leaked"), jwk(kept, "kept")]
    url = f'jwks_url = "http://127.0.0.1:{idp.port}/keys"\njwks_min_interval = 0.1\njwks_refresh = 600'
    policy = jwt_policy(compile_with(tmp_path, url + "\njwks_max_stale = 1"))
    remote = policy.issuers[ISS].remote
    assert remote is not None
    signed_leaked, signed_kept = token(leaked, "leaked"), token(kept, "kept", sub="bob")

    async def scenario() -> None:
        assert await outcome(policy, signed_leaked) == "ok"
        assert await outcome(policy, signed_kept) == "ok"
        idp.keys = [jwk(kept, "kept")]
        assert await remote.refresh()
        assert await outcome(policy, signed_leaked) == "jwt.kid"  # not the cached "ok"
        assert await outcome(policy, signed_kept) == "ok"
        idp.up = False
        await asyncio.sleep(1.1)  # past jwks_max_stale with the IdP away
        assert await outcome(policy, signed_kept) == "jwt.keys_unavailable"

    asyncio.run(scenario())
    STALE.clear()
