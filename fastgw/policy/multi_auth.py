"""Alternative authentication on one route: ``auth = ["api_key", "jwt"]`` accepts either.

Compiled only for routes whose ``auth`` is a list; single-scheme routes keep their one policy and pay
nothing for this. The schemes are not tried one after another (that would spend a verification per
scheme on every credential, and let a wrong credential fall through to another scheme): each credential
the request presents is assigned to the one scheme its shape and place name, and verified once, by that
scheme's own policy (its cache, throttling and denials):

* an API-key header other than Authorization (``X-API-Key``): ``api_key``;
* ``Authorization: Bearer fgw_...`` where Authorization is one of ``api_key.headers``: ``api_key``;
* another Bearer token of three (JWS) or five (JWE) dot-separated parts: ``jwt``;
* any other Bearer token: ``introspection`` (opaque tokens; JWTs too where the route has no ``jwt``);
  without it, the route's first bearer scheme, whose policy refuses it (never skipped);
* a verified client certificate: ``mtls``.

No credential: 401 with one ``WWW-Authenticate`` challenge per distinct scheme (API keys, JWTs and opaque
tokens share ``Bearer``). Credentials of two schemes: 400 (``auth_multiple = "refuse"``, which one would
the upstream believe?) or, with ``"all"``, each is verified and all must pass; the consumer, scopes and
roles are then those of the scheme listed first. ``Exchange.auth`` names the scheme(s) used, for the log.
A ``routes.jwt`` binding is applied right after the JWT step (not as a separate chain policy, which would
see another scheme's consumer and let the token through unchecked).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, ClassVar, Final

from fastgw.exchange import Exchange
from fastgw.key_format import PREFIX
from fastgw.policy.api_key import DUPLICATE as KEY_DUPLICATE
from fastgw.policy.api_key import ApiKeyAuth, bearer_denials
from fastgw.policy.chain import Denial, Pending, Phase, Policy, resolve_pending
from fastgw.policy.mtls import NO_CERTIFICATE

if TYPE_CHECKING:  # pyjwt and cryptography load only with a [jwt] table (policy/jwt_config.py)
    from fastgw.policy.jwt_auth import JwtRouteBinding

_BEARER_DUPLICATE: Final = bearer_denials("auth")[1]
_CHALLENGES: Final = {
    "api_key": (b"www-authenticate", b'Bearer realm="fastgw"'),
    "jwt": (b"www-authenticate", b'Bearer realm="fastgw"'),
    "introspection": (b"www-authenticate", b'Bearer realm="fastgw"'),
    "mtls": NO_CERTIFICATE.headers[0],
}
AMBIGUOUS: Final = Denial(
    400,
    "bad-request",
    "credentials of more than one authentication scheme; send one",
    "auth.ambiguous",
    ((b"www-authenticate", b'Bearer realm="fastgw", error="invalid_request"'),),
)


def missing_denial(schemes: tuple[str, ...]) -> Denial:
    """401 naming every accepted scheme, with one challenge per distinct HTTP auth scheme."""
    challenges = tuple(dict.fromkeys(_CHALLENGES[s] for s in schemes))
    detail = "credentials are required: " + " or ".join(s.replace("_", " ") for s in schemes)
    return Denial(401, "unauthorized", detail, "auth.missing", challenges)


class MultiAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION
    __slots__ = (
        "api_key",
        "bearer_fallback",
        "bearer_keys",
        "binding",
        "key_headers",
        "missing",
        "name",
        "order",
        "policies",
        "refuse",
        "shadow",
    )

    def __init__(
        self,
        name: str,
        policies: dict[str, Policy],
        binding: JwtRouteBinding | None,
        multiple: str,
    ) -> None:
        self.name = name
        self.shadow = False  # each scheme's own policy applies its mode
        self.policies = policies  # scheme name -> its policy, in the route's order
        self.order = tuple(policies)
        self.binding = binding
        self.refuse = multiple == "refuse"
        api_key = policies.get("api_key")
        self.api_key = api_key if isinstance(api_key, ApiKeyAuth) else None
        headers = self.api_key.headers if self.api_key is not None else frozenset()
        self.key_headers = headers - {b"authorization"}
        self.bearer_keys = b"authorization" in headers
        bearers = [
            s for s in self.order if s in ("jwt", "introspection") or (s == "api_key" and self.bearer_keys)
        ]
        self.bearer_fallback = bearers[0] if bearers else ""  # "": a Bearer token is no credential here
        self.missing = missing_denial(self.order)

    def check(self, ex: Exchange) -> Denial | Pending | None:
        found: list[tuple[str, bytes]] = []  # (scheme, credential), in the order found
        bearer: bytes | None = None
        key_headers = self.key_headers
        for name, value in ex.headers:
            if name == b"authorization":
                if bearer is not None:
                    return _BEARER_DUPLICATE
                bearer = value
            elif name in key_headers:
                if found:
                    return KEY_DUPLICATE  # two key headers (the only credentials found so far)
                found.append(("api_key", value.strip()))
        if bearer is not None:
            auth_scheme, _, token = bearer.partition(b" ")
            token = token.strip()
            # Another HTTP scheme (Basic, ...) is no credential of ours, as on single-scheme routes.
            if auth_scheme.lower() == b"bearer" and token:
                kind = self._bearer_kind(token)
                if kind:
                    if kind == "api_key" and found:
                        return KEY_DUPLICATE  # X-API-Key and a Bearer key: as ApiKeyAuth says
                    found.append((kind, token))
        if ex.client_cert is not None and "mtls" in self.policies:
            found.append(("mtls", b""))
        if not found:
            return self.missing
        if len(found) == 1:
            scheme, credential = found[0]
            ex.auth = scheme
            return self._step(ex, scheme, credential)
        if self.refuse:
            return AMBIGUOUS
        return self._all(ex, sorted(found, key=lambda f: self.order.index(f[0])))

    def _bearer_kind(self, token: bytes) -> str:
        policies = self.policies
        if self.bearer_keys and token.startswith(PREFIX):
            return "api_key"
        if "jwt" in policies and token.count(b".") in (2, 4):
            return "jwt"
        if "introspection" in policies:
            return "introspection"
        return self.bearer_fallback

    def _step(self, ex: Exchange, scheme: str, credential: bytes) -> Denial | Pending | None:
        """Verify one credential with its scheme's policy (shadow mode and the route's JWT binding)."""
        policy = self.policies[scheme]
        if scheme == "api_key" and self.api_key is not None:
            outcome = self.api_key.check_key(ex, credential)
        else:
            outcome = policy.check(ex)
        if isinstance(outcome, Pending):
            return Pending(self._after(ex, scheme, policy, outcome.awaitable))
        return self._bound(ex, scheme, resolve_pending(policy, ex, outcome))

    async def _after(
        self, ex: Exchange, scheme: str, policy: Policy, awaitable: Awaitable[Denial | None]
    ) -> Denial | None:
        return self._bound(ex, scheme, resolve_pending(policy, ex, await awaitable))

    def _bound(self, ex: Exchange, scheme: str, outcome: Denial | None) -> Denial | None:
        binding = self.binding
        if outcome is not None or scheme != "jwt" or binding is None:
            return outcome
        return resolve_pending(binding, ex, binding.check(ex))

    def _all(self, ex: Exchange, ordered: list[tuple[str, bytes]]) -> Denial | Pending | None:
        """``auth_multiple = "all"``: every credential verified, the first scheme's identity kept."""
        ex.auth = "+".join(scheme for scheme, _ in ordered)
        first = None
        for i, (scheme, credential) in enumerate(ordered):
            outcome = self._step(ex, scheme, credential)
            if isinstance(outcome, Pending):
                return Pending(self._all_after(ex, ordered, i, outcome.awaitable, first))
            if outcome is not None:
                ex.consumer = None
                return outcome
            if i == 0:
                first = ex.consumer
        ex.consumer = first
        return None

    async def _all_after(
        self,
        ex: Exchange,
        ordered: list[tuple[str, bytes]],
        index: int,
        awaitable: Awaitable[Denial | None],
        first: object,
    ) -> Denial | None:
        outcome = await awaitable
        for i in range(index, len(ordered)):
            if i > index:
                scheme, credential = ordered[i]
                step = self._step(ex, scheme, credential)
                outcome = await step.awaitable if isinstance(step, Pending) else step
            if outcome is not None:
                ex.consumer = None
                return outcome
            if i == 0:
                first = ex.consumer
        ex.consumer = first
        return None
