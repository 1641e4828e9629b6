"""What an llm exchange adds to its record (``Exchange.llm``): for the access log, metrics and, next, the
usage ledger. Token counts are the provider's own, streaming included; a provider answer without usage
is recorded as missing (``usage_reported`` false), never as zero tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from fastgw.access_line import decimal, millis3
from fastgw.ai.adapter import Usage
from fastgw.ai.guardrails.report import GuardrailsReport

# JSON forms of the record's strings (model, provider and endpoint names, error kinds): few, and repeated
# on every line. Bounded, since the model is the client's string until a provider is picked for it.
TEXTS_MAX: Final = 1024
_texts: Final[dict[str, bytes]] = {}
# The largest number log_json writes itself (as integer parts); past it (a rate over a nanosecond's
# duration, an infinity) the dict and orjson write it.
NUMBER_MAX: Final = 1e12


@dataclass(slots=True)
class LlmRecord:
    model: str  # the public name the client asked for
    endpoint: str  # "chat", "embeddings", "messages", "count_tokens", "models"
    stream: bool = False
    provider: str = ""  # the target that answered (or the last one tried)
    provider_model: str = ""
    attempts: int = 0  # provider calls made: targets tried, retries and key switches included
    key: str = ""  # which provider key the last attempt used: its configured name, "client" or "stored"
    usage: Usage = field(default_factory=Usage)
    ttft_ms: float = -1.0  # first token (first content chunk) after the request reached the handler
    duration_ms: float = 0.0
    error: str = ""  # the provider error kind that ended it, if any
    # The provider reported more answer tokens than the bytes it sent (ai/relay.py check_usage): the
    # count stands, it is what the provider bills, and the log says so for the operator to dispute.
    usage_exceeds_answer: bool = False
    cache_hit: bool = False  # answered by the route's response cache (ai/cache.py): no provider call
    tokens_saved: int = 0  # a hit's tokens: the original call's prompt + completion tokens (usage is 0)
    cost_usd: float | None = None  # USD (ai/prices.py), set when the exchange ends; None: unknown
    guardrails: GuardrailsReport | None = None  # on a route with guardrails: what fired (ai/guardrails/)
    # A provider call is out and has not failed (set by the target loop, ai/attempts.py): a cut now may
    # leave work the provider bills for (ai/relay.py provider_may_bill). Not logged.
    at_provider: bool = False
    # Calls of this request sent and never answered (a deadline after the request left) before the call
    # that ended it: the provider may bill each, so a budget keeps an estimate for each (ai/budgets.py).
    unanswered: int = 0

    # Written out, not generated: dataclass's own __init__ is made at import and stays interpreted in the
    # compiled build (one per llm request). The dataclass still gives eq and repr; the fields as above.
    def __init__(
        self,
        model: str,
        endpoint: str,
        stream: bool = False,
        provider: str = "",
        provider_model: str = "",
        attempts: int = 0,
        key: str = "",
        usage: Usage | None = None,
        ttft_ms: float = -1.0,
        duration_ms: float = 0.0,
        error: str = "",
        usage_exceeds_answer: bool = False,
        cache_hit: bool = False,
        tokens_saved: int = 0,
        cost_usd: float | None = None,
        guardrails: GuardrailsReport | None = None,
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.stream = stream
        self.provider = provider
        self.provider_model = provider_model
        self.attempts = attempts
        self.key = key
        self.usage = Usage() if usage is None else usage
        self.ttft_ms = ttft_ms
        self.duration_ms = duration_ms
        self.error = error
        self.usage_exceeds_answer = usage_exceeds_answer
        self.cache_hit = cache_hit
        self.tokens_saved = tokens_saved
        self.cost_usd = cost_usd
        self.guardrails = guardrails
        self.at_provider = False
        self.unanswered = 0

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens over the time after the first token (streams), or the whole call."""
        span = self.duration_ms - max(self.ttft_ms, 0.0) if self.stream else self.duration_ms
        return self.usage.completion_tokens * 1000.0 / span if span > 0 else 0.0

    def log_fields(self) -> dict[str, Any]:
        usage = self.usage
        out: dict[str, Any] = {
            "model": self.model,
            "endpoint": self.endpoint,
            "provider": self.provider,
            "provider_model": self.provider_model,
            "attempts": self.attempts,
            "stream": self.stream,
        }
        if self.key:
            out["key"] = self.key  # the key's name, never the key
        if usage.reported:
            out["prompt_tokens"] = usage.prompt_tokens
            out["completion_tokens"] = usage.completion_tokens
            if usage.cached_tokens:
                out["cached_tokens"] = usage.cached_tokens
            if usage.reasoning_tokens:
                out["reasoning_tokens"] = usage.reasoning_tokens
            out["tokens_per_s"] = round(self.tokens_per_second, 1)
        else:
            out["usage"] = "missing"
        if self.usage_exceeds_answer:
            out["usage_exceeds_answer"] = True
        if self.ttft_ms >= 0:
            out["ttft_ms"] = round(self.ttft_ms, 3)
        if self.cost_usd is not None:
            out["cost_usd"] = round(self.cost_usd, 9)
        elif self.provider:  # a provider was called: what it charged is not known (no price, no usage)
            out["cost"] = "unknown"
        if self.error:
            out["error"] = self.error
        if self.cache_hit:
            out["cache"] = "hit"
            out["tokens_saved"] = self.tokens_saved
        if self.guardrails is not None and (fields := self.guardrails.log_fields()):
            out["guardrails"] = fields
        return out

    def log_json(self) -> bytes:
        """``log_fields`` as JSON, written out for the usual record: the access log renders one per llm
        exchange in the tick, ~0.5 us against ~1.4 us for the dict and orjson. The numbers are written
        as the dict's rounding would give them (to the microsecond, the tenth, the nano-dollar); a
        record with guardrails, or a number past NUMBER_MAX (or not a number), goes the dict's way."""
        usage = self.usage
        tokens_per_s = self.tokens_per_second if usage.reported else 0.0
        cost = self.cost_usd
        if (
            self.guardrails is not None
            or not tokens_per_s < NUMBER_MAX
            or not self.ttft_ms < NUMBER_MAX
            or (cost is not None and not (0.0 <= cost < NUMBER_MAX))
        ):
            return orjson.dumps(self.log_fields())
        out = (
            b'{"model":'
            + _text(self.model)
            + b',"endpoint":'
            + _text(self.endpoint)
            + b',"provider":'
            + _text(self.provider)
            + b',"provider_model":'
            + _text(self.provider_model)
            + b',"attempts":'
            + decimal(self.attempts)
            + (b',"stream":true' if self.stream else b',"stream":false')
        )
        if self.key:
            out += b',"key":' + _text(self.key)
        if usage.reported:
            out += b',"prompt_tokens":' + decimal(usage.prompt_tokens)
            out += b',"completion_tokens":' + decimal(usage.completion_tokens)
            if usage.cached_tokens:
                out += b',"cached_tokens":' + decimal(usage.cached_tokens)
            if usage.reasoning_tokens:
                out += b',"reasoning_tokens":' + decimal(usage.reasoning_tokens)
            tenths = int(tokens_per_s * 10.0 + 0.5)
            out += b',"tokens_per_s":' + decimal(tenths // 10) + b"." + decimal(tenths % 10)
        else:
            out += b',"usage":"missing"'
        if self.usage_exceeds_answer:
            out += b',"usage_exceeds_answer":true'
        if self.ttft_ms >= 0:
            whole, thousandths = millis3(self.ttft_ms)
            out += b',"ttft_ms":' + whole + b"." + thousandths
        if cost is not None:
            nanos = int(cost * 1e9 + 0.5)
            fraction = b"%09d" % (nanos % 1_000_000_000)
            out += b',"cost_usd":' + decimal(nanos // 1_000_000_000) + b"." + (fraction.rstrip(b"0") or b"0")
        elif self.provider:
            out += b',"cost":"unknown"'
        if self.error:
            out += b',"error":' + _text(self.error)
        if self.cache_hit:
            out += b',"cache":"hit","tokens_saved":' + decimal(self.tokens_saved)
        return out + b"}"


def _text(value: str) -> bytes:
    """A string as JSON, from ``_texts`` once seen."""
    text = _texts.get(value)
    if text is None:
        if len(_texts) >= TEXTS_MAX:
            _texts.clear()
        text = _texts[value] = orjson.dumps(value)
    return text
