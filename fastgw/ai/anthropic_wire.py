"""Anthropic Messages API vocabulary shared by the client format and the provider adapter.

Both directions map the same tables (stop reasons, error types, thinking budgets, image data URLs), so
they live once here; the format (``formats/anthropic*.py``) and the provider (``providers/anthropic*.py``)
each hold only their own direction. Reference: Anthropic API, "Messages", "Streaming messages", "Errors".
"""

from __future__ import annotations

import re
from typing import Final

from fastgw.ai.adapter import Json, Usage

# Anthropic's stop_reason <-> the pivot's finish_reason. stop_sequence also maps to "stop"; which sequence
# matched travels in the choice's "stop_reason" (vLLM's field for it). pause_turn (a server tool paused a
# long turn) has no OpenAI equivalent: the turn did end, so "stop".
FINISH_REASON: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
STOP_REASON: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic's error types by HTTP status ("Errors" page); a status not listed is an api_error.
ERROR_TYPE: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Thinking budget <-> reasoning effort. Anthropic's minimum budget is 1024 tokens; the effort levels map to
# budgets that map back to the same level (1024 -> low, 8192 -> medium, 24576 -> high), and an exact
# budget travels beside the effort in the pivot's "reasoning": {"max_tokens": n}.
MIN_THINKING_BUDGET: Final = 1024
EFFORT_BUDGET: Final[dict[str, int]] = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}


def effort_for_budget(budget: int) -> str:
    """The reasoning effort closest to a thinking budget."""
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


def image_source_from_url(url: str) -> Json | None:
    """An Anthropic image ``source`` for a pivot ``image_url.url``: base64 for a data URL, url for http(s);
    None for anything else."""
    match = _DATA_URL.fullmatch(url)
    if match is not None:
        return {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    return None


def url_from_image_source(source: Json) -> str:
    """The pivot ``image_url.url`` for a validated Anthropic image source."""
    if source["type"] == "base64":
        return f"data:{source['media_type']};base64,{source['data']}"
    return str(source["url"])


def usage_from_anthropic(usage: Json, into: Usage) -> None:
    """Fill ``into`` from an Anthropic ``usage`` object (message, message_start or message_delta).

    Anthropic's input_tokens excludes the cache reads and writes; the pivot's prompt_tokens includes them,
    as OpenAI's does. message_delta repeats the cumulative counts, so each field present replaces the last.
    """
    for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens"):
        value = usage.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"usage.{name} is not a count")
    if usage.get("input_tokens") is not None or "cache_read_input_tokens" in usage:
        uncached = usage.get("input_tokens") or 0
        into.cached_tokens = usage.get("cache_read_input_tokens") or 0
        into.cache_creation_tokens = usage.get("cache_creation_input_tokens") or 0
        into.prompt_tokens = uncached + into.cached_tokens + into.cache_creation_tokens
        into.reported = True
    if usage.get("output_tokens") is not None:
        into.completion_tokens = usage["output_tokens"]
        into.reported = True


def anthropic_usage(usage: Usage) -> Json:
    """The Anthropic ``usage`` object for pivot usage."""
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def usage_from_pivot(usage: Json) -> Usage:
    """A pivot (OpenAI) ``usage`` object as Usage."""
    out = Usage(reported=True)
    out.prompt_tokens = _count(usage.get("prompt_tokens"))
    out.completion_tokens = _count(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        out.cached_tokens = _count(details.get("cached_tokens"))
        out.cache_creation_tokens = _count(details.get("cache_creation_tokens"))
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict):
        out.reasoning_tokens = _count(details.get("reasoning_tokens"))
    return out


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
