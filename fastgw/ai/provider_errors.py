"""What every adapter reads from a provider's error answer: the message to show, and when to retry.

The message comes from the provider's error object (``{"error": {"message": ...}}`` for OpenAI, Azure
and Anthropic; Gemini's ``{"error": {"message", "status"}}`` too), cut to a bounded length, with URLs and
IP addresses masked: a provider's message may name its own internal hosts, and errors never show internal
addresses. The retry hint comes from ``retry-after-ms`` (OpenAI), ``Retry-After`` (RFC 9110 10.2.3:
seconds or an HTTP date) and, for a 429, OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens``, which are
Go-style durations ("1s", "6m0s", "20ms", "1h2m3.5s").
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import re
import time
from collections.abc import Mapping
from typing import Final

# 500 characters: a provider's message is a sentence or two; a longer one is cut rather than echoed whole
# (some servers put a stack trace or the whole request there).
MAX_MESSAGE: Final = 500
# A header value longer than 64 characters is no duration or date; it is ignored, never parsed.
MAX_HINT: Final = 64
# A retry hint beyond a day is nonsense for a fallback decision; it is capped (the handler caps lower).
MAX_RETRY_AFTER: Final = 86_400.0

_URL: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_IPV4: Final = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# A candidate only: "12:30:45" looks like one, so each match is checked by ipaddress before it is masked.
_IPV6: Final = re.compile(r"\[?([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})\]?")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS: Final[dict[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def mask_addresses(text: str) -> str:
    """``text`` with URLs and IP addresses replaced by placeholders."""
    text = _URL.sub("<url>", text)
    text = _IPV4.sub("<address>", text)
    return _IPV6.sub(_mask_ipv6, text) if ":" in text else text


def _mask_ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(1))
    except ValueError:
        return match.group(0)
    return "<address>"


def error_message(answer: object, default: str) -> str:
    """The message of a provider's error object (``answer`` is the parsed body, or None), bounded and
    masked; ``default`` when there is none."""
    message: object = None
    if type(answer) is dict:
        error = answer.get("error")
        if type(error) is dict:
            message = error.get("message")
        elif type(error) is str:
            message = error
        if message is None:
            message = answer.get("message")
    if type(message) is not str or not message.strip():
        return default
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return mask_addresses(message)


def parse_duration(value: str) -> float | None:
    """A Go-style duration ("6m0s", "20ms", "1h2m3.5s") or a plain number of seconds, in seconds; None
    when it is neither."""
    value = value.strip()
    if not value or len(value) > MAX_HINT:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(value) else None


def _retry_after_header(value: str, now: float) -> float | None:
    value = value.strip()
    if not value or len(value) > MAX_HINT:
        return None
    if value.isdigit():
        return float(value)
    try:
        return float(value)  # not RFC 9110, but some providers send fractions ("1.5")
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_after(headers: Mapping[str, str], rate_limited: bool, now: float | None = None) -> float | None:
    """The provider's hint in seconds (capped at MAX_RETRY_AFTER), or None. ``headers`` has lower-case names.

    ``retry-after-ms`` wins over ``Retry-After``; without either, a rate-limited (429) answer's
    ``x-ratelimit-reset-*`` count: the reset of the exhausted limit (``x-ratelimit-remaining-*`` "0"),
    or the later of the two when neither says it is exhausted.
    """
    hint: float | None = None
    raw = headers.get("retry-after-ms")
    if raw is not None:
        seconds = parse_duration(raw)
        hint = None if seconds is None else seconds / 1000.0
    if hint is None and (raw := headers.get("retry-after")) is not None:
        hint = _retry_after_header(raw, time.time() if now is None else now)
    if hint is None and rate_limited:
        resets: list[float] = []
        exhausted: list[float] = []
        for limit in ("requests", "tokens"):
            value = headers.get(f"x-ratelimit-reset-{limit}")
            seconds = None if value is None else parse_duration(value)
            if seconds is None:
                continue
            resets.append(seconds)
            if headers.get(f"x-ratelimit-remaining-{limit}", "").strip() == "0":
                exhausted.append(seconds)
        if resets:
            hint = max(exhausted or resets)
    if hint is None or math.isnan(hint) or hint < 0:
        return None
    return min(hint, MAX_RETRY_AFTER)
