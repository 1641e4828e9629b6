"""JWT bearer authentication (RFC 7519 / RFC 8725 rules) with pyjwt + cryptography.

Keys are configured per issuer and only configured keys are ever used: ``jku``, ``x5u``, ``jwk`` and
``x5c`` token headers are ignored, and a ``kid`` is only a dictionary key (no path, no URL, no SQL can be
built from it). The algorithm must be in the issuer's allow-list, which the compiler checks against the
issuer's keys: ``none`` is never allowed, HMAC algorithms only with a shared secret, asymmetric ones only
with public keys, so "HS256 signed with the RSA public key" cannot verify. ``exp`` is required, ``nbf``
and ``iat`` are checked when present, ``iss`` must be the issuer's, ``aud`` must contain one of its
audiences; ``leeway`` absorbs clock skew.

Verification (~50-200 us for RS256) runs once per token: verified tokens are cached by the token string
until they expire (bounded), and refused tokens for ``negative_ttl`` seconds, so a flood of one forged
token costs one verification. A cached check is two dict lookups and a clock read.
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from fastgw.exchange import Exchange
from fastgw.policy.api_key import BEARER_DUPLICATE, BEARER_OK, REALM, bearer_denials, bearer_token
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.jwe import JweDecrypter
from fastgw.policy.jwks import RemoteJwks
from fastgw.policy.model_grants import models_from_claim
from fastgw.policy.rbac import usable_identity
from fastgw.policy.throttle import ThrottleSettings, after_failure, throttled

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)


# RFC 7515 2 / 7.1: a compact JWS is three base64url parts *without* padding; pyjwt's decoder pads and
# tolerates '=', so the syntax is checked here first. RFC 7519 2: NumericDate is a JSON number.
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TIME_CLAIMS: Final = ("exp", "nbf", "iat")


def _numeric_dates(claims: dict[str, Any]) -> bool:
    """Whether exp, nbf and iat, where present, are JSON numbers (not strings, not booleans)."""
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return False
    return True


def _invalid(description: str, reason: str) -> Denial:
    challenge = REALM + b', error="invalid_token", error_description="' + description.encode() + b'"'
    return Denial(
        401,
        "unauthorized",
        f"the bearer token is not valid: {description}",
        reason,
        ((b"www-authenticate", challenge),),
    )


MISSING, DUPLICATE = bearer_denials("jwt")
TOO_LARGE = _invalid("token too large", "jwt.too_large")
MALFORMED = _invalid("malformed token", "jwt.malformed")
UNKNOWN_ISSUER = _invalid("unknown issuer", "jwt.issuer")
BAD_ALGORITHM = _invalid("algorithm not allowed", "jwt.algorithm")
UNKNOWN_KEY = _invalid("unknown key id", "jwt.kid")
BAD_SIGNATURE = _invalid("signature verification failed", "jwt.signature")
EXPIRED = _invalid("token expired", "jwt.expired")
NOT_YET = _invalid("token not yet valid", "jwt.not_before")
NOT_YET_TTL: Final = 1.0  # seconds a not-yet-valid token's refusal is kept (see _settle)
BAD_AUDIENCE = _invalid("wrong audience", "jwt.audience")
BAD_CLAIMS = _invalid("missing or invalid claims", "jwt.claims")
UNBOUND = _invalid("token not bound to this client certificate", "jwt.cert_binding")
UNDECRYPTABLE = _invalid("cannot decrypt the token", "jwt.decrypt")
JWE_REQUIRED = _invalid("an encrypted token is required", "jwt.jwe_required")
WRONG_ISSUER = _invalid("issuer not accepted on this route", "jwt.route_issuer")
WRONG_AUDIENCE = _invalid("audience not accepted on this route", "jwt.route_audience")
# A kid the keys in use lack while its issuer's key set cannot be fetched: the token may be good (signed
# with a key rotated in during the outage), so the gateway, not the client, is at fault: 503, not cached,
# not a failed authentication. Retry-After: a few seconds, half jwks_min_interval's default (10 s).
KEYS_UNAVAILABLE = Denial(
    503,
    "auth-unavailable",
    "the token's signing keys cannot be fetched from its issuer; try again",
    "jwt.keys_unavailable",
    ((b"retry-after", b"5"),),
)
# Outcomes a fetch of the issuer's keys may change: a kid not yet known (a key rotated in) and a signature
# that fails under the key its kid names (the provider reused the kid for new key material).
_REFETCHED: Final = (UNKNOWN_KEY, BAD_SIGNATURE)


def _bound_to(identity: JwtIdentity, ex: Exchange) -> bool:
    """RFC 8705: cnf.x5t#S256 is base64url(SHA-256(certificate DER)) without padding."""
    cert: Any = ex.client_cert
    if cert is None:
        return False
    expected = base64.urlsafe_b64encode(bytes.fromhex(cert.sha256)).rstrip(b"=").decode()
    return hmac.compare_digest(expected, identity.cert_thumbprint)


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    consumer: str
    consumer_id: str
    team: str
    roles: frozenset[str]
    scopes: frozenset[str]
    expires: float
    issuer: str
    cert_thumbprint: str  # cnf.x5t#S256 when the issuer requires certificate binding, else ""
    audiences: frozenset[str] = frozenset()  # the token's aud, for routes that bind audiences
    # The llm models (glob patterns) the token grants, from the issuer's models_claim; None: the issuer names
    # no such claim, so every model the route serves (model_grants.py).
    models: tuple[str, ...] | None = None


