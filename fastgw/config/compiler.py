"""Specs -> Snapshot: check what types cannot express, then precompute everything the data plane needs.

The compiler runs in the control plane only. It never mutates a spec and never exits; every problem is a
``ConfigError`` with the key path. Output is immutable: a route table, per-route policy tuples sorted by
phase, header lines pre-encoded as bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import ssl
from collections.abc import Sequence
from typing import Any, Final, Literal

from fastgw.codec.http1_backends import resolve_backend
from fastgw.codec.path import normalize_path
from fastgw.config.loader import ConfigError, _did_you_mean, parse_config, read_config_bytes
from fastgw.config.schema import (
    AdminSpec,
    ApiKeySpec,
    AuditSpec,
    AuthorizeSpec,
    AuthThrottleSpec,
    ConfigSpec,
    CorsSpec,
    HeaderOpsSpec,
    HealthCheckSpec,
    Http2Spec,
    IdentityHeadersSpec,
    IntrospectionSpec,
    JweSpec,
    JwtIssuerSpec,
    JwtSpec,
    KeysSpec,
    MtlsSpec,
    NetworkSpec,
    ProcessSpec,
    RateLimitSpec,
    RedisSpec,
    RequirementSpec,
    RouteJwtSpec,
    RouteSpec,
    SecretSpec,
    SecurityHeadersSpec,
    StateSpec,
    TlsSpec,
    UpstreamSpec,
)
from fastgw.policy.api_key import ApiKeyAuth
from fastgw.policy.chain import Policy
from fastgw.policy.cors import Cors
from fastgw.policy.http_client import Endpoint
from fastgw.policy.identity import IDENTITIES
from fastgw.policy.introspection import IntrospectionAuth, IntrospectionEndpoint, basic_authorization
from fastgw.policy.jwks import RemoteJwks, is_loopback
from fastgw.policy.jwt_auth import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    JweDecrypter,
    JwtAuth,
    JwtIssuer,
    JwtRouteBinding,
    key_fits,
)
from fastgw.policy.mtls import MtlsAuth, normalise_fingerprint
from fastgw.policy.multi_auth import MultiAuth
from fastgw.policy.network import NetworkRules, parse_networks
from fastgw.policy.rate_limit import COUNTERS, LimitSpec, RateLimit
from fastgw.policy.rbac import Authorize, Principal, Requirement, requirement
from fastgw.policy.throttle import ThrottleSettings
from fastgw.proxy_headers.hop_by_hop import header_lines
from fastgw.proxy_headers.request_head import request_drop_sets
from fastgw.proxy_headers.response_head import response_drop_set, response_field_table
from fastgw.router import HostTable, MethodTable, Router, route_key
from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import (
    AccessLogSettings,
    AdminSettings,
    AuditSettings,
    HealthCheckSettings,
    Http2Settings,
    IPNetwork,
    KeySettings,
    ListenerSettings,
    ProcessSettings,
    RedisSettings,
    Route,
    SecretRef,
    ServerSettings,
    Snapshot,
    StateSettings,
    Target,
    UpstreamSettings,
)
from fastgw.tls.client import build_client_tls
from fastgw.tls.server import ListenerTls, TlsConfigError, build_listener_tls

# Connections are recycled to rebalance workers; beyond a day the spread would take longer than anyone waits.
MAX_CONNECTION_AGE: Final = 86400.0
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOSTNAME: Final = re.compile(r"(\*|\*\.[A-Za-z0-9.-]+|[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])")
# Headers whose framing or routing meaning the gateway owns; config may not set or remove them.
_MANAGED: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
)


def parse_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``. Raises ValueError with a reason."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


# auth scheme -> (the _Compiler attribute holding its policy, what the config needs for it): a table, so a
# new scheme is one row here and one in schema.AuthScheme.
_AUTH_POLICIES: Final[dict[str, tuple[str, str]]] = {
    "api_key": ("api_key", "a [keys] table with a pepper"),
    "jwt": ("jwt", "a [jwt] table with at least one issuer"),
    "introspection": ("introspection", "an [introspection] table"),
    "mtls": ("mtls", "an [mtls] table mapping certificates"),
}


class _Compiler:
    snapshot_id = b""
    snapshot_header = b""
    api_key: ApiKeyAuth | None = None
    throttle: ThrottleSettings | None = None
    jwt: JwtAuth | None = None
    jwt_issuer_names: dict[str, str] = {}  # [jwt.issuers.NAME] -> its "iss" value
    mtls: MtlsAuth | None = None
    introspection: IntrospectionAuth | None = None
    identity_headers: tuple[tuple[bytes, str], ...] = ()
    security_headers: tuple[tuple[bytes, bytes], ...] = ()
    security_remove: frozenset[bytes] = frozenset()
    hsts = b""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, key, reason)

    def positive(self, key: str, value: float) -> None:
        if value <= 0:
            raise self.error(key, f"must be greater than 0, got {value}")

    def networks(self, key: str, values: Sequence[str]) -> tuple[IPNetwork, ...]:
        for i, value in enumerate(values):
            try:
                parse_networks([value])
            except ValueError as exc:
                raise self.error(f"{key}[{i}]", str(exc)) from None
        return parse_networks(values)

    def network_policy(self, key: str, spec: NetworkSpec, name: str) -> NetworkRules | None:
        allow = self.networks(f"{key}.allow", spec.allow)
        deny = self.networks(f"{key}.deny", spec.deny)
        if not allow and not deny:
            return None
        return NetworkRules(name, allow, deny, spec.mode == "shadow")

    def header_ops(
        self, key: str, spec: HeaderOpsSpec
    ) -> tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...]]:
        for name in (*spec.set, *spec.remove):
            if not _TOKEN.fullmatch(name):
                raise self.error(key, f"{name!r} is not a valid header name")
            if name.lower() in _MANAGED:
                raise self.error(key, f"{name!r} is managed by the gateway and cannot be set or removed")
        for name, value in spec.set.items():
            if any(c in value for c in "\r\n\x00"):
                raise self.error(f"{key}.set.{name}", "header value contains CR, LF or NUL")
        drop = frozenset(n.lower().encode() for n in (*spec.remove, *spec.set))
        add = tuple((n.lower().encode(), v.encode("latin-1")) for n, v in spec.set.items())
        return drop, add

    def secret(self, key: str, spec: SecretSpec) -> SecretRef:
        given = [
            (k, v) for k, v in (("file", spec.file), ("env", spec.env), ("credential", spec.credential)) if v
        ]
        if len(given) != 1:
            raise self.error(key, "name exactly one of file, env or credential (secrets are never inline)")
        if spec.file:
            return SecretRef(kind="file", name=self.path(spec.file), key=key, file=self.file)
        if spec.env:
            return SecretRef(kind="env", name=spec.env, key=key, file=self.file)
        name = given[0][1]
        if "/" in name or name in (".", ".."):
            raise self.error(f"{key}.credential", "must be a credential name, not a path")
        return SecretRef(kind="credential", name=name, key=key, file=self.file)

    def authorize(self, key: str, spec: AuthorizeSpec) -> Authorize:
        def build(where: str, need: AuthorizeSpec | RequirementSpec) -> Requirement:
            scopes, roles, teams = need.scopes, need.roles, need.teams
            for field_name, values in (("scopes", scopes), ("roles", roles), ("teams", teams)):
                for i, value in enumerate(values):
                    if not value or any(c in value for c in ' "\\\r\n'):
                        raise self.error(f"{where}.{field_name}[{i}]", f"{value!r} is not a valid name")
            return requirement(frozenset(scopes), frozenset(roles), frozenset(teams))

        default = build(key, spec)
        per_method = {}
        for method, req in spec.methods.items():
            if not _TOKEN.fullmatch(method) or method != method.upper():
                raise self.error(f"{key}.methods.{method}", "must be an upper-case method name")
            per_method[method.encode()] = build(f"{key}.methods.{method}", req)
        return Authorize("authorize", default, per_method, spec.mode == "shadow")

    def cors(self, key: str, spec: CorsSpec) -> Cors:
        if not spec.allow_origins:
            raise self.error(f"{key}.allow_origins", "needs at least one origin (or '*')")
        for i, origin in enumerate(spec.allow_origins):
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise self.error(
                    f"{key}.allow_origins[{i}]", f"{origin!r} is not scheme://host[:port] or '*'"
                )
        if "*" in spec.allow_origins and spec.allow_credentials:
            raise self.error(f"{key}.allow_credentials", "cannot be true with allow_origins = ['*']")
        for field_name in ("allow_methods", "allow_headers", "expose_headers"):
            for i, value in enumerate(getattr(spec, field_name)):
                if not _TOKEN.fullmatch(value):
                    raise self.error(f"{key}.{field_name}[{i}]", f"{value!r} is not a token")
        if spec.max_age < 0:
            raise self.error(f"{key}.max_age", "must not be negative")
        return Cors(
            "cors",
            frozenset(o.encode() for o in spec.allow_origins),
            frozenset(m.upper().encode() for m in spec.allow_methods),
            frozenset(h.lower().encode() for h in spec.allow_headers),
            b", ".join(h.encode() for h in spec.expose_headers),
            spec.allow_credentials,
            spec.max_age,
        )

    def security(self, spec: SecurityHeadersSpec) -> None:
        pairs = []
        for field_name, header in (
            ("content_type_options", b"x-content-type-options"),
            ("referrer_policy", b"referrer-policy"),
            ("frame_options", b"x-frame-options"),
        ):
            value = getattr(spec, field_name)
            if any(c in value for c in "\r\n\x00"):
                raise self.error(f"security_headers.{field_name}", "contains CR, LF or NUL")
            if value:
                pairs.append((header, value.encode("latin-1")))
        if any(c in spec.hsts for c in "\r\n\x00"):
            raise self.error("security_headers.hsts", "contains CR, LF or NUL")
        for i, name in enumerate(spec.remove):
            if not _TOKEN.fullmatch(name):
                raise self.error(f"security_headers.remove[{i}]", f"{name!r} is not a header name")
            if name.lower() in _MANAGED:
                reason = f"{name!r} is managed by the gateway and cannot be removed"
                raise self.error(f"security_headers.remove[{i}]", reason)
        self.security_headers = tuple(pairs)
        self.security_remove = frozenset(n.lower().encode() for n in spec.remove)
        self.hsts = b"strict-transport-security: " + spec.hsts.encode() + b"\r\n" if spec.hsts else b""

    def jwt_policy(self, spec: JwtSpec, state_dir: str, warnings: list[str]) -> JwtAuth:
        from fastgw.config.jwt_keys import issuer_keys

        if not spec.issuers:
            raise self.error("jwt.issuers", "needs at least one issuer")
        for name in ("max_token_bytes", "cache_size", "negative_ttl"):
            self.positive(f"jwt.{name}", getattr(spec, name))
        issuers: dict[str, JwtIssuer] = {}
        for name, it in spec.issuers.items():
            key = f"jwt.issuers.{name}"
            if not it.issuer:
                raise self.error(f"{key}.issuer", "must not be empty")
            if it.issuer in issuers:
                raise self.error(f"{key}.issuer", f"{it.issuer!r} is configured twice")
            algorithms = frozenset(it.algorithms)
            for alg in it.algorithms:
                if alg.lower() == "none":
                    raise self.error(f"{key}.algorithms", "'none' is never allowed")
                if alg not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
                    raise self.error(f"{key}.algorithms", f"unknown algorithm {alg!r}")
            if not algorithms:
                raise self.error(f"{key}.algorithms", "needs at least one algorithm")
            secret = None
            if algorithms & HMAC_ALGORITHMS:
                if it.secret is None:
                    raise self.error(f"{key}.secret", "HS* algorithms need a shared secret")
                secret = resolve_secret(self.secret(f"{key}.secret", it.secret))
                if len(secret) < 32:
                    raise self.error(f"{key}.secret", "must be at least 32 bytes")
            elif it.secret is not None:
                raise self.error(f"{key}.secret", "a secret is only used by HS* algorithms")
            try:
                by_kid, without_kid = issuer_keys(
                    [self.path(p) for p in it.public_keys],
                    self.path(it.jwks_file) if it.jwks_file else None,
                    algorithms & ASYMMETRIC_ALGORITHMS,
                )
            except ValueError as exc:
                raise self.error(key, str(exc)) from None
            remote = self.remote_jwks(name, it, algorithms & ASYMMETRIC_ALGORITHMS, state_dir, warnings)
            if algorithms & ASYMMETRIC_ALGORITHMS and not (by_kid or without_kid or remote):
                raise self.error(key, "RS*/PS*/ES*/EdDSA algorithms need public_keys, jwks_file or jwks_url")
            if (by_kid or without_kid) and not algorithms & ASYMMETRIC_ALGORITHMS:
                raise self.error(
                    f"{key}.algorithms", "public keys are configured but no asymmetric algorithm"
                )
            if it.leeway < 0:
                raise self.error(f"{key}.leeway", "must not be negative")
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
                require_cert_binding=it.require_cert_binding,
                remote=remote,
            )
        jwe = self.jwe_decrypter(spec.jwe) if spec.jwe is not None else None
        shadow = spec.mode == "shadow"
        self.jwt_issuer_names = {name: it.issuer for name, it in spec.issuers.items()}
        return JwtAuth(
            "jwt",
            issuers,
            spec.max_token_bytes,
            spec.cache_size,
            spec.negative_ttl,
            shadow,
            self.throttle,
            jwe,
        )

    def jwt_binding(self, key: str, spec: RouteJwtSpec | None, jwt_auth: JwtAuth) -> JwtRouteBinding | None:
        """A route's issuer and audience binding; None where the route accepts all the [jwt] table does.

        Unset with one issuer configured means that issuer; unset with several is an error, so adding a
        second issuer never silently opens every existing route to it.
        """
        names = self.jwt_issuer_names
        if spec is None:
            if len(names) > 1:
                listed = ", ".join(sorted(names))
                reason = f"{len(names)} JWT issuers are configured ({listed}): name those this route accepts"
                raise self.error(f"{key}.jwt.issuers", reason)
            return None
        if not spec.issuers:
            raise self.error(f"{key}.jwt.issuers", "needs at least one issuer name")
        for i, name in enumerate(spec.issuers):
            if name not in names:
                expected = ", ".join(sorted(names))
                raise self.error(
                    f"{key}.jwt.issuers[{i}]", f"unknown issuer {name!r} (expected one of {expected})"
                )
        issuers = frozenset(names[n] for n in spec.issuers)
        if issuers == frozenset(names.values()) and not spec.audiences:
            return None  # nothing narrower than JwtAuth itself: no extra check per request
        return JwtRouteBinding("jwt", issuers, frozenset(spec.audiences), jwt_auth.shadow)

    def jwe_decrypter(self, spec: JweSpec) -> JweDecrypter:
        from joserfc.jwk import OctKey, RSAKey

        material = resolve_secret(self.secret("jwt.jwe.key", spec.key))
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
            raise self.error("jwt.jwe.key", str(exc)) from None
        return JweDecrypter(key, spec.algorithm, spec.required)

    def identity_header_names(self, spec: IdentityHeadersSpec) -> tuple[tuple[bytes, str], ...]:
        out = []
        for attribute in ("consumer", "consumer_id", "team", "roles", "scopes"):
            name = getattr(spec, attribute)
            if not name:
                continue
            if not _TOKEN.fullmatch(name) or name.lower() in _MANAGED:
                raise self.error(f"identity_headers.{attribute}", f"{name!r} is not a usable header name")
            out.append((name.lower().encode(), attribute))
        return tuple(out)

    def verifying_tls(self, table: str, ca: str | None) -> ssl.SSLContext:
        """The client TLS context for calls the gateway makes itself (identity providers): verifying,
        with the system store or the table's ``ca`` bundle."""
        try:
            return build_client_tls(True, self.path(ca) if ca else None, None, None, None).context
        except TlsConfigError as exc:
            raise self.error(f"{table}.{exc.key}", str(exc)) from None

    def introspection_policy(self, spec: IntrospectionSpec, warnings: list[str]) -> IntrospectionAuth:
        tls = self.verifying_tls("introspection", spec.ca) if spec.url.lower().startswith("https:") else None
        try:
            target = Endpoint.parse(spec.url, tls)
        except ValueError:
            raise self.error("introspection.url", "must be an http:// or https:// URL") from None
        if target.tls is None:
            if not spec.allow_insecure_http and not is_loopback(target.host):
                reason = (
                    "is plain http://: tokens and the client secret would travel in clear"
                    " (allow_insecure_http = true accepts it)"
                )
                raise self.error("introspection.url", reason)
            warnings.append("introspection.url is plain http: tokens and client credentials travel in clear")
        for name in (
            "timeout",
            "cache_ttl",
            "negative_ttl",
            "cache_size",
            "max_token_bytes",
            "max_concurrent",
        ):
            self.positive(f"introspection.{name}", getattr(spec, name))
        secret = resolve_secret(self.secret("introspection.client_secret", spec.client_secret))
        endpoint = IntrospectionEndpoint(
            target=target,
            authorization=basic_authorization(spec.client_id, secret),
            timeout=spec.timeout,
        )
        return IntrospectionAuth(
            "introspection",
            endpoint,
            spec.cache_ttl,
            spec.negative_ttl,
            spec.cache_size,
            spec.mode == "shadow",
            max_token_bytes=spec.max_token_bytes,
            max_concurrent=spec.max_concurrent,
            throttle=self.throttle,
        )

    def remote_jwks(
        self, name: str, it: JwtIssuerSpec, algorithms: frozenset[str], state_dir: str, warnings: list[str]
    ) -> RemoteJwks | None:
        key = f"jwt.issuers.{name}"
        if it.jwks_url is None and it.discovery_url is None:
            return None
        if it.jwks_url is not None and it.discovery_url is not None:
            raise self.error(key, "name jwks_url or discovery_url, not both")
        if not algorithms:
            raise self.error(f"{key}.algorithms", "a JWKS URL needs an asymmetric algorithm")
        for setting in (
            "jwks_refresh",
            "jwks_min_interval",
            "jwks_timeout",
            "jwks_max_stale",
            "discovery_refresh",
        ):
            self.positive(f"{key}.{setting}", getattr(it, setting))
        tls = self.verifying_tls(key, it.ca)
        url_key = "jwks_url" if it.jwks_url is not None else "discovery_url"
        url = it.jwks_url or it.discovery_url or ""
        try:
            endpoint = Endpoint.parse(url, tls)
        except ValueError as exc:
            raise self.error(f"{key}.{url_key}", str(exc)) from None
        if endpoint.tls is None:
            if not it.allow_insecure_http and not is_loopback(endpoint.host):
                reason = "is plain http://: keys could be swapped in transit (allow_insecure_http = true)"
                raise self.error(f"{key}.{url_key}", reason)
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

    def mtls_policy(self, spec: MtlsSpec) -> MtlsAuth:
        tables: dict[str, dict[str, Principal]] = {"sha256": {}, "san": {}, "subject": {}}
        for i, c in enumerate(spec.consumers):
            key = f"mtls.consumers[{i}]"
            given = [(kind, getattr(c, kind)) for kind in ("sha256", "san", "subject") if getattr(c, kind)]
            if len(given) != 1:
                raise self.error(key, "name exactly one of sha256, san or subject")
            kind, value = given[0]
            if kind == "sha256":
                value = normalise_fingerprint(value)
                if not re.fullmatch(r"[0-9a-f]{64}", value):
                    raise self.error(f"{key}.sha256", "must be 64 hex digits (colons allowed)")
            if value in tables[kind]:
                raise self.error(f"{key}.{kind}", f"{value!r} is mapped twice")
            if not c.consumer:
                raise self.error(f"{key}.consumer", "must not be empty")
            tables[kind][value] = Principal(
                consumer=c.consumer,
                consumer_id=c.consumer,
                team=c.team,
                roles=frozenset(c.roles),
                scopes=frozenset(c.scopes),
            )
        return MtlsAuth("mtls", tables["sha256"], tables["san"], tables["subject"], spec.mode == "shadow")

    def rate_limits(self, key: str, route: str, specs: tuple[RateLimitSpec, ...]) -> RateLimit:
        limits = []
        names: set[str] = set()
        for i, spec in enumerate(specs):
            where = f"{key}.limits[{i}]"
            if not _TOKEN.fullmatch(spec.name) or '"' in spec.name:
                raise self.error(f"{where}.name", f"{spec.name!r} is not a token")
            if spec.name in names:
                raise self.error(f"{where}.name", f"duplicate limit name {spec.name!r}")
            names.add(spec.name)
            if (spec.rate > 0) == (spec.concurrency > 0) or spec.rate < 0 or spec.concurrency < 0:
                raise self.error(where, "give either a positive rate (with per) or a positive concurrency")
            self.positive(f"{where}.per", spec.per)
            if spec.burst < 0 or (spec.burst and spec.algorithm != "gcra"):
                raise self.error(f"{where}.burst", "a non-negative burst, only with algorithm = 'gcra'")
            if spec.algorithm == "gcra" and spec.concurrency:
                raise self.error(f"{where}.algorithm", "GCRA needs a rate, not a concurrency")
            if (spec.key == "header") != (spec.header is not None):
                raise self.error(f"{where}.header", "name a header exactly when key = 'header'")
            if spec.header is not None and not _TOKEN.fullmatch(spec.header):
                raise self.error(f"{where}.header", f"{spec.header!r} is not a header name")
            if spec.quota and (spec.concurrency or spec.algorithm == "gcra"):
                raise self.error(f"{where}.quota", "a quota counts requests per period: give a rate, no GCRA")
            if spec.queue < 0:
                raise self.error(f"{where}.queue", f"must be 0 or more, got {spec.queue}")
            if spec.queue:
                self.positive(f"{where}.max_wait", spec.max_wait)
            limits.append(
                LimitSpec(
                    name=spec.name,
                    limit_id=f"{route}:{spec.name}".encode(),
                    rate=spec.rate,
                    window={"day": 86400.0, "month": 2592000.0}.get(spec.quota, spec.per),
                    key=spec.key,
                    header=(spec.header or "").lower().encode(),
                    shadow=spec.mode == "shadow",
                    concurrency=spec.concurrency,
                    gcra=spec.algorithm == "gcra",
                    burst=spec.burst,
                    quota=spec.quota,
                    queue=spec.queue,
                    max_wait=spec.max_wait,
                )
            )
        return RateLimit("rate_limit", tuple(limits), COUNTERS)

    def auth_throttle(self, spec: AuthThrottleSpec) -> ThrottleSettings | None:
        if not spec.enabled:
            return None
        for name in ("window", "slow_after", "block_after", "block_seconds"):
            self.positive(f"auth_throttle.{name}", getattr(spec, name))
        if spec.delay < 0:
            raise self.error("auth_throttle.delay", "must not be negative")
        if spec.block_after <= spec.slow_after:
            raise self.error("auth_throttle.block_after", "must be greater than slow_after")
        return ThrottleSettings(
            window=spec.window,
            slow_after=spec.slow_after,
            delay=spec.delay,
            block_after=spec.block_after,
            block_seconds=spec.block_seconds,
        )

    def keys(self, spec: KeysSpec) -> KeySettings:
        if not _TOKEN.fullmatch(spec.pepper_id):
            raise self.error("keys.pepper_id", "must be a short token (letters, digits, -._~)")
        peppers = {spec.pepper_id: resolve_secret(self.secret("keys.pepper", spec.pepper))}
        for pepper_id, ref in spec.old_peppers.items():
            if pepper_id == spec.pepper_id:
                raise self.error(f"keys.old_peppers.{pepper_id}", "is the current pepper_id")
            peppers[pepper_id] = resolve_secret(self.secret(f"keys.old_peppers.{pepper_id}", ref))
        if len(peppers[spec.pepper_id]) < 16:
            raise self.error("keys.pepper", "must be at least 16 bytes (32 random bytes advised)")
        return KeySettings(pepper_id=spec.pepper_id, peppers=peppers)

    def api_key_policy(self, spec: ApiKeySpec, keys: KeySettings | None) -> ApiKeyAuth | None:
        if keys is None:
            return None
        for i, name in enumerate(spec.headers):
            if not _TOKEN.fullmatch(name):
                raise self.error(f"api_key.headers[{i}]", f"{name!r} is not a header name")
        if not spec.headers:
            raise self.error("api_key.headers", "needs at least one header name")
        current = keys.peppers[keys.pepper_id]
        others = tuple(p for pid, p in keys.peppers.items() if pid != keys.pepper_id)
        return ApiKeyAuth(
            "api_key",
            frozenset(h.lower().encode() for h in spec.headers),
            (current, *others),
            IDENTITIES,
            spec.mode == "shadow",
            self.throttle,
        )

    def process(self, spec: ProcessSpec) -> ProcessSettings:
        if spec.workers < 0:
            raise self.error("process.workers", "must not be negative (0 = one per CPU)")
        self.positive("process.restart_backoff_max", spec.restart_backoff_max)
        self.positive("process.reload_timeout", spec.reload_timeout)
        self.positive("process.hang_timeout", spec.hang_timeout)
        if not 0 <= spec.max_connection_age <= MAX_CONNECTION_AGE:
            raise self.error(
                "process.max_connection_age",
                f"must be 0 (forever) to {MAX_CONNECTION_AGE:g} seconds, got {spec.max_connection_age}",
            )
        return ProcessSettings(
            workers=spec.workers,
            reuse_port=spec.reuse_port,
            max_connection_age=spec.max_connection_age,
            restart_backoff_max=spec.restart_backoff_max,
            reload_timeout=spec.reload_timeout,
            hang_timeout=spec.hang_timeout,
            watchdog=spec.watchdog,
        )

    def state(self, spec: StateSpec) -> StateSettings:
        directory = spec.dir
        if directory:
            directory = self.path(directory)
        elif os.environ.get("STATE_DIRECTORY"):
            directory = os.environ["STATE_DIRECTORY"].split(":")[0]
        else:
            base = os.environ.get("XDG_STATE_HOME") or os.path.join(
                os.path.expanduser("~"), ".local", "state"
            )
            directory = os.path.join(base, "fastgw")
        if spec.keep_configs < 1:
            raise self.error("state.keep_configs", "must be at least 1")
        pid_file = self.path(spec.pid_file) if spec.pid_file else os.path.join(directory, "fastgw.pid")
        return StateSettings(dir=directory, keep_configs=spec.keep_configs, pid_file=pid_file)

    def admin(self, spec: AdminSpec | None) -> AdminSettings | None:
        if spec is None:
            return None
        unix = ""
        host, port = "", 0
        if spec.bind.startswith("unix:"):
            unix = self.path(spec.bind[5:])
            if not spec.bind[5:]:
                raise self.error("admin.bind", "unix: needs a socket path")
        else:
            try:
                host, port = parse_address(spec.bind)
            except ValueError as exc:
                raise self.error("admin.bind", str(exc)) from None
        return AdminSettings(
            host=host,
            port=port,
            unix=unix,
            token=self.secret("admin.token", spec.token),
            open_metrics=spec.open_metrics,
        )

    def audit(self, spec: AuditSpec, state: StateSettings) -> AuditSettings:
        file = self.path(spec.file) if spec.file else os.path.join(state.dir, "audit.log")
        key = self.secret("audit.key", spec.key) if spec.key is not None else None
        return AuditSettings(file=file, key=key)

    def path(self, value: str) -> str:
        """A file named in the config: relative paths are relative to the config file."""
        if os.path.isabs(value) or self.file.startswith("<"):
            return value
        return os.path.join(os.path.dirname(os.path.abspath(self.file)), value)

    def redis(self, spec: RedisSpec) -> RedisSettings:
        key = "rate_limits.redis"
        if bool(spec.url) == (spec.url_secret is not None):
            raise self.error(key, "give exactly one of url or url_secret")
        url = spec.url
        if spec.url_secret is not None:
            url = resolve_secret(self.secret(f"{key}.url_secret", spec.url_secret)).decode().strip()
        elif "@" in url.split("//", 1)[-1].split("/", 1)[0]:
            raise self.error(
                f"{key}.url", "carries a password: give it as url_secret (secrets are never inline)"
            )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise self.error(f"{key}.url", "must be a redis://, rediss:// or unix:// URL")
        self.positive(f"{key}.flush_interval", spec.flush_interval)
        self.positive(f"{key}.timeout", spec.timeout)
        return RedisSettings(
            url=url, flush_interval=spec.flush_interval, timeout=spec.timeout, failure=spec.failure
        )

    def http2(self, spec: Http2Spec, server: ServerSettings) -> Http2Settings:
        for name in (
            "max_concurrent_streams",
            "initial_window_size",
            "max_requests_per_connection",
            "max_resets_per_second",
            "max_control_frames_per_second",
            "max_empty_frames_per_second",
            "max_continuation_frames",
            "max_outbound_buffer",
            "stream_buffer",
        ):
            self.positive(f"http2.{name}", getattr(spec, name))
        if spec.initial_window_size > 2**31 - 1:
            raise self.error("http2.initial_window_size", "must be at most 2147483647 (RFC 9113 6.9.2)")
        if spec.max_header_list_size < 0:
            raise self.error("http2.max_header_list_size", "must be 0 (server.max_header_bytes) or more")
        return Http2Settings(
            enabled=spec.enabled,
            max_concurrent_streams=spec.max_concurrent_streams,
            initial_window_size=spec.initial_window_size,
            max_header_list_size=spec.max_header_list_size or server.max_header_bytes,
            max_requests_per_connection=spec.max_requests_per_connection,
            max_resets_per_second=spec.max_resets_per_second,
            max_control_frames_per_second=spec.max_control_frames_per_second,
            max_empty_frames_per_second=spec.max_empty_frames_per_second,
            max_continuation_frames=spec.max_continuation_frames,
            max_outbound_buffer=spec.max_outbound_buffer,
            stream_buffer=spec.stream_buffer,
        )

    def listener_tls(self, key: str, spec: TlsSpec, http2: bool) -> ListenerTls:
        def private(path: str) -> bool:
            try:
                return os.stat(path).st_mode & 0o077 == 0
            except OSError:
                return True

        try:
            return build_listener_tls(
                [(self.path(c.cert), self.path(c.key)) for c in spec.certificates],
                spec.profile,
                spec.client_auth,
                self.path(spec.client_ca) if spec.client_ca else None,
                self.path(spec.crl) if spec.crl else None,
                private,
                alpn=("h2", "http/1.1") if http2 else ("http/1.1",),
            )
        except TlsConfigError as exc:
            raise self.error(f"{key}.{exc.key}", str(exc)) from None

    def upstream(self, name: str, spec: UpstreamSpec, warnings: list[str]) -> UpstreamSettings:
        key = f"upstreams.{name}"
        tls = None
        if spec.tls is not None:
            t = spec.tls
            try:
                tls = build_client_tls(
                    t.verify,
                    self.path(t.ca) if t.ca else None,
                    t.sni,
                    self.path(t.cert) if t.cert else None,
                    self.path(t.key) if t.key else None,
                )
            except TlsConfigError as exc:
                raise self.error(f"{key}.tls.{exc.key}", str(exc)) from None
            if not t.verify:
                warnings.append(f"{key}.tls.verify = false: the upstream's identity is not checked")
        if not spec.targets:
            raise self.error(f"{key}.targets", "needs at least one host:port")
        targets = []
        for i, value in enumerate(spec.targets):
            try:
                host, port = parse_address(value)
            except ValueError as exc:
                raise self.error(f"{key}.targets[{i}]", str(exc)) from None
            targets.append(Target(host=host, port=port))
        for field_name in (
            "max_connections",
            "connect_timeout",
            "read_timeout",
            "queue_timeout",
            "idle_timeout",
            "max_failures",
            "eject_seconds",
            "dns_ttl",
        ):
            self.positive(f"{key}.{field_name}", getattr(spec, field_name))
        if spec.first_byte_timeout is not None:
            self.positive(f"{key}.first_byte_timeout", spec.first_byte_timeout)
        if spec.max_idle < 0:
            raise self.error(f"{key}.max_idle", "must not be negative")
        if not 0 <= spec.retry_budget <= 1:
            raise self.error(f"{key}.retry_budget", "must be between 0 and 1")
        if spec.retry_min < 0:
            raise self.error(f"{key}.retry_min", "must not be negative")
        health = self.health_check(f"{key}.health_check", spec.health_check) if spec.health_check else None
        return UpstreamSettings(
            name=name,
            targets=tuple(targets),
            balance=spec.balance,
            max_connections=spec.max_connections,
            max_idle=spec.max_idle,
            idle_timeout=spec.idle_timeout,
            connect_timeout=spec.connect_timeout,
            read_timeout=spec.read_timeout,
            first_byte_timeout=(
                spec.read_timeout if spec.first_byte_timeout is None else spec.first_byte_timeout
            ),
            queue_timeout=spec.queue_timeout,
            max_failures=spec.max_failures,
            eject_seconds=spec.eject_seconds,
            retry=spec.retry,
            dns_ttl=spec.dns_ttl,
            retry_budget=spec.retry_budget,
            retry_min=spec.retry_min,
            health=health,
            tls=tls,
        )

    def health_check(self, key: str, spec: HealthCheckSpec) -> HealthCheckSettings:
        if not spec.path.startswith("/") or any(c in spec.path for c in " \r\n\x00"):
            raise self.error(f"{key}.path", "must start with '/' and contain no spaces or control characters")
        for name in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold"):
            self.positive(f"{key}.{name}", getattr(spec, name))
        low, sep, high = spec.expect_status.partition("-")
        try:
            status_min, status_max = int(low), int(high if sep else low)
        except ValueError:
            raise self.error(f"{key}.expect_status", "must be a status or a range like '200-399'") from None
        if not 100 <= status_min <= status_max <= 599:
            raise self.error(f"{key}.expect_status", "must be within 100-599, low to high")
        if spec.host is not None and not _HOSTNAME.fullmatch(spec.host):
            raise self.error(f"{key}.host", f"{spec.host!r} is not a host name")
        return HealthCheckSettings(
            path=spec.path,
            interval=spec.interval,
            timeout=spec.timeout,
            healthy_threshold=spec.healthy_threshold,
            unhealthy_threshold=spec.unhealthy_threshold,
            status_min=status_min,
            status_max=status_max,
            host=spec.host,
        )

    def auth_schemes(self, key: str, spec: RouteSpec) -> tuple[str, ...]:
        """The route's auth as a tuple: one name, or the several of a list (no 'none', no repeats)."""
        if isinstance(spec.auth, str):
            if spec.auth_multiple != "refuse":
                raise self.error(f"{key}.auth_multiple", "only applies to a list of auth schemes")
            return (spec.auth,)
        if not spec.auth:
            raise self.error(
                f"{key}.auth", "needs at least one scheme (write auth = 'none' for a public route)"
            )
        for i, name in enumerate(spec.auth):
            if name == "none":
                raise self.error(f"{key}.auth[{i}]", "'none' cannot be combined with other schemes")
            if name in spec.auth[:i]:
                raise self.error(f"{key}.auth[{i}]", f"{name!r} is listed twice")
        if len(spec.auth) == 1 and spec.auth_multiple != "refuse":
            raise self.error(f"{key}.auth_multiple", "only applies to a list of two or more auth schemes")
        return tuple(spec.auth)

    def auth_policy(self, key: str, scheme: str) -> Policy:
        """The compiled policy of one auth scheme, from the table below; an error if it is not configured."""
        attribute, needs = _AUTH_POLICIES[scheme]
        policy: Policy | None = getattr(self, attribute)
        if policy is None:
            raise self.error(f"{key}.auth", f"auth = {scheme!r} needs {needs}")
        return policy

    def route(
        self,
        i: int,
        spec: RouteSpec,
        upstreams: dict[str, UpstreamSettings],
        server: ServerSettings,
        global_policies: tuple[Policy, ...],
    ) -> Route:
        key = f"routes[{i}]"
        if spec.upstream not in upstreams:
            hint = _did_you_mean(spec.upstream, upstreams)
            raise self.error(f"{key}.upstream", f"no upstream named {spec.upstream!r}{hint}")
        if not spec.path.startswith("/"):
            raise self.error(f"{key}.path", "must start with '/'")
        if not _HOSTNAME.fullmatch(spec.host):
            raise self.error(f"{key}.host", f"{spec.host!r} is not a host name, '*.suffix' or '*'")
        for j, method in enumerate(spec.methods):
            if not _TOKEN.fullmatch(method) or method != method.upper():
                raise self.error(f"{key}.methods[{j}]", f"{method!r} is not an upper-case method name")
            if method == "CONNECT":
                raise self.error(f"{key}.methods[{j}]", "CONNECT is not supported")
        if spec.strip_prefix and spec.match == "exact":
            raise self.error(f"{key}.strip_prefix", 'only applies to match = "prefix"')
        max_body = server.max_body_bytes if spec.max_body_bytes is None else spec.max_body_bytes
        if max_body < 0:
            raise self.error(f"{key}.max_body_bytes", "must not be negative")
        policies: list[Policy] = list(global_policies)
        schemes = self.auth_schemes(key, spec)
        if spec.jwt is not None and "jwt" not in schemes:
            raise self.error(f"{key}.jwt", "only applies to auth = 'jwt'")
        binding = self.jwt_binding(key, spec.jwt, self.jwt) if "jwt" in schemes and self.jwt else None
        if len(schemes) > 1:
            chosen = {name: self.auth_policy(key, name) for name in schemes}
            policies.append(MultiAuth("|".join(schemes), chosen, binding, spec.auth_multiple))
        elif schemes != ("none",):
            policies.append(self.auth_policy(key, schemes[0]))
            if binding is not None:
                policies.append(binding)  # same phase, after JwtAuth: the sort below is stable
        if spec.cors is not None:
            policies.append(self.cors(f"{key}.cors", spec.cors))
        if spec.authorize is not None:
            if schemes == ("none",):
                raise self.error(f"{key}.authorize", "needs an authenticated route (auth is 'none')")
            policies.append(self.authorize(f"{key}.authorize", spec.authorize))
        if spec.limits:
            policies.append(self.rate_limits(key, spec.name, spec.limits))
        if spec.network is not None:
            route_net = self.network_policy(f"{key}.network", spec.network, "route_network")
            if route_net is not None:
                policies.append(route_net)
        chain = tuple(sorted(policies, key=lambda p: p.PHASE))
        drop_req, add_req = self.header_ops(f"{key}.request_headers", spec.request_headers)
        if "api_key" in schemes and self.api_key is not None:
            drop_req |= self.api_key.headers  # the credential never reaches the upstream
        if "jwt" in schemes or "introspection" in schemes:
            drop_req |= {b"authorization"}
        drop_req |= {name for name, _ in self.identity_headers}  # never believed from a client
        if self.snapshot_header:
            drop_req |= {self.snapshot_header}
            add_req = (*add_req, (self.snapshot_header, self.snapshot_id))
        drop_resp, add_resp = self.header_ops(f"{key}.response_headers", spec.response_headers)
        own = {name for name, _ in add_resp}
        extra = tuple((name, value) for name, value in self.security_headers if name not in own)
        drop_resp |= {name for name, _ in extra} | self.security_remove
        add_resp = (*add_resp, *extra)
        strip = route_key(spec.path) if spec.strip_prefix and spec.path != "/" else b""
        drop_untrusted, drop_trusted = request_drop_sets(drop_req)
        drop_response = response_drop_set(drop_resp)
        return Route(
            name=spec.name,
            name_bytes=spec.name.encode(),
            upstream=upstreams[spec.upstream],
            strip_prefix=strip,
            preserve_host=spec.preserve_host,
            max_body_bytes=max_body,
            chain=chain,
            response_hooks=tuple(reversed([p for p in chain if hasattr(p, "on_response")])),  # type: ignore[misc]
            # A policy may say it has nothing to do on completion (a RateLimit without concurrency limits).
            complete_hooks=tuple(
                p  # type: ignore[misc]
                for p in chain
                if hasattr(p, "on_complete") and getattr(p, "needs_complete", True)
            ),
            drop_request=drop_untrusted,
            drop_request_trusted=drop_trusted,
            add_request=header_lines(add_req),
            identity_headers=self.identity_headers if schemes != ("none",) else (),
            drop_response=drop_response,
            hsts=self.hsts,
            add_response=add_resp,
            add_response_lines=header_lines(add_resp),
            response_fields=response_field_table(drop_response),
        )

    def router(self, specs: Sequence[RouteSpec], routes: Sequence[Route], server: ServerSettings) -> Router:
        hosts: dict[bytes, HostTable] = {}
        seen: dict[tuple[str, str, str, str], int] = {}
        for i, (spec, route) in enumerate(zip(specs, routes, strict=True)):
            host = spec.host.lower().encode()
            table = hosts.setdefault(host, HostTable())
            index = table.exact if spec.match == "exact" else table.prefixes
            path = spec.path.encode() if spec.match == "exact" else route_key(spec.path)
            methods = index.setdefault(path, MethodTable())
            methods_of_route = spec.methods
            if spec.cors is not None and spec.methods and "OPTIONS" not in spec.methods:
                methods_of_route = (*spec.methods, "OPTIONS")  # preflights must reach the CORS policy
            for method in methods_of_route or ("*",):
                clash = (spec.host, spec.match, path.decode(), method)
                if clash in seen:
                    raise self.error(f"routes[{i}]", f"same host, path and method as routes[{seen[clash]}]")
                seen[clash] = i
                if method == "*":
                    methods.any_method = route
                else:
                    methods.by_method[method.encode()] = route
        for table in hosts.values():
            for methods in (*table.exact.values(), *table.prefixes.values()):
                methods.seal()
        wildcards = [(h[1:], t) for h, t in hosts.items() if h.startswith(b"*.")]
        plain = {h: t for h, t in hosts.items() if not h.startswith(b"*.")}
        normalize = functools.partial(
            normalize_path,
            merge_slashes=server.merge_slashes,
            allow_encoded_slash=server.allow_encoded_slash,
            allow_params=server.allow_path_params,
        )
        return Router(plain, wildcards, normalize)


