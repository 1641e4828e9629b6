"""OAuth2 token introspection (RFC 7662): opaque bearer tokens checked with the authorization server.

A cold token costs one ``POST`` to the introspection endpoint (client credentials from secrets, over the
gateway's own TLS client): the request is parked with a ``Pending`` so the worker keeps serving others,
and concurrent requests carrying the same token share that one call. Only ``"active": true`` passes. A
positive answer is cached until ``min(exp, now + cache_ttl)``, a negative one for ``negative_ttl``. An
endpoint that fails, times out or answers garbage gives 503 (fail closed, never open), not cached.

Nothing reaches the authorization server that could not be a token: a token longer than
``max_token_bytes`` or outside the RFC 6750 ``b64token`` syntax is refused here. Inactive tokens count as
failed authentications in the worker's throttle (``policy/throttle.py``, as API keys and JWTs do), and a
call in flight counts as a failure until it is answered: an address whose failures plus unsettled calls
reach ``block_after`` gets 429 before any call, so a flood of random tokens from one address costs the
authorization server at most ``block_after`` calls per worker per window. At most ``max_concurrent``
calls are in flight per worker; more wait for a slot within ``timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeGuard

import orjson

from fastgw.config.context import CompileContext
from fastgw.config.fields import (
    CACHE_MAX,
    HEAD_MAX,
    INTROSPECTION_CALLS_MAX,
    SECONDS_MAX,
    SecretSpec,
    Section,
    doc,
)
from fastgw.exchange import Exchange
from fastgw.log_line import log_line
from fastgw.policy.api_key import BEARER_DUPLICATE, BEARER_OK, REALM, bearer_denials, bearer_token
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.http_client import CALL_ERRORS, Endpoint, request
from fastgw.policy.jwks import is_loopback
from fastgw.policy.rbac import Principal, usable_identity
from fastgw.policy.throttle import ThrottleSettings, after_failure, throttled
from fastgw.secret_refs import resolve_secret


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionSpec:
    url: str = doc(
        "the RFC 7662 introspection endpoint: https://, or http:// on a loopback address (with a warning)"
        " or with allow_insecure_http",
        ...,
    )
    allow_insecure_http: bool = doc(
        "accept a plain http:// url that is not a loopback address: tokens and the client secret then"
        " travel in clear",
        False,
    )
    client_id: str = doc("the gateway's client id at the authorization server", ...)
    client_secret: SecretSpec = doc("its client secret (a secret reference)", ...)
    timeout: float = doc(
        "seconds an introspection call may take (else 503, fail closed)", 2.0, most=SECONDS_MAX
    )
    cache_ttl: float = doc(
        "seconds an active answer is reused (never past the token's exp)", 60.0, most=SECONDS_MAX
    )
    negative_ttl: float = doc("seconds an inactive answer is reused", 10.0, most=SECONDS_MAX)
    audiences: tuple[str, ...] = doc(
        "the answer's aud must name one of these (RFC 7662 2.2); empty: not checked (a warning: any active"
        " token of the server passes, whatever resource it was issued for)",
        (),
    )
    issuer: str | None = doc("the answer's iss must be this (when set)", None)
    cache_size: int = doc("tokens remembered per worker", 10000, most=CACHE_MAX)
    max_token_bytes: int = doc(
        "longest bearer token sent to the endpoint (else 401, no call)", 8192, most=HEAD_MAX
    )
    max_concurrent: int = doc(
        "introspection calls in flight at once, per worker; more wait for a slot within timeout (else 503)",
        64,
        most=INTROSPECTION_CALLS_MAX,
    )
    ca: str | None = doc("PEM bundle to verify the endpoint with instead of the system store", None)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


MISSING, DUPLICATE = bearer_denials("introspection")


def _invalid_token(detail: str, reason: str) -> Denial:
    """A 401 with the RFC 6750 invalid_token challenge."""
    return Denial(
        401, "unauthorized", detail, reason, ((b"www-authenticate", REALM + b', error="invalid_token"'),)
    )


INACTIVE = _invalid_token("the bearer token is not active", "introspection.inactive")
MALFORMED = _invalid_token("the bearer token is malformed", "introspection.malformed")
TOO_LARGE = _invalid_token("the bearer token is too large", "introspection.too_large")
INVALID_IDENTITY = _invalid_token("the bearer token names no usable identity", "introspection.claims")
# An answer saying "active" for a token this gateway must still refuse (RFC 7662 4: the protected resource
# checks what the answer says of the token's lifetime, audience and issuer).
EXPIRED = _invalid_token("the bearer token has expired", "introspection.expired")
NOT_YET = _invalid_token("the bearer token is not valid yet", "introspection.not_before")
NOT_YET_TTL: Final = 1.0  # seconds a not-yet-valid token's refusal is kept: it becomes valid at its nbf
WRONG_AUDIENCE = _invalid_token("the bearer token is not meant for this gateway", "introspection.audience")
WRONG_ISSUER = _invalid_token("the bearer token is from another issuer", "introspection.issuer")
NOT_ACCESS = _invalid_token("the bearer token is not an access token", "introspection.token_type")
# token_type values (RFC 7662 2.2; RFC 8693 3 URIs) of a plain bearer access token. Any other (a refresh
# token, a DPoP-bound token whose proof this gateway does not check) is refused.
_BEARER_TYPES: Final = frozenset({"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"})
# Keycloak (and servers like it) return the token's own claims, "typ" among them, and answer active for a
# refresh or ID token introspected at the same endpoint: those "typ" values are no access token.
_NOT_ACCESS_TYP: Final = frozenset({"refresh", "offline", "id", "logout"})
UNSETTLED = Denial(
    429,
    "too-many-requests",
    "too many unconfirmed tokens from this address; retry later",
    "auth_throttle.unsettled",
    ((b"retry-after", b"1"),),
)
UNAVAILABLE = Denial(
    503,
    "auth-unavailable",
    "the token could not be checked; try again",
    "introspection.unavailable",
    ((b"retry-after", b"1"),),
)
# Not a wrong token, so not charged to the failed-authentication throttle.
_UNCOUNTED: Final = (MISSING, DUPLICATE, UNSETTLED)
# RFC 6750 2.1 b64token: what a bearer token can be. Anything else is refused before a call is spent.
_B64TOKEN: Final = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
# Addresses with calls in flight tracked per worker; a table this large is reset (as throttle.MAX_TRACKED).
MAX_UNSETTLED: Final = 100_000


@dataclass(frozen=True, slots=True)
class IntrospectionEndpoint:
    target: Endpoint
    authorization: bytes  # "Basic ..." from the client credentials
    timeout: float


class IntrospectionAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(
        self,
        name: str,
        endpoint: IntrospectionEndpoint,
        cache_ttl: float,
        negative_ttl: float,
        cache_size: int,
        shadow: bool,
        max_token_bytes: int = 8192,
        max_concurrent: int = 64,
        throttle: ThrottleSettings | None = None,
        clock: Callable[[], float] = time.time,
        audiences: frozenset[str] = frozenset(),
        issuer: str | None = None,
    ) -> None:
        self.name = name
        self.audiences = audiences  # empty: not checked
        self.issuer = issuer
        self.clock = clock  # wall time, for the caches' expiry (a test ages answers with its own clock)
        self.endpoint = endpoint
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.cache_size = cache_size
        self.shadow = shadow
        self.max_token_bytes = max_token_bytes
        self.throttle = throttle if not shadow else None  # shadow mode never delays nor blocks
        self._slots = asyncio.Semaphore(max_concurrent)  # binds to the worker's loop on first use
        self._good: OrderedDict[bytes, Principal] = OrderedDict()
        self._bad: dict[bytes, tuple[float, Denial]] = {}  # token -> (until, its refusal)
        self._inflight: dict[bytes, asyncio.Future[Principal | Denial]] = {}
        self._unsettled: dict[str, int] = {}  # client address -> its calls in flight
        self.calls = 0  # introspection requests actually sent (tests, metrics)
        self._down_since = 0.0  # monotonic start of the current outage, logged once (0: none)

    def check(self, ex: Exchange) -> Denial | Pending | None:
        return throttled(ex, self._check, self.throttle, _UNCOUNTED)

    def _check(self, ex: Exchange) -> Denial | Pending | None:
        found, token = bearer_token(ex)
        if found != BEARER_OK:
            return DUPLICATE if found == BEARER_DUPLICATE else MISSING
        if len(token) > self.max_token_bytes:
            return TOO_LARGE
        if _B64TOKEN.fullmatch(token) is None:
            return MALFORMED
        now = self.clock()
        identity = self._good.get(token)
        if identity is not None:
            if now < identity.expires:
                ex.consumer = identity
                return None
            del self._good[token]
        bad = self._bad.get(token)
        if bad is not None and now < bad[0]:
            return bad[1]
        future = self._inflight.get(token)
        if future is not None:
            return Pending(self._share(ex, future))
        settings = self.throttle
        ip = ex.client_ip
        unsettled = self._unsettled
        if settings is not None and (
            settings.failures.recent(ip, now, settings.window) + unsettled.get(ip, 0) >= settings.block_after
        ):
            return UNSETTLED
        # Registered now, not when the Task starts: requests parsed in the same read must see this call.
        if len(unsettled) >= MAX_UNSETTLED:
            unsettled.clear()
        unsettled[ip] = unsettled.get(ip, 0) + 1
        future = asyncio.get_running_loop().create_future()
        self._inflight[token] = future
        return Pending(self._call(ex, token, future))

    async def _call(
        self, ex: Exchange, token: bytes, future: asyncio.Future[Principal | Denial]
    ) -> Denial | None:
        """Make the one call for ``token``, settle its waiters, then answer this request."""
        # What the requests sharing the call get if it does not end (this request's client left: its Task
        # was cancelled mid-call; or it raised): the 503 of a failed call, nothing cached, never a wait
        # without end on a future no one would settle.
        outcome: Principal | Denial = UNAVAILABLE
        try:
            outcome = await self._introspect(token)
        finally:
            del self._inflight[token]
            ip = ex.client_ip
            left = self._unsettled.get(ip, 1) - 1
            if left > 0:
                self._unsettled[ip] = left
            else:
                self._unsettled.pop(ip, None)
            if not future.done():
                future.set_result(outcome)
        return await self._apply(ex, outcome)

    async def _share(self, ex: Exchange, future: asyncio.Future[Principal | Denial]) -> Denial | None:
        """Wait for a call another request made for the same token."""
        return await self._apply(ex, await asyncio.shield(future))

    async def _apply(self, ex: Exchange, outcome: Principal | Denial) -> Denial | None:
        if isinstance(outcome, Denial):
            settings = self.throttle
            if outcome.status != 401 or settings is None:
                return outcome  # 503: the server failed, not the client
            late = after_failure(ex, outcome, settings)
            return late if isinstance(late, Denial) else await late.awaitable
        ex.consumer = outcome
        return None

    async def _introspect(self, token: bytes) -> Principal | Denial:
        try:
            # The wait for a slot counts against the timeout. Not wait_for: see counters/cluster.py stop.
            async with asyncio.timeout(self.endpoint.timeout), self._slots:
                self.calls += 1
                status, body = await self._post(token)
            if status != 200:
                return self._unavailable(f"HTTP {status}")
            answer = orjson.loads(body)
        except CALL_ERRORS as exc:
            return self._unavailable(str(exc) or type(exc).__name__)
        now = self.clock()
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            # RFC 7662 2.2: every answer carries a boolean "active". One without (an error object, a
            # list) is the server failing, not a verdict on the token: 503, and nothing cached.
            return self._unavailable('an answer without a boolean "active"')
        if self._down_since:
            took = time.monotonic() - self._down_since
            self._down_since = 0.0
            log_line(f"introspection endpoint {self._where()} answers again (unavailable for {took:.1f} s)")
        refusal = INACTIVE if answer["active"] is not True else self._refusal(answer, now)
        if refusal is not None:
            if len(self._bad) >= self.cache_size:
                self._bad.clear()
            ttl = min(self.negative_ttl, NOT_YET_TTL) if refusal is NOT_YET else self.negative_ttl
            self._bad[token] = (now + ttl, refusal)
            return refusal
        identity = _identity(answer, now, self.cache_ttl)
        if not usable_identity(identity):
            # Active, but naming its holder in a way the log, the store or a header cannot carry (a NUL,
            # a control character): refused as a token without a usable identity, and not cached.
            return INVALID_IDENTITY
        self._good[token] = identity
        if len(self._good) > self.cache_size:
            self._good.popitem(last=False)
        return identity

    def _refusal(self, answer: dict[str, Any], now: float) -> Denial | None:
        """Why an active answer's token is still refused here, or None: its exp passed or nbf is ahead
        (the gateway's clock decides: a server with a slower clock said active), its type is not a
        bearer access token, or its iss or aud is not one this gateway accepts (when configured)."""
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if _number(exp) and exp <= now:
            return EXPIRED
        if _number(nbf) and nbf > now:
            return NOT_YET
        token_type, typ = answer.get("token_type"), answer.get("typ")
        if isinstance(token_type, str) and token_type.lower() not in _BEARER_TYPES:
            return NOT_ACCESS
        if isinstance(typ, str) and typ.lower() in _NOT_ACCESS_TYP:
            return NOT_ACCESS
        if self.issuer is not None and answer.get("iss") != self.issuer:
            return WRONG_ISSUER
        if self.audiences:
            aud = answer.get("aud")
            named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self.audiences for a in named):
                return WRONG_AUDIENCE
        return None

    def _unavailable(self, reason: str) -> Denial:
        """The 503 of a failed call; the first of an outage is logged (the metric counts every one)."""
        if not self._down_since:
            self._down_since = time.monotonic()
            log_line(
                f"introspection endpoint {self._where()} unavailable ({reason}): requests that need it"
                " get 503 until it answers"
            )
        return UNAVAILABLE

    def _where(self) -> str:
        target = self.endpoint.target
        return f"{'https' if target.tls else 'http'}://{target.host}:{target.port}{target.path.split('?')[0]}"

    async def _post(self, token: bytes) -> tuple[int, bytes]:
        e = self.endpoint
        fields = {"token": token.decode("latin-1"), "token_type_hint": "access_token"}
        headers = [
            ("authorization", e.authorization.decode()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ]
        return await request(e.target, "POST", headers, urllib.parse.urlencode(fields).encode())


def _number(value: object) -> TypeGuard[int | float]:
    """A JSON number (RFC 7662's exp, nbf): not a boolean, which Python counts as an int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _identity(answer: dict[str, Any], now: float, cache_ttl: float) -> Principal:
    subject = answer.get("sub") or answer.get("username") or answer.get("client_id") or "anonymous"
    scope = answer.get("scope")
    roles = answer.get("roles")
    exp = answer.get("exp")
    expires = now + cache_ttl
    if _number(exp):
        expires = min(expires, float(exp))
    return Principal(
        consumer=str(subject),
        consumer_id=str(subject),
        team=str(answer.get("team", "")) if isinstance(answer.get("team", ""), str) else "",
        roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        expires=expires,
    )


def basic_authorization(client_id: str, secret: bytes) -> bytes:
    """RFC 6749 2.3.1: form-encode both parts, then HTTP Basic."""
    pair = (
        urllib.parse.quote(client_id, safe="").encode()
        + b":"
        + urllib.parse.quote_from_bytes(secret, safe="").encode()
    )
    return b"Basic " + base64.b64encode(pair)


def compile(spec: IntrospectionSpec | None, ctx: CompileContext) -> None:
    """[introspection]: auth = "introspection" asks this RFC 7662 endpoint about opaque tokens."""
    if spec is None:
        return
    tls = ctx.verifying_tls("introspection", spec.ca) if spec.url.lower().startswith("https:") else None
    try:
        target = Endpoint.parse(spec.url, tls)
    except ValueError:
        raise ctx.error("introspection.url", "must be an http:// or https:// URL") from None
    if target.tls is None:
        if not spec.allow_insecure_http and not is_loopback(target.host):
            reason = (
                "is plain http://: tokens and the client secret would travel in clear"
                " (allow_insecure_http = true accepts it)"
            )
            raise ctx.error("introspection.url", reason)
        ctx.warnings.append("introspection.url is plain http: tokens and client credentials travel in clear")
    for name in ("timeout", "cache_ttl", "negative_ttl", "cache_size", "max_token_bytes", "max_concurrent"):
        ctx.positive(f"introspection.{name}", getattr(spec, name))
    for index, audience in enumerate(spec.audiences):
        if not audience:
            raise ctx.error(f"introspection.audiences[{index}]", "must not be empty")
    if spec.issuer == "":
        raise ctx.error("introspection.issuer", "must not be empty (leave it out to check no issuer)")
    if not spec.audiences:
        ctx.warnings.append(
            "introspection.audiences is empty: any active token of the authorization server passes,"
            " whatever resource it was issued for"
        )
    secret = resolve_secret(ctx.secret("introspection.client_secret", spec.client_secret))
    endpoint = IntrospectionEndpoint(
        target=target,
        authorization=basic_authorization(spec.client_id, secret),
        timeout=spec.timeout,
    )
    ctx.auth["introspection"] = IntrospectionAuth(
        "introspection",
        endpoint,
        spec.cache_ttl,
        spec.negative_ttl,
        spec.cache_size,
        spec.mode == "shadow",
        max_token_bytes=spec.max_token_bytes,
        max_concurrent=spec.max_concurrent,
        throttle=ctx.throttle,
        clock=ctx.clock,
        audiences=frozenset(spec.audiences),
        issuer=spec.issuer,
    )
    ctx.credential_headers["introspection"] = frozenset({b"authorization"})


# [introspection] in the schema and the reference (policy/registry.py declares it).
SECTION = Section(
    IntrospectionSpec,
    "[introspection] OAuth2 token introspection (needed by auth = 'introspection')",
    "optional",
    (("[introspection]", IntrospectionSpec, "OAuth2 introspection (routes with auth = 'introspection')."),),
)
