"""The Anthropic Messages client format (``POST /v1/messages`` and ``/v1/messages/count_tokens``): one
import for the handler. The request side (``anthropic_request.py``: validate, then translate into the
pivot) and the answer side (``anthropic_response.py``: message, stream events, errors) are two modules,
each under the size bar."""

from __future__ import annotations

from fastgw.ai.formats.anthropic_request import parse_count_tokens_request, parse_messages_request
from fastgw.ai.formats.anthropic_response import (
    AnthropicStreamWriter,
    error_body,
    error_event,
    error_for,
    error_type,
    render_count_tokens,
    render_message,
)

__all__ = [
    "AnthropicStreamWriter",
    "error_body",
    "error_event",
    "error_for",
    "error_type",
    "parse_count_tokens_request",
    "parse_messages_request",
    "render_count_tokens",
    "render_message",
]
