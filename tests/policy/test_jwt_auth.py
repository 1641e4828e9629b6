"""The JWT policy against the classic attacks, compiled from a real config, with real keys and tokens.

In-process (a policy's ``check`` is synchronous); tokens are made with pyjwt and cryptography the way an
attacker or an identity provider would make them.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastgw.config.compiler import compile_config
from fastgw.config.context import CompileContext
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.policy.jwt_auth import JwtAuth
from tests.support.clock import FakeClock

ISS = "https://idp.example.test/"
AUD = "api://orders"
HMAC_SECRET = "s" * 40


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def make_policy(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Callable[..., JwtAuth]:
    (tmp_path / "rsa.pem").write_bytes(pem_public(rsa_key))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwk["kid"] = "ec-1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))

    # These tests send hundreds of bad tokens on purpose: throttling is off unless a test sets it.
    def make(
        extra: str = "",
        jwt_options: str = "",
        throttle: str = "enabled = false",
        route: str = "",
        clock: FakeClock | None = None,
    ) -> JwtAuth:
        config = f"""
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "jwt"
{route}
[auth_throttle]
{throttle}
[jwt]
negative_ttl = 30.0
{jwt_options}
[jwt.issuers.idp]
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["RS256", "ES256"]
public_keys = ["{tmp_path / "rsa.pem"}"]
jwks_file = "{tmp_path / "jwks.json"}"
leeway = 5
{extra}
"""
        file = str(tmp_path / "gw.toml")
        context = CompileContext(file, clock=clock) if clock is not None else None
        snapshot = compile_config(config.encode(), file, context)
        policy = snapshot.routes[0].chain[0]
        assert isinstance(policy, JwtAuth)
        return policy

    return make


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now, "scope": "orders:read"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def check(policy: JwtAuth, token: str | bytes, *, header: bytes = b"authorization") -> Denial | Exchange:
    value = token if isinstance(token, bytes) else token.encode()
    ex = Exchange(b"GET", b"/", b"1.1", [(header, b"Bearer " + value)])
    outcome = policy.check(ex)
    return outcome if isinstance(outcome, Denial) else ex


def reason(outcome: Denial | Exchange) -> str:
    return outcome.reason if isinstance(outcome, Denial) else "ok"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_rs256_and_es256_tokens_pass_and_map_claims(
    make_policy: Callable[..., JwtAuth], rsa_key: Any, ec_key: Any
) -> None:
    policy = make_policy()
    ok = check(policy, jwt.encode(claims(roles=["reader"]), rsa_key, algorithm="RS256"))
    assert isinstance(ok, Exchange)
    assert ok.consumer.consumer == "alice" and ok.consumer.scopes == {"orders:read"}
    assert ok.consumer.roles == {"reader"}
    es = check(
        policy,
        jwt.encode(claims(scp=["a", "b"], scope=None), ec_key, algorithm="ES256", headers={"kid": "ec-1"}),
    )
    assert isinstance(es, Exchange) and es.consumer.scopes == {"a", "b"}


def test_alg_none_is_refused(make_policy: Callable[..., JwtAuth]) -> None:
    token = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + "."
    assert reason(check(make_policy(), token)) == "jwt.algorithm"


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    make_policy: Callable[..., JwtAuth], rsa_key: Any
) -> None:
    import hashlib
    import hmac

    public_pem = pem_public(rsa_key)
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert reason(check(make_policy(), signing_input + "." + b64(signature))) == "jwt.algorithm"


def test_kid_tricks_and_key_urls_in_headers_are_not_used(
    make_policy: Callable[..., JwtAuth], ec_key: Any
) -> None:
    policy = make_policy()
    attacker = ec.generate_private_key(ec.SECP256R1())
    for kid in ("../../../../dev/null", "ec-1' OR '1'='1", "unknown", "/etc/passwd"):
        token = jwt.encode(claims(), attacker, algorithm="ES256", headers={"kid": kid})
        assert reason(check(policy, token)) == "jwt.kid", kid
    # jku / x5u / an embedded jwk point at the attacker's key: ignored, so the signature fails.
    attacker_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    token = jwt.encode(
        claims(),
        attacker,
        algorithm="ES256",
        headers={
            "kid": "ec-1",
            "jku": "https://evil.test/jwks",
            "x5u": "https://evil.test/c",
            "jwk": attacker_jwk,
        },
    )
    assert reason(check(policy, token)) == "jwt.signature"
    # No kid: the only key without one is RSA, which ES256 cannot use: refused rather than guessed.
    assert reason(check(policy, jwt.encode(claims(), attacker, algorithm="ES256"))) == "jwt.kid"
    # A kid naming a key of another family is refused the same way.
    rsa_attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), rsa_attacker, algorithm="RS256", headers={"kid": "ec-1"})
    assert reason(check(policy, token)) == "jwt.kid"


def test_time_claims(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    policy = make_policy()
    now = int(time.time())
    assert (
        reason(check(policy, jwt.encode(claims(exp=now - 60), rsa_key, algorithm="RS256"))) == "jwt.expired"
    )
    assert (
        reason(check(policy, jwt.encode(claims(exp=now - 2), rsa_key, algorithm="RS256"))) == "ok"
    )  # leeway 5
    assert (
        reason(check(policy, jwt.encode(claims(nbf=now + 120), rsa_key, algorithm="RS256")))
        == "jwt.not_before"
    )
    assert reason(check(policy, jwt.encode(claims(exp=None), rsa_key, algorithm="RS256"))) == "jwt.claims"


def test_issuer_and_audience(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    policy = make_policy()
    assert (
        reason(check(policy, jwt.encode(claims(iss="https://evil.test/"), rsa_key, algorithm="RS256")))
        == "jwt.issuer"
    )
    assert (
        reason(check(policy, jwt.encode(claims(aud="api://other"), rsa_key, algorithm="RS256")))
        == "jwt.audience"
    )
    assert reason(check(policy, jwt.encode(claims(aud=None), rsa_key, algorithm="RS256"))) == "jwt.claims"


def test_tampered_payload_or_signature(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    policy = make_policy()
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    head, payload, sig = token.split(".")
    forged = b64(json.dumps(claims(sub="mallory", scope="admin")).encode())
    assert reason(check(policy, f"{head}.{forged}.{sig}")) == "jwt.signature"
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert reason(check(policy, f"{head}.{payload}.{flipped}")) == "jwt.signature"
    assert reason(check(policy, "not.a.jwt")) == "jwt.malformed"


def test_oversized_and_duplicate_and_missing(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    policy = make_policy(jwt_options="max_token_bytes = 512")
    big = jwt.encode(claims(padding="x" * 1000), rsa_key, algorithm="RS256")
    assert reason(check(policy, big)) == "jwt.too_large"
    token = jwt.encode(claims(), rsa_key, algorithm="RS256").encode()
    ex = Exchange(
        b"GET", b"/", b"1.1", [(b"authorization", b"Bearer " + token), (b"authorization", b"Bearer x")]
    )
    dup = policy.check(ex)
    assert isinstance(dup, Denial) and dup.status == 400
    missing = policy.check(Exchange(b"GET", b"/", b"1.1", []))
    assert (
        isinstance(missing, Denial)
        and missing.status == 401
        and missing.headers == ((b"www-authenticate", b'Bearer realm="fastgw"'),)
    )


@pytest.mark.parametrize(
    "bad", [{"sub": "\ud800"}, {"sub": "ali\x00ce"}, {"sub": "ali\rce"}, {"scope": "orders:read a\x01b"}]
)
def test_a_claim_no_log_store_or_header_can_hold_is_refused(
    make_policy: Callable[..., JwtAuth], rsa_key: Any, bad: dict[str, str]
) -> None:
    """JSON allows a lone surrogate ("\\ud800"), which no encoder writes: such a consumer name made a whole
    batch of access-log lines unwritable (a role or scope: every request's upstream head); a NUL is
    refused by PostgreSQL's text (the ledger's flush); a CR or LF cannot go in a header."""
    token = jwt.encode(claims(**bad), rsa_key, algorithm="RS256")
    assert reason(check(make_policy(), token)) == "jwt.claims"
    assert reason(check(make_policy(), jwt.encode(claims(), rsa_key, algorithm="RS256"))) == "ok"


def test_verified_and_refused_tokens_are_cached(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    clock = FakeClock()
    policy = make_policy(clock=clock)
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), attacker, algorithm="RS256")
    for _ in range(100):
        assert reason(check(policy, good)) == "ok"
        assert reason(check(policy, forged)) == "jwt.signature"
    assert policy.verifications == 2  # a flood of one forged token costs one verification
    short = jwt.encode(claims(exp=int(time.time()) - 4), rsa_key, algorithm="RS256")  # within leeway
    assert reason(check(policy, short)) == "ok"
    clock.advance(1.2)  # the injected clock: no sleep
    assert reason(check(policy, short)) == "jwt.expired"  # the cache honours expiry (+ leeway)


def test_a_token_used_before_its_nbf_passes_as_soon_as_it_is_valid(
    make_policy: Callable[..., JwtAuth], rsa_key: Any
) -> None:
    """A refusal for a token not yet valid was kept negative_ttl (30 s) like a forged one's: a token used
    the moment it was issued, by a client whose clock runs ahead, was refused for half a minute."""
    clock = FakeClock()
    policy = make_policy(clock=clock)
    early = jwt.encode(claims(nbf=int(time.time()) + 6), rsa_key, algorithm="RS256")  # leeway 5: ~1 s early
    assert reason(check(policy, early)) == "jwt.not_before"
    waited = 0.0
    deadline = time.monotonic() + 5.0
    while reason(check(policy, early)) != "ok":
        assert time.monotonic() < deadline, "still refused"
        clock.advance(0.25)  # the cache's clock; the token's validity runs on the real one
        waited += 0.25
        time.sleep(0.05)
    assert waited < 10.0  # well inside the 30 s a refusal is kept for


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[jwt.issuers.b]\nissuer = "x"\naudiences = []\nalgorithms = ["none"]', "'none' is never allowed"),
        (
            '[jwt.issuers.b]\nissuer = "x"\naudiences = []\nalgorithms = ["HS256"]',
            "HS* algorithms need a shared secret",
        ),
        (
            '[jwt.issuers.b]\nissuer = "x"\naudiences = []\nalgorithms = ["RS256"]',
            "need public_keys, jwks_file or jwks_url",
        ),
    ],
)
def test_unsafe_issuer_configs_are_refused(
    make_policy: Callable[..., JwtAuth], extra: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_policy(extra)


def test_a_private_key_file_is_refused(
    tmp_path: Path, make_policy: Callable[..., JwtAuth], rsa_key: Any
) -> None:
    private = tmp_path / "leak.pem"
    private.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    extra = (
        f'[jwt.issuers.b]\nissuer = "x"\naudiences = []\nalgorithms = ["RS256"]\npublic_keys = ["{private}"]'
    )
    with pytest.raises(ConfigError, match="holds a private key"):
        make_policy(extra)


def test_hmac_issuer(make_policy: Callable[..., JwtAuth], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_TEST_SECRET", HMAC_SECRET)
    policy = make_policy(
        '[jwt.issuers.svc]\nissuer = "svc"\naudiences = ["internal"]\nalgorithms = ["HS256"]\n'
        'secret = { env = "JWT_TEST_SECRET" }',
        route='jwt = { issuers = ["idp", "svc"] }',
    )
    token = jwt.encode(claims(iss="svc", aud="internal"), HMAC_SECRET, algorithm="HS256")
    assert reason(check(policy, token)) == "ok"
    wrong = jwt.encode(claims(iss="svc", aud="internal"), "t" * 40, algorithm="HS256")
    assert reason(check(policy, wrong)) == "jwt.signature"


def test_nested_jwe_is_decrypted_then_verified(
    make_policy: Callable[..., JwtAuth], rsa_key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from joserfc import jwe as jose_jwe
    from joserfc.jwk import RSAKey

    gateway_key = RSAKey.generate_key(2048)
    (tmp_path / "jwe.pem").write_bytes(gateway_key.as_pem(private=True))
    policy = make_policy(
        jwt_options=f'jwe = {{ key = {{ file = "{tmp_path / "jwe.pem"}" }}, required = true }}'
    )
    registry = jose_jwe.JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])
    inner = jwt.encode(claims(sub="nested"), rsa_key, algorithm="RS256")
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}
    outer = jose_jwe.encrypt_compact(header, inner.encode(), gateway_key, registry=registry)
    ok = check(policy, outer)
    assert isinstance(ok, Exchange) and ok.consumer.consumer == "nested"
    assert reason(check(policy, inner)) == "jwt.jwe_required"  # plain JWS refused when JWE is required
    other = RSAKey.generate_key(2048)
    wrong = jose_jwe.encrypt_compact(header, inner.encode(), other, registry=registry)
    assert reason(check(policy, wrong)) == "jwt.decrypt"
    # The inner token is verified like any other: an encrypted forgery still fails its signature.
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jose_jwe.encrypt_compact(
        header, jwt.encode(claims(), attacker, algorithm="RS256").encode(), gateway_key, registry=registry
    )
    assert reason(check(policy, forged)) == "jwt.signature"


def test_failed_tokens_are_throttled_per_client(make_policy: Callable[..., JwtAuth], rsa_key: Any) -> None:
    from fastgw.policy.chain import Pending

    policy = make_policy(throttle="slow_after = 2\nblock_after = 4\ndelay = 0.5\nblock_seconds = 60")

    def attempt(token: str, ip: str) -> Any:
        ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", b"Bearer " + token.encode())])
        ex.client_ip = ip
        outcome = policy.check(ex)
        if isinstance(outcome, Pending):
            outcome.awaitable.close()  # type: ignore[attr-defined]  # not awaited here: it only sleeps
            return "slowed"
        return outcome.reason if isinstance(outcome, Denial) else "ok"

    outcomes = [attempt(f"bad.{i}.token", "198.51.100.7") for i in range(5)]
    assert outcomes == ["jwt.malformed", "jwt.malformed", "slowed", "jwt.malformed", "auth_throttle.blocked"]
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert attempt(good, "198.51.100.7") == "auth_throttle.blocked"  # blocked before any verification
    assert attempt(good, "198.51.100.8") == "ok"  # other clients are not affected


def test_numeric_dates_and_unpadded_base64url_are_required(
    make_policy: Callable[..., JwtAuth], rsa_key: Any
) -> None:
    """RFC 7519 2: NumericDate is a JSON number; RFC 7515 2: base64url without '=' padding."""
    policy = make_policy()
    now = int(time.time())
    for name, value in (("exp", str(now + 300)), ("nbf", str(now - 10)), ("iat", str(now)), ("exp", True)):
        token = jwt.encode(claims(**{name: value}), rsa_key, algorithm="RS256")
        assert reason(check(policy, token)) == "jwt.claims", (name, value)
    token = jwt.encode(claims(exp=now + 300.5), rsa_key, algorithm="RS256")
    assert reason(check(policy, token)) == "ok"  # a fraction is a number too
    good = jwt.encode(claims(sub="bob"), rsa_key, algorithm="RS256")
    head, payload, sig = good.split(".")
    assert reason(check(policy, f"{head}.{payload}.{sig}=")) == "jwt.malformed"
    assert reason(check(policy, f"{head}=.{payload}.{sig}")) == "jwt.malformed"
    assert reason(check(policy, f"{head}.{payload}.")) == "jwt.signature"
    assert reason(check(policy, good)) == "ok"
