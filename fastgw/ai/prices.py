"""What an LLM exchange cost: a price table shipped in the package, overridable with ``[[llm.prices]]``.

Prices are USD per million tokens per provider model, each with the day it takes effect: the newest
entry whose ``effective`` day is not after the request's (UTC) day applies, so a price change is one more
entry and history stays priced as it was billed. A config entry names a provider by its configured name
or by its kind, and overrides the shipped table (``fastgw/data/prices.toml``, list prices as of its
``version`` date: they must be checked against one's own invoices). A model with no price costs
``None``, "unknown", never 0: a ledger that counted it as free would under-report spend silently.
``fastgw prices check`` lists the served models that have none (``prices_check.py``). The table's
config side (``[[llm.prices]]``, the shipped file) is ai/price_config.py; this module is compiled: every
llm request is priced when it ends.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastgw.ai.adapter import Usage
from fastgw.ai.record import LlmRecord

PER_TOKENS: Final = 1_000_000.0  # prices are per million tokens, as every provider lists them
# A dated model name (gpt-4o-2024-08-06, claude-sonnet-4-20250514) falls back to its undated entry.
_DATE_SUFFIX: Final = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
# (provider, model, day) lookups remembered: keys come from the config's targets times the days a worker
# lives through; 4096 holds hundreds of targets for a week and bounds a config with very many.
CACHE_MAX: Final = 4096
EPOCH: Final = datetime.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Price:
    """One entry: USD per million tokens of each kind, from ``effective`` on."""

    effective: datetime.date
    input: float | None = None
    cached_input: float | None = None
    output: float | None = None
    reasoning: float | None = None
    embedding: float | None = None

    def cost(self, usage: Usage) -> float | None:
        if not usage.reported:
            return None
        if self.embedding is not None:  # an embedding model: every token is input
            return usage.prompt_tokens * self.embedding / PER_TOKENS
        if self.input is None or self.output is None:
            return None
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        reasoning_price = self.output if self.reasoning is None else self.reasoning
        return (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_price
            + (usage.completion_tokens - reasoning) * self.output
            + reasoning * reasoning_price
        ) / PER_TOKENS


Entries = dict[tuple[str, str], tuple[Price, ...]]  # (provider, model) -> entries, newest first


class PriceTable:
    """The prices of one config snapshot: config entries first, then the shipped table's."""

    __slots__ = ("_cache", "configured", "kinds", "shipped", "version")

    def __init__(
        self, shipped: Entries, configured: Entries, kinds: Mapping[str, str], version: str = ""
    ) -> None:
        self.shipped = shipped
        self.configured = configured
        self.kinds = dict(kinds)  # configured provider name -> its kind
        self.version = version  # the shipped table's version
        self._cache: dict[tuple[str, str, datetime.date], Price | None] = {}

    def price(self, provider: str, provider_model: str, day: datetime.date) -> Price | None:
        """The entry that applies to ``provider``'s (a configured name) ``provider_model`` on ``day``."""
        key = (provider, provider_model, day)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find(provider, provider_model, day)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def cost_usd(self, provider: str, provider_model: str, usage: Usage, day: datetime.date) -> float | None:
        """USD the exchange cost; None when its price (or its usage) is unknown, never 0 for unknown."""
        price = self.price(provider, provider_model, day)
        return None if price is None else price.cost(usage)

    def _find(self, provider: str, model: str, day: datetime.date) -> Price | None:
        kind = self.kinds.get(provider, provider)
        undated = _DATE_SUFFIX.sub("", model)
        for name in (model, undated) if undated != model else (model,):
            for table, who in ((self.configured, provider), (self.configured, kind), (self.shipped, kind)):
                for entry in table.get((who, name), ()):
                    if entry.effective <= day:
                        return entry
        return None


_today: list[Any] = [-1, EPOCH]  # (days since the epoch, its date): one date object per day, not per request


def utc_day(epoch_seconds: float) -> datetime.date:
    """The UTC day of a time: the day prices and the ledger are kept by."""
    number = int(epoch_seconds // 86400)
    if number != _today[0]:
        _today[0], _today[1] = number, EPOCH + datetime.timedelta(days=number)
    day: datetime.date = _today[1]
    return day


def record_cost(prices: PriceTable | None, record: LlmRecord) -> float | None:
    """What ``record``'s exchange cost, today's prices (ai/handler.py, when the exchange ends). An answer
    replayed from the response cache (``cache_hit``, where that feature is present) cost nothing."""
    if getattr(record, "cache_hit", False):
        return 0.0
    if prices is None or not record.provider:
        return None
    return prices.cost_usd(record.provider, record.provider_model, record.usage, utc_day(time.time()))
