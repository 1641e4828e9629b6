"""The ``openai`` provider kind: OpenAI itself and every server that speaks its Chat Completions API (vLLM,
Ollama, llama.cpp server, Mistral, Groq, Together, DeepSeek, OpenRouter): a base path, a key and extra
headers, all in the ``ProviderTarget``.

The pivot is this wire format, so a request is the pivot with the provider's model name, less what the
target cannot honour (refused, or dropped where ``drop_unsupported`` says so); streamed requests always ask
for ``stream_options.include_usage`` so usage comes from the provider's own final chunk, exactly. Answers
are checked rather than trusted: an HTML page, an empty or truncated body, a stream that ends without
``[DONE]`` or sends a line over the bound each become a ``ProviderError`` (502), never a crash or a silent
success. Pure: no I/O (adapter.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from fastgw.ai.adapter import (
    Capabilities,
    Json,
    ProviderError,
    ProviderRequest,
    ProviderTarget,
    UnsupportedParameterError,
    Usage,
)
from fastgw.ai.capabilities import apply_capabilities
from fastgw.ai.provider_errors import error_message, retry_after
from fastgw.codec.sse import SseError, SseParser

KIND: Final = "openai"
# OpenAI's own API offers everything the pivot has; OpenAI-compatible servers that lack some of it are
# configured with their own table (the adapter takes one per provider).
OPENAI_CAPABILITIES: Final = Capabilities(
    tools=True,
    vision=True,
    json_schema=True,
    json_object=True,
    system_prompt=True,
    n=True,
    logprobs=True,
    embeddings=True,
    count_tokens=False,
    stream_usage=True,
)
# 1 MiB per SSE line or event (codec/sse.py's default and its reasons): a chunk is a few hundred bytes, a
# tool call's arguments a few KiB per delta; a provider that sends a 10 MiB line is cut off with a 502.
MAX_STREAM_EVENT: Final = 1 << 20
# 32 MiB for a whole non-streamed answer: n=128 choices of long completions stay far below it, and the
# handler is to stop reading there, so a 40 MB answer (the bad-input case) is a 502, not held.
MAX_RESPONSE_BYTES: Final = 32 << 20
_JSON: Final = (b"content-type", b"application/json")


def parse_json_answer(body: bytes, what: str) -> Json:
    """A 2xx answer's body as a JSON object, or a ProviderError (502) saying what was wrong with it."""
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProviderError(
            502, f"the provider's {what} exceeds {MAX_RESPONSE_BYTES} bytes", kind="response_too_large"
        )
    start = body[:256].lstrip()  # 256 bytes: no copy of a large body just to look at its first byte
    if not start and not body.strip():
        raise ProviderError(502, f"the provider sent an empty {what}", kind="bad_response")
    if start[:1] == b"<":
        raise ProviderError(502, f"the provider sent an HTML page, not a JSON {what}", kind="bad_response")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProviderError(
            502, f"the provider sent a malformed or truncated {what}", kind="bad_response"
        ) from None
    if type(value) is not dict:
        raise ProviderError(502, f"the provider's {what} is not a JSON object", kind="bad_response")
    if "error" in value and value["error"] is not None:  # some compatible servers answer errors with 200
        raise ProviderError(
            502, error_message(value, "the provider answered with an error"), kind="provider_error"
        )
    return value


def read_usage(usage: object, into: Usage) -> None:
    """Fill ``into`` from an OpenAI ``usage`` object (mistyped fields count as missing, not as a crash)."""
    if type(usage) is not dict:
        return
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if type(prompt) is not int and type(completion) is not int:
        return
    into.prompt_tokens = prompt if type(prompt) is int else 0
    into.completion_tokens = completion if type(completion) is int else 0
    details = usage.get("prompt_tokens_details")
    if type(details) is dict and type(details.get("cached_tokens")) is int:
        into.cached_tokens = details["cached_tokens"]
    details = usage.get("completion_tokens_details")
    if type(details) is dict and type(details.get("reasoning_tokens")) is int:
        into.reasoning_tokens = details["reasoning_tokens"]
    into.reported = True


