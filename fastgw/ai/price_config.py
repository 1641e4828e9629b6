"""``[[llm.prices]]`` and the shipped price table (``fastgw/data/prices.toml``) read into a PriceTable
(ai/prices.py). Kept apart from it: the config loader reads this module's dataclass annotations, which
only an interpreted module keeps as written, while ai/prices.py is compiled."""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from fastgw.ai.prices import EPOCH, Entries, Price, PriceTable
from fastgw.config.errors import ConfigError
from fastgw.config.fields import doc

SHIPPED_FILE: Final = "prices.toml"  # in fastgw/data/
# A price above this is a slip of magnitude, not a price (o1-pro's output, among the dearest: 600).
PRICE_MAX: Final = (10_000.0, "the dearest models list a few hundred USD per million tokens")
_FIELDS: Final = ("input", "cached_input", "output", "reasoning", "embedding")


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSpec:
    provider: str = doc("a [[llm.providers]] name, or a provider kind (openai, anthropic, gemini, ...)", ...)
    model: str = doc("the provider's model name (a target's model)", ...)
    input: float | None = doc("USD per million prompt tokens", None, most=PRICE_MAX)
    cached_input: float | None = doc(
        "USD per million prompt tokens read from the provider's prompt cache (unset: input)",
        None,
        most=PRICE_MAX,
    )
    output: float | None = doc("USD per million completion tokens", None, most=PRICE_MAX)
    reasoning: float | None = doc("USD per million reasoning tokens (unset: output)", None, most=PRICE_MAX)
    embedding: float | None = doc(
        "USD per million tokens of an embedding model (instead of input)", None, most=PRICE_MAX
    )
    effective: Any = doc("the first day the price applies: a TOML date (2025-06-10) or 'YYYY-MM-DD'", EPOCH)


def compile_prices(
    specs: Iterable[PriceSpec], provider_kinds: Mapping[str, str], error: Callable[[str, str], ConfigError]
) -> PriceTable:
    """``[[llm.prices]]`` over the shipped table. ``error(key, reason)`` makes the config's error."""
    version, shipped = shipped_prices()
    known = set(provider_kinds) | set(provider_kinds.values()) | {k for k, _ in shipped}
    configured = _entries(specs, "llm.prices", error, known)
    return PriceTable(shipped, configured, provider_kinds, version)


_SHIPPED: tuple[str, Entries] | None = None


def shipped_prices() -> tuple[str, Entries]:
    """The package's table (read once per process): its version and entries."""
    global _SHIPPED
    if _SHIPPED is None:
        path = resources.files("fastgw") / "data" / SHIPPED_FILE
        where = f"fastgw/data/{SHIPPED_FILE}"

        def error(key: str, reason: str) -> ConfigError:
            return ConfigError(where, key, reason)

        data = tomllib.loads(path.read_text("utf-8"))
        rows = data.get("prices", [])
        specs = []
        for i, row in enumerate(rows):
            unknown = set(row) - {"provider", "model", "effective", *_FIELDS}
            if unknown:
                raise error(f"prices[{i}]", f"unknown keys {sorted(unknown)}")
            specs.append(PriceSpec(**row))
        _SHIPPED = (str(data.get("version", "")), _entries(specs, "prices", error, None))
    return _SHIPPED


def _entries(
    specs: Iterable[PriceSpec],
    where: str,
    error: Callable[[str, str], ConfigError],
    providers: set[str] | None,
) -> Entries:
    grouped: dict[tuple[str, str], list[Price]] = {}
    for i, spec in enumerate(specs):
        key = f"{where}[{i}]"
        if providers is not None and spec.provider not in providers:
            raise error(
                f"{key}.provider", f"{spec.provider!r} is neither a provider name nor a provider kind"
            )
        if not spec.model:
            raise error(f"{key}.model", "the provider's model name, e.g. 'gpt-4o'")
        values: dict[str, float | None] = {f: getattr(spec, f) for f in _FIELDS}
        for name, value in values.items():
            if value is not None and value < 0:
                raise error(f"{key}.{name}", f"a price is not negative, got {value}")
        if values["embedding"] is not None:
            if any(values[f] is not None for f in _FIELDS if f != "embedding"):
                raise error(f"{key}.embedding", "an embedding model's price is 'embedding' alone")
        elif values["input"] is None or values["output"] is None:
            raise error(key, "needs input and output (or embedding, for an embedding model)")
        day = _day(spec.effective, f"{key}.effective", error)
        entries = grouped.setdefault((spec.provider, spec.model), [])
        if any(e.effective == day for e in entries):
            raise error(f"{key}.effective", f"{spec.model!r} of {spec.provider!r} has two prices from {day}")
        entries.append(Price(day, **values))
    return {k: tuple(sorted(v, key=lambda p: p.effective, reverse=True)) for k, v in grouped.items()}


def _day(value: Any, key: str, error: Callable[[str, str], ConfigError]) -> datetime.date:
    if isinstance(value, datetime.datetime):
        raise error(key, f"a day without a time, e.g. 2025-06-10, got {value}")
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise error(key, f"a day: a TOML date or 'YYYY-MM-DD', got {value!r}")
