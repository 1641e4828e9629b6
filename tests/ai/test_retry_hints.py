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
    assert header_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert header_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    assert (
        header_retry_after({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == 360.0
    )
    assert header_retry_after({"retry-after": "never"}) is None
    assert header_retry_after({"retry-after": str(int(MAX_RETRY_AFTER) + 1)}) is None
    assert header_retry_after({}) is None
