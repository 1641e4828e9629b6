"""A route's ``budgets`` (``[[routes.handler.budgets]]``, on llm and prompt_api routes): token limits,
request limits and spend budgets per API key, consumer, team or the whole route, compiled into
``Budgets`` (budgets.py).

Control-plane code, kept apart from the request path. A budget's id is ``route:name``, or its bare name
when ``shared`` (route ids always hold a colon, budget names never do, so the two cannot meet): a reload
that keeps the id keeps its counts (and the store keeps day and month totals). Budgets with one id count
in the same cells of the shared table, which is all sharing takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from fastgw.config.context import TOKEN
from fastgw.config.fields import SecretSpec, doc
from fastgw.handlers.kind import CompileContext, CompileError
from fastgw.policy.jwt_consumer_ids import warn_shared_budget

if TYPE_CHECKING:
    from fastgw.ai.budgets import Budgets

TOKENS_MAX: Final = (10**15, "far beyond any provider's daily capacity: higher is no limit at all")
USD_MAX: Final = (10**9, "a billion USD: a larger budget is a typo")
OUTPUT_MAX: Final = (10**7, "no model answers with more tokens than this in one response")


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSpec:
    name: str = doc("the budget's name (in headers, errors, alerts; its counts survive reloads)", ...)
    key: Literal["api_key", "consumer", "team", "route"] = doc(
        "whom it counts: each API key (the consumer for tokens and certificates), each consumer, each team"
        " (a consumer without a team is its own team), or the whole route; anonymous callers are counted"
        " by address",
        "consumer",
    )
    tokens_per_minute: int | None = doc(
        "tokens (prompt + completion) per sliding minute; 0 refuses every request", None, most=TOKENS_MAX
    )
    tokens_per_day: int | None = doc("tokens per UTC day; 0 refuses every request", None, most=TOKENS_MAX)
    requests_per_minute: int | None = doc(
        "requests per sliding minute; 0 refuses every request", None, most=TOKENS_MAX
    )
    usd_per_day: float | None = doc("spend in USD per UTC day; 0 refuses every request", None, most=USD_MAX)
    usd_per_month: float | None = doc(
        "spend in USD per UTC calendar month; 0 refuses every request", None, most=USD_MAX
    )
    shared: bool = doc(
        "count together with the budgets of this name on other routes (llm and prompt_api) that set"
        " shared = true too: one allowance across them (their key and limits must be the same)",
        False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetAlertsSpec:
    thresholds: tuple[int, ...] = doc(
        "percentages of a limit whose crossing raises an alert, once per period and key",
        (50, 80, 100),
        most=(100, "a percentage of the limit"),
    )
    webhooks: tuple[str, ...] = doc(
        "http(s) URLs each alert is POSTed to (JSON, HMAC-SHA256-signed, retried with backoff)", ()
    )
    secret: SecretSpec | None = doc(
        "the key the webhooks' x-fastgw-signature is computed with (required with webhooks)", None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetRouteSpec:
    """The budget keys of a route kind that calls models (llm, prompt_api): one definition for both."""

    budgets: tuple[BudgetSpec, ...] = doc(
        "token limits, request limits and spend budgets ([[routes.handler.budgets]], docs/llm-budgets.md)", ()
    )
    budget_alerts: BudgetAlertsSpec | None = doc(
        "threshold alerts of the route's budgets to webhooks and the log (docs/llm-budgets.md)", None
    )
    budget_output_tokens: int = doc(
        "the answer tokens a budget reserves for a request without max_tokens (settled with the real"
        " usage after)",
        1024,
        most=OUTPUT_MAX,
    )


# Each limit field: what it counts and over which period (counters/allowance.py's names).
KINDS: Final = {
    "tokens_per_minute": ("tokens", "minute"),
    "tokens_per_day": ("tokens", "day"),
    "requests_per_minute": ("requests", "minute"),
    "usd_per_day": ("usd", "day"),
    "usd_per_month": ("usd", "month"),
}


def compile_route_budgets(spec: BudgetRouteSpec, ctx: CompileContext, prices: Any) -> Budgets | None:
    """A route's budgets priced at the config's price table (``[llm]``'s), or None without budgets."""
    budgets = compile_budgets(spec.budgets, spec.budget_output_tokens, ctx, spec.budget_alerts)
    if budgets is not None:
        budgets.prices = prices
    return budgets


def compile_budgets(
    specs: tuple[BudgetSpec, ...],
    output_tokens: int,
    ctx: CompileContext,
    alerts: BudgetAlertsSpec | None = None,
) -> Budgets | None:
    """The route's budgets, or None when it has none. Errors name the key and the reason."""
    # Imported here: a config without budgets never loads the request-path modules.
    from fastgw.ai.budget_alerts import Alerts
    from fastgw.ai.budgets import Budget, Budgets, Limit
    from fastgw.counters.table import COUNTERS
    from fastgw.policy.http_client import Endpoint
    from fastgw.secret_refs import resolve_secret

    if output_tokens < 1:
        raise CompileError("budget_output_tokens", f"must be 1 or more, got {output_tokens}")
    if not specs:
        return None
    budgets: list[Budget] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        at = f"budgets[{i}]"
        if not TOKEN.fullmatch(spec.name) or '"' in spec.name or "." in spec.name:
            raise CompileError(f"{at}.name", f"{spec.name!r} is not a token (letters, digits, - _; no dots)")
        if spec.name in names:
            raise CompileError(f"{at}.name", f"duplicate budget name {spec.name!r}")
        names.add(spec.name)
        limits: list[Limit] = []
        for field, (kind, period) in KINDS.items():
            value: Any = getattr(spec, field)
            if value is None:
                continue
            if not value >= 0:  # negative, or NaN
                raise CompileError(
                    f"{at}.{field}", f"must be 0 or more (0 refuses every request), got {value}"
                )
            cap = round(value * 1_000_000) if kind == "usd" else int(value)  # USD counted in micro-USD
            limits.append(Limit(field, kind, period, cap))
        if not limits:
            raise CompileError(at, f"budget {spec.name!r} sets no limit: give one of {', '.join(KINDS)}")
        budget_id = f"{ctx.route_name}:{spec.name}"
        if spec.shared:
            budget_id = spec.name
            # The alerts too: a threshold is crossed once for all the routes, by whichever request's settle
            # takes the count across it, and raised with that route's alerts (none: never raised).
            same_alerts = (
                None if alerts is None else (sorted(set(alerts.thresholds)), alerts.webhooks, alerts.secret)
            )
            terms = (spec.key, tuple(limits), same_alerts)
            first = ctx.shared_budgets.setdefault(spec.name, (terms, f"{ctx.route_key}.handler.{at}"))
            if first[0] != terms:
                raise CompileError(
                    f"{at}.shared",
                    f"budget {spec.name!r} is shared with {first[1]}, which sets another key, other limits"
                    " or other budget_alerts: a shared budget is one allowance, give it the same key,"
                    " limits and route budget_alerts everywhere",
                )
            if spec.key != "route":  # by consumer or team: two routes' JWT issuers may name one user alike
                warn_shared_budget(ctx, f"{ctx.route_key}.handler.{at}", spec.name)
        budgets.append(Budget(spec.name, budget_id, spec.key, tuple(limits)))
    counters = COUNTERS if ctx.counters is None else ctx.counters
    compiled = Budgets(tuple(budgets), counters, output_tokens)
    if alerts is not None:
        thresholds = tuple(sorted(set(alerts.thresholds)))
        if not thresholds or not all(1 <= t <= 100 for t in thresholds):
            raise CompileError(
                "budget_alerts.thresholds", f"percentages from 1 to 100, got {list(alerts.thresholds)}"
            )
        for i, url in enumerate(alerts.webhooks):
            try:
                Endpoint.parse(url, None if url.startswith("http:") else _any_tls())
            except ValueError as exc:
                raise CompileError(f"budget_alerts.webhooks[{i}]", str(exc)) from None
        if alerts.webhooks and alerts.secret is None:
            raise CompileError("budget_alerts.secret", "webhooks need a secret to sign alerts with")
        secret = b""
        if alerts.secret is not None:
            where = f"{ctx.route_key}.handler.budget_alerts.secret"
            secret = resolve_secret(ctx.secret(where, alerts.secret))
        compiled.alerts = Alerts(ctx.route_name, thresholds, alerts.webhooks, secret, counters)
    return compiled


def _any_tls() -> Any:
    import ssl

    return ssl.create_default_context()
