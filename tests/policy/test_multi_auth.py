"""A route with several auth schemes: which scheme each credential goes to, and that each is verified once.

The schemes' own policies are tested elsewhere; here stubs count their checks, and a real ApiKeyAuth (with
a real IdentityCache) shows that a key in ``X-API-Key`` is verified even when ``Authorization`` carries a
JWT. The end-to-end behaviour (real gateway, HTTP/1 and HTTP/2) is in tests/e2e/test_multi_auth.py.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.key_format import key_digest, new_key
from fastgw.policy.api_key import ApiKeyAuth
from fastgw.policy.chain import Denial, Pending, Phase, Policy
from fastgw.policy.identity import IdentityCache, KeyIdentity
from fastgw.policy.multi_auth import AMBIGUOUS, MultiAuth
from fastgw.policy.rbac import Principal

PEPPER = b"p" * 32
JWT = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
BAD = Denial(401, "unauthorized", "bad", "stub.bad")


class Stub:
    """A scheme's policy: counts its checks, passes (setting a consumer) or refuses, maybe after a wait."""

    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(self, name: str, ok: bool = True, pending: bool = False) -> None:
        self.name = name
        self.shadow = False
        self.ok = ok
        self.pending = pending
        self.calls = 0

    def check(self, ex: Exchange) -> Denial | Pending | None:
        self.calls += 1
        if self.pending:
            return Pending(self._later(ex))
        return self._outcome(ex)

    async def _later(self, ex: Exchange) -> Denial | None:
        await asyncio.sleep(0)
        return self._outcome(ex)

    def _outcome(self, ex: Exchange) -> Denial | None:
        if not self.ok:
            return BAD
        ex.consumer = Principal(self.name, self.name, "", frozenset(), frozenset())
        return None


def api_keys() -> tuple[ApiKeyAuth, str]:
    cache = IdentityCache()
    key = new_key()
    identity = KeyIdentity("k1", "c1", "acme", "", frozenset(), frozenset(), None, 0.0)
    cache.put(key_digest(PEPPER, key.encode()), identity)
    return ApiKeyAuth("api_key", frozenset({b"authorization", b"x-api-key"}), (PEPPER,), cache, False), key


def exchange(*headers: tuple[bytes, bytes], cert: object = None) -> Exchange:
    ex = Exchange(b"GET", b"/", b"1.1", list(headers))
    ex.client_ip = "127.0.0.1"
    ex.client_cert = cert
    return ex


def run(outcome: Denial | Pending | None) -> Denial | None:
    if isinstance(outcome, Pending):
        awaitable = outcome.awaitable

        async def wait() -> Denial | None:
            return await awaitable

        return asyncio.run(wait())
    return outcome


