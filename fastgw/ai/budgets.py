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
from dataclasses import dataclass
from typing import Any, Final

from fastgw.ai.adapter import Usage
from fastgw.ai.budget_alerts import Alerts
from fastgw.ai.budget_headers import Field, Fixed, limit_headers, refusal_text
from fastgw.ai.budget_seats import DayRates, Entry, Seat, Spot, seat_key
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.prices import PriceTable, utc_day
from fastgw.ai.record import LlmRecord
from fastgw.ai.relay import status_kind
from fastgw.counters.allowance import MINUTE_SECONDS, Allowance, AmountKey
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.cluster_slot import CLUSTER
from fastgw.counters.table import CounterTable, key_hash
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter

# Prompt tokens are estimated as body bytes / 4: English text averages about 4 bytes a token in the
# GPT and Claude tokenizers, and the JSON around the messages adds bytes, so the estimate is usually
# above the truth; text in scripts of 1-3 bytes a token (CJK, code) can be up to 4x under it. Only the
# admission uses it: the counts are settled with the provider's own numbers.
BYTES_PER_TOKEN: Final = 4
MICRO: Final = 1_000_000  # spend is counted in micro-USD: integers in the shared table
KEY_CACHE_MAX: Final = 16384  # keys remembered per limit per worker: the counts live in the table
# Callers (Seats) remembered per route per worker: each holds its identity (one per API key, cached JWT
# or certificate) and ~1 KiB of spots and headers, so 4096 bound them to a few MiB; a caller past it is
# looked up again (~2 us) after the clear.
SEATS_MAX: Final = 4096
# A price is linear in each kind of token: the cost of a million tokens of one kind, in micro-USD, is
# that kind's rate per token in micro-USD, exact to 1e-6 micro-USD (looked up once a day per target).
RATE_TOKENS: Final = 1_000_000
TOKENS: Final = 0  # what a limit counts (Spot.kind): ints, compared on every request
REQUESTS: Final = 1
USD: Final = 2
_KINDS: Final = {"tokens": TOKENS, "requests": REQUESTS, "usd": USD}
NO_HEADERS: Final[tuple[Field, ...]] = ()  # a hold that shows no limit (spend budgets only, or refused early)
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


# A target's price per token on one day: (UTC day number, micro-USD per prompt token, per answer token;
# both -1 when the price is unknown).
Rates = tuple[int, float, float]


