"""How long a provider asks to be left alone: its retry hints as seconds, for ``ProviderError.retry_after``.

Providers say it in different places: ``Retry-After`` (RFC 9110 section 10.2.3: seconds or an HTTP
date), ``retry-after-ms`` (OpenAI and Azure OpenAI), ``x-ratelimit-reset-requests`` /
``x-ratelimit-reset-tokens`` (OpenAI's durations such as ``1s``, ``6m0s``, ``20ms``), and Google's
``google.rpc.RetryInfo`` in the error body (a protobuf Duration in JSON: ``"37s"``, ``"1.5s"``). Pure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Final

# A hint longer than a day is not a back-off but a broken header; the caller then uses its own delay.
MAX_RETRY_AFTER: Final = 86_400.0

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """``"6m0s"``, ``"20ms"``, ``"1.5s"``, ``"37s"`` as seconds; None for anything else."""
    text = text.strip()
    if not text or len(text) > 32:
        return None
    total = 0.0
    at = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        at = match.end()
    if at != len(text):
        return None
    return _bounded(total)


def _bounded(seconds: float) -> float | None:
    return seconds if 0.0 <= seconds <= MAX_RETRY_AFTER else None


def _retry_after_header(value: str, now: float | None) -> float | None:
    value = value.strip()
    if value.isdigit() and len(value) < 10:
        return _bounded(float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if now is None:
        now = time.time()
    return _bounded(max(0.0, when.timestamp() - now))


def header_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The retry hint of a response's headers (names lower-case), the most precise one first."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            seconds = float(ms) / 1000.0
        except ValueError:
            seconds = -1.0
        if bounded := _bounded(seconds):
            return bounded
    value = headers.get("retry-after")
    if value is not None and (found := _retry_after_header(value, now)) is not None:
        return found
    hints = [
        parsed
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (raw := headers.get(name)) is not None and (parsed := parse_duration(raw)) is not None
    ]
    return max(hints) if hints else None
