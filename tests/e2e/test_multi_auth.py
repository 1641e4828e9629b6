"""Routes that accept several auth schemes, end to end: a real gateway (2 workers), keys issued through the
admin API, HS256 JWTs, a fake introspection server and TLS client certificates; HTTP/1.1 and HTTP/2.

Every combination: each scheme alone, none (a challenge per scheme), two schemes at once (refused, or all
verified with ``auth_multiple = "all"``), and a valid credential beside an invalid one (always refused: a
presented credential that fails is never skipped). Authorization rules apply whichever scheme succeeded.
"""

from __future__ import annotations

import hashlib
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import orjson
import pytest

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.api_keys import cli, issue
from tests.support.certificates import fingerprint, second_cert, tls_config, tls_request
from tests.support.clients import Response, get
from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.ports import free_port
from tests.support.upstreams import SeenRequest, TestUpstream, json_response

ISS = "https://idp.example.test/"
SECRET = "multi-auth-test-secret-of-32-bytes-at-least"


def challenges(resp: Response) -> list[bytes]:
    return [v for k, v in resp.headers if k == b"www-authenticate"]


def token(sub: str = "alice", roles: tuple[str, ...] = ("reader",), **claims: object) -> str:
    body = {"iss": ISS, "sub": sub, "exp": int(time.time()) + 120, "roles": list(roles), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path) -> Gateway:
    (secrets_dir / "jwt.secret").write_text(SECRET)
    return gateway_factory(
        basic_config(
            upstream.port,
            extra=f"""
            [[routes]]
            name = "either"
            path = "/either"
            upstream = "backend"
            auth = ["api_key", "jwt"]
            authorize = {{ roles = ["reader"] }}

            [[routes]]
            name = "both"
            path = "/both"
            upstream = "backend"
            auth = ["jwt", "api_key"]
            auth_multiple = "all"

            [[routes]]
            name = "keyonly"
            path = "/keyonly"
            upstream = "backend"
            auth = "api_key"

            [admin]
            bind = "127.0.0.1:{free_port()}"
            token = {{ file = "{secrets_dir / "admin.token"}" }}

            [keys]
            pepper = {{ file = "{secrets_dir / "pepper"}" }}

            [api_key]
            headers = ["Authorization", "X-API-Key"]

            [jwt.issuers.idp]
            issuer = "{ISS}"
            audiences = []
            algorithms = ["HS256"]
            secret = {{ file = "{secrets_dir / "jwt.secret"}" }}
            roles_claim = "roles"
            """,
        ),
        workers=2,
    )


