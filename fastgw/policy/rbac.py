"""Authorization: which authenticated callers may use a route, per method. Compiled once, checked inline.

A requirement is: every listed scope (``scopes``), at least one listed role (``roles``), membership in one
listed team (``teams``); an empty list asks nothing. A route's requirement applies to every method unless
``methods`` gives that method its own. A request without an identity (no authentication on the route, or
a shadow-mode authentication that failed and went on as anonymous) is refused. Refusals are 403 with
``WWW-Authenticate: Bearer error="insufficient_scope"`` and, for scopes, the ``scope`` it needed
(RFC 6750 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.fields import Section, doc
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class RequirementSpec:
    scopes: tuple[str, ...] = doc("scopes the caller must all have", ())
    roles: tuple[str, ...] = doc("roles of which the caller needs at least one (empty: any)", ())
    teams: tuple[str, ...] = doc("teams of which the caller must be in one (empty: any)", ())


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizeSpec:
    scopes: tuple[str, ...] = doc("scopes the caller must all have", ())
    roles: tuple[str, ...] = doc("roles of which the caller needs at least one (empty: any)", ())
    teams: tuple[str, ...] = doc("teams of which the caller must be in one (empty: any)", ())
    methods: dict[str, RequirementSpec] = doc(
        "per-method requirements replacing the route's, e.g. { POST = { scopes = ['orders:write'] } }", {}
    )
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: refusals are logged and counted, requests pass", "enforce"
    )


class Identity(Protocol):
    """What every authentication policy leaves in ``Exchange.consumer`` (read-only: each policy's is a
    frozen dataclass)."""

    @property
    def consumer(self) -> str: ...
    @property
    def consumer_id(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def scopes(self) -> frozenset[str]: ...


def usable_identity(identity: Identity) -> bool:
    """Whether a token's identity (its consumer, team, roles and scopes, from its claims) can be carried:
    they go to the access log, the usage ledger, the limits' keys and the identity headers sent upstream,
    so each must encode (JSON allows a lone surrogate, "\\ud800", which no encoder writes: one made a batch
    of access-log lines unwritable and every request's upstream head fail) and hold no control character
    (a NUL is refused by PostgreSQL's text, a CR or LF cannot go in a header). A role holds no comma and
    a scope no space: the identity headers join them so (``x-consumer-roles: a,b``), and a role
    "viewer,admin" the gateway checked as one would be two there, one of them admin, to the upstream."""
    return all(
        _text(t) for t in (identity.consumer, identity.team, *identity.roles, *identity.scopes)
    ) and not (any("," in role for role in identity.roles) or any(" " in scope for scope in identity.scopes))


def _text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return not any(c < " " or c == "\x7f" for c in text)


@dataclass(frozen=True, slots=True)
class Principal:
    """An Identity with nothing else to carry: mTLS consumers and introspected tokens."""

    consumer: str
    consumer_id: str
    team: str
    roles: frozenset[str]
    scopes: frozenset[str]
    expires: float = 0.0  # unix time after which a cached principal is not used (0: no expiry)
    # The llm models (glob patterns) it may use; None: every model the route serves (model_grants.py).
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Requirement:
    scopes: frozenset[str]
    roles: frozenset[str]
    teams: frozenset[str]
    denial_scope: Denial
    denial_role: Denial
    denial_team: Denial


def requirement(scopes: frozenset[str], roles: frozenset[str], teams: frozenset[str]) -> Requirement:
    """Pre-build the three denials (their headers are bytes; nothing is formatted per request)."""
    scope = " ".join(sorted(scopes)).encode()
    challenge = b'Bearer realm="fastgw", error="insufficient_scope"'
    return Requirement(
        scopes=scopes,
        roles=roles,
        teams=teams,
        denial_scope=Denial(
            403,
            "forbidden",
            f"this route needs the scopes: {' '.join(sorted(scopes))}",
            "authorize.scope",
            ((b"www-authenticate", challenge + b', scope="' + scope + b'"'),),
        ),
        denial_role=Denial(
            403,
            "forbidden",
            f"this route needs one of the roles: {', '.join(sorted(roles))}",
            "authorize.role",
            ((b"www-authenticate", challenge),),
        ),
        denial_team=Denial(
            403,
            "forbidden",
            "this route is not open to the caller's team",
            "authorize.team",
            ((b"www-authenticate", challenge),),
        ),
    )


ANONYMOUS = Denial(
    403,
    "forbidden",
    "this route needs an authenticated caller",
    "authorize.anonymous",
    ((b"www-authenticate", b'Bearer realm="fastgw", error="insufficient_scope"'),),
)


class Authorize:
    PHASE: ClassVar[Phase] = Phase.AUTHORIZATION

    def __init__(
        self, name: str, default: Requirement, per_method: dict[bytes, Requirement], shadow: bool
    ) -> None:
        self.name = name
        self.default = default
        self.per_method = per_method
        self.shadow = shadow

    def check(self, ex: Exchange) -> Denial | None:
        identity: Identity | None = ex.consumer
        if identity is None:
            return ANONYMOUS
        need = self.per_method.get(ex.method, self.default) if self.per_method else self.default
        if need.scopes and not need.scopes <= identity.scopes:
            return need.denial_scope
        if need.roles and need.roles.isdisjoint(identity.roles):
            return need.denial_role
        if need.teams and identity.team not in need.teams:
            return need.denial_team
        return None


def compile_route(spec: AuthorizeSpec | None, ctx: CompileContext) -> tuple[Authorize, ...]:
    """routes.authorize: a default requirement and per-method ones; needs an authenticated route."""
    if spec is None:
        return ()
    key = f"{ctx.route_key}.authorize"
    if ctx.route_schemes == ("none",):
        raise ctx.error(key, "needs an authenticated route (auth is 'none')")

    def build(where: str, need: AuthorizeSpec | RequirementSpec) -> Requirement:
        scopes, roles, teams = need.scopes, need.roles, need.teams
        for field_name, values in (("scopes", scopes), ("roles", roles), ("teams", teams)):
            for i, value in enumerate(values):
                if not value or any(c in value for c in ' "\\\r\n'):
                    raise ctx.error(f"{where}.{field_name}[{i}]", f"{value!r} is not a valid name")
        _warn_unprefixed_teams(ctx, where, teams)
        return requirement(frozenset(scopes), frozenset(roles), frozenset(teams))

    default = build(key, spec)
    per_method = {}
    for method, req in spec.methods.items():
        if not TOKEN.fullmatch(method) or method != method.upper():
            raise ctx.error(f"{key}.methods.{method}", "must be an upper-case method name")
        per_method[method.encode()] = build(f"{key}.methods.{method}", req)
    return (Authorize("authorize", default, per_method, spec.mode == "shadow"),)


def _warn_unprefixed_teams(ctx: CompileContext, where: str, teams: tuple[str, ...]) -> None:
    """A JWT issuer's consumer_prefix starts its tokens' teams too (policy/jwt_auth.py): on a route whose
    only callers are such tokens, a team without any of their prefixes is nobody's, and the requirement
    refuses everyone it was meant to admit (as a config written before the prefix was set would)."""
    if ctx.route_schemes != ("jwt",):
        return  # API keys, certificates and introspected tokens carry their teams unprefixed
    prefixes = [ctx.jwt_consumer_prefixes.get(name, "") for name in ctx.route_jwt_issuers]
    if not prefixes or not all(prefixes):
        return
    for i, team in enumerate(teams):
        if not any(team.startswith(prefix) for prefix in prefixes):
            listed = ", ".join(repr(p) for p in dict.fromkeys(prefixes))
            ctx.warnings.append(
                f"{where}.teams[{i}] ({ctx.route_name}): no caller of this route has the team {team!r}: its"
                f" jwt issuers put their consumer_prefix ({listed}) before the team claim; name the team as"
                f" the gateway sees it, e.g. {prefixes[0] + team!r}"
            )


# routes.authorize in the schema and the reference (policy/registry.py declares it).
ROUTE_SECTION = Section(
    AuthorizeSpec,
    "who may call this route (a table, see routes.authorize)",
    "optional",
    (
        ("routes.authorize", AuthorizeSpec, "Who may call a route: scopes, roles, teams, per method."),
        ("routes.authorize.methods.METHOD", RequirementSpec, "One method's own requirement."),
    ),
)
