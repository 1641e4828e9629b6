"""JWT routes end to end: a real gateway with 2 workers, RS256 tokens, authorization from token scopes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Gateway, TestUpstream, basic_config, get

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
