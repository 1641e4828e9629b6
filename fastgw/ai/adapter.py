"""The contract between the AI gateway's pieces: client formats, provider adapters and the llm handler.

Everything meets in one pivot, the OpenAI Chat Completions wire format as parsed JSON (``dict``): a
client format (``formats/openai.py``, ``formats/anthropic.py``) turns the client's request into a pivot
request and pivot responses and stream chunks back into its own shape; a provider adapter
(``providers/<kind>.py``) turns a pivot request into the provider's HTTP request and the provider's
answer (whole, or streamed event by event) into pivot responses and chunks. A pair of client format and
provider kind that share a wire format may skip the pivot (the handler's passthrough), so the pivot costs
only where a translation is needed.

Pure: nothing here does I/O or imports asyncio; the handler (``ai/handler.py``) sends the
``ProviderRequest`` through the gateway's pools (``proxy/client.py``) and feeds the answer back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider kind (or one of its models) accepts. A pivot request that needs a capability the
    target lacks is refused with a clear 400 naming the parameter (``UnsupportedParameterError``), unless the
    model's ``drop_unsupported`` lists it, in which case the adapter drops it."""

    tools: bool = True
    vision: bool = True
    json_schema: bool = True  # response_format = {"type": "json_schema", ...}
    json_object: bool = True  # response_format = {"type": "json_object"}
    system_prompt: bool = True
    n: bool = False  # n > 1
    logprobs: bool = False
    embeddings: bool = False
    count_tokens: bool = False  # Anthropic's /v1/messages/count_tokens
    stream_usage: bool = True  # usage in the final stream events


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """One provider model as the handler calls it: where, which model, with which headers."""

    provider: str  # the [[llm.providers]] name
    model: str  # the provider's own model name (an Azure deployment name for azure_openai)
    base_path: str = ""  # path prefix on the provider's upstream, e.g. "/v1" ("" for none)
    headers: tuple[tuple[bytes, bytes], ...] = ()  # credentials and extra headers, lower-case names
    options: Mapping[str, str] = field(default_factory=dict)  # adapter-specific: api_version, ...
    drop_unsupported: frozenset[str] = frozenset()  # pivot parameters dropped instead of refused


