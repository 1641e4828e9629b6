"""Compile a route's ``limits`` tables into one ``RateLimit`` policy (see rate_limit.py).

Control-plane code, kept out of the compiled hot module. A limit's id is ``route:name``, so a reload
that keeps the route and the limit keeps its counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.fields import CONCURRENCY_MAX, QUEUE_MAX, REQUESTS_MAX, WAIT_MAX, WINDOW_MAX, Section, doc
from fastgw.counters.table import COUNTERS
from fastgw.policy.rate_limit import LimitSpec, RateLimit


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSpec:
    name: str = doc("the limit's name (in headers, logs and metrics; its counts survive reloads)", ...)
    rate: int = doc("requests admitted per window (0 with concurrency)", 0, most=REQUESTS_MAX)
    per: float = doc("the window in seconds (sliding)", 1.0, most=WINDOW_MAX)
    concurrency: int = doc(
        "instead of a rate: requests in flight at once for the key", 0, most=CONCURRENCY_MAX
    )
    algorithm: Literal["sliding", "gcra"] = doc("sliding window, or GCRA (rate + burst)", "sliding")
    burst: int = doc("GCRA: requests admitted at once on top of the rate", 0, most=REQUESTS_MAX)
    key: Literal["ip", "route", "consumer", "api_key", "header"] = doc(
        "what is counted: client address, the whole route, the consumer (its address when anonymous), "
        "the API key (the consumer for tokens and certificates), or a header's value",
        "ip",
    )
    header: str | None = doc("the header whose value is the key (key = 'header')", None)
    mode: Literal["enforce", "shadow"] = doc("shadow: count would-be rejections, reject nothing", "enforce")
    quota: Literal["", "day", "month"] = doc(
        "a quota: 'rate' requests per UTC calendar day or month, kept in the store across restarts", ""
    )
    queue: int = doc(
        "throttle instead of refusing: requests over the limit wait in a fair queue of this many per "
        "worker (0 = refuse at once)",
        0,
        most=QUEUE_MAX,
    )
    max_wait: float = doc("seconds a queued request may wait before its 429", 1.0, most=WAIT_MAX)


def compile_route(specs: tuple[RateLimitSpec, ...], ctx: CompileContext) -> tuple[RateLimit, ...]:
    """routes.limits: one RateLimit policy checking every limit of the route (all must pass)."""
    key, route = ctx.route_key, ctx.route_name
    if not specs:
        return ()
    limits = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"{key}.limits[{i}]"
        if not TOKEN.fullmatch(spec.name) or '"' in spec.name:
            raise ctx.error(f"{where}.name", f"{spec.name!r} is not a token")
        if spec.name in names:
            raise ctx.error(f"{where}.name", f"duplicate limit name {spec.name!r}")
        names.add(spec.name)
        if (spec.rate > 0) == (spec.concurrency > 0) or spec.rate < 0 or spec.concurrency < 0:
            raise ctx.error(where, "give either a positive rate (with per) or a positive concurrency")
        ctx.positive(f"{where}.per", spec.per)
        if spec.burst < 0 or (spec.burst and spec.algorithm != "gcra"):
            raise ctx.error(f"{where}.burst", "a non-negative burst, only with algorithm = 'gcra'")
        if spec.algorithm == "gcra" and spec.concurrency:
            raise ctx.error(f"{where}.algorithm", "GCRA needs a rate, not a concurrency")
        if (spec.key == "header") != (spec.header is not None):
            raise ctx.error(f"{where}.header", "name a header exactly when key = 'header'")
        if spec.header is not None and not TOKEN.fullmatch(spec.header):
            raise ctx.error(f"{where}.header", f"{spec.header!r} is not a header name")
        if spec.quota and (spec.concurrency or spec.algorithm == "gcra"):
            raise ctx.error(f"{where}.quota", "a quota counts requests per period: give a rate, no GCRA")
        if spec.queue < 0:
            raise ctx.error(f"{where}.queue", f"must be 0 or more, got {spec.queue}")
        if spec.queue:
            ctx.positive(f"{where}.max_wait", spec.max_wait)
        # What the limit's keys are hashed under: a quota's is "route:name" (the store keeps and lists its
        # counts by it); the other kinds add theirs, so that a reload giving a name to a limit of another
        # kind never makes the two count in (and misread, or overwrite) one key's cells.
        kind = (
            ""
            if spec.quota
            else "/gcra"
            if spec.algorithm == "gcra"
            else "/concurrency"
            if spec.concurrency
            else "/rate"
        )
        limits.append(
            LimitSpec(
                name=spec.name,
                limit_id=f"{route}:{spec.name}{kind}".encode(),
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
    counters = COUNTERS if ctx.counters is None else ctx.counters
    return (RateLimit("rate_limit", tuple(limits), counters),)


# routes.limits in the schema and the reference (policy/registry.py declares it).
ROUTE_SECTION = Section(
    RateLimitSpec,
    "rate limits (tables, see routes.limits); all must pass",
    "array",
    (
        (
            "routes.limits",
            RateLimitSpec,
            "Rate limits (sliding window or GCRA), concurrency limits and throttling, node-wide across"
            " workers.",
        ),
    ),
)
