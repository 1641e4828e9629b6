"""Compile the [jwt] table and a route's ``jwt`` binding into the policies of ``jwt_auth``.

Kept beside jwt_auth.py rather than in it: key loading (files, JWKS URLs, discovery, JWE keys) is
control-plane code that the data-plane module need not carry. Every config loads this module for its
schema, so the modules that load pyjwt and cryptography (jwt_auth, jwks, config/jwt_keys; ~11 MiB of RSS
in each worker, tests/e2e/test_resources.py) are imported by the functions that compile a [jwt] table.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastgw.config.context import CompileContext
from fastgw.config.fields import CACHE_MAX, HEAD_MAX, SECONDS_MAX, SecretSpec, Section, doc
from fastgw.policy.jwt_consumer_ids import (
    CONSUMER_PREFIX_MAX,
    check_consumer_prefix,
    warn_shared_consumer_ids,
)
from fastgw.secret_refs import resolve_secret

if TYPE_CHECKING:
    from fastgw.policy.jwe import JweDecrypter
    from fastgw.policy.jwks import RemoteJwks
    from fastgw.policy.jwt_auth import JwtAuth, JwtIssuer, JwtRouteBinding


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtIssuerSpec:
    issuer: str = doc("the exact 'iss' value of this issuer's tokens", ...)
    audiences: tuple[str, ...] = doc(
        "'aud' must contain one of these (required unless empty list given)", ...
    )
    algorithms: tuple[str, ...] = doc(
        "allowed 'alg' values; HS* need secret, RS*/PS*/ES*/EdDSA need public keys; never 'none'", ...
    )
    secret: SecretSpec | None = doc("shared HMAC secret (a secret reference, >= 32 bytes)", None)
    public_keys: tuple[str, ...] = doc("PEM public key files (used for tokens without a kid)", ())
    jwks_file: str | None = doc("a JWKS file (JSON Web Key Set): keys chosen by 'kid'", None)
    jwks_url: str | None = doc("a JWKS URL, fetched by each worker and refreshed in the background", None)
    discovery_url: str | None = doc("an OIDC discovery document whose jwks_uri names the JWKS", None)
    jwks_refresh: float = doc("seconds between background JWKS refreshes", 300.0, most=SECONDS_MAX)
    jwks_min_interval: float = doc(
        "least seconds between fetches (an unknown kid triggers one)", 10.0, most=SECONDS_MAX
    )
    jwks_timeout: float = doc("seconds a JWKS or discovery fetch may take", 3.0, most=SECONDS_MAX)
    jwks_max_stale: float = doc(
        "seconds the last good JWKS (kept across reloads and worker restarts in the state directory)"
        " is still used while the identity provider cannot be reached; older keys verify nothing",
        86400.0,
        most=(7 * 86400, "a week: an identity provider down longer needs an operator, not old keys"),
    )
    discovery_refresh: float = doc(
        "seconds between re-reads of the OIDC discovery document (also re-read after a failed JWKS fetch)",
        3600.0,
        most=SECONDS_MAX,
    )
    allow_insecure_http: bool = doc(
        "accept plain http:// JWKS and discovery URLs (and a discovered jwks_uri); loopback is always"
        " accepted, with a warning",
        False,
    )
    ca: str | None = doc("PEM bundle to verify the JWKS and discovery URLs with (default: system)", None)
    leeway: float = doc("seconds of clock skew tolerated on exp, nbf and iat", 30.0, most=SECONDS_MAX)
    consumer_claim: str = doc("claim naming the caller", "sub")
    consumer_prefix: str = doc(
        "put before the consumer_claim's value to make the caller's consumer (name and id: limits, budgets,"
        " usage rows, identity headers) and before the team_claim's to make its team: 'okta:' makes sub"
        " 'alice' 'okta:alice' and team 'ops' 'okta:ops' (as routes.authorize teams must name it); '' = the"
        " claims alone. Set it where a route or a shared budget takes several issuers, or the same sub from"
        f" each is one consumer (printable, at most {CONSUMER_PREFIX_MAX} characters, no space, '\"' or"
        " '\\', and not the start of another issuer's prefix)",
        "",
    )
    scopes_claim: str = doc("claim with the scopes ('' = 'scope' (space-separated) or 'scp')", "")
    roles_claim: str = doc("claim with the roles (a list; '' = none)", "roles")
    team_claim: str = doc("claim with the team, after the consumer_prefix ('' = none)", "")
    models_claim: str = doc(
        "claim with the llm models the caller may use: an array or a space-separated string of glob"
        " patterns ('' = tokens grant no list: every model the route serves; once named, a token without"
        " the claim may use no model)",
        "",
    )
    require_cert_binding: bool = doc(
        "tokens must carry cnf.x5t#S256 matching the client certificate (RFC 8705)", False
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JweSpec:
    key: SecretSpec = doc(
        "decryption key: a PEM RSA private key (RSA-OAEP-256) or 32 raw bytes (dir), as a secret reference",
        ...,
    )
    algorithm: Literal["RSA-OAEP-256", "dir"] = doc(
        "key management algorithm (content: A256GCM)", "RSA-OAEP-256"
    )
    required: bool = doc("refuse tokens that are not encrypted", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtSpec:
    issuers: dict[str, JwtIssuerSpec] = doc("[jwt.issuers.NAME] tables, one per token issuer", ...)
    max_token_bytes: int = doc("longest bearer token accepted (else 401)", 8192, most=HEAD_MAX)
    cache_size: int = doc("verified (and refused) tokens remembered per worker", 10000, most=CACHE_MAX)
    jwe: JweSpec | None = doc("decrypt nested JWE tokens before verifying them (a table, see jwt.jwe)", None)
    negative_ttl: float = doc("seconds a refused token is answered from the cache", 30.0, most=SECONDS_MAX)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteJwtSpec:
    issuers: tuple[str, ...] = doc(
        "names of [jwt.issuers.NAME] tables whose tokens this route accepts (two or more without a"
        " consumer_prefix, or with prefixes one of which starts another: a warning, as the same consumer id"
        " could name users of each)",
        ...,
    )
    audiences: tuple[str, ...] = doc(
        "the token's 'aud' must also contain one of these (empty: the issuer's audiences suffice)", ()
    )


def compile(spec: JwtSpec | None, ctx: CompileContext) -> None:
    """[jwt]: issuers and their keys (inline, files or fetched JWKS); auth = "jwt" on routes."""
    if spec is None:
        return
    from fastgw.config.jwt_keys import issuer_keys
    from fastgw.policy.jwt_auth import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, JwtAuth, JwtIssuer

    if not spec.issuers:
        raise ctx.error("jwt.issuers", "needs at least one issuer")
    for name in ("max_token_bytes", "cache_size", "negative_ttl"):
        ctx.positive(f"jwt.{name}", getattr(spec, name))
    issuers: dict[str, JwtIssuer] = {}
    for name, it in spec.issuers.items():
        key = f"jwt.issuers.{name}"
        if not it.issuer:
            raise ctx.error(f"{key}.issuer", "must not be empty")
        if it.issuer in issuers:
            raise ctx.error(f"{key}.issuer", f"{it.issuer!r} is configured twice")
        algorithms = frozenset(it.algorithms)
        for alg in it.algorithms:
            if alg.lower() == "none":
                raise ctx.error(f"{key}.algorithms", "'none' is never allowed")
            if alg not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
                raise ctx.error(f"{key}.algorithms", f"unknown algorithm {alg!r}")
        if not algorithms:
            raise ctx.error(f"{key}.algorithms", "needs at least one algorithm")
        secret = None
        if algorithms & HMAC_ALGORITHMS:
            if it.secret is None:
                raise ctx.error(f"{key}.secret", "HS* algorithms need a shared secret")
            secret = resolve_secret(ctx.secret(f"{key}.secret", it.secret))
            if len(secret) < 32:
                raise ctx.error(f"{key}.secret", "must be at least 32 bytes")
        elif it.secret is not None:
            raise ctx.error(f"{key}.secret", "a secret is only used by HS* algorithms")
        try:
            by_kid, without_kid = issuer_keys(
                [ctx.path(p) for p in it.public_keys],
                ctx.path(it.jwks_file) if it.jwks_file else None,
                algorithms & ASYMMETRIC_ALGORITHMS,
            )
        except ValueError as exc:
            raise ctx.error(key, str(exc)) from None
        remote = _remote_jwks(ctx, name, it, algorithms & ASYMMETRIC_ALGORITHMS, ctx.state_dir, ctx.warnings)
        if algorithms & ASYMMETRIC_ALGORITHMS and not (by_kid or without_kid or remote):
            raise ctx.error(key, "RS*/PS*/ES*/EdDSA algorithms need public_keys, jwks_file or jwks_url")
        if (by_kid or without_kid) and not algorithms & ASYMMETRIC_ALGORITHMS:
            raise ctx.error(f"{key}.algorithms", "public keys are configured but no asymmetric algorithm")
        if it.leeway < 0:
            raise ctx.error(f"{key}.leeway", "must not be negative")
        check_consumer_prefix(ctx, f"{key}.consumer_prefix", it.consumer_prefix)
        issuers[it.issuer] = JwtIssuer(
            name=name,
            issuer=it.issuer,
            audiences=it.audiences,
            algorithms=algorithms,
            secret=secret,
            keys_by_kid=by_kid,
            keys_without_kid=tuple(without_kid),
            leeway=it.leeway,
            consumer_claim=it.consumer_claim,
            scopes_claim=it.scopes_claim,
            roles_claim=it.roles_claim,
            team_claim=it.team_claim,
            models_claim=it.models_claim,
            require_cert_binding=it.require_cert_binding,
            remote=remote,
            consumer_prefix=it.consumer_prefix,
        )
    jwe = _jwe_decrypter(ctx, spec.jwe) if spec.jwe is not None else None
    shadow = spec.mode == "shadow"
    ctx.jwt_issuer_names = {name: it.issuer for name, it in spec.issuers.items()}
    ctx.jwt_consumer_prefixes = {name: it.consumer_prefix for name, it in spec.issuers.items()}
    ctx.credential_headers["jwt"] = frozenset({b"authorization"})
    ctx.auth["jwt"] = JwtAuth(
        "jwt",
        issuers,
        spec.max_token_bytes,
        spec.cache_size,
        spec.negative_ttl,
        shadow,
        ctx.throttle,
        jwe,
        clock=ctx.clock,
    )


def route_binding(
    ctx: CompileContext, key: str, spec: RouteJwtSpec | None, jwt_auth: JwtAuth
) -> JwtRouteBinding | None:
    """A route's issuer and audience binding; None where the route accepts all the [jwt] table does.

    Unset with one issuer configured means that issuer; unset with several is an error, so adding a
    second issuer never silently opens every existing route to it.
    """
    from fastgw.policy.jwt_auth import JwtRouteBinding

    names = ctx.jwt_issuer_names
    if spec is None:
        if len(names) > 1:
            listed = ", ".join(sorted(names))
            reason = f"{len(names)} JWT issuers are configured ({listed}): name those this route accepts"
            raise ctx.error(f"{key}.jwt.issuers", reason)
        ctx.route_jwt_issuers = tuple(names)
        return None
    if not spec.issuers:
        raise ctx.error(f"{key}.jwt.issuers", "needs at least one issuer name")
    for i, name in enumerate(spec.issuers):
        if name not in names:
            expected = ", ".join(sorted(names))
            raise ctx.error(
                f"{key}.jwt.issuers[{i}]", f"unknown issuer {name!r} (expected one of {expected})"
            )
    ctx.route_jwt_issuers = tuple(name for name in names if name in spec.issuers)
    warn_shared_consumer_ids(ctx, key, spec.issuers, jwt_auth)
    issuers = frozenset(names[n] for n in spec.issuers)
    if issuers == frozenset(names.values()) and not spec.audiences:
        return None  # nothing narrower than JwtAuth itself: no extra check per request
    return JwtRouteBinding("jwt", issuers, frozenset(spec.audiences), jwt_auth.shadow)


def _jwe_decrypter(ctx: CompileContext, spec: JweSpec) -> JweDecrypter:
    from joserfc.jwk import OctKey, RSAKey

    from fastgw.policy.jwe import JweDecrypter

    material = resolve_secret(ctx.secret("jwt.jwe.key", spec.key))
    try:
        if spec.algorithm == "dir":
            if len(material) != 32:
                raise ValueError("a 'dir' A256GCM key must be exactly 32 bytes")
            key: Any = OctKey.import_key(material)
        else:
            key = RSAKey.import_key(material)
            if not key.is_private:
                raise ValueError("RSA-OAEP-256 needs the RSA private key")
    except ValueError as exc:
        raise ctx.error("jwt.jwe.key", str(exc)) from None
    return JweDecrypter(key, spec.algorithm, spec.required)


def _remote_jwks(
    ctx: CompileContext,
    name: str,
    it: JwtIssuerSpec,
    algorithms: frozenset[str],
    state_dir: str,
    warnings: list[str],
) -> RemoteJwks | None:
    key = f"jwt.issuers.{name}"
    if it.jwks_url is None and it.discovery_url is None:
        return None
    from fastgw.policy.http_client import Endpoint
    from fastgw.policy.jwks import RemoteJwks, is_loopback
    from fastgw.policy.jwt_auth import key_fits

    if it.jwks_url is not None and it.discovery_url is not None:
        raise ctx.error(key, "name jwks_url or discovery_url, not both")
    if not algorithms:
        raise ctx.error(f"{key}.algorithms", "a JWKS URL needs an asymmetric algorithm")
    for setting in (
        "jwks_refresh",
        "jwks_min_interval",
        "jwks_timeout",
        "jwks_max_stale",
        "discovery_refresh",
    ):
        ctx.positive(f"{key}.{setting}", getattr(it, setting))
    tls = ctx.verifying_tls(key, it.ca)
    url_key = "jwks_url" if it.jwks_url is not None else "discovery_url"
    url = it.jwks_url or it.discovery_url or ""
    try:
        endpoint = Endpoint.parse(url, tls)
    except ValueError as exc:
        raise ctx.error(f"{key}.{url_key}", str(exc)) from None
    if endpoint.tls is None:
        if not it.allow_insecure_http and not is_loopback(endpoint.host):
            reason = "is plain http://: keys could be swapped in transit (allow_insecure_http = true)"
            raise ctx.error(f"{key}.{url_key}", reason)
        warnings.append(f"{key}.{url_key} is plain http: its keys are not protected in transit")
    digest = hashlib.blake2b(f"{it.issuer}\n{url}".encode(), digest_size=16).hexdigest()
    return RemoteJwks(
        name=name,
        issuer=it.issuer,
        jwks=endpoint if it.jwks_url is not None else None,
        discovery=endpoint if it.discovery_url is not None else None,
        tls=tls,
        fits=lambda k: any(key_fits(k, alg) for alg in algorithms),
        refresh=it.jwks_refresh,
        min_interval=it.jwks_min_interval,
        timeout=it.jwks_timeout,
        max_stale=it.jwks_max_stale,
        rediscover=it.discovery_refresh,
        allow_insecure_http=it.allow_insecure_http,
        saved_file=os.path.join(state_dir, "jwks", f"{digest}.json"),
    )


# [jwt] and routes.jwt in the schema and the reference (policy/registry.py declares them).
SECTION = Section(
    JwtSpec,
    "[jwt] bearer token issuers (needed by auth = 'jwt')",
    "optional",
    (
        ("[jwt]", JwtSpec, "JWT bearer tokens (routes with auth = 'jwt')."),
        ("jwt.jwe", JweSpec, "Nested JWE tokens, decrypted with joserfc before verification."),
        ("jwt.issuers.NAME", JwtIssuerSpec, "One token issuer: its keys, algorithms and claims."),
    ),
)
ROUTE_SECTION = Section(
    RouteJwtSpec,
    "which [jwt.issuers] and audiences an auth = 'jwt' route accepts (a table, see routes.jwt);"
    " unset: every issuer, if only one is configured",
    "optional",
    (
        (
            "routes.jwt",
            RouteJwtSpec,
            "Which JWT issuers and audiences an auth = 'jwt' route accepts; required once several issuers"
            " are configured.",
        ),
    ),
)
