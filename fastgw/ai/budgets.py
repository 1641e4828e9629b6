"""Budgets and token limits on an llm route: tokens per minute and per day, requests per minute, and
spend in USD per day and per month, per API key, consumer, team or the whole route (docs/llm-budgets.md).

Each limit is an ``Allowance`` (counters/allowance.py) on the node's shared counter table, exact across
workers without a lock, and through Redis across nodes when ``[rate_limits.redis]`` is configured.

A request reserves an estimate before any provider call: prompt tokens as the request body's bytes / 4
(``BYTES_PER_TOKEN``), plus ``max_tokens`` (or ``max_completion_tokens``, or the route's
``budget_output_tokens``) for the answer, one request, and the estimate's cost at the model's first
target's price. Every limit must have room for its share, or the request is refused with a 429 in the
client's SDK shape and nothing is counted. After the call the reservation is settled with the provider's
usage and cost: the difference is given back or added, uncapped, so an answer (a stream included) that
runs past its estimate is counted in full. An answer without usage keeps its estimate.

A limit of 0 refuses every request (a switched-off key or team); a limit left out does not apply.
"""

from __future__ import annotations

import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from fastgw.ai.adapter import Usage
from fastgw.ai.budget_alerts import Alerts
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.prices import PriceTable, utc_day
from fastgw.ai.record import LlmRecord
from fastgw.ai.relay import status_kind
from fastgw.counters.allowance import MINUTE, Allowance
from fastgw.counters.cluster import CLUSTER
from fastgw.counters.table import CounterTable, KeyCells, key_hash
from fastgw.exchange import Exchange
from fastgw.handler_api import Fields, ResponseWriter

# Prompt tokens are estimated as body bytes / 4: English text averages about 4 bytes a token in the
# GPT and Claude tokenizers, and the JSON around the messages adds bytes, so the estimate is usually
# above the truth; text in scripts of 1-3 bytes a token (CJK, code) can be up to 4x under it. Only the
# admission uses it: the counts are settled with the provider's own numbers.
BYTES_PER_TOKEN: Final = 4
MICRO: Final = 1_000_000  # spend is counted in micro-USD: integers in the shared table
PERIOD_SECONDS: Final = {"minute": 60, "day": 86400, "month": 2592000}  # RateLimit-Policy's w (nominal)
KEY_CACHE_MAX: Final = 16384  # keys remembered per limit per worker (counts live in the shared table)
# A price is linear in each kind of token: the cost of a million tokens of one kind, in micro-USD, is
# that kind's rate per token in micro-USD, exact to 1e-6 micro-USD (looked up once a day per target).
RATE_TOKENS: Final = 1_000_000
_time: Final = time.time


@dataclass(frozen=True, slots=True)
class Limit:
    field: str  # one of FIELDS: what the consumer's override is named by
    kind: str  # "tokens" | "requests" | "usd"
    period: str  # "minute" | "day" | "month"
    cap: int  # tokens, requests or micro-USD per period


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    budget_id: str  # "route:name", stable across reloads
    key: str  # "api_key" | "consumer" | "team" | "route"
    limits: tuple[Limit, ...]


class Hold:
    """One request's reservations, its response headers, and (when refused) why."""

    __slots__ = ("budgets", "entries", "headers", "refusal", "retry", "status", "tokens")

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        # What each limit counted: (allowance, key, window, amount, kind, used before, cap, plan row, key)
        self.entries: list[tuple[Allowance, KeyCells, int, int, str, float, int, int, str]] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.refusal: tuple[str, str] | None = None  # (message, code)
        self.retry = 0.0
        self.status = 429
        self.tokens = 0  # the token estimate reserved

    def show(self, out: ResponseWriter) -> None:
        """Put this request's limit headers on its answer (``out`` is the route's HeadersWriter)."""
        if isinstance(out, HeadersWriter):
            out.extra = self.headers

    async def refuse(self, out: ResponseWriter, fmt: ClientFormat) -> None:
        """The 429 (503: the shared store down) in the client's SDK shape, with Retry-After and the
        limit headers."""
        assert self.refusal is not None
        message, code = self.refusal
        status = self.status
        body = fmt.render_error(status, message, status_kind(status), None, code)
        head: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % max(1, math.ceil(self.retry))),
        ]
        head += self.headers
        out.start(status, head)
        await out.write(body)
        await out.end()

    def settle(self, record: LlmRecord, answered: bool) -> None:
        """Replace the estimates by what the provider reported. Without usage: an answer that never
        started (no provider call, or every call failed) gives its whole reservation back; one that
        started (a stream cut short) keeps its estimate, since the provider may bill for it."""
        usage = record.usage
        if not self.entries or (not usage.reported and answered):
            return
        cluster = CLUSTER.current
        if not usage.reported:
            for allowance, key, when, amount, kind, *_ in self.entries:
                if kind != "requests":  # the request itself was made: it counts
                    allowance.settle(key, when, -amount, cluster)
            return
        tokens = usage.total_tokens
        cost: int | None = None
        alerts = self.budgets.alerts
        for allowance, key, when, amount, kind, used, cap, row, value in self.entries:
            real = amount
            if kind == "tokens":
                real = tokens
            elif kind == "usd":
                if cost is None:
                    usd = record.cost_usd  # ai/prices.py's, set just before; None: unknown price
                    cost = -1 if usd is None else round(usd * MICRO)
                if cost < 0:
                    continue
                real = cost
            allowance.settle(key, when, real - amount, cluster)
            if alerts is not None:
                percent = alerts.crossed(used, used + real, cap)
                if percent:
                    self.budgets.alert(row, when, value, percent, used + real, cap, False)


