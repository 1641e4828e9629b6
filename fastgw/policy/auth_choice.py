"""A route's ``auth``: one scheme, several (any one of them, see multi_auth.py), or none.

The schemes are a table: each auth section's compile puts its policy in ``ctx.auth`` under its scheme
name, and a route picks from it. A new scheme is one row in ``NEEDS`` (what a route naming it needs
configured) and one in ``schema.AuthScheme``; this module never builds a scheme's policy itself.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from fastgw.config.context import CompileContext
from fastgw.policy.jwt_config import RouteJwtSpec, route_binding
from fastgw.policy.multi_auth import MultiAuth


class RouteAuth(Protocol):
    """The keys of a route table this module reads (schema.RouteSpec has them; the schema imports the
    registry, so this module cannot import the schema)."""

    @property
    def auth(self) -> str | tuple[str, ...]: ...
    @property
    def auth_multiple(self) -> str: ...
    @property
    def jwt(self) -> RouteJwtSpec | None: ...


# scheme -> what the config must give for a route to name it (the error a route gets otherwise).
NEEDS: Final[dict[str, str]] = {
    "api_key": "a [keys] table with a pepper",
    "jwt": "a [jwt] table with at least one issuer",
    "introspection": "an [introspection] table",
    "mtls": "an [mtls] table mapping certificates",
}


def schemes_of(spec: RouteAuth, ctx: CompileContext) -> tuple[str, ...]:
    """The route's auth as a tuple: one name, or the several of a list (no 'none', no repeats)."""
    key = ctx.route_key
    if isinstance(spec.auth, str):
        if spec.auth_multiple != "refuse":
            raise ctx.error(f"{key}.auth_multiple", "only applies to a list of auth schemes")
        return (spec.auth,)
    if not spec.auth:
        raise ctx.error(f"{key}.auth", "needs at least one scheme (write auth = 'none' for a public route)")
    for i, name in enumerate(spec.auth):
        if name == "none":
            raise ctx.error(f"{key}.auth[{i}]", "'none' cannot be combined with other schemes")
        if name in spec.auth[:i]:
            raise ctx.error(f"{key}.auth[{i}]", f"{name!r} is listed twice")
    if len(spec.auth) == 1 and spec.auth_multiple != "refuse":
        raise ctx.error(f"{key}.auth_multiple", "only applies to a list of two or more auth schemes")
    return tuple(spec.auth)


def scheme_policy(ctx: CompileContext, scheme: str) -> Any:
    """The compiled policy of one auth scheme; an error if its section is not configured."""
    policy = ctx.auth.get(scheme)
    if policy is None:
        raise ctx.error(f"{ctx.route_key}.auth", f"auth = {scheme!r} needs {NEEDS[scheme]}")
    return policy


def compile_route(spec: RouteAuth, ctx: CompileContext) -> tuple[Any, ...]:
    """The route's authentication policies; records its schemes and the credential headers to drop."""
    key = ctx.route_key
    schemes = ctx.route_schemes = schemes_of(spec, ctx)
    if spec.jwt is not None and "jwt" not in schemes:
        raise ctx.error(f"{key}.jwt", "only applies to auth = 'jwt'")
    jwt = ctx.auth.get("jwt")
    binding = route_binding(ctx, key, spec.jwt, jwt) if "jwt" in schemes and jwt is not None else None
    policies: list[Any] = []
    if len(schemes) > 1:
        chosen = {name: scheme_policy(ctx, name) for name in schemes}
        policies.append(MultiAuth("|".join(schemes), chosen, binding, spec.auth_multiple))
    elif schemes != ("none",):
        policies.append(scheme_policy(ctx, schemes[0]))
        if binding is not None:
            policies.append(binding)  # same phase, after JwtAuth: the driver's sort is stable
    for scheme in schemes:
        ctx.route_drop_request |= ctx.credential_headers.get(scheme, frozenset())
    return tuple(policies)