def test_key_or_jwt_every_combination_over_http1(gw: Gateway, upstream: TestUpstream) -> None:
    key, _ = issue(gw, "acme")  # the consumer has role "reader"
    cli(gw, "consumers", "create", "guest")
    guest, _ = issue(gw, "guest")
    good, forged = token(), token()[:-4] + "AAAA"
    x_key, bearer = f"X-API-Key: {key}\r\n", f"Authorization: Bearer {good}\r\n"
    # The key was just issued: every worker has it within a second (tests/e2e/test_api_keys.py).
    deadline = time.monotonic() + 5
    while get(gw.port, "/keyonly", headers=x_key).status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)

    # Each scheme alone; the consumer is the one its scheme names, the credential is not forwarded.
    for headers, consumer in (
        (x_key, b"acme"),
        (f"Authorization: Bearer {key}\r\n", b"acme"),
        (bearer, b"alice"),
    ):
        resp = get(gw.port, "/either/1", headers=headers)
        assert resp.status == 200, (headers, resp.body)
        seen = upstream.requests[-1]
        assert seen.header(b"x-consumer") == consumer
        assert seen.header(b"authorization") is None and seen.header(b"x-api-key") is None
    # Neither: 401 with the Bearer challenge that both schemes answer to.
    none = get(gw.port, "/either/1")
    assert none.status == 401 and challenges(none) == [b'Bearer realm="fastgw"']
    assert b"api key or jwt" in none.body
    # Both, each valid: which would the upstream believe? 400.
    both = get(gw.port, "/either/1", headers=x_key + bearer)
    assert both.status == 400 and b'error="invalid_request"' in challenges(both)[0]
    # A valid key beside an invalid JWT (and the reverse) never passes.
    assert get(gw.port, "/either/1", headers=x_key + f"Authorization: Bearer {forged}\r\n").status == 400
    # A wrong key: its last character changed (one that ends in "Z" stays itself with a "Z": CI drew one).
    wrong = key[:-1] + ("Z" if key[-1] != "Z" else "Y")
    assert get(gw.port, "/either/1", headers=f"X-API-Key: {wrong}\r\n" + bearer).status == 400
    # One invalid credential alone: its own scheme's 401, not another scheme's try.
    bad_jwt = get(gw.port, "/either/1", headers=f"Authorization: Bearer {forged}\r\n")
    assert bad_jwt.status == 401 and b'error="invalid_token"' in challenges(bad_jwt)[0]
    assert get(gw.port, "/either/1", headers="Authorization: Bearer opaque-token\r\n").status == 401
    # Authorization rules apply to whichever scheme succeeded.
    assert get(gw.port, "/either/1", headers=f"Authorization: Bearer {token(roles=())}\r\n").status == 403
    assert get(gw.port, "/either/1", headers=f"X-API-Key: {guest}\r\n").status == 403

    # auth_multiple = "all": both verified; the identity is the first listed scheme's (jwt).
    assert get(gw.port, "/both/1", headers=x_key + bearer).status == 200
    assert upstream.requests[-1].header(b"x-consumer") == b"alice"
    assert get(gw.port, "/both/1", headers=x_key + f"Authorization: Bearer {forged}\r\n").status == 401
    assert get(gw.port, "/both/1", headers=f"X-API-Key: {wrong}\r\n" + bearer).status == 401
    assert get(gw.port, "/both/1", headers=x_key).status == 200  # one credential is enough

    records = gw.wait_log(16)  # and the /keyonly polls
    by_denial = {r.get("denial", ""): r for r in records}
    assert {"auth.missing", "auth.ambiguous", "jwt.signature", "api_key.invalid", "authorize.role"} <= set(
        by_denial
    ), sorted(by_denial)
    either = [r.get("auth") for r in records if r["route"] == "either" and r["status"] == 200]
    assert sorted(either) == ["api_key", "api_key", "jwt"]
    assert {r.get("auth") for r in records if r["route"] == "both" and r["status"] == 200} == {
        "jwt+api_key",
        "api_key",
    }
    # Single-scheme routes' lines are as they were: no auth field.
    assert all("auth" not in r for r in records if r["route"] == "keyonly")
    assert key not in gw.access_log.read_text() and good not in gw.stderr()


def test_key_or_jwt_over_http2(gw: Gateway, upstream: TestUpstream) -> None:
    key, _ = issue(gw, "acme")
    good = token()
    client = H2Client(gw.port)
    try:
        deadline = time.monotonic() + 5
        while client.request("/keyonly", headers=[(b"x-api-key", key.encode())]).status != 200:
            assert time.monotonic() < deadline, "the new key never reached the worker"
            time.sleep(0.05)
        by_key = client.request("/either/1", headers=[(b"x-api-key", key.encode())])
        assert by_key.status == 200 and upstream.requests[-1].header(b"x-consumer") == b"acme"
        by_jwt = client.request("/either/1", headers=[(b"authorization", b"Bearer " + good.encode())])
        assert by_jwt.status == 200 and upstream.requests[-1].header(b"x-consumer") == b"alice"
        none = client.request("/either/1")
        assert none.status == 401 and none.header(b"www-authenticate") == b'Bearer realm="fastgw"'
        both = [(b"x-api-key", key.encode()), (b"authorization", b"Bearer " + good.encode())]
        assert client.request("/either/1", headers=both).status == 400
        forged = [(b"x-api-key", key.encode()), (b"authorization", b"Bearer " + good[:-4].encode() + b"AAAA")]
        assert client.request("/both/1", headers=forged).status == 401
    finally:
        client.close()
    records = gw.wait_log(6)
    assert {r.get("auth") for r in records if r["route"] == "either" and r["status"] == 200} == {
        "api_key",
        "jwt",
    }