class Hold:
    """One request's reservations, its response headers, and (when refused) why."""

    __slots__ = ("budgets", "cluster", "first", "headers", "refusal", "retry", "status", "tokens")

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        # Where the reservations counted: the settle corrects them there, even after a reload added or
        # removed the shared store ([rate_limits.redis]) while the answer streamed.
        self.cluster: ClusterCounts | None = None
        self.first: Entry | None = None  # the reservations counted (chained: budget_seats.Entry)
        self.headers = NO_HEADERS
        self.refusal: tuple[str, str] | None = None  # (message, code)
        self.retry = 0.0
        self.status = 429
        self.tokens = 0  # the token estimate reserved

    def show(self, ex: Exchange) -> None:
        """Put this request's limit headers on its answer, whichever code path answers (they are added
        to the head with the route's own fields: proxy/handler_links.py's route_fields)."""
        ex.answer_headers = self.headers

    async def refuse(self, out: ResponseWriter, fmt: ClientFormat) -> None:
        """The 429 (503: the shared store down) in the client's SDK shape, with Retry-After and the
        limit headers."""
        assert self.refusal is not None
        message, code = self.refusal
        status = self.status
        body = fmt.render_error(status, message, status_kind(status), None, code)
        head: list[Field] = [
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
        entry = self.first
        # Earlier calls of this request that were sent and never answered (a fallback answered after
        # them): the provider may bill each, so each keeps an estimate as a last such call does.
        unanswered = record.unanswered
        if entry is None or (not usage.reported and answered and not unanswered):
            return
        cluster = self.cluster
        alerts = self.budgets.alerts
        if not usage.reported:
            kept = unanswered + (1 if answered else 0)  # estimates kept: the reservation is one
            while entry is not None:
                spot = entry.spot
                if spot.kind != REQUESTS:  # the request itself was made: it counts
                    amount = entry.amount
                    spot.allowance.settle(spot.key, entry.when, amount * (kept - 1), cluster)
                    if alerts is not None and kept > 1:  # more than was reserved: a threshold may pass
                        self._crossed(entry, amount * kept)
                entry = entry.next
            return
        tokens = usage.total_tokens
        # Cut short (the client left, a deadline, a provider failing mid-stream): what was reported is
        # partial (Anthropic's message_start says 1 output token; the real count comes at the end), while
        # the provider bills what it generated: the estimate stays unless the report says more.
        cut = bool(record.error)
        cost = -2  # not looked up yet
        following: Entry | None = entry
        while following is not None:
            entry, following = following, following.next
            spot = entry.spot
            kind = spot.kind
            amount = real = entry.amount
            if kind == TOKENS:
                real = tokens if not cut or tokens > amount else amount
            elif kind == USD:
                if cost == -2:
                    usd = record.cost_usd  # ai/prices.py's, set just before; None: unknown price
                    cost = -1 if usd is None else rounded(usd * MICRO)
                # An unknown price (-1) adds nothing (docs/llm-budgets.md); the unanswered calls below do.
                real = 0 if cost < 0 else cost if not cut or cost > amount else amount
            if unanswered and kind != REQUESTS:
                real += amount * unanswered
            spot.allowance.settle(spot.key, entry.when, real - amount, cluster)
            if alerts is not None:
                self._crossed(entry, real)

    def _crossed(self, entry: Entry, real: int) -> None:
        """Raise the highest threshold that ``real`` (what the request counts, settled) takes its limit
        across, from what was used when it was admitted."""
        alerts = self.budgets.alerts
        assert alerts is not None
        used, cap = entry.used, entry.cap
        percent = alerts.crossed(used, used + real, cap)
        if percent:
            spot = entry.spot
            self.budgets.alert(spot.row, entry.when, spot.value, percent, used + real, cap, False)


class Budgets:
    """All budgets of one llm route; a request must fit every limit of every budget."""

    def __init__(self, budgets: tuple[Budget, ...], table: CounterTable, output_tokens: int) -> None:
        self.budgets = budgets
        self.table = table
        self.output_tokens = output_tokens
        self.prices: PriceTable | None = None  # the config's (ai/prices.py), set by the route's compile
        self._plan: tuple[tuple[Budget, Limit, Allowance, dict[str, Spot]], ...] = tuple(
            (budget, limit, Allowance(table, limit.period, f"{budget.budget_id}.{limit.field}".encode()), {})
            for budget in budgets
            for limit in budget.limits
        )
        self._spends = any(limit.kind == "usd" for budget in budgets for limit in budget.limits)
        # (provider, provider model) -> (UTC day number, micro-USD per prompt token, per answer token)
        self._rates: dict[tuple[str, str], Rates] = {}
        self._model_rates: dict[int, DayRates] = {}  # id(model) -> its first target's rates today
        self._seats: dict[int, Seat] = {}  # id(identity) -> its seat
        self._anonymous: dict[str, Seat] = {}  # client address -> its seat (routes without auth)
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
            cap,
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
            MINUTE_SECONDS if allowance.minute else 0.0,
            refused,
        )

    def cost(self, provider: str, provider_model: str, usage: Usage, now: float) -> int:
        """Micro-USD, or -1 when the price is unknown (the spend is then not counted: see the docs)."""
        prices = self.prices
        if prices is None:
            return -1
        usd = prices.cost_usd(provider, provider_model, usage, utc_day(now))
        return -1 if usd is None else rounded(usd * MICRO)

    def estimate_cost(self, provider: str, provider_model: str, prompt: int, output: int, now: float) -> int:
        """``cost`` of ``prompt`` and ``output`` tokens, from per-token rates kept per target and day:
        no price lookup and no Usage per request."""
        rates = self._day_rates(provider, provider_model, now)
        return _priced(rates[1], rates[2], prompt, output)

    def _day_rates(self, provider: str, provider_model: str, now: float) -> Rates:
        """A target's rates today (kept per target and day)."""
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
        return rates

    def _model_spend(self, model: Any, prompt: int, output: int, now: float) -> int:
        """``estimate_cost`` at the price of the model's first target, its rates kept per model object
        (the snapshot's: one per alias) rather than looked up through the target on every request."""
        kept = self._model_rates.get(id(model))
        if kept is None or kept.model is not model or not kept.since <= now < kept.until:
            if not model.targets:
                return -1  # no price to count at (a model is configured with targets: not kept)
            target = model.targets[0]
            rates = self._day_rates(target.provider.name, target.target.model, now)
            start = rates[0] * 86400.0
            kept = DayRates(model, rates[1], rates[2], start, start + 86400.0)
            if len(self._model_rates) >= KEY_CACHE_MAX:
                self._model_rates.clear()
            self._model_rates[id(model)] = kept
        return _priced(kept.prompt, kept.answer, prompt, output)

    def reserve(self, ex: Exchange, model: Any, body_bytes: int, pivot: Any) -> Hold:
        """Reserve the request's estimate under every limit, or nothing and a refusal."""
        hold = Hold(self)
        output = self.output_tokens
        if isinstance(pivot, dict):
            # The larger of the two caps (an adapter may send either: a client naming both with a small
            # max_completion_tokens reserved that while its provider got the large max_tokens), times n.
            asked = max(_count(pivot.get("max_completion_tokens")), _count(pivot.get("max_tokens")))
            if asked > 0:
                output = asked
            choices = _count(pivot.get("n"))
            if choices > 1:
                output *= choices
        else:
            output = 0  # embeddings: no answer tokens
        prompt = body_bytes // BYTES_PER_TOKEN + 1
        tokens = hold.tokens = prompt + output
        spend = -1
        now = _time()
        if self._spends and model is not None:
            spend = self._model_spend(model, prompt, output, now)
        cluster = hold.cluster = CLUSTER.current
        seat = self._seat(ex)
        caps = seat.caps
        fixed = seat.fixed
        first: Entry | None = None
        # The tightest token and request limit, shown in the headers: its row, share left, left, reset
        tokens_row = requests_row = -1
        tokens_share = requests_share = tokens_left = requests_left = tokens_reset = requests_reset = 0.0
        for row, spot in enumerate(seat.spots):
            kind = spot.kind
            amount = tokens if kind == TOKENS else 1 if kind == REQUESTS else spend
            cap = caps[row]
            if cap == 0:  # switched off: refused whatever the request (and whatever its price)
                hold.refusal = self._refusal(row, cap, 0.0, amount)
                hold.retry = 60.0 if spot.allowance.minute else 3600.0
                break
            # The model's first target has no price (-1): estimated at 0, so that the entry is there for
            # the settle to count the cost of the target that served, if it has one (a priced fallback).
            amount = max(amount, 0)
            allowance = spot.allowance
            if not allowance.reserve(spot.key, spot.value, amount, now, cap, cluster):
                message = f"budget {self._plan[row][0].name!r} cannot be checked: the shared store is down"
                hold.refusal = (message, "unavailable")
                hold.status = 503  # as the rate limits answer in this case (failure = "closed")
                hold.retry = 1.0
                break
            counted = allowance.counted
            used = allowance.used
            if kind != USD:
                left = cap - used - (amount if counted else 0)
                share = left / cap
                if kind == TOKENS:
                    if tokens_row < 0 or share < tokens_share:
                        tokens_row, tokens_share, tokens_left = row, share, left
                        tokens_reset = allowance.reset
                elif requests_row < 0 or share < requests_share:
                    requests_row, requests_share, requests_left = row, share, left
                    requests_reset = allowance.reset
            if not counted:
                hold.refusal = self._refusal(row, cap, used, amount)
                hold.retry = allowance.reset
                if self.alerts is not None and 100 in self.alerts.thresholds:
                    self.alert(row, allowance.when, spot.value, 100, used, cap, True)
                break
            first = Entry(spot, allowance.when, amount, used, cap, first)
        if hold.refusal is not None:
            while first is not None:
                spot = first.spot
                spot.allowance.settle(spot.key, first.when, -first.amount, cluster)
                first = first.next
        hold.first = first
        if tokens_row >= 0 or requests_row >= 0:
            hold.headers = limit_headers(
                fixed[requests_row] if requests_row >= 0 else None,
                requests_left,
                requests_reset,
                fixed[tokens_row] if tokens_row >= 0 else None,
                tokens_left,
                tokens_reset,
            )
        return hold

    def _seat(self, ex: Exchange) -> Seat:
        """The caller's seat: by its identity (the same object for every request of one API key, token
        or certificate while it is cached), or by its address on a route without auth."""
        identity: Any = ex.consumer
        if identity is not None:
            seat = self._seats.get(id(identity))
            if seat is not None and seat.identity is identity:
                return seat
        else:
            seat = self._anonymous.get(ex.client_ip)
            if seat is not None:
                return seat
        return self._new_seat(ex, identity)

    def _new_seat(self, ex: Exchange, identity: Any) -> Seat:
        overrides: dict[str, int] | None = getattr(identity, "limits", None) if identity is not None else None
        spots: list[Spot] = []
        caps: list[int] = []
        fixed: list[Fixed | None] = []
        for row, (budget, limit, allowance, keys) in enumerate(self._plan):
            value = seat_key(budget.key, ex, identity)
            spot = keys.get(value)
            if spot is None:
                hashed = key_hash(allowance.limit_id, value.encode())
                spot = Spot(
                    allowance, AmountKey(hashed, self.table.locate(hashed)), _KINDS[limit.kind], row, value
                )
                if len(keys) >= KEY_CACHE_MAX:
                    keys.clear()
                keys[value] = spot
            cap = _cap(budget, limit, overrides)
            spots.append(spot)
            caps.append(cap)
            fixed.append(
                None if limit.kind == "usd" else Fixed(limit.field, limit.kind == "tokens", cap, limit.period)
            )
        seat = Seat(identity, spots, caps, fixed)
        if identity is not None:
            if len(self._seats) >= SEATS_MAX:
                self._seats.clear()
            self._seats[id(identity)] = seat
        else:
            if len(self._anonymous) >= SEATS_MAX:
                self._anonymous.clear()
            self._anonymous[ex.client_ip] = seat
        return seat

    def _refusal(self, row: int, cap: int, used: float, amount: int) -> tuple[str, str]:
        budget, limit, _allowance, _keys = self._plan[row]
        return refusal_text(budget.name, limit.field, limit.kind, cap, used, amount)