class HeadersWriter:
    """The response writer of a route with budgets: adds the request's limit headers (``extra``, set by
    ``Hold.show`` once the budgets are checked) to the head, whichever code path answers."""

    __slots__ = ("extra", "out")

    def __init__(self, out: ResponseWriter) -> None:
        self.out = out
        self.extra: list[tuple[bytes, bytes]] = []

    @property
    def started(self) -> bool:
        return self.out.started

    def start(self, status: int, headers: Fields) -> None:
        self.out.start(status, [*headers, *self.extra] if self.extra else headers)

    # The writer's own coroutines, handed on rather than awaited in one more frame: each stream event of
    # a budgeted route goes through here.
    def write(self, data: bytes) -> Coroutine[Any, Any, None]:
        return self.out.write(data)

    def end(self, trailers: Fields | None = None) -> Coroutine[Any, Any, None]:
        return self.out.end(trailers)


def reset_text(seconds: float) -> bytes:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``1h2m3s``, ``250ms``. (Written with ``str`` and ``+``:
    on every budgeted answer, and cheaper compiled than ``%`` formatting of bytes.)"""
    if seconds < 1:
        return _digits(max(0, math.ceil(seconds * 1000))) + b"ms"
    whole = math.ceil(seconds)
    if whole < 60:
        return _digits(whole) + b"s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = _digits(minutes) + b"m" + _digits(secs) + b"s"
    return _digits(hours) + b"h" + text if hours else text


def _digits(number: int) -> bytes:
    return str(number).encode()


class Budgets:
    """All budgets of one llm route; a request must fit every limit of every budget."""

    def __init__(self, budgets: tuple[Budget, ...], table: CounterTable, output_tokens: int) -> None:
        self.budgets = budgets
        self.table = table
        self.output_tokens = output_tokens
        self.prices: PriceTable | None = None  # the config's (ai/prices.py), set by the route's compile
        self._plan: tuple[tuple[Budget, Limit, Allowance, dict[str, KeyCells]], ...] = tuple(
            (budget, limit, Allowance(table, limit.period, f"{budget.budget_id}.{limit.field}".encode()), {})
            for budget in budgets
            for limit in budget.limits
        )
        self._spends = any(limit.kind == "usd" for budget in budgets for limit in budget.limits)
        # (provider, provider model) -> (UTC day number, micro-USD per prompt token, per answer token)
        self._rates: dict[tuple[str, str], tuple[int, float, float]] = {}
        self.alerts: Alerts | None = None  # threshold alerts (ai/budget_alerts.py), when configured

    def alert(
        self, row: int, window: int, value: str, percent: int, used: float, cap: int, refused: bool
    ) -> None:
        """Raise a threshold alert for the plan's ``row`` (once per period: budget_alerts.py)."""
        alerts = self.alerts
        assert alerts is not None
        budget, limit, allowance, _keys = self._plan[row]
        scale = MICRO if limit.kind == "usd" else 1
        alerts.raise_alert(
            allowance.limit_id,
            window,
            value,
            percent,
            {
                "budget": budget.name,
                "limit": limit.field,
                "key": value,
                "period": limit.period,
                "used": used / scale,
                "limit_value": cap / scale,
                "refused": refused,
                "time": _time(),
            },
        )

    def cost(self, provider: str, provider_model: str, usage: Usage, now: float) -> int:
        """Micro-USD, or -1 when the price is unknown (the spend is then not counted: see the docs)."""
        prices = self.prices
        if prices is None:
            return -1
        usd = prices.cost_usd(provider, provider_model, usage, utc_day(now))
        return -1 if usd is None else round(usd * MICRO)

    def estimate_cost(self, provider: str, provider_model: str, prompt: int, output: int, now: float) -> int:
        """``cost`` of ``prompt`` and ``output`` tokens, from per-token rates kept per target and day:
        no price lookup and no Usage per request."""
        key = (provider, provider_model)
        day = int(now // 86400)
        rates = self._rates.get(key)
        if rates is None or rates[0] != day:
            per_prompt = self.cost(provider, provider_model, Usage(RATE_TOKENS, 0, reported=True), now)
            per_answer = self.cost(provider, provider_model, Usage(0, RATE_TOKENS, reported=True), now)
            if per_prompt < 0 or per_answer < 0:
                rates = (day, -1.0, -1.0)
            else:
                rates = (day, per_prompt / RATE_TOKENS, per_answer / RATE_TOKENS)
            if len(self._rates) >= KEY_CACHE_MAX:  # keys come from the config's targets: bounded anyway
                self._rates.clear()
            self._rates[key] = rates
        if rates[1] < 0:
            return -1
        return round(prompt * rates[1] + output * rates[2])

    def reserve(self, ex: Exchange, model: Any, body_bytes: int, pivot: Any) -> Hold:
        """Reserve the request's estimate under every limit, or nothing and a refusal."""
        hold = Hold(self)
        output = self.output_tokens
        if isinstance(pivot, dict):
            asked = pivot.get("max_completion_tokens") or pivot.get("max_tokens")
            if isinstance(asked, int) and asked > 0:
                output = asked
        else:
            output = 0  # embeddings: no answer tokens
        prompt = body_bytes // BYTES_PER_TOKEN + 1
        tokens = hold.tokens = prompt + output
        spend = -1
        now = _time()
        if self._spends and model is not None and model.targets:
            target = model.targets[0]
            spend = self.estimate_cost(target.provider.name, target.target.model, prompt, output, now)
        cluster = CLUSTER.current
        identity: Any = ex.consumer
        overrides: dict[str, int] | None = getattr(identity, "limits", None) if identity is not None else None
        # The tightest token and request limit, shown in the headers: (share left, limit, cap, left, reset)
        tokens_shown: Shown | None = None
        requests_shown: Shown | None = None
        for row, (budget, limit, allowance, keys) in enumerate(self._plan):
            kind = limit.kind
            amount = tokens if kind == "tokens" else 1 if kind == "requests" else spend
            cap = _cap(budget, limit, overrides)
            if cap == 0:  # switched off: refused whatever the request (and whatever its price)
                hold.refusal = _refusal(budget, limit, cap, 0.0, amount)
                hold.retry = 60.0 if limit.period == MINUTE else 3600.0
                break
            if amount < 0:
                continue  # an unknown price: spend not counted (docs/llm-budgets.md)
            value = _key(budget.key, ex, identity)
            key = keys.get(value)
            if key is None:
                key = self._new_key(keys, allowance, value)
            if not allowance.reserve(key, value, amount, now, cap, cluster):
                message = f"budget {budget.name!r} cannot be checked: the shared store is down"
                hold.refusal = (message, "unavailable")
                hold.status = 503  # as the rate limits answer in this case (failure = "closed")
                hold.retry = 1.0
                break
            left = cap - allowance.used - (amount if allowance.counted else 0)
            share = left / cap if cap else -1.0
            if kind == "tokens":
                if tokens_shown is None or share < tokens_shown[0]:
                    tokens_shown = (share, limit, cap, max(left, 0.0), allowance.reset)
            elif kind == "requests" and (requests_shown is None or share < requests_shown[0]):
                requests_shown = (share, limit, cap, max(left, 0.0), allowance.reset)
            if not allowance.counted:
                hold.refusal = _refusal(budget, limit, cap, allowance.used, amount)
                hold.retry = allowance.reset
                if self.alerts is not None and 100 in self.alerts.thresholds:
                    self.alert(row, allowance.when, value, 100, allowance.used, cap, True)
                break
            hold.entries.append(
                (allowance, key, allowance.when, amount, kind, allowance.used, cap, row, value)
            )
        if hold.refusal is not None:
            for allowance, key, when, amount, *_ in hold.entries:
                allowance.settle(key, when, -amount, cluster)
            hold.entries.clear()
        hold.headers = _headers(requests_shown, tokens_shown)
        return hold

    def _new_key(self, keys: dict[str, KeyCells], allowance: Allowance, value: str) -> KeyCells:
        hashed = key_hash(allowance.limit_id, value.encode())
        key = KeyCells(hashed, self.table.locate(hashed))
        if len(keys) >= KEY_CACHE_MAX:
            keys.clear()
        keys[value] = key
        return key


def _cap(budget: Budget, limit: Limit, overrides: dict[str, int] | None) -> int:
    """The consumer's own number where it has one (budgets by consumer or API key only); USD overrides
    are whole cents, named ``<budget>.<field>_cents``."""
    if not overrides or budget.key not in ("consumer", "api_key"):
        return limit.cap
    if limit.kind == "usd":
        cents = overrides.get(f"{budget.name}.{limit.field}_cents")
        return limit.cap if cents is None else cents * (MICRO // 100)
    return overrides.get(f"{budget.name}.{limit.field}", limit.cap)


def _key(kind: str, ex: Exchange, identity: Any) -> str:
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


def _refusal(budget: Budget, limit: Limit, cap: int, used: float, amount: int) -> tuple[str, str]:
    what = limit.field.replace("_", " ")
    if limit.kind == "usd":
        return (
            f"Budget {budget.name!r} exhausted: {what} {cap / MICRO:g}, spent {used / MICRO:.4f}. "
            "You exceeded your current quota.",
            "insufficient_quota",
        )
    unit = "tokens" if limit.kind == "tokens" else "requests"
    return (
        f"Rate limit reached for {what} (budget {budget.name!r}): limit {cap}, used {math.floor(used)},"
        f" requested {amount} {unit}.",
        "rate_limit_exceeded",
    )


Shown = tuple[float, Limit, int, float, float]  # what a limit's headers say: share, limit, cap, left, reset
_REQUEST_HEADERS: Final = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKEN_HEADERS: Final = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)
_FIXED: dict[tuple[str, int], tuple[bytes, bytes, bytes]] = {}  # (field, cap) -> cap, item name, policy


def _fixed(limit: Limit, cap: int) -> tuple[bytes, bytes, bytes]:
    """What a limit's headers say whatever the counts: rendered once per (limit, cap)."""
    key = (limit.field, cap)
    found = _FIXED.get(key)
    if found is None:
        field = limit.field.encode()
        policy = b'"%s";q=%d;w=%d' % (field, cap, PERIOD_SECONDS[limit.period])
        found = (b"%d" % cap, b'"%s";r=' % field, policy)
        if len(_FIXED) < KEY_CACHE_MAX:  # caps come from config and consumers' numbers: bounded anyway
            _FIXED[key] = found
    return found


def _headers(requests: Shown | None, tokens: Shown | None) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers, and RateLimit / RateLimit-Policy items named by the limit's field
    (e.g. ``"tokens_per_minute";r=1200;t=14``), for the tightest request and token limit (no dict, no
    list but the headers': built on every budgeted answer)."""
    out: list[tuple[bytes, bytes]] = []
    if requests is not None:
        policy, item = _limit_headers(out, requests, _REQUEST_HEADERS)
        if tokens is not None:
            more_policy, more_item = _limit_headers(out, tokens, _TOKEN_HEADERS)
            policy += b", " + more_policy
            item += b", " + more_item
    elif tokens is not None:
        policy, item = _limit_headers(out, tokens, _TOKEN_HEADERS)
    else:
        return out
    out.append((b"ratelimit-policy", policy))
    out.append((b"ratelimit", item))
    return out


def _limit_headers(
    out: list[tuple[bytes, bytes]], shown: Shown, names: tuple[bytes, bytes, bytes]
) -> tuple[bytes, bytes]:
    """Appends one limit's x-ratelimit-* headers; returns its RateLimit-Policy and RateLimit items."""
    _share, limit, cap, left, reset = shown
    cap_text, item, policy = _fixed(limit, cap)
    remaining = _digits(int(left))
    out.append((names[0], cap_text))
    out.append((names[1], remaining))
    out.append((names[2], reset_text(reset)))
    return policy, item + remaining + b";t=" + _digits(math.ceil(reset))
