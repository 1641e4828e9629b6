"""Where one caller counts on a route with budgets (ai/budgets.py): a Spot per limit and key, a Seat
per caller (its spots, caps and fixed headers, looked up once per caller), and an Entry per reservation
a request made. Native classes (compiled): their numbers are stored unboxed, one object each."""

from __future__ import annotations

from typing import Any

from fastgw.ai.budget_headers import Fixed
from fastgw.counters.allowance import Allowance, AmountKey
from fastgw.exchange import Exchange


class Spot:
    """Where one limit of the route counts one key (a consumer, an API key, a team, the route)."""

    __slots__ = ("allowance", "key", "kind", "row", "value")

    def __init__(self, allowance: Allowance, key: AmountKey, kind: int, row: int, value: str) -> None:
        self.allowance = allowance
        self.key = key
        self.kind = kind
        self.row = row  # the route's plan row: which budget and limit
        self.value = value  # the key's text ("key:k_1", "team:red"), for the store and the alerts


class Seat:
    """One caller's spots in every limit of the route, with its caps (its own numbers where it has
    them) and their fixed headers: looked up once per caller, not per request."""

    __slots__ = ("caps", "fixed", "identity", "spots")

    def __init__(self, identity: Any, spots: list[Spot], caps: list[int], fixed: list[Fixed | None]) -> None:
        self.identity = identity  # kept: the cache is keyed by its id(), which it must not give away
        self.spots = spots
        self.caps = caps
        self.fixed = fixed  # None for a spend limit: no header shows it


class Entry:
    """What one reservation counted: where, in which window, how much, what was used before, the cap
    (a class rather than a tuple: one object, its numbers unboxed); ``next``: the request's next one.
    A request's entries are chained rather than listed: a list is two more allocations per request
    (its object and its items) for what is one entry or two."""

    __slots__ = ("amount", "cap", "next", "spot", "used", "when")

    def __init__(
        self, spot: Spot, when: int, amount: int, used: float, cap: int, after: Entry | None
    ) -> None:
        self.spot = spot
        self.when = when
        self.amount = amount
        self.used = used
        self.cap = cap
        self.next = after


class DayRates:
    """A model's spend rates for one UTC day: micro-USD per prompt and per answer token at its first
    target's price (-1: unknown), valid from ``since`` to ``until`` (unix seconds). Checked on every
    spend-budgeted request by two float comparisons, not by working out the day number."""

    __slots__ = ("answer", "model", "prompt", "since", "until")

    def __init__(self, model: Any, prompt: float, answer: float, since: float, until: float) -> None:
        self.model = model  # kept: the cache is keyed by its id()
        self.prompt = prompt
        self.answer = answer
        self.since = since
        self.until = until


def seat_key(kind: str, ex: Exchange, identity: Any) -> str:
    """The text a budget keyed by ``kind`` counts this caller under (the store's and the alerts')."""
    if kind == "route":
        return ""
    if identity is None:
        return "ip:" + ex.client_ip
    if kind == "api_key":
        key_id = getattr(identity, "key_id", None)
        if key_id is not None:
            return "key:" + str(key_id)
    elif kind == "team":
        team = getattr(identity, "team", "")
        if team:
            return "team:" + str(team)
    return str(identity.consumer_id)
