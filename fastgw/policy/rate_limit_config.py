"""Compile a route's ``limits`` tables into one ``RateLimit`` policy (see rate_limit.py).

Control-plane code, kept out of the compiled hot module. A limit's id is ``route:name``, so a reload
that keeps the route and the limit keeps its counts.
"""

from __future__ import annotations

from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.schema import RouteSpec
from fastgw.policy.rate_limit import COUNTERS, LimitSpec, RateLimit


def compile_route(route_spec: RouteSpec, ctx: CompileContext) -> tuple[RateLimit, ...]:
    """routes.limits: one RateLimit policy checking every limit of the route (all must pass)."""
    specs, key, route = route_spec.limits, ctx.route_key, ctx.route_name
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
    counters = COUNTERS if ctx.counters is None else ctx.counters
    return (RateLimit("rate_limit", tuple(limits), counters),)
