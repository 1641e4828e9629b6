"""The ``azure_openai`` provider kind: Azure OpenAI in Microsoft Foundry, deployment-addressed.

Azure OpenAI speaks OpenAI's Chat Completions and Embeddings wire format; what differs is the address
and the credential (https://learn.microsoft.com/azure/ai-foundry/openai/reference):

- ``POST {base}/openai/deployments/{deployment}/chat/completions?api-version={version}`` and
  ``.../embeddings?api-version=...``: the target's model is the deployment name;
- the key in an ``api-key`` header, or a Microsoft Entra ID token as ``authorization: Bearer`` when the
  target's option ``auth = "entra"``;
- answers carry Azure's content-filter annotations (``prompt_filter_results``,
  ``content_filter_results``); a stream starts with a chunk whose ``choices`` is empty and holds only the
  prompt's filter results, which is not part of the answer and is not passed on.

Target options: ``api_version`` (default ``DEFAULT_API_VERSION``), ``auth`` (``api_key`` or ``entra``).
Because the wire format is the pivot's own, a request goes out as the pivot with ``stream`` set (and,
when streaming, ``stream_options.include_usage`` so that the provider's own final usage is counted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import orjson

from fastgw.ai.adapter import (
    Adapter,
    Capabilities,
    InvalidRequestError,
    Json,
    ProviderError,
    ProviderRequest,
    ProviderTarget,
    Usage,
)
from fastgw.ai.providers.retry_hints import header_retry_after
from fastgw.codec.sse import DEFAULT_MAX_EVENT_SIZE, SseError, SseParser

KIND: Final = "azure_openai"
# The latest GA data-plane version at the time of writing (learn.microsoft.com: API version lifecycle).
DEFAULT_API_VERSION: Final = "2024-10-21"
CAPABILITIES: Final = Capabilities(n=True, logprobs=True, embeddings=True)
MAX_MESSAGE: Final = 500  # characters of the provider's error message passed on
# A deployment name is one path segment (Azure allows letters, digits, '-', '_', '.'; 64 characters).
_DEPLOYMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_API_VERSION: Final = re.compile(r"[A-Za-z0-9.-]{1,32}")
_KINDS: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _malformed(what: str) -> ProviderError:
    return ProviderError(
        502, f"the azure_openai provider sent a malformed answer: {what}", kind="bad_response"
    )


def _object(body: bytes | str) -> Json:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _malformed("not JSON" if body.strip() else "an empty body") from None
    if not isinstance(answer, dict):
        raise _malformed("not a JSON object")
    return answer


def usage_of(value: Any, usage: Usage) -> None:
    """An OpenAI ``usage`` object into ``usage`` (cached and reasoning counts from their details)."""
    if not isinstance(value, dict):
        return

    def count(holder: Any, name: str) -> int:
        found = holder.get(name, 0) if isinstance(holder, dict) else 0
        return found if isinstance(found, int) and not isinstance(found, bool) and found >= 0 else 0

    usage.prompt_tokens = count(value, "prompt_tokens")
    usage.completion_tokens = count(value, "completion_tokens")
    usage.cached_tokens = count(value.get("prompt_tokens_details"), "cached_tokens")
    usage.reasoning_tokens = count(value.get("completion_tokens_details"), "reasoning_tokens")
    usage.reported = True


class AzureStreamTranslator:
    """Azure's chat SSE stream: OpenAI chunks, passed on as they are, ``[DONE]`` at the end."""

    __slots__ = ("_done", "_parser", "usage")

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._parser = SseParser(max_event_size)
        self._done = False
        self.usage = Usage()

    def feed(self, data: bytes) -> list[Json]:
        try:
            events = self._parser.feed(data)
        except SseError as exc:
            raise ProviderError(
                502, f"the azure_openai stream was cut off: {exc.detail}", kind="bad_response"
            ) from None
        chunks: list[Json] = []
        for event in events:
            if event.data == "[DONE]":
                self._done = True
                continue
            chunk = _object(event.data)
            if isinstance(error := chunk.get("error"), dict):
                raise ProviderError(502, f"azure_openai: {str(error.get('message', 'error'))[:MAX_MESSAGE]}")
            if not isinstance(choices := chunk.get("choices"), list):
                raise _malformed("a chunk without choices")
            if chunk.get("usage") is not None:
                usage_of(chunk["usage"], self.usage)
            elif not choices:
                continue  # the prompt's content-filter results: not part of the answer
            chunks.append(chunk)
        return chunks

    def end(self) -> list[Json]:
        self._parser.end()
        if not self._done:
            raise ProviderError(502, "the azure_openai stream ended without [DONE]", kind="truncated")
        return []


