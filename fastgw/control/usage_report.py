"""What ``fastgw usage`` and ``GET /usage`` share: their filters as a store query, and the rows they show.

A row has the group's columns (those of ``--group-by``), then ``requests``, ``prompt_tokens``,
``completion_tokens``, ``total_tokens``, ``cached_tokens``, ``reasoning_tokens``, ``cost_usd``,
``priced_cost_usd``, ``unpriced_requests`` and ``errors``. Unknown cost is shown, never hidden as 0:
``cost_usd`` is null (JSON), empty (CSV) or ``unknown`` (table) when any request of the row had no
price, and ``priced_cost_usd`` is then the cost of the others (a lower bound).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

from fastgw.store.base import UsageQuery, UsageTotal
from fastgw.usage_fields import FILTERS, GROUP_KEYS, PERIODS


class UsageQueryError(ValueError):
    """A filter the user got wrong; its text says which and why."""


def parse_query(params: Mapping[str, str | None], now: float | None = None) -> UsageQuery:
    """Filters by name (``since``, ``until``, ``period``, ``group_by`` as a comma list, and FILTERS)."""
    since, until = _day(params.get("since"), "since"), _day(params.get("until"), "until")
    period = params.get("period")
    if period:
        if since or until:
            raise UsageQueryError("period: give either period or since/until")
        if period not in PERIODS:
            raise UsageQueryError(f"period: {period!r} is not one of {', '.join(PERIODS)}")
        today = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC).date()
        since = (today if period == "day" else today.replace(day=1)).isoformat()
        until = today.isoformat()
    groups = tuple(g.strip() for g in (params.get("group_by") or "").split(",") if g.strip())
    for group in groups:
        if group not in GROUP_KEYS:
            raise UsageQueryError(f"group_by: {group!r} is not one of {', '.join(GROUP_KEYS)}")
    filters = {name: params.get(name) for name in FILTERS}
    return UsageQuery(since=since, until=until, group_by=groups, **filters)


def _day(value: str | None, name: str) -> str:
    if not value:
        return ""
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise UsageQueryError(f"{name}: {value!r} is not a day (YYYY-MM-DD)") from None


def row(total: UsageTotal) -> dict[str, Any]:
    out: dict[str, Any] = dict(total.group)
    out.update(
        requests=total.requests,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        total_tokens=total.prompt_tokens + total.completion_tokens,
        cached_tokens=total.cached_tokens,
        reasoning_tokens=total.reasoning_tokens,
        cost_usd=None if total.unpriced else round(total.priced_cost_usd, 9),
        priced_cost_usd=round(total.priced_cost_usd, 9),
        unpriced_requests=total.unpriced,
        errors=total.errors,
    )
    return out
