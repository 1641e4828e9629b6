"""OAuth2 token introspection (RFC 7662): opaque bearer tokens checked with the authorization server.

A cold token costs one ``POST`` to the introspection endpoint (client credentials from secrets, over the
gateway's own TLS client): the request is parked with a ``Pending`` so the worker keeps serving others,
and concurrent requests carrying the same token share that one call. Only ``"active": true`` passes. A
positive answer is cached until ``min(exp, now + cache_ttl)``, a negative one for ``negative_ttl``. An
endpoint that fails, times out or answers garbage gives 503 (fail closed, never open), not cached.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import orjson

from fastgw.exchange import Exchange
from fastgw.policy.authn import BEARER_DUPLICATE, BEARER_OK, REALM, bearer_denials, bearer_token
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.http_client import Endpoint, request
from fastgw.policy.rbac import Principal

MISSING, DUPLICATE = bearer_denials("introspection")
INACTIVE = Denial(
    401,
    "unauthorized",
    "the bearer token is not active",
    "introspection.inactive",
    ((b"www-authenticate", REALM + b', error="invalid_token"'),),
)
UNAVAILABLE = Denial(
    503,
    "auth-unavailable",
    "the token could not be checked; try again",
    "introspection.unavailable",
    ((b"retry-after", b"1"),),
)


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
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.cache_size = cache_size
        self.shadow = shadow
        self._good: OrderedDict[bytes, Principal] = OrderedDict()
        self._bad: dict[bytes, float] = {}
        self._inflight: dict[bytes, asyncio.Future[Principal | Denial]] = {}
        self.calls = 0  # introspection requests actually sent (tests, metrics)

    def check(self, ex: Exchange) -> Denial | Pending | None:
        found, token = bearer_token(ex)
        if found != BEARER_OK:
            return DUPLICATE if found == BEARER_DUPLICATE else MISSING
        now = time.time()
        identity = self._good.get(token)
        if identity is not None:
            if now < identity.expires:
                ex.consumer = identity
                return None
            del self._good[token]
        until = self._bad.get(token)
        if until is not None and now < until:
            return INACTIVE
        return Pending(self._resolve(ex, token))

    async def _resolve(self, ex: Exchange, token: bytes) -> Denial | None:
        future = self._inflight.get(token)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[token] = future
            try:
                outcome = await self._introspect(token)
            finally:
                del self._inflight[token]
            future.set_result(outcome)
        else:
            outcome = await asyncio.shield(future)
        if isinstance(outcome, Denial):
            return outcome
        ex.consumer = outcome
        return None

    async def _introspect(self, token: bytes) -> Principal | Denial:
        self.calls += 1
        try:
            async with asyncio.timeout(self.endpoint.timeout):  # not wait_for: see cluster_counts.stop
                status, body = await self._post(token)
            if status != 200:
                return UNAVAILABLE
            answer = orjson.loads(body)
        except (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError, orjson.JSONDecodeError, ValueError):
            return UNAVAILABLE
        now = time.time()
        if not isinstance(answer, dict) or answer.get("active") is not True:
            if len(self._bad) >= self.cache_size:
                self._bad.clear()
            self._bad[token] = now + self.negative_ttl
            return INACTIVE
        identity = _identity(answer, now, self.cache_ttl)
        self._good[token] = identity
        if len(self._good) > self.cache_size:
            self._good.popitem(last=False)
        return identity

    async def _post(self, token: bytes) -> tuple[int, bytes]:
        e = self.endpoint
        fields = {"token": token.decode("latin-1"), "token_type_hint": "access_token"}
        headers = [
            ("authorization", e.authorization.decode()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ]
        return await request(e.target, "POST", headers, urllib.parse.urlencode(fields).encode())


def _identity(answer: dict[str, Any], now: float, cache_ttl: float) -> Principal:
    subject = answer.get("sub") or answer.get("username") or answer.get("client_id") or "anonymous"
    scope = answer.get("scope")
    roles = answer.get("roles")
    exp = answer.get("exp")
    expires = now + cache_ttl
    if isinstance(exp, (int, float)):
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