def _count(value: Any) -> int:
    """A request's count parameter (max_tokens, n), or 0 when it is none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _priced(per_prompt: float, per_answer: float, prompt: int, output: int) -> int:
    """Micro-USD of ``prompt`` and ``output`` tokens at these rates; -1 when the price is unknown."""
    return -1 if per_prompt < 0 else rounded(prompt * per_prompt + output * per_answer)


def rounded(number: float) -> int:
    """``round(number)`` (halves to even) without builtins.round, which compiled looks up and binds
    ``float.__round__`` on every call: a third of a spend budget's settle."""
    if number < 0:
        return -rounded(-number)
    whole = int(number)
    rest = number - whole
    if rest > 0.5 or (rest == 0.5 and whole % 2 == 1):
        whole += 1
    return whole


def _cap(budget: Budget, limit: Limit, overrides: dict[str, int] | None) -> int:
    """The consumer's own number where it has one (budgets by consumer or API key only); USD overrides
    are whole cents, named ``<budget>.<field>_cents``."""
    if not overrides or budget.key not in ("consumer", "api_key"):
        return limit.cap
    if limit.kind == "usd":
        cents = overrides.get(f"{budget.name}.{limit.field}_cents")
        return limit.cap if cents is None else cents * (MICRO // 100)
    return overrides.get(f"{budget.name}.{limit.field}", limit.cap)