class AzureOpenAIAdapter:
    """Stateless; one instance serves every azure_openai provider."""

    kind: str = KIND
    capabilities: Capabilities = CAPABILITIES

    def credential_headers(self, key: str, options: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
        """``api-key: <key>``, or ``authorization: Bearer <token>`` when ``options["auth"] == "entra"``."""
        auth = options.get("auth", "api_key")
        if auth == "entra":
            return ((b"authorization", b"Bearer " + key.encode()),)
        if auth != "api_key":
            raise ValueError(f"azure_openai auth must be api_key or entra, not {auth!r}")
        return ((b"api-key", key.encode()),)

    def _request(self, target: ProviderTarget, operation: str, body: Json) -> ProviderRequest:
        if not _DEPLOYMENT.fullmatch(target.model):
            raise InvalidRequestError(
                f"azure deployment name {target.model!r} is not one path segment", "model"
            )
        version = target.options.get("api_version", DEFAULT_API_VERSION)
        if not _API_VERSION.fullmatch(version):
            raise InvalidRequestError(f"azure api-version {version!r} is malformed", "model")
        path = (
            f"{target.base_path}/openai/deployments/{target.model}/{operation}?api-version={quote(version)}"
        )
        headers = target.headers
        if all(name != b"content-type" for name, _ in headers):
            headers = (*headers, (b"content-type", b"application/json"))
        return ProviderRequest("POST", path, headers, orjson.dumps(body))

    def _dropped(self, pivot: Json, target: ProviderTarget) -> Json:
        if not target.drop_unsupported:
            return pivot
        return {name: value for name, value in pivot.items() if name not in target.drop_unsupported}

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        body = self._dropped(pivot, target)
        body = {**body, "model": target.model, "stream": stream}
        if stream:
            asked = pivot.get("stream_options")
            body["stream_options"] = {**(asked if isinstance(asked, dict) else {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return self._request(target, "chat/completions", body)

    def chat_response(self, body: bytes) -> tuple[Json, Usage]:
        answer = _object(body)
        if not isinstance(answer.get("choices"), list):
            raise _malformed("a chat completion without choices")
        usage = Usage()
        usage_of(answer.get("usage"), usage)
        return answer, usage

    def chat_stream(self) -> AzureStreamTranslator:
        return AzureStreamTranslator()

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        return self._request(target, "embeddings", {**self._dropped(pivot, target), "model": target.model})

    def embeddings_response(self, body: bytes) -> tuple[Json, Usage]:
        answer = _object(body)
        if not isinstance(answer.get("data"), list):
            raise _malformed("an embeddings answer without data")
        usage = Usage()
        usage_of(answer.get("usage"), usage)
        return answer, usage

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = f"the azure_openai provider answered {status}"
        message = message[:MAX_MESSAGE]
        retry_after = header_retry_after(headers)
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
            status_out = 504 if status in (504, 408) else 502
            return ProviderError(
                status_out, message, retryable=True, retry_after=retry_after, provider_status=status
            )
        return ProviderError(
            status, message, provider_status=status, kind=_KINDS.get(status, "invalid_request_error")
        )


ADAPTER: Final = AzureOpenAIAdapter()
_CONFORMS: Final[Adapter] = ADAPTER  # mypy checks the contract here