@dataclass(slots=True)
class ProviderRequest:
    """An HTTP request to send to the provider's upstream (not changed once built)."""

    method: str
    path: str  # with the query, e.g. "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    headers: tuple[tuple[bytes, bytes], ...]  # lower-case names; content-type included when a body is sent
    body: bytes

    # Written out (as for Usage): one per provider call, and dataclass's generated one stays interpreted.
    def __init__(self, method: str, path: str, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


def json_request(path: str, headers: tuple[tuple[bytes, bytes], ...], body: Json) -> ProviderRequest:
    """A POST of ``body`` as JSON, labelled ``application/json`` unless the target's own headers already
    name a content type (one content-type header, never two)."""
    if all(name != b"content-type" for name, _ in headers):
        headers = (*headers, (b"content-type", b"application/json"))
    return ProviderRequest("POST", path, headers, orjson.dumps(body))


@dataclass(slots=True)
class Usage:
    """Token counts of one exchange, exactly as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # input tokens served from the provider's prompt cache (part of prompt_tokens)
    reasoning_tokens: int = 0  # part of completion_tokens
    reported: bool = False  # the provider's answer carried usage (missing usage is recorded as missing)
    # Last, so positional construction keeps its meaning: input tokens written to the prompt cache
    # (Anthropic reports them apart; part of prompt_tokens, like cached_tokens).
    cache_creation_tokens: int = 0

    # Written out, not generated: dataclass's own __init__ is made at import and stays interpreted in the
    # compiled build, and a Usage is made per answer (several per stream). eq and repr stay generated.
    def __init__(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        reported: bool = False,
        cache_creation_tokens: int = 0,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reported = reported
        self.cache_creation_tokens = cache_creation_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def pivot(self) -> Json:
        """As the OpenAI ``usage`` object."""
        out: Json = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_creation_tokens:
            details: Json = {"cached_tokens": self.cached_tokens}
            if self.cache_creation_tokens:  # not in OpenAI's schema; its SDKs keep unknown fields
                details["cache_creation_tokens"] = self.cache_creation_tokens
            out["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out


class InvalidRequestError(Exception):
    """The client's request is malformed for its format or cannot be translated: a 400 the client's SDK
    shows (``param`` names the offending parameter, as OpenAI's errors do)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class UnsupportedParameterError(InvalidRequestError):
    """A parameter the target provider cannot honour (and the model does not drop)."""

    def __init__(self, param: str, provider_kind: str) -> None:
        super().__init__(
            f"'{param}' is not supported by the {provider_kind} provider", param, "unsupported_parameter"
        )


# The kinds of a 2xx answer that cannot be used as an answer at all: empty, an HTML page, not JSON or not
# shaped as one, a stream event malformed or over its bound, a stream that stopped before its end. A
# proxy in front of the provider failing answers so; before the client has a byte, attempts.py tries
# another target as for a 5xx. Not among them: an error object in a 200 (the request's fault, as a 4xx),
# an answer over the size bound (complete and billed: another target would most likely repeat it).
BAD_RESPONSE: Final = "bad_response"
BAD_STREAM: Final = "bad_stream"
TRUNCATED_STREAM: Final = "truncated_stream"
UNUSABLE_ANSWERS: Final = frozenset({BAD_RESPONSE, BAD_STREAM, TRUNCATED_STREAM})


class ProviderError(Exception):
    """The provider failed: an error status, a malformed or truncated answer, a stall. ``status`` is what
    the client gets (the provider's 4xx passed on as is; 5xx, 529 and malformed answers as 502; stalls as
    504); ``retryable`` says whether another target may be tried (before the first byte reached the
    client; a 2xx answer of a kind in UNUSABLE_ANSWERS may be too); ``retry_after`` is the provider's
    hint in seconds (Retry-After, x-ratelimit-reset-*).
    ``completed``: from a stream translator's ``feed``, the chunks that read completed before it broke
    (the handler sends them, then the error event)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        provider_status: int = 0,
        kind: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider_status = provider_status
        self.kind = kind
        self.completed: list[Json] = []


class StreamTranslator(Protocol):
    """A provider's streamed answer, translated event by event into pivot chunks
    (``chat.completion.chunk`` objects). Bounded: a line or event over the adapter's limit raises
    ProviderError; nothing is buffered beyond one incomplete event."""

    usage: Usage  # filled from the provider's own events as they arrive

    def feed(self, data: bytes) -> list[Json]:
        """The pivot chunks completed by ``data`` (possibly none). A ProviderError raised for a broken
        event carries in ``completed`` the chunks of the events before it in ``data``."""
        ...

    def end(self) -> list[Json]:
        """The stream ended: the last chunks; ProviderError if it was truncated (no final event)."""
        ...


class Adapter(Protocol):
    """One provider kind (``openai``, ``azure_openai``, ``anthropic``, ``gemini``): stateless, shared."""

    kind: str
    capabilities: Capabilities

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        """The provider request for a pivot chat request (``model`` already resolved in ``target``).
        Raises UnsupportedParameterError / InvalidRequestError."""
        ...

    def chat_response(self, body: bytes) -> tuple[Json, Usage]:
        """A 2xx non-streamed answer as a pivot ``chat.completion`` and its usage; ProviderError if
        malformed (HTML, empty, truncated JSON)."""
        ...

    def chat_stream(self) -> StreamTranslator:
        """A translator for one streamed answer."""
        ...

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        """UnsupportedParameterError("embeddings") where the kind has none."""
        ...

    def embeddings_response(self, body: bytes) -> tuple[Json, Usage]: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """A non-2xx answer as a ProviderError: message from the provider's error object when it has one
        (never the provider's internal addresses), retryable per the fallback rules (429, 5xx, 529),
        retry_after from Retry-After or x-ratelimit-reset-*."""
        ...


class TokenCounter(Protocol):
    """An adapter whose provider counts a request's input tokens without generating
    (``Capabilities.count_tokens``: Anthropic's ``/v1/messages/count_tokens``)."""

    def count_tokens_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest: ...

    def count_tokens_response(self, body: bytes) -> int:
        """The ``input_tokens`` of the answer; ProviderError if malformed."""
        ...
