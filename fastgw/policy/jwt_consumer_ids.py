"""Whom a JWT names across issuers: each issuer's consumer_prefix (checked here) starts its tokens' consumer
ids and teams (policy/jwt_auth.py), and the warnings where two issuers would give different users one id:
on a route that accepts both, and on the routes of a budget shared across routes (ai/budget_config.py).

Compile-time only: the request path reads the prefixed ids and never these checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fastgw.config.context import CompileContext

if TYPE_CHECKING:  # not at run time: ai/budget_config.py imports this module for every config, and the
    # JWT policy loads pyjwt and cryptography's algorithms (~150 ms, ~1 MiB of a worker's RSS)
    from fastgw.policy.jwt_auth import JwtAuth, JwtIssuer

# A prefix names an identity provider ("okta:"): 64 characters are ample. It starts every consumer id of
# its issuer (limit and budget keys, usage rows, metric labels, identity headers), and the rate limiter
# remembers keys of up to 256 characters (policy/rate_limit.py KEY_CACHE_VALUE_MAX; a longer one is
# hashed on every request): the prefix should leave most of those to the subject.
CONSUMER_PREFIX_MAX: Final = 64


def check_consumer_prefix(ctx: CompileContext, key: str, prefix: str) -> None:
    if len(prefix) > CONSUMER_PREFIX_MAX:
        reason = (
            f"is {len(prefix)} characters, at most {CONSUMER_PREFIX_MAX}: it starts every consumer id of"
            " the issuer (limit keys, usage rows, headers); a short name such as 'okta:' is enough"
        )
        raise ctx.error(key, reason)
    if not prefix.isprintable():
        reason = "must be printable (no control characters): it goes into identity headers and usage rows"
        raise ctx.error(key, reason)
    if any(c in prefix for c in ' "\\'):
        # authorize.teams names the prefixed team, and a team name there cannot hold these (rbac.py)
        raise ctx.error(
            key, "must not contain a space, '\"' or '\\': a team named with it could not be required"
        )


def _meeting(a: JwtIssuer, b: JwtIssuer) -> str:
    """How the consumer ids (and teams) of two issuers can be one: "bare" (neither has a prefix),
    "overlap" (one prefix starts the other: 'ok' + 'ta:alice' is 'okta:' + 'alice'), or "" where they
    cannot. A bare issuer beside a prefixed one is the documented fix (a prefix its subjects never begin
    with), and issuers that state the same non-empty prefix have said their subjects are one namespace:
    neither is warned about."""
    p, q = a.consumer_prefix, b.consumer_prefix
    if p == q:
        return "" if p else "bare"
    return "overlap" if p and q and (p.startswith(q) or q.startswith(p)) else ""


def _claims(*issuers: JwtIssuer) -> str:
    return " or ".join(sorted({issuer.consumer_claim for issuer in issuers}))


def _overlap(a: JwtIssuer, b: JwtIssuer) -> str:
    """Two issuers whose prefixes overlap, with a consumer id that names a user of each."""
    short, long = (a, b) if len(a.consumer_prefix) < len(b.consumer_prefix) else (b, a)
    rest = long.consumer_prefix[len(short.consumer_prefix) :]
    return (
        f"jwt issuers '{short.name}' and '{long.name}' have the consumer prefixes {short.consumer_prefix!r}"
        f" and {long.consumer_prefix!r}, the one the start of the other: {short.consumer_claim}"
        f" {rest + 'alice'!r} from '{short.name}' and {long.consumer_claim} 'alice' from '{long.name}' are"
        f" both the consumer {long.consumer_prefix + 'alice'!r} (and their teams meet alike)"
    )


OVERLAP_ADVICE: Final = "give them prefixes of which neither is the start of the other"


def warn_shared_consumer_ids(
    ctx: CompileContext, key: str, accepted: tuple[str, ...], jwt_auth: JwtAuth
) -> None:
    """Warn where a route accepts two or more issuers without a consumer_prefix: the same subject from each
    is one consumer (one limit, one budget, one usage row). Issuers that state the same non-empty prefix
    have said their subjects are one namespace, and are not warned about. The first issuer in [jwt.issuers]
    order is left as it is in the advice: setting a prefix renames the consumers of an issuer in use.
    Two prefixes of which one starts the other ('ok' and 'okta:') are warned about pair by pair."""
    by_name = {issuer.name: issuer for issuer in jwt_auth.issuers.values()}
    ordered = [by_name[name] for name in ctx.jwt_issuer_names if name in accepted]
    where = f"{key} ({ctx.route_name})"
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if _meeting(a, b) == "overlap":
                ctx.warnings.append(
                    f"{where}: {_overlap(a, b)}: they share limits, budgets and usage rows; {OVERLAP_ADVICE}"
                )
    bare = [issuer.name for issuer in ordered if not issuer.consumer_prefix]
    if len(bare) < 2:
        return
    quoted = [f"'{name}'" for name in bare]
    listed = f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    claim = _claims(*(by_name[name] for name in bare))
    advice = " and ".join(f'jwt.issuers.{name}.consumer_prefix (e.g. "{name}:")' for name in bare[1:])
    ctx.warnings.append(
        f"{where}: jwt issuers {listed} give their users the same consumer ids (the"
        f" {claim} alone): users with the same {claim} share limits, budgets and usage rows; set {advice}"
    )


def warn_shared_budget(ctx: CompileContext, where: str, name: str) -> None:
    """A budget with ``shared = true`` (ai/budget_config.py), counted by consumer or team, on the route
    being compiled: warn where its JWT issuers and those of an earlier route carrying the budget give
    different users one id, which no route's own warning shows (each route may accept one issuer). A pair
    of issuers one route accepts together is that route's warning; a pair seen on earlier routes was
    warned about when the later of them came."""
    here = ctx.route_jwt_issuers
    routes = ctx.shared_budget_issuers.setdefault(name, [])
    jwt_auth = ctx.auth.get("jwt")
    earlier: dict[str, str] = {}  # issuer name -> the first route of the budget that accepts it
    for label, names in routes:
        for issuer_name in names:
            earlier.setdefault(issuer_name, label)
    routes.append((f"{ctx.route_key} ({ctx.route_name})", here))
    if jwt_auth is None:
        return
    from fastgw.policy.jwt_auth import JwtAuth  # loaded already: a jwt policy was compiled

    if not isinstance(jwt_auth, JwtAuth):
        return
    by_name = {issuer.name: issuer for issuer in jwt_auth.issuers.values()}
    order = list(ctx.jwt_issuer_names)
    for there_name, there in earlier.items():
        for here_name in here:
            if there_name in here or here_name in earlier:
                continue
            a, b = by_name[there_name], by_name[here_name]
            how = _meeting(a, b)
            if not how:
                continue
            head = f"{where} ({ctx.route_name}): shared budget '{name}' also counts on {there}"
            if how == "overlap":
                ctx.warnings.append(f"{head}: {_overlap(a, b)}: they share the budget; {OVERLAP_ADVICE}")
                continue
            later = max(there_name, here_name, key=order.index)
            claim = _claims(a, b)
            ctx.warnings.append(
                f"{head}, whose jwt issuer '{there_name}' gives its users the same consumer ids and teams"
                f" as this route's '{here_name}' (the {claim} alone): users with the same {claim} share"
                f' the budget; set jwt.issuers.{later}.consumer_prefix (e.g. "{later}:")'
            )
