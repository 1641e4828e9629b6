"""Providers' retry hints as seconds: Retry-After (seconds and HTTP date), retry-after-ms, OpenAI's
x-ratelimit-reset-* durations and Google's RetryInfo durations; nonsense is ignored, never trusted."""

from __future__ import annotations

import pytest

from fastgw.ai.providers.retry_hints import MAX_RETRY_AFTER, header_retry_after, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("37s", 37.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3s", 3723.0),
        ("", None),
        ("5", None),
        ("s", None),
        ("3x", None),
        ("1s junk", None),
        ("99999h", None),
        ("-1s", None),
        ("1" * 40 + "s", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_headers_most_precise_first() -> None:
    assert header_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert header_retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    # The day's bound applies to the seconds: two minutes in milliseconds were taken for 33 hours.
    assert header_retry_after({"retry-after-ms": "120000"}) == 120.0
    assert header_retry_after({"retry-after-ms": "86400001"}) is None
    assert header_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert header_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    assert (
        header_retry_after({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == 360.0
    )
    assert header_retry_after({"retry-after": "never"}) is None
    assert header_retry_after({"retry-after": str(int(MAX_RETRY_AFTER) + 1)}) is None
    assert header_retry_after({}) is None


def test_every_adapter_reads_the_hints_the_same_way() -> None:
    """One reader (providers/retry_hints.py) for every adapter: the most precise hint wins everywhere."""
    from fastgw.ai.providers.registry import ADAPTERS

    headers = {"retry-after-ms": "1500", "retry-after": "9"}
    assert {kind: ADAPTERS[kind].error(429, headers, b"").retry_after for kind in ADAPTERS} == {
        kind: 1.5 for kind in ADAPTERS
    }


def test_reset_instants_fractions_and_rate_limited_only() -> None:
    from datetime import datetime

    from fastgw.ai.providers.retry_hints import retry_after

    anthropic = {
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "2030-03-17T17:46:50Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2030-03-17T17:46:42Z",
    }
    now = datetime.fromisoformat("2030-03-17T17:46:40+00:00").timestamp()
    assert retry_after(anthropic, now) == 2.0  # the exhausted limit's reset, not the later one
    assert header_retry_after(anthropic, now) == 2.0
    assert retry_after(anthropic, now, rate_limited=False) is None
    assert retry_after({"retry-after": "1.5"}, now) == 1.5
    assert retry_after({"retry-after": "nan"}, now) is None
    assert retry_after({"x-ratelimit-reset-tokens": "20ms"}, now, rate_limited=False) is None
    assert retry_after({"x-ratelimit-reset-tokens": "20ms"}, now) == 0.02
