"""JWT routes end to end: a real gateway with 2 workers, RS256 tokens, authorization from token scopes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.idp import Idp
from tests.support.memory import crypto_mapped
from tests.support.upstreams import SeenRequest, TestUpstream, json_response
from tests.support.waiting import wait_until

ISS = "https://idp.example.test/"


def test_jwt_route_with_scopes_and_identity_upstream(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra=f"""
            [[routes]]
            name = "orders"
            path = "/orders"
            upstream = "backend"
            auth = "jwt"
            authorize = {{ scopes = ["orders:read"] }}

            [jwt.issuers.idp]
            issuer = "{ISS}"
            audiences = ["api://orders"]
            algorithms = ["RS256"]
            public_keys = ["{pem}"]
            team_claim = "org"
            """,
        ),
        workers=2,
    )
    now = int(time.time())
    base = {"iss": ISS, "aud": "api://orders", "sub": "alice", "exp": now + 60, "org": "payments"}
    good = jwt.encode({**base, "scope": "orders:read profile"}, key, algorithm="RS256")
    narrow = jwt.encode({**base, "scope": "profile"}, key, algorithm="RS256")
    resp = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {good}\r\n")
    assert resp.status == 200
    seen = upstream.requests[-1]
    assert seen.header(b"authorization") is None  # the token is not forwarded
    assert crypto_mapped(gw.worker_pid()), "a [jwt] table's workers load pyjwt and cryptography"
    assert seen.header(b"x-consumer") == b"alice"
    assert seen.header(b"x-consumer-team") == b"payments"
    assert seen.header(b"x-consumer-scopes") == b"orders:read profile"
    refused = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {narrow}\r\n")
    assert refused.status == 403 and b'scope="orders:read"' in (refused.header(b"www-authenticate") or b"")
    missing = get(gw.port, "/orders/1")
    assert missing.status == 401 and missing.header(b"www-authenticate") == b'Bearer realm="fastgw"'
    expired = jwt.encode({**base, "exp": now - 3600, "scope": "orders:read"}, key, algorithm="RS256")
    bad = get(gw.port, "/orders/1", headers=f"Authorization: Bearer {expired}\r\n")
    assert bad.status == 401 and b'error="invalid_token"' in (bad.header(b"www-authenticate") or b"")
    records = gw.wait_log(4)  # two workers write the log: compare as a set, not in order
    denials = sorted(r.get("denial", "") for r in records[-4:])
    assert denials == ["", "authorize.scope", "jwt.expired", "jwt.missing"]
    assert good not in gw.access_log.read_text() and good not in gw.stderr()


def test_jwks_url_by_discovery_rotation_and_stale_keys(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    idp = TestUpstream()
    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        d["kid"] = kid
        return d  # type: ignore[no-any-return]

    published = [jwk(key_a, "a")]
    state = {"up": True}

    def handler(req: SeenRequest) -> bytes | None:
        if not state["up"]:
            return None
        if req.target == b"/.well-known/openid-configuration":
            body = json.dumps({"issuer": ISS, "jwks_uri": f"http://127.0.0.1:{idp.port}/keys"}).encode()
        elif req.target == b"/keys":
            body = json.dumps({"keys": published}).encode()
        else:
            return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        return json_response(body)

    idp.handler = handler
    try:
        gw = gateway_factory(
            basic_config(
                upstream.port,
                extra=f"""
                [[routes]]
                name = "orders"
                path = "/orders"
                upstream = "backend"
                auth = "jwt"

                [jwt]
                negative_ttl = 0.1

                [jwt.issuers.idp]
                issuer = "{ISS}"
                audiences = []
                algorithms = ["ES256"]
                discovery_url = "http://127.0.0.1:{idp.port}/.well-known/openid-configuration"
                jwks_min_interval = 0.2
                jwks_refresh = 60
                """,
            )
        )
        claims = {"iss": ISS, "sub": "bob", "exp": int(time.time()) + 120}
        token_a = jwt.encode(claims, key_a, algorithm="ES256", headers={"kid": "a"})
        token_b = jwt.encode({**claims, "sub": "carol"}, key_b, algorithm="ES256", headers={"kid": "b"})
        assert get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token_a}\r\n").status == 200
        assert get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token_b}\r\n").status == 401
        published.append(jwk(key_b, "b"))  # the provider rotates a key in
        time.sleep(0.3)  # past jwks_min_interval (and the 0.1 s negative cache)
        assert get(gw.port, "/orders/2", headers=f"Authorization: Bearer {token_b}\r\n").status == 200
        state["up"] = False  # the provider goes down: the keys already fetched keep working
        time.sleep(0.3)
        other = jwt.encode({**claims, "sub": "dave"}, key_a, algorithm="ES256", headers={"kid": "zzz"})
        # An unknown kid while the provider is down may be a key rotated in meanwhile: the gateway cannot
        # tell, so 503 with Retry-After (its failure, not the client's), never a 401 telling a client with
        # a good token that it is wrong.
        refused = get(gw.port, "/orders/3", headers=f"Authorization: Bearer {other}\r\n")
        assert refused.status == 503 and refused.header(b"retry-after") == b"5"
        assert b"jwt.keys_unavailable" not in refused.body and b"signing keys" in refused.body
        fresh_a = jwt.encode({**claims, "sub": "erin"}, key_a, algorithm="ES256", headers={"kid": "a"})
        assert get(gw.port, "/orders/4", headers=f"Authorization: Bearer {fresh_a}\r\n").status == 200
        assert "of issuer 'idp' failed" in gw.stderr() and "serving stale keys fetched" in gw.stderr()
        state["up"] = True  # back: the set is fetched again, and the unknown kid is a client's error again
        wait_until(
            lambda: get(gw.port, "/orders/5", headers=f"Authorization: Bearer {other}\r\n").status == 401,
            5,
            "the unknown kid refused with 401 once the provider answers again",
        )
        targets = [r.target for r in idp.requests]
        assert targets[0] == b"/.well-known/openid-configuration" and b"/keys" in targets
    finally:
        idp.close()


def test_last_good_jwks_survive_reload_and_worker_kill_while_the_idp_is_down(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """IdP up: tokens work; IdP down, then a reload and a kill -9 of a worker: the new snapshot and the
    new worker start from the saved last-good keys, so known-kid tokens still pass on every worker."""
    import json
    import os
    import re
    import signal
    import stat

    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.support.waiting import wait_until

    idp = TestUpstream()
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "a"
    state = {"up": True}

    def handler(req: SeenRequest) -> bytes | None:
        if not state["up"]:
            return None  # the connection is dropped: the provider is down
        return json_response(json.dumps({"keys": [jwk]}).encode())

    idp.handler = handler

    def fresh_token() -> str:  # a new token string each time: no worker has it cached
        claims = {"iss": ISS, "sub": f"u{time.monotonic_ns()}", "exp": int(time.time()) + 120}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "a"})

    def statuses(n: int = 16) -> set[int]:
        """Statuses of n fresh tokens, each on a new connection (so both workers answer some)."""
        return {
            get(gw.port, "/orders/1", headers=f"Authorization: Bearer {fresh_token()}\r\n").status
            for _ in range(n)
        }

    try:
        gw = gateway_factory(
            basic_config(
                upstream.port,
                extra=f"""
                [[routes]]
                name = "orders"
                path = "/orders"
                upstream = "backend"
                auth = "jwt"

                [jwt.issuers.idp]
                issuer = "{ISS}"
                audiences = []
                algorithms = ["ES256"]
                jwks_url = "http://127.0.0.1:{idp.port}/keys"
                jwks_min_interval = 0.2
                jwks_refresh = 0.5
                """,
            ),
            workers=2,
        )
        wait_until(lambda: statuses() == {200}, 5, "the keys on both workers")
        saved = list((gw.state / "jwks").glob("*.json"))
        assert len(saved) == 1 and stat.S_IMODE(saved[0].stat().st_mode) == 0o600
        assert stat.S_IMODE((gw.state / "jwks").stat().st_mode) == 0o700

        state["up"] = False
        wait_until(lambda: "serving stale keys" in gw.stderr(), 5, "a failed refresh")
        gw.config.write_text(gw.config.read_text() + "\n# reloaded while the provider is down\n")
        mark = len(gw.stderr())
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: re.search(r"reload \(\w+\) complete", gw.stderr()[mark:]), 10, "the reload")

        def every_worker_restored() -> bool:
            """Every request passes, and each live worker has said it serves the saved keys (it says so
            on its first request under the new snapshot: proof that it answered one)."""
            assert statuses() == {200}
            text = gw.stderr()[mark:]
            line = "]: issuer 'idp': starting with the keys saved"
            return all(f"fastgw[{gw.worker_pid(slot)}{line}" in text for slot in (0, 1))

        wait_until(every_worker_restored, 10, "both workers of the new snapshot")
        victim = gw.worker_pid(1)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(1) != victim, 10, "a replacement worker")
        wait_until(every_worker_restored, 10, "the replacement worker")
        assert idp.requests and all(r.target == b"/keys" for r in idp.requests)
        assert "Traceback" not in gw.stderr()
    finally:
        idp.close()


def test_the_same_sub_from_two_issuers_counts_apart_once_their_consumer_ids_are_prefixed(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """'alice' of one identity provider and 'alice' of another: without a consumer_prefix they are one
    consumer (the start log warns, and they share a per-consumer limit); with one, each counts alone and
    the upstream is told which alice called."""
    import signal

    okta = Idp.create(tmp_path, "okta", "https://okta.example.test/")
    entra = Idp.create(tmp_path, "entra", "https://entra.example.test/")
    route = """
        [[routes]]
        name = "orders"
        path = "/orders"
        upstream = "backend"
        auth = "jwt"
        jwt = { issuers = ["okta", "entra"] }
        limits = [{ name = "per-user", rate = 2, per = 60.0, key = "consumer" }]
        """
    issuers = okta.issuer_table() + entra.issuer_table()
    gw = gateway_factory(basic_config(upstream.port, extra=route + issuers))
    from_okta, from_entra = okta.token(sub="alice"), entra.token(sub="alice")

    def status(token: str) -> int:
        return get(gw.port, "/orders/1", headers=f"Authorization: Bearer {token}\r\n").status

    warning = "warning: routes[1] (orders): jwt issuers 'okta' and 'entra' give their users the same"
    assert warning in gw.stderr()
    assert [status(from_okta), status(from_okta), status(from_entra)] == [200, 200, 429]  # one alice
    assert upstream.requests[-1].header(b"x-consumer-id") == b"alice"

    text = gw.config.read_text()
    text = text.replace(okta.issuer_table(), okta.issuer_table('consumer_prefix = "okta:"'))
    text = text.replace(entra.issuer_table(), entra.issuer_table('consumer_prefix = "entra:"'))
    assert 'consumer_prefix = "okta:"' in text and 'consumer_prefix = "entra:"' in text
    gw.config.write_text(text)
    mark = len(gw.stderr())
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr()[mark:], 10, "the reload")
    assert "same consumer ids" not in gw.stderr()[mark:]

    assert [status(from_okta), status(from_okta), status(from_okta)] == [200, 200, 429]
    seen = len(upstream.requests)
    assert status(from_entra) == 200  # okta's alice is limited; entra's is another consumer
    assert len(upstream.requests) == seen + 1
    assert upstream.requests[-1].header(b"x-consumer-id") == b"entra:alice"
    assert upstream.requests[-1].header(b"x-consumer") == b"entra:alice"
    assert upstream.requests[-2].header(b"x-consumer-id") == b"okta:alice"
    denials = [r.get("denial", "") for r in gw.wait_log(7)]
    assert denials == ["", "", "rate_limit.per-user", "", "", "rate_limit.per-user", ""]
