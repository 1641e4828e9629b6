"""What every adapter reads from a provider's error answer: the message to show, and when to retry.

The message comes from the provider's error object (``{"error": {"message": ...}}`` for OpenAI, Azure
and Anthropic; Gemini's ``{"error": {"message", "status"}}`` too), cut to a bounded length, with URLs and
IP addresses masked: a provider's message may name its own internal hosts, and errors never show internal
addresses. The retry hint is read by ``providers/retry_hints.py`` (re-exported here as ``retry_after``
for the adapters that import it from this module).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from fastgw.ai.adapter import ProviderError
from fastgw.ai.providers.retry_hints import retry_after

__all__ = ["error_message", "mask_addresses", "retry_after", "status_error"]

# 500 characters: a provider's message is a sentence or two; a longer one is cut rather than echoed whole
# (some servers put a stack trace or the whole request there).
MAX_MESSAGE: Final = 500
# A scheme starts where no scheme character precedes it: without the look-behind a long run of letters
# was tried from each of its positions (quadratic: 5 s for a 64 KiB error message, on the event loop).
_URL: Final = re.compile(r"(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_IPV4: Final = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# A candidate only: "12:30:45" looks like one, so each match is checked by ipaddress before it is masked.
# Up to 8 groups after a leading colon: "host:2001:db8:0:0:0:0:0:1" yields ":2001:...", the colon skipped.
_IPV6: Final = re.compile(r"\[?([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8})\]?")


def mask_addresses(text: str) -> str:
    """``text`` with URLs and IP addresses replaced by placeholders."""
    text = _URL.sub("<url>", text)
    text = _IPV4.sub("<address>", text)
    return _IPV6.sub(_mask_ipv6, text) if ":" in text else text


def _mask_ipv6(match: re.Match[str]) -> str:
    candidate = match.group(1)
    # "host:fd00::5": the candidate took the colon before the address (one colon, not "::")
    skip = 1 if candidate.startswith(":") and not candidate.startswith("::") else 0
    try:
        ipaddress.IPv6Address(candidate[skip:])
    except ValueError:
        return match.group(0)
    return ":<address>" if skip else "<address>"


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
    # Masked, then cut: a cut first can leave an address's head unmasked. Only what can be shown is masked
    # (with room for an address across the cut), not a 64 KiB error page.
    message = mask_addresses(message[: 2 * MAX_MESSAGE])
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return message


# The SDK error type of each 4xx a provider's answer passes on as it is (status_error).
_STATUS_KINDS: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def status_error(status: int, message: str, retry_after: float | None) -> ProviderError:
    """A non-2xx answer as Azure's and Gemini's adapters map it: 429 kept and retryable; 5xx and 408
    retryable, as 504 for the provider's own timeouts (408, 504) and 502 otherwise; other 4xx passed on."""
    if status == 429:
        return ProviderError(
            429,
            message,
            retryable=True,
            retry_after=retry_after,
            provider_status=status,
            kind="rate_limit_error",
        )
    if status >= 500 or status == 408:
        return ProviderError(
            504 if status in (504, 408) else 502,
            message,
            retryable=True,
            retry_after=retry_after,
            provider_status=status,
        )
    return ProviderError(
        status, message, provider_status=status, kind=_STATUS_KINDS.get(status, "invalid_request_error")
    )
