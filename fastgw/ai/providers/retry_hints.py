"""How long a provider asks to be left alone: its retry hints as seconds, for ``ProviderError.retry_after``.

The one place every adapter reads them from. Providers say it in different places: ``retry-after-ms``
(OpenAI and Azure OpenAI), ``Retry-After`` (RFC 9110 section 10.2.3: seconds or an HTTP date),
``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (OpenAI's durations such as ``1s``,
``6m0s``, ``20ms``), ``anthropic-ratelimit-*-reset`` (RFC 3339 instants), and Google's
``google.rpc.RetryInfo`` in the error body (a protobuf Duration in JSON: ``"37s"``, ``"1.5s"``, read by
the gemini adapter with :func:`parse_duration`). Nonsense (negative, unparsable, beyond a day) is
ignored, never trusted. Pure.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final

# A hint longer than a day is not a back-off but a broken header; the caller then uses its own delay.
MAX_RETRY_AFTER: Final = 86_400.0
# A duration longer than 32 characters is no duration: ignored, never parsed.
_MAX_DURATION_TEXT: Final = 32
# A header value longer than 64 characters is no number nor date: ignored, never parsed.
_MAX_HINT: Final = 64

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# OpenAI's limits (x-ratelimit-reset-NAME) and Anthropic's (anthropic-ratelimit-NAME-reset).
_OPENAI_LIMITS: Final = ("requests", "tokens")
_ANTHROPIC_LIMITS: Final = ("requests", "tokens", "input-tokens", "output-tokens")


def parse_duration(text: str) -> float | None:
    """A Go-style or protobuf duration (``"6m0s"``, ``"20ms"``, ``"1.5s"``, ``"37s"``) as seconds; None for
    anything else (a bare number included: it has no unit)."""
    text = text.strip()
    if not text or len(text) > _MAX_DURATION_TEXT:
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


def _seconds(value: str, per_second: float = 1.0) -> float | None:
    """A plain number of seconds ("20", and the fractions some providers send: "1.5"); ``per_second``:
    its units in a second (1000 for milliseconds), divided out before the bound applies."""
    if len(value) > _MAX_HINT:
        return None
    try:
        seconds = float(value) / per_second
    except ValueError:
        return None
    return None if math.isnan(seconds) else _bounded(seconds)


def _retry_after_header(value: str, now: float) -> float | None:
    value = value.strip()
    if not value or len(value) > _MAX_HINT:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _bounded(max(0.0, when.timestamp() - now))


def _latest_reset(resets: list[tuple[float, bool]]) -> float | None:
    """The reset of an exhausted limit (the latest if several are), else the latest of all."""
    exhausted = [seconds for seconds, empty in resets if empty]
    every = exhausted or [seconds for seconds, _ in resets]
    return max(every) if every else None


def _reset_headers(headers: Mapping[str, str], now: float) -> float | None:
    resets: list[tuple[float, bool]] = []
    for name in _OPENAI_LIMITS:
        raw = headers.get(f"x-ratelimit-reset-{name}")
        if raw is not None and (seconds := parse_duration(raw)) is not None:
            resets.append((seconds, headers.get(f"x-ratelimit-remaining-{name}", "").strip() == "0"))
    for name in _ANTHROPIC_LIMITS:
        raw = headers.get(f"anthropic-ratelimit-{name}-reset")
        if not raw or len(raw) > _MAX_HINT:
            continue
        try:
            at = datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if (seconds := _bounded(max(0.0, at - now))) is not None:
            resets.append((seconds, headers.get(f"anthropic-ratelimit-{name}-remaining", "").strip() == "0"))
    return _latest_reset(resets)


def retry_after(
    headers: Mapping[str, str], now: float | None = None, *, rate_limited: bool = True
) -> float | None:
    """The provider's hint in seconds, or None. ``headers`` has lower-case names; ``now`` is the Unix time
    HTTP dates and RFC 3339 instants count from.

    ``retry-after-ms`` wins over ``Retry-After`` (it is the more precise); without either, a rate-limited
    answer's reset headers count: the reset of the exhausted limit (``...-remaining`` "0"), or the latest
    reset when none says it is exhausted. Reset headers describe the limits, not the failure, so for other
    failures (``rate_limited`` false) they are not a reason to wait.
    """
    if now is None:
        now = time.time()
    raw = headers.get("retry-after-ms")
    if raw is not None and (seconds := _seconds(raw.strip(), 1000.0)) is not None:
        return seconds
    raw = headers.get("retry-after")
    if raw is not None and (found := _retry_after_header(raw, now)) is not None:
        return found
    return _reset_headers(headers, now) if rate_limited else None


def header_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The retry hint of a response's headers, reset headers included (azure_openai and gemini send them
    only with a 429)."""
    return retry_after(headers, now, rate_limited=True)