def compile_spec(spec: ConfigSpec, data: bytes, file: str) -> Snapshot:
    """Compile a parsed config. Raises ConfigError; nothing is changed when it does."""
    c = _Compiler(file)
    s = spec.server
    snapshot_id = hashlib.blake2b(data, digest_size=6).hexdigest()
    c.snapshot_id = snapshot_id.encode()
    if s.snapshot_header and not _TOKEN.fullmatch(s.snapshot_header):
        raise c.error("server.snapshot_header", f"{s.snapshot_header!r} is not a valid header name")
    c.snapshot_header = s.snapshot_header.lower().encode()
    for name in (
        "max_header_bytes",
        "max_header_count",
        "max_target_bytes",
        "header_timeout",
        "body_timeout",
        "idle_timeout",
        "send_timeout",
        "max_connections",
        "max_connections_per_ip",
        "max_pipelined",
        "drain_timeout",
    ):
        c.positive(f"server.{name}", getattr(s, name))
    if s.max_body_bytes < 0 or s.body_min_rate < 0:
        raise c.error("server", "max_body_bytes and body_min_rate must not be negative")
    backend: Literal["httptools", "h11"] = "h11" if resolve_backend(s.http1) == "h11" else "httptools"
    server = ServerSettings(
        http1=backend,
        max_header_bytes=s.max_header_bytes,
        max_header_count=s.max_header_count,
        max_target_bytes=s.max_target_bytes,
        max_body_bytes=s.max_body_bytes,
        header_timeout=s.header_timeout,
        body_timeout=s.body_timeout,
        body_min_rate=s.body_min_rate,
        idle_timeout=s.idle_timeout,
        send_timeout=s.send_timeout,
        max_connections=s.max_connections,
        max_connections_per_ip=s.max_connections_per_ip,
        max_pipelined=s.max_pipelined,
        batch_writes=s.batch_writes,
        merge_slashes=s.merge_slashes,
        allow_encoded_slash=s.allow_encoded_slash,
        allow_path_params=s.allow_path_params,
        trusted_proxies=c.networks("server.trusted_proxies", s.trusted_proxies),
        server_name=s.server_name.encode(),
        drain_timeout=s.drain_timeout,
    )
    if not _TOKEN.fullmatch(s.server_name):
        raise c.error("server.server_name", "must be a token (letters, digits, -._~)")

    http2 = c.http2(spec.http2, server)
    if not spec.listeners:
        raise c.error("listeners", "at least one [[listeners]] table is required")
    listeners = []
    warnings: list[str] = []
    names: set[str] = set()
    for i, ls in enumerate(spec.listeners):
        try:
            host, port = parse_address(ls.bind)
        except ValueError as exc:
            raise c.error(f"listeners[{i}].bind", str(exc)) from None
        if ls.name in names:
            raise c.error(f"listeners[{i}].name", f"duplicate listener name {ls.name!r}")
        names.add(ls.name)
        tls = None
        if ls.tls is not None:
            tls = c.listener_tls(f"listeners[{i}].tls", ls.tls, http2.enabled)
            warnings.extend(tls.warnings)
        listeners.append(
            ListenerSettings(
                name=ls.name,
                host=host,
                port=port,
                proxy_protocol=ls.proxy_protocol,
                backlog=ls.backlog,
                tls=tls,
            )
        )

    upstreams = {name: c.upstream(name, u, warnings) for name, u in spec.upstreams.items()}
    keys = c.keys(spec.keys) if spec.keys is not None else None
    c.throttle = c.auth_throttle(spec.auth_throttle)
    c.positive("rate_limits.capacity", spec.rate_limits.capacity)
    c.positive("rate_limits.quota_flush", spec.rate_limits.quota_flush)
    c.api_key = c.api_key_policy(spec.api_key, keys)
    c.identity_headers = c.identity_header_names(spec.identity_headers)
    c.jwt = c.jwt_policy(spec.jwt, c.state(spec.state).dir, warnings) if spec.jwt is not None else None
    c.mtls = c.mtls_policy(spec.mtls) if spec.mtls is not None else None
    if spec.introspection is not None:
        c.introspection = c.introspection_policy(spec.introspection, warnings)
    if c.mtls is not None and not any(
        ls.tls is not None and ls.tls.client_auth != "none" for ls in spec.listeners
    ):
        raise c.error("mtls", "no listener asks for client certificates (listeners.tls.client_auth)")
    c.security(spec.security_headers)
    global_net = c.network_policy("network", spec.network, "network")
    global_policies: tuple[Policy, ...] = (global_net,) if global_net is not None else ()
    if not spec.routes:
        raise c.error("routes", "at least one [[routes]] table is required")
    route_names: dict[str, int] = {}
    routes = []
    for i, r in enumerate(spec.routes):
        if r.name in route_names:
            raise c.error(
                f"routes[{i}].name", f"duplicate route name {r.name!r} (also routes[{route_names[r.name]}])"
            )
        route_names[r.name] = i
        routes.append(c.route(i, r, upstreams, server, global_policies))
    router = c.router(spec.routes, routes, server)

    demo = None
    if spec.demo_upstream is not None:
        try:
            demo = parse_address(spec.demo_upstream.bind)
        except ValueError as exc:
            raise c.error("demo_upstream.bind", str(exc)) from None
    al = spec.access_log
    c.positive("access_log.max_pending", al.max_pending)
    return Snapshot(
        id=snapshot_id,
        id_bytes=snapshot_id.encode(),
        source=file,
        server=server,
        listeners=tuple(listeners),
        router=router,
        routes=tuple(routes),
        upstreams=upstreams,
        access_log=AccessLogSettings(
            target=al.target,
            include_query=al.include_query,
            redact_query=frozenset(name.lower().encode() for name in al.redact_query),
            max_pending=al.max_pending,
        ),
        demo_upstream=demo,
        keys=keys,
        http2=http2,
        ratelimit_redis=c.redis(spec.rate_limits.redis) if spec.rate_limits.redis is not None else None,
        process=c.process(spec.process),
        ratelimit_capacity=spec.rate_limits.capacity,
        quota_flush=spec.rate_limits.quota_flush,
        state=(state := c.state(spec.state)),
        admin=c.admin(spec.admin),
        audit=c.audit(spec.audit, state),
        security_headers=c.security_headers,
        hsts=spec.security_headers.hsts.encode(),
        warnings=tuple(warnings),
    )


def compile_config(data: bytes, file: str) -> Snapshot:
    """Parse and compile config bytes. Raises ConfigError."""
    return compile_spec(parse_config(data, file), data, file)


def compile_state(spec: StateSpec, file: str) -> StateSettings:
    """Only the [state] settings (where the pid file and the config history are): no secrets needed."""
    return _Compiler(file).state(spec)


def load_snapshot(path: str) -> Snapshot:
    """Read, parse and compile a config file. Raises ConfigError."""
    return compile_config(read_config_bytes(path), path)