_FAMILIES: Final[dict[str, type | tuple[type, ...]]] = {
    "RS": rsa.RSAPublicKey,
    "PS": rsa.RSAPublicKey,
    "ES": ec.EllipticCurvePublicKey,
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}


def key_fits(key: Any, alg: str) -> bool:
    """Whether a public key is of the family an algorithm needs (RSA for RS*/PS*, EC for ES*, EdDSA)."""
    family = _FAMILIES.get(alg[:2])
    return family is not None and isinstance(key, family)


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


@dataclass(frozen=True, slots=True)
class JwtIssuer:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: frozenset[str]
    secret: bytes | None
    keys_by_kid: dict[str, Any]  # kid -> cryptography public key
    keys_without_kid: tuple[Any, ...]
    leeway: float
    consumer_claim: str
    scopes_claim: str
    roles_claim: str
    team_claim: str
    require_cert_binding: bool = False
    models_claim: str = ""  # '' = tokens carry no model list (model_grants.py)
    remote: RemoteJwks | None = None  # keys fetched from a JWKS URL (or OIDC discovery)
    # Put before the consumer claim's value to make the consumer's name and id, and before the team claim's
    # (a token without a team keeps none): '' (the default) keeps the claims alone, as before the option
    # existed; "okta:" keeps this issuer's "alice" and team "ops" apart from another issuer's.
    consumer_prefix: str = ""

    def key_for(self, alg: str, kid: Any) -> Any:
        """The one configured key for this algorithm and kid, or None (never a guess)."""
        if alg in HMAC_ALGORITHMS:
            return self.secret
        remote = self.remote
        if isinstance(kid, str) and kid:
            key = self.keys_by_kid.get(kid)
            if key is None and remote is not None and remote.usable():  # keys past jwks_max_stale: none
                key = remote.by_kid.get(kid)
            return key if key is not None and key_fits(key, alg) else None
        usable = remote is not None and remote.usable()
        pool = self.keys_without_kid + (remote.without_kid if remote is not None and usable else ())
        candidates = [k for k in pool if key_fits(k, alg)]
        return candidates[0] if len(candidates) == 1 else None

    def identity(self, claims: dict[str, Any]) -> JwtIdentity | None:
        subject = claims.get(self.consumer_claim)
        if not isinstance(subject, str) or not subject:
            return None
        raw = claims.get(self.scopes_claim or "scope", claims.get("scp") if not self.scopes_claim else None)
        scopes = _strings(raw.split() if isinstance(raw, str) else raw)
        roles = _strings(claims.get(self.roles_claim) if self.roles_claim else None)
        team = claims.get(self.team_claim, "") if self.team_claim else ""
        team = self.consumer_prefix + team if isinstance(team, str) and team else ""
        thumbprint = ""
        if self.require_cert_binding:
            cnf = claims.get("cnf")
            thumbprint = cnf.get("x5t#S256", "") if isinstance(cnf, dict) else ""
            if not isinstance(thumbprint, str) or not thumbprint:
                return None  # a bound token without its binding is not acceptable
        aud = claims.get("aud")
        consumer = self.consumer_prefix + subject
        identity = JwtIdentity(
            consumer=consumer,
            consumer_id=consumer,
            team=team,
            roles=roles,
            scopes=scopes,
            expires=float(claims["exp"]),
            issuer=self.issuer,
            cert_thumbprint=thumbprint,
            audiences=_strings([aud] if isinstance(aud, str) else aud),
            models=models_from_claim(claims.get(self.models_claim)) if self.models_claim else None,
        )
        return identity if usable_identity(identity) else None  # else a bad claim, as a missing sub


class JwtAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(
        self,
        name: str,
        issuers: dict[str, JwtIssuer],
        max_token_bytes: int,
        cache_size: int,
        negative_ttl: float,
        shadow: bool,
        throttle: ThrottleSettings | None = None,
        jwe: JweDecrypter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        # Wall time for the caches' expiry checks (a test ages tokens with its own clock). The first
        # verification of a token is PyJWT's, against the system clock.
        self.clock = clock
        self.throttle = throttle if not shadow else None
        self.jwe = jwe
        self.issuers = issuers  # by their "iss" value
        self.max_token_bytes = max_token_bytes
        self.cache_size = cache_size
        self.negative_ttl = negative_ttl
        self.shadow = shadow
        self._good: OrderedDict[bytes, JwtIdentity] = OrderedDict()
        # The remote key sets' generation the good entries were verified under: once they change (a key
        # rotated out, as a leaked one is), every token is verified again, never served from the cache.
        self._good_generation = 0
        # token -> (until, denial, key generation): an entry made before the key sets changed is void,
        # so a token whose kid was rotated in works as soon as this worker has the key.
        self._bad: dict[bytes, tuple[float, Denial, int]] = {}
        self.verifications = 0  # signature checks actually run (tests, metrics)
        self._remotes = [i.remote for i in issuers.values() if i.remote is not None]
        self._started = not self._remotes

    def check(self, ex: Exchange) -> Denial | Pending | None:
        return throttled(ex, self._check, self.throttle, (MISSING, DUPLICATE, KEYS_UNAVAILABLE))

    def stop(self) -> None:
        """Stop this policy's background JWKS refreshes: a reload replaced it (else every reload would
        add a poller per issuer that runs for the life of the worker)."""
        for remote in self._remotes:
            remote.stop()

    def _check(self, ex: Exchange) -> Denial | Pending | None:
        if not self._started:
            self._started = True
            for remote in self._remotes:
                remote.start()  # background JWKS refreshes, on this worker's loop
        found, token = bearer_token(ex)
        if found != BEARER_OK:
            return DUPLICATE if found == BEARER_DUPLICATE else MISSING
        if len(token) > self.max_token_bytes:
            return TOO_LARGE
        now = self.clock()
        identity = self._good.get(token)
        if identity is not None and self._remotes:
            identity = self._still_trusted(token, identity)
        if identity is not None:
            if now < identity.expires + self._leeway(identity):
                if identity.cert_thumbprint and not _bound_to(identity, ex):
                    return UNBOUND
                ex.consumer = identity
                return None
            del self._good[token]
            return EXPIRED
        bad = self._bad.get(token)
        if bad is not None and now < bad[0] and bad[2] == self._key_generation():
            return bad[1]
        issuer, outcome = self._verify(token.decode("latin-1"))
        source = issuer.remote if issuer is not None else None
        if source is not None and outcome in _REFETCHED:
            if source.may_refetch() or source.fetching():
                return Pending(self._after_refetch(ex, token, source))  # maybe a key rotated in since
            source.want_refresh()  # in the cooldown: fetch when it ends, never more often
            if outcome is UNKNOWN_KEY and source.failing:
                return KEYS_UNAVAILABLE
        return self._settle(ex, token, outcome, now)

    def _still_trusted(self, token: bytes, identity: JwtIdentity) -> JwtIdentity | None:
        """A cached token, unless the keys it was verified with may be gone (the remote sets changed
        since) or are too old to trust (its issuer's keys past jwks_max_stale, when its tokens get 401):
        then None, and it is verified again."""
        generation = self._key_generation()
        if generation != self._good_generation:
            self._good.clear()
            self._good_generation = generation
            return None
        issuer = self.issuers.get(identity.issuer)
        remote = issuer.remote if issuer is not None else None
        if remote is not None and not remote.usable():
            del self._good[token]
            return None
        return identity

    def _key_generation(self) -> int:
        """Changes whenever any remote key set changes (each generation only grows)."""
        total = 0
        for remote in self._remotes:
            total += remote.generation
        return total

    async def _after_refetch(self, ex: Exchange, token: bytes, remote: RemoteJwks) -> Denial | None:
        await remote.refresh_if_due()
        _issuer, outcome = self._verify(token.decode("latin-1"))
        if outcome is UNKNOWN_KEY and remote.failing:
            return KEYS_UNAVAILABLE
        refused = self._settle(ex, token, outcome, self.clock())
        settings = self.throttle
        if refused is None or settings is None or refused.status != 401:
            return refused
        # A wrong token counts towards [auth_throttle] on this path too (throttled() sees only the
        # Pending): a flood of forged signatures parked behind a fetch is slowed and blocked as others are.
        late = after_failure(ex, refused, settings)
        return late if isinstance(late, Denial) else await late.awaitable

    def _settle(self, ex: Exchange, token: bytes, outcome: JwtIdentity | Denial, now: float) -> Denial | None:
        """Cache a verification's result and apply it to the exchange."""
        if isinstance(outcome, Denial):
            if len(self._bad) >= self.cache_size:
                self._bad.clear()
            # A token not yet valid becomes valid at its nbf: kept a second at most, not negative_ttl
            # (30 s by default), so a token used as soon as it is issued (clock skew) is not refused on.
            ttl = min(self.negative_ttl, NOT_YET_TTL) if outcome is NOT_YET else self.negative_ttl
            self._bad[token] = (now + ttl, outcome, self._key_generation())
            return outcome
        good = self._good
        good[token] = outcome
        if len(good) > self.cache_size:
            good.popitem(last=False)
        if outcome.cert_thumbprint and not _bound_to(outcome, ex):
            return UNBOUND
        ex.consumer = outcome
        return None

    def _leeway(self, identity: JwtIdentity) -> float:
        issuer = self.issuers.get(identity.issuer)
        return issuer.leeway if issuer is not None else 0.0

    def _verify(self, token: str) -> tuple[JwtIssuer | None, JwtIdentity | Denial]:
        self.verifications += 1
        if token.count(".") == 4:  # JWE compact serialisation: five parts
            if self.jwe is None:
                return None, MALFORMED
            inner = self.jwe.decrypt(token)
            if inner is None:
                return None, UNDECRYPTABLE
            token = inner
        elif self.jwe is not None and self.jwe.required:
            return None, JWE_REQUIRED
        if _COMPACT_JWS.fullmatch(token) is None:
            return None, MALFORMED
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, MALFORMED
        if not _numeric_dates(unverified):
            return None, BAD_CLAIMS
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            return issuer, UNKNOWN_ISSUER
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            return issuer, BAD_ALGORITHM
        key = issuer.key_for(alg, header.get("kid"))
        if key is None:
            return issuer, UNKNOWN_KEY
        require = ["exp", "iss"] + (["aud"] if issuer.audiences else [])
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(issuer.audiences) or None,
                issuer=issuer.issuer,
                leeway=issuer.leeway,
                options={"require": require, "verify_aud": bool(issuer.audiences)},
            )
        except jwt.ExpiredSignatureError:
            return issuer, EXPIRED
        except jwt.ImmatureSignatureError:
            return issuer, NOT_YET
        except jwt.InvalidAudienceError:
            return issuer, BAD_AUDIENCE
        except (jwt.MissingRequiredClaimError, jwt.InvalidIssuerError, jwt.InvalidIssuedAtError):
            return issuer, BAD_CLAIMS
        except (
            jwt.InvalidSignatureError,
            jwt.InvalidKeyError,
            jwt.InvalidAlgorithmError,
            TypeError,
            ValueError,
        ):
            return issuer, BAD_SIGNATURE
        except jwt.PyJWTError:
            return issuer, MALFORMED
        identity = issuer.identity(claims)
        return issuer, identity if identity is not None else BAD_CLAIMS


class JwtRouteBinding:
    """The issuers (and audiences) one route accepts, checked after :class:`JwtAuth` has verified the
    token (its cache is shared by every route): a token of another issuer is refused here, on this route
    only. Compiled only where the route narrows what the [jwt] table accepts."""

    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION
    __slots__ = ("audiences", "issuers", "name", "shadow")

    def __init__(self, name: str, issuers: frozenset[str], audiences: frozenset[str], shadow: bool) -> None:
        self.name = name
        self.issuers = issuers  # "iss" values
        self.audiences = audiences
        self.shadow = shadow

    def check(self, ex: Exchange) -> Denial | None:
        identity = ex.consumer
        if not isinstance(identity, JwtIdentity):
            return None  # shadow mode let an unverified request through; it is anonymous
        if identity.issuer not in self.issuers:
            ex.consumer = None
            return WRONG_ISSUER
        if self.audiences and self.audiences.isdisjoint(identity.audiences):
            ex.consumer = None
            return WRONG_AUDIENCE
        return None