@pytest.fixture
def idp() -> Iterator[TestUpstream]:
    server = TestUpstream()

    def handler(req: SeenRequest) -> bytes:
        form = urllib.parse.parse_qs(req.body.decode())
        active = form.get("token", [""])[0] == "good-token"
        answer = {"active": True, "sub": "opaque-user", "roles": ["reader"]} if active else {"active": False}
        return json_response(orjson.dumps(answer))

    server.handler = handler
    yield server
    server.close()


def test_certificate_or_opaque_token(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, idp: TestUpstream, tmp_path: Path
) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    sha = hashlib.sha256(fingerprint(certs.client_cert)).hexdigest()
    other = second_cert(certs, "unmapped.client.test", client=True)
    (tmp_path / "client.secret").write_text("s3cr3t")
    config = (
        tls_config(
            upstream.port,
            [(certs.server_cert, certs.server_key)],
            f', client_auth = "optional", client_ca = "{certs.ca_cert}"',
        )
        + f"""
        [[routes]]
        name = "either"
        path = "/either"
        upstream = "u"
        auth = ["mtls", "introspection"]
        authorize = {{ roles = ["reader"] }}

        [[routes]]
        name = "both"
        path = "/both"
        upstream = "u"
        auth = ["mtls", "introspection"]
        auth_multiple = "all"

        [[mtls.consumers]]
        consumer = "billing"
        sha256 = "{sha}"
        roles = ["reader"]

        [introspection]
        url = "http://127.0.0.1:{idp.port}/introspect"
        client_id = "fastgw"
        client_secret = {{ file = "{tmp_path / "client.secret"}" }}
        timeout = 1.0
        """
    )
    gw = gateway_factory(config)
    client = (certs.client_cert, certs.client_key)
    good, dead = "Authorization: Bearer good-token\r\n", "Authorization: Bearer dead-token\r\n"

    assert tls_request(gw.port, certs, client, "/either/1").status == 200
    assert upstream.requests[-1].header(b"x-consumer") == b"billing"
    assert tls_request(gw.port, certs, None, "/either/1", good).status == 200
    assert upstream.requests[-1].header(b"x-consumer") == b"opaque-user"
    none = tls_request(gw.port, certs, None, "/either/1")
    assert none.status == 401
    assert challenges(none) == [b'ClientCertificate realm="fastgw"', b'Bearer realm="fastgw"']
    assert tls_request(gw.port, certs, client, "/either/1", good).status == 400  # two schemes
    assert tls_request(gw.port, certs, client, "/either/1", dead).status == 400
    assert tls_request(gw.port, certs, None, "/either/1", dead).status == 401
    assert tls_request(gw.port, certs, other, "/either/1").status == 403  # a certificate mapped to nobody
    calls = len(idp.requests)
    # "all": the certificate and the token are both checked; a bad one of either refuses.
    assert tls_request(gw.port, certs, client, "/both/1", good).status == 200
    assert upstream.requests[-1].header(b"x-consumer") == b"billing"  # mtls is listed first
    assert tls_request(gw.port, certs, client, "/both/1", dead).status == 401
    assert tls_request(gw.port, certs, other, "/both/1", good).status == 403
    assert len(idp.requests) == calls  # both tokens were cached: one call per token, ever

    # HTTP/2 over TLS with the same certificate.
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(*client)
    h2 = H2Client(gw.port, tls=ctx)
    try:
        assert h2.request("/either/1").status == 200
        assert h2.request("/either/1", headers=[(b"authorization", b"Bearer good-token")]).status == 400
    finally:
        h2.close()
    records = gw.wait_log(12)
    assert {r.get("auth") for r in records if r["status"] == 200} == {
        "mtls",
        "introspection",
        "mtls+introspection",
    }