def test_each_credential_goes_to_the_scheme_its_shape_names_and_is_checked_once() -> None:
    keys, key = api_keys()
    jwt, opaque, mtls = Stub("jwt"), Stub("introspection"), Stub("mtls")
    policies: dict[str, Policy] = {"api_key": keys, "jwt": jwt, "introspection": opaque, "mtls": mtls}
    multi = MultiAuth("all4", policies, None, "refuse")

    ex = exchange((b"authorization", b"Bearer " + JWT))
    assert multi.check(ex) is None and ex.auth == "jwt" and ex.consumer.consumer == "jwt"
    ex = exchange((b"authorization", b"Bearer opaque-token"))
    assert multi.check(ex) is None and ex.auth == "introspection"
    ex = exchange(cert=object())
    assert multi.check(ex) is None and ex.auth == "mtls"
    for header in ((b"x-api-key", key.encode()), (b"authorization", b"Bearer " + key.encode())):
        ex = exchange(header)
        assert multi.check(ex) is None and ex.auth == "api_key" and ex.consumer.consumer == "acme"
    assert (jwt.calls, opaque.calls, mtls.calls) == (1, 1, 1)

    # Two schemes' credentials: refused before any verification is spent.
    both = exchange((b"x-api-key", key.encode()), (b"authorization", b"Bearer " + JWT))
    assert multi.check(both) is AMBIGUOUS
    assert multi.check(exchange((b"authorization", b"Bearer " + JWT), cert=object())) is AMBIGUOUS
    assert (jwt.calls, opaque.calls, mtls.calls) == (1, 1, 1)
    # Nothing presented: one challenge per distinct HTTP scheme.
    missing = multi.check(exchange())
    assert isinstance(missing, Denial) and missing.status == 401
    assert [v for _, v in missing.headers] == [b'Bearer realm="fastgw"', b'ClientCertificate realm="fastgw"']
    # Two Authorization headers, or two key headers: 400 as on single-scheme routes.
    two = multi.check(exchange((b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")))
    assert isinstance(two, Denial) and two.status == 400
    keys2 = multi.check(exchange((b"x-api-key", key.encode()), (b"authorization", b"Bearer " + key.encode())))
    assert isinstance(keys2, Denial) and keys2.reason == "api_key.duplicate"


def test_a_bearer_token_no_listed_scheme_claims_is_refused_by_the_first_bearer_scheme() -> None:
    keys, _key = api_keys()
    jwt = Stub("jwt")
    multi = MultiAuth("api_key|jwt", {"api_key": keys, "jwt": jwt}, None, "refuse")
    refused = multi.check(exchange((b"authorization", b"Bearer opaque")))  # neither a key nor a JWT
    assert isinstance(refused, Denial) and refused.reason == "api_key.invalid"
    assert jwt.calls == 0


def test_all_verifies_every_credential_and_keeps_the_first_schemes_identity() -> None:
    keys, key = api_keys()
    for pending in (False, True):
        jwt = Stub("jwt", pending=pending)
        multi = MultiAuth("jwt|api_key", {"jwt": jwt, "api_key": keys}, None, "all")
        ex = exchange((b"x-api-key", key.encode()), (b"authorization", b"Bearer " + JWT))
        assert run(multi.check(ex)) is None
        assert ex.consumer.consumer == "jwt" and ex.auth == "jwt+api_key" and jwt.calls == 1
        # A valid key never excuses an invalid token, nor the other way round.
        jwt.ok = False
        ex = exchange((b"x-api-key", key.encode()), (b"authorization", b"Bearer " + JWT))
        assert run(multi.check(ex)) is BAD and ex.consumer is None
        jwt.ok = True
        ex = exchange((b"x-api-key", key[:-1].encode() + b"!"), (b"authorization", b"Bearer " + JWT))
        refused = run(multi.check(ex))
        assert isinstance(refused, Denial) and refused.reason == "api_key.invalid" and ex.consumer is None


ROUTE = """
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.api]
targets = ["127.0.0.1:9000"]
[keys]
pepper = {{ env = "MULTI_AUTH_PEPPER" }}
[jwt.issuers.idp]
issuer = "https://idp.test/"
audiences = []
algorithms = ["HS256"]
secret = {{ env = "MULTI_AUTH_SECRET" }}
[[routes]]
name = "r"
path = "/"
upstream = "api"
{route}
"""


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTI_AUTH_PEPPER", "p" * 32)
    monkeypatch.setenv("MULTI_AUTH_SECRET", "s" * 32)


@pytest.mark.usefixtures("secrets")
def test_single_scheme_routes_compile_as_before_and_lists_to_one_dispatcher() -> None:
    single = compile_config(ROUTE.format(route='auth = "jwt"').encode(), "x.toml").routes[0]
    assert [type(p).__name__ for p in single.chain] == ["JwtAuth"]  # no dispatcher on the hot path
    listed = compile_config(ROUTE.format(route='auth = ["api_key", "jwt"]').encode(), "x.toml").routes[0]
    assert [type(p).__name__ for p in listed.chain] == ["MultiAuth"]
    assert {b"authorization", b"x-api-key"} <= set(listed.drop_request)


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("auth = []", "routes[0].auth: needs at least one scheme"),
        ('auth = ["none", "jwt"]', "routes[0].auth[0]: 'none' cannot be combined"),
        ('auth = ["jwt", "jwt"]', "routes[0].auth[1]: 'jwt' is listed twice"),
        ('auth = ["jwt", "mtls"]', "routes[0].auth: auth = 'mtls' needs an [mtls] table"),
        ('auth = ["jwt", "oauth"]', "routes[0].auth[1]: invalid value 'oauth'"),
        ('auth = "jwt"\nauth_multiple = "all"', "routes[0].auth_multiple: only applies to a list"),
        ('auth = ["api_key"]\njwt = { issuers = ["idp"] }', "routes[0].jwt: only applies to auth = 'jwt'"),
    ],
)
def test_bad_auth_lists_are_one_precise_line(route: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_config(ROUTE.format(route=route).encode(), "x.toml")
    assert reason in str(info.value)


@pytest.mark.usefixtures("secrets")
def test_a_reload_finds_the_jwt_policy_inside_a_list_auth() -> None:
    """A worker stops the replaced snapshot's JWKS refreshes on reload; a JwtAuth used only by list-auth
    routes sits inside the dispatcher, and missing it would leave a poller running per reload."""
    from fastgw.process.worker import jwt_policies

    snapshot = compile_config(ROUTE.format(route='auth = ["api_key", "jwt"]').encode(), "x.toml")
    assert [type(p).__name__ for p in jwt_policies(snapshot)] == ["JwtAuth"]


def test_a_schemes_shadow_mode_and_the_routes_jwt_binding_apply_inside_the_dispatcher() -> None:
    from fastgw.policy.jwt_auth import JwtIdentity, JwtRouteBinding

    class TokenStub(Stub):
        def _outcome(self, ex: Exchange) -> Denial | None:
            ex.consumer = JwtIdentity("bob", "bob", "", frozenset(), frozenset(), 0.0, "https://other/", "")
            return None

    keys, _key = api_keys()
    binding = JwtRouteBinding("jwt", frozenset({"https://idp.test/"}), frozenset(), False)
    multi = MultiAuth("api_key|jwt", {"api_key": keys, "jwt": TokenStub("jwt")}, binding, "refuse")
    ex = exchange((b"authorization", b"Bearer " + JWT))
    refused = multi.check(ex)  # another issuer's token: this route does not accept it
    assert isinstance(refused, Denial) and refused.reason == "jwt.route_issuer" and ex.consumer is None

    shadowed = Stub("jwt", ok=False)
    shadowed.shadow = True
    multi = MultiAuth("api_key|jwt", {"api_key": keys, "jwt": shadowed}, None, "refuse")
    ex = exchange((b"authorization", b"Bearer " + JWT))
    assert multi.check(ex) is None and ex.shadow == ["stub.bad"] and ex.consumer is None
