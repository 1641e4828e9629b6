"""Gemini's errors as ProviderError: google.rpc error objects (the quota error with RetryInfo from the
rate-limits guide), the status each becomes and whether another target may be tried, and what never
reaches the client; and usage counts that are missing or not counts."""

from __future__ import annotations

import orjson
import pytest

from fastgw.ai.providers.gemini import ADAPTER
from fastgw.ai.providers.gemini_response import GeminiStreamTranslator

QUOTA_ERROR = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "generate_content_free_tier_requests"}],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
        ],
    }
}


def test_rate_limit_error_with_retry_info() -> None:
    error = ADAPTER.error(429, {}, orjson.dumps(QUOTA_ERROR))
    assert (error.status, error.retryable, error.retry_after, error.kind) == (
        429,
        True,
        37.0,
        "rate_limit_error",
    )
    assert error.message == QUOTA_ERROR["error"]["message"]  # type: ignore[index]
    wrapped = ADAPTER.error(429, {"retry-after": "3"}, orjson.dumps([{"error": {"message": "slow down"}}]))
    assert (wrapped.message, wrapped.retry_after) == ("slow down", 3.0)


@pytest.mark.parametrize(
    ("status", "google_status", "out", "retryable"),
    [
        (500, "INTERNAL", 502, True),
        (503, "UNAVAILABLE", 502, True),
        (504, "DEADLINE_EXCEEDED", 504, True),
        (400, "INVALID_ARGUMENT", 400, False),
        (403, "PERMISSION_DENIED", 403, False),
        (404, "NOT_FOUND", 404, False),
    ],
)
def test_error_statuses(status: int, google_status: str, out: int, retryable: bool) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "the message", "status": google_status}})
    error = ADAPTER.error(status, {}, body)
    assert (error.status, error.retryable, error.provider_status, error.message) == (
        out,
        retryable,
        status,
        "the message",
    )


def test_an_html_error_page_is_never_shown_to_the_client() -> None:
    error = ADAPTER.error(502, {}, b"<html><body>upstream 10.0.0.7:8080 failed</body></html>")
    assert error.message == "the gemini provider answered 502"
    assert error.retryable


def test_a_stream_without_usage_metadata_reports_usage_missing() -> None:
    translator = GeminiStreamTranslator()
    event = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}
    assert len(translator.feed(b"data: " + orjson.dumps(event) + b"\n\n")) == 1
    assert translator.end() == []  # no usage chunk: the provider reported none
    assert not translator.usage.reported


def test_counts_that_are_not_counts_are_zero() -> None:
    metadata = {
        "promptTokenCount": -4,
        "candidatesTokenCount": True,
        "thoughtsTokenCount": "7",
        "totalTokenCount": 1,
    }
    answer = {"candidates": [{"content": {"parts": [{"text": "x"}]}}], "usageMetadata": metadata}
    _, usage = ADAPTER.chat_response(orjson.dumps(answer))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.reported) == (
        0,
        0,
        0,
        True,
    )


def test_a_gemini_error_message_never_shows_an_internal_address() -> None:
    """Gemini's own error object passes its message on, masked like every adapter's: a proxy in front of
    the provider may name an internal host or address in it."""
    body = orjson.dumps(
        {
            "error": {
                "code": 503,
                "message": "backend http://10.1.2.3:9000/v1 refused",
                "status": "UNAVAILABLE",
            }
        }
    )
    error = ADAPTER.error(503, {}, body)
    assert "10.1.2.3" not in error.message
    assert "refused" in error.message
