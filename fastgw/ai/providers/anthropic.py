"""The ``anthropic`` provider kind: the Messages API (``POST /v1/messages``) behind the pivot.

Requests carry ``x-api-key`` (in the target's headers, from the provider's credentials) and
``anthropic-version``; ``anthropic-beta`` only with the betas the target allows. Answers, whole or
streamed, become pivot responses with Anthropic's exact usage (input, output, cache read and creation
tokens). Reference: Anthropic API, "Messages", "Count message tokens", "Errors", "Rate limits" (the
``anthropic-ratelimit-*-reset`` headers are RFC 3339 times).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

import orjson

from fastgw.ai.adapter import (
    Adapter,
    Capabilities,
    Json,
    ProviderError,
    ProviderRequest,
    ProviderTarget,
    UnsupportedParameterError,
    Usage,
)
from fastgw.ai.anthropic_wire import (
    ERROR_STATUS,
    ERROR_TYPE,
    FINISH_REASON,
    usage_from_anthropic,
)
from fastgw.ai.provider_errors import error_message
from fastgw.ai.providers.anthropic_request import KIND, beta_header, messages_body
from fastgw.ai.providers.anthropic_stream import AnthropicStreamTranslator
from fastgw.ai.providers.retry_hints import retry_after

ANTHROPIC_VERSION: Final = "2023-06-01"  # the version every current Messages feature is served under
# The target options this kind reads (ProviderTarget.options), for the config to check names and values:
# anthropic_version (default ANTHROPIC_VERSION), anthropic_beta (betas always sent, comma-separated),
# allowed_betas (the client's betas passed on: comma-separated, or "*"), max_tokens (a positive integer:
# the limit sent when the client gave none; default DEFAULT_MAX_TOKENS).
TARGET_OPTIONS: Final = frozenset({"anthropic_version", "anthropic_beta", "allowed_betas", "max_tokens"})
CAPABILITIES: Final = Capabilities(
    tools=True,
    vision=True,
    json_schema=False,  # no response_format; structured outputs are a beta with another shape
    json_object=False,
    system_prompt=True,
    n=False,
    logprobs=False,
    embeddings=False,
    count_tokens=True,
    stream_usage=True,
)


class AnthropicAdapter:
    """The Messages API as an Adapter: stateless, one instance shared by every target of the kind."""

    kind: str = KIND
    capabilities: Capabilities = CAPABILITIES

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        body = messages_body(pivot, target, stream)
        return self._request(f"{target.base_path}/v1/messages", body, pivot, target, stream)

    def count_tokens_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        """``POST /v1/messages/count_tokens`` for a pivot request (its generation parameters unused)."""
        body = messages_body(pivot, target, False, count_tokens=True)
        return self._request(f"{target.base_path}/v1/messages/count_tokens", body, pivot, target, False)

    def count_tokens_response(self, body: bytes) -> int:
        """The ``input_tokens`` of a count_tokens answer; ProviderError if malformed."""
        answer = _load(body)
        count = answer.get("input_tokens")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ProviderError(502, "the provider's token count has no input_tokens", kind="bad_response")
        return count

    def _request(
        self, path: str, body: Json, pivot: Json, target: ProviderTarget, stream: bool
    ) -> ProviderRequest:
        version = target.options.get("anthropic_version", ANTHROPIC_VERSION)
        headers = [
            *target.headers,
            (b"anthropic-version", version.encode()),
            (b"content-type", b"application/json"),
        ]
        if stream:
            headers.append((b"accept", b"text/event-stream"))
        betas = beta_header(pivot, target)
        if betas:
            headers.append((b"anthropic-beta", betas.encode()))
        return ProviderRequest("POST", path, tuple(headers), orjson.dumps(body))

    def chat_response(self, body: bytes) -> tuple[Json, Usage]:
        answer = _load(body)
        if answer.get("type") == "error":  # an error in a 200 (a proxy's): as OpenAI's, the request's
            raise ProviderError(502, error_message(answer, "the provider answered with an error"))
        if answer.get("type") != "message" or not isinstance(answer.get("content"), list):
            raise ProviderError(502, "the provider's answer is not a message", kind="bad_response")
        usage = Usage()
        raw_usage = answer.get("usage")
        try:
            if isinstance(raw_usage, dict):
                usage_from_anthropic(raw_usage, usage)
            message, finish, matched = _message(answer)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ProviderError(502, "the provider's answer is malformed", kind="bad_response") from None
        choice: Json = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if matched is not None:
            choice["stop_reason"] = matched
        response: Json = {
            "id": str(answer.get("id", "")),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(answer.get("model", "")),
            "choices": [choice],
        }
        if usage.reported:
            response["usage"] = usage.pivot()
        return response, usage

    def chat_stream(self) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator()

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        raise UnsupportedParameterError("embeddings", KIND)

    def embeddings_response(self, body: bytes) -> tuple[Json, Usage]:
        raise UnsupportedParameterError("embeddings", KIND)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        kind = ""
        message = ""
        try:
            answer = orjson.loads(body)
            error = answer.get("error") if isinstance(answer, dict) else None
            if isinstance(error, dict):
                kind = str(error.get("type", ""))
                message = error_message(answer, "")
        except orjson.JSONDecodeError:
            pass
        if not message:  # HTML or empty: say what happened, never echo the page
            message = f"the provider answered {status} without an error object"
        if status == 529 or kind not in ERROR_STATUS:
            kind = ERROR_TYPE.get(status, "api_error" if status >= 500 else "invalid_request_error")
        # The fallback rules: 408 (the provider's own timeout), 429, 529 and 5xx may go to another target;
        # other 4xx are the request's fault.
        retryable = status in (408, 429) or status >= 500
        # 529 included in 502; a 408 is a 504 (as the other adapters say it); other 4xx pass on as they are.
        client_status = 502 if status >= 500 else 504 if status == 408 else status
        return ProviderError(
            client_status,
            message,
            retryable=retryable,
            retry_after=retry_after(headers, rate_limited=status == 429) if retryable else None,
            provider_status=status,
            kind=kind,
        )


def _load(body: bytes) -> Json:
    if not body.strip():
        raise ProviderError(502, "the provider's answer is empty", kind="bad_response")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProviderError(502, "the provider's answer is not JSON", kind="bad_response") from None
    if not isinstance(answer, dict):
        raise ProviderError(502, "the provider's answer is not a JSON object", kind="bad_response")
    return answer


def _message(answer: Json) -> tuple[Json, str, str | None]:
    """The pivot message, finish_reason and matched stop sequence of an Anthropic message."""
    texts: list[str] = []
    calls: list[Json] = []
    thinking: list[Json] = []
    for block in answer["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call = {
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": arguments},
            }
            calls.append(call)
        elif kind == "thinking":
            thinking.append(
                {"type": "thinking", "thinking": block["thinking"], "signature": block.get("signature", "")}
            )
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block["data"]})
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
        reasoning = "".join(b.get("thinking", "") for b in thinking)
        if reasoning:
            message["reasoning_content"] = reasoning
    stop_reason = answer.get("stop_reason") or "end_turn"
    matched = answer.get("stop_sequence") if stop_reason == "stop_sequence" else None
    return message, FINISH_REASON.get(stop_reason, "stop"), matched


ADAPTER: Final[Adapter] = AnthropicAdapter()  # the kind's one shared instance (stateless)