class OpenAIStream:
    """One streamed chat answer: SSE events of ``chat.completion.chunk`` JSON, then ``data: [DONE]``.

    Each event is parsed as it completes and returned as a pivot chunk (the provider's own, unchanged);
    the usage chunk (``choices: []`` with ``usage``) fills ``usage``. Memory: one incomplete event, at most
    MAX_STREAM_EVENT bytes (codec/sse.py). After a ProviderError the stream is over: the handler stops
    reading, and a further ``feed`` raises RuntimeError (a caller bug).
    """

    __slots__ = ("_done", "_parser", "usage")

    def __init__(self) -> None:
        self._parser = SseParser(MAX_STREAM_EVENT)
        self._done = False
        self.usage = Usage()

    def feed(self, data: bytes) -> list[Json]:
        """The chunks completed by ``data``. Raises ProviderError (502): an event over the bound, an event
        that is not a JSON object, or the provider's mid-stream error event."""
        if self._done:
            return []  # bytes after [DONE] are ignored, as the SDKs ignore them
        try:
            events = self._parser.feed(data)
        except SseError:
            raise ProviderError(
                502, f"the provider's stream sent a line over {MAX_STREAM_EVENT} bytes", kind="bad_stream"
            ) from None
        chunks: list[Json] = []
        try:
            for event in events:
                if event.data == "[DONE]":
                    self._done = True
                    break
                chunk = self._chunk(event.data)
                if chunk is not None:
                    chunks.append(chunk)
        except ProviderError as exc:
            self._parser.end()  # closed: nothing more is read from a stream that broke its contract
            exc.completed = chunks  # the chunks before the broken event still go out
            raise
        return chunks

    def _chunk(self, data: str) -> Json | None:
        """The event's chunk, its usage counted; None for an event that is not part of the answer (a
        subclass's to decide: Azure's prompt-filter chunk)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProviderError(
                502, "the provider's stream sent a malformed event (not JSON)", kind="bad_stream"
            ) from None
        if type(chunk) is not dict:
            raise ProviderError(
                502, "the provider's stream sent an event that is not an object", kind="bad_stream"
            )
        if chunk.get("error") is not None:
            raise ProviderError(
                502, error_message(chunk, "the provider's stream failed"), kind="provider_error"
            )
        usage = chunk.get("usage")
        if usage is not None:
            read_usage(usage, self.usage)
        return chunk

    def end(self) -> list[Json]:
        """Raises ProviderError (502) when the stream ended before ``data: [DONE]`` (truncated)."""
        self._parser.end()
        if not self._done:
            raise ProviderError(502, "the provider's stream ended without [DONE]", kind="truncated_stream")
        return []


def _check_choices(answer: Json) -> None:
    choices = answer.get("choices")
    if type(choices) is not list or any(
        type(c) is not dict or type(c.get("message")) is not dict for c in choices
    ):
        raise ProviderError(502, "the provider's answer has no valid 'choices'", kind="bad_response")


class OpenAIAdapter:
    """The ``openai`` kind. Stateless and shared; ``capabilities`` describes the provider's server (OpenAI's
    by default; an OpenAI-compatible server is given its own)."""

    __slots__ = ("capabilities", "kind")

    def __init__(self, capabilities: Capabilities = OPENAI_CAPABILITIES, kind: str = KIND) -> None:
        self.kind = kind
        self.capabilities = capabilities

    def _request(self, path: str, body: Json, target: ProviderTarget) -> ProviderRequest:
        headers = (_JSON, *target.headers)
        return ProviderRequest("POST", target.base_path + path, headers, orjson.dumps(body))

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        body = dict(apply_capabilities(pivot, self.capabilities, target, self.kind))
        body["model"] = target.model
        if stream:
            body["stream"] = True
            options: dict[str, Any] = dict(body.get("stream_options") or {})
            if self.capabilities.stream_usage:
                options["include_usage"] = True  # exact usage from the provider, whatever the client asked
            if options:
                body["stream_options"] = options
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return self._request("/chat/completions", body, target)

    def chat_response(self, body: bytes) -> tuple[Json, Usage]:
        answer = parse_json_answer(body, "answer")
        _check_choices(answer)
        usage = Usage()
        read_usage(answer.get("usage"), usage)
        return answer, usage

    def chat_stream(self) -> OpenAIStream:
        return OpenAIStream()

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        if not self.capabilities.embeddings:
            raise UnsupportedParameterError("embeddings", self.kind)
        body = dict(pivot)
        body["model"] = target.model
        return self._request("/embeddings", body, target)

    def embeddings_response(self, body: bytes) -> tuple[Json, Usage]:
        answer = parse_json_answer(body, "embeddings answer")
        if type(answer.get("data")) is not list:
            raise ProviderError(
                502, "the provider's embeddings answer has no 'data' array", kind="bad_response"
            )
        usage = Usage()
        read_usage(answer.get("usage"), usage)
        return answer, usage

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return provider_error(status, headers, body)


def provider_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """A non-2xx answer from an OpenAI-style provider (``{"error": {"message", ...}}``) as a ProviderError.

    429 keeps its status (the client's SDK backs off); 401 and 403 become 502, since they are about the
    gateway's provider key, not the client's credentials, and a client told "401" would blame its own key;
    408 (the provider timed out waiting: its fault, not the request's) becomes 504; other 4xx pass on as
    is; 5xx and 529 become 502. Retryable (another target may answer): 408, 429, 5xx, 529.
    """
    retryable = status in (408, 429) or status >= 500
    message = error_message(json_or_none(body), f"the provider answered {status}")
    if status == 429:
        client_status, kind = 429, "rate_limited"
    elif status in (401, 403):
        client_status, kind = 502, "provider_auth"
        message = f"the provider refused the gateway's credentials ({status}): {_redact_keys(message)}"
    elif status >= 500:
        client_status, kind = 502, "overloaded" if status == 529 else "provider_unavailable"
    elif status == 408:
        client_status, kind = 504, "provider_timeout"
    else:
        client_status, kind = status, "provider_rejected"
    return ProviderError(
        client_status,
        message,
        retryable=retryable,
        retry_after=retry_after(headers, rate_limited=status == 429),
        provider_status=status,
        kind=kind,
    )


# A provider's auth error may quote the key it was sent, masked in the middle ("Incorrect API key
# provided: sk-pro***********abcd."): the gateway's own key, whose ends a client must not learn.
_QUOTED_KEY: Final = re.compile(r"\S*\*{3,}\S*|\b(?:sk|key|api)[-_][A-Za-z0-9_-]{8,}")


def _redact_keys(message: str) -> str:
    return _QUOTED_KEY.sub("[redacted]", message)


def json_or_none(body: bytes) -> object:
    """A provider's error body parsed, or None (empty, too large or not JSON): the message is optional."""
    if not body or len(body) > MAX_RESPONSE_BYTES:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
