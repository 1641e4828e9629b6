"""API key authentication (JWT, introspection and mTLS consumers have their own modules beside it).

``ApiKeyAuth`` reads the key from the configured headers (``Authorization: Bearer`` and/or e.g.
``X-API-Key``; names are matched case-insensitively because the codec lower-cases them), refuses two
credential headers in one request (400: which one would the upstream believe?), looks the key up in the
worker's IdentityCache, and checks expiry and the key's allowed routes. The credential headers are
stripped before forwarding (they are in the route's drop set, compiled from this policy). Denials follow
RFC 6750: no credentials -> 401 with a bare ``WWW-Authenticate: Bearer`` challenge; a bad key -> 401
``error="invalid_token"``; a key not allowed on this route -> 403 ``error="insufficient_scope"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Final

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.identity import IdentityCache
from fastgw.policy.throttle import ThrottleSettings, throttled

REALM: Final = b'Bearer realm="fastgw"'


BEARER_OK, BEARER_MISSING, BEARER_DUPLICATE = 0, 1, 2


def bearer_token(ex: Exchange) -> tuple[int, bytes]:
    """The token of the one ``Authorization: Bearer`` header: (BEARER_OK, token), or why there is none.

    Another scheme (Basic, ...) counts as missing; two Authorization headers as a duplicate (which one
    would the upstream believe?).
    """
    value = None
    for name, v in ex.headers:
        if name == b"authorization":
            if value is not None:
                return BEARER_DUPLICATE, b""
            value = v
    if value is None:
        return BEARER_MISSING, b""
    scheme, _, token = value.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return BEARER_MISSING, b""
    return BEARER_OK, token


def bearer_denials(prefix: str) -> tuple[Denial, Denial]:
    """(missing, duplicate) for a policy that reads ``Authorization: Bearer`` (JWT, introspection)."""
    missing = Denial(
        401,
        "unauthorized",
        "a bearer token is required",
        f"{prefix}.missing",
        ((b"www-authenticate", REALM),),
    )
    duplicate = Denial(
        400,
        "bad-request",
        "more than one Authorization header",
        f"{prefix}.duplicate",
        ((b"www-authenticate", REALM + b', error="invalid_request"'),),
    )
    return missing, duplicate


def _challenge(error: bytes = b"", description: bytes = b"") -> tuple[tuple[bytes, bytes], ...]:
    if not error:
        return ((b"www-authenticate", REALM),)
    return (
        (b"www-authenticate", REALM + b', error="' + error + b'", error_description="' + description + b'"'),
    )


MISSING: Final = Denial(401, "unauthorized", "an API key is required", "api_key.missing", _challenge())
DUPLICATE: Final = Denial(
    400,
    "bad-request",
    "more than one credential header",
    "api_key.duplicate",
    _challenge(b"invalid_request", b"more than one credential"),
)
INVALID: Final = Denial(
    401,
    "unauthorized",
    "the API key is not valid",
    "api_key.invalid",
    _challenge(b"invalid_token", b"unknown, revoked or malformed key"),
)
EXPIRED: Final = Denial(
    401,
    "unauthorized",
    "the API key has expired",
    "api_key.expired",
    _challenge(b"invalid_token", b"expired"),
)
WRONG_ROUTE: Final = Denial(
    403,
    "forbidden",
    "this API key is not allowed on this route",
    "api_key.route",
    _challenge(b"insufficient_scope", b"route not allowed for this key"),
)
_NOT_PRESENTED: Final = (MISSING, DUPLICATE)  # no key, or two: not charged to the key throttle


class ApiKeyAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(
        self,
        name: str,
        headers: frozenset[bytes],
        peppers: tuple[bytes, ...],
        cache: IdentityCache,
        shadow: bool,
        throttle: ThrottleSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.clock = clock  # wall time, for key expiry (a test ages keys with its own clock)
        self.headers = headers
        self.peppers = peppers
        self.cache = cache
        self.shadow = shadow
        self.throttle = throttle if not shadow else None  # shadow mode never delays nor blocks

    def check(self, ex: Exchange) -> Denial | Pending | None:
        return throttled(ex, self._check, self.throttle, _NOT_PRESENTED, self._prefix)

    def check_key(self, ex: Exchange, key: bytes) -> Denial | Pending | None:
        """Verify one key already located by the caller (``policy/multi_auth.py``, whose request may also
        carry another scheme's ``Authorization`` header): the same throttling, cache and route checks."""
        prefix = ("key:" + key.decode("latin-1")[:10],)
        return throttled(ex, lambda e: self._verify(e, key), self.throttle, _NOT_PRESENTED, lambda e: prefix)

    def _prefix(self, ex: Exchange) -> tuple[str, ...]:
        """The presented key's first characters: a guessed key is throttled under its prefix too."""
        for name, value in ex.headers:
            if name in self.headers:
                return ("key:" + value.rpartition(b" ")[2].decode("latin-1")[:10],)
        return ()

    def _check(self, ex: Exchange) -> Denial | None:
        wanted = self.headers
        found: tuple[bytes, bytes] | None = None
        for item in ex.headers:
            if item[0] in wanted:
                if found is not None:
                    return DUPLICATE
                found = item
        if found is None:
            return MISSING
        name, value = found
        if name == b"authorization":
            scheme, _, value = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return MISSING  # another scheme (Basic, ...) is not an API key
        return self._verify(ex, value.strip())

    def _verify(self, ex: Exchange, key: bytes) -> Denial | None:
        identity = self.cache.lookup(key, self.peppers)
        if identity is None:
            return INVALID
        if identity.expires and self.clock() >= identity.expires:
            return EXPIRED
        if identity.routes is not None and (ex.route is None or ex.route.name not in identity.routes):
            return WRONG_ROUTE
        ex.consumer = identity
        return None
