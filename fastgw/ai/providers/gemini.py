"""The ``gemini`` provider kind: Google AI's Gemini API (generativelanguage.googleapis.com), API key.

Requests: ``POST {base}/{api_version}/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``
(the same request, answered as SSE), ``:embedContent`` and ``:batchEmbedContents``; the key travels in
``x-goog-api-key`` (https://ai.google.dev/api#authentication). The translation lives beside this module:
``gemini_request`` (pivot -> GenerateContentRequest), ``gemini_schema`` (JSON Schema -> Gemini's
Schema), ``gemini_response`` (answers and stream events -> pivot). Target options:

- ``api_version``: the path's version, ``v1beta`` unless set (``v1`` lacks systemInstruction on older
  models);
- ``image_urls = "file_data"``: send image URLs as ``fileData`` for the model to fetch (Gemini fetches
  only some URLs), with ``image_url_mime_type`` (default ``image/jpeg``); otherwise an image URL is a
  400 and only base64 (data URL) images are sent, inline;
- ``json_schema = "full"``: tool parameters and response schemas go as they are, in
  ``parametersJsonSchema`` / ``responseJsonSchema`` (Gemini 2.5 and later), instead of being translated
  to the OpenAPI subset of ``parameters`` / ``responseSchema`` (which refuses ``$ref``, ``oneOf``, ...);
- ``embedding_task_type``: Gemini's ``taskType`` for embeddings (``RETRIEVAL_DOCUMENT``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from fastgw.ai.adapter import (
    Adapter,
    Capabilities,
    InvalidRequestError,
    Json,
    ProviderError,
    ProviderRequest,
    ProviderTarget,
    UnsupportedParameterError,
    Usage,
    json_request,
)
from fastgw.ai.provider_errors import error_message, status_error
from fastgw.ai.providers.gemini_request import KIND, generate_content_body
from fastgw.ai.providers.gemini_response import GeminiStreamTranslator, chat_completion, malformed
from fastgw.ai.providers.retry_hints import MAX_RETRY_AFTER, header_retry_after, parse_duration

CAPABILITIES: Final = Capabilities(
    tools=True,
    vision=True,
    json_schema=True,
    json_object=True,
    system_prompt=True,
    n=True,  # candidateCount
    logprobs=False,  # Gemini's logprobs have another shape; not translated
    embeddings=True,
    count_tokens=False,
    stream_usage=True,
)

# batchEmbedContents takes at most 100 requests (https://ai.google.dev/api/embeddings).
MAX_EMBEDDING_BATCH: Final = 100
# A model name is one path segment: letters, digits, dots, dashes, underscores (``models/`` may prefix it).
_MODEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
# The error kind the client formats name (OpenAI's and Anthropic's error types agree on these).
_EMBED_FIELDS: Final = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


class GeminiAdapter:
    """Stateless; one instance serves every gemini provider."""

    kind: str = KIND
    capabilities: Capabilities = CAPABILITIES

    def credential_headers(self, key: str, options: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
        """The headers that carry a provider key (the handler adds them to the target's headers)."""
        return ((b"x-goog-api-key", key.encode()),)

    def _path(self, target: ProviderTarget, method: str) -> str:
        model = target.model.removeprefix("models/")
        if not _MODEL_NAME.fullmatch(model):
            raise InvalidRequestError(f"gemini model name {model!r} is not a plain model id", "model")
        version = target.options.get("api_version", "v1beta")
        return f"{target.base_path}/{version}/models/{model}:{method}"

    def _request(self, target: ProviderTarget, method: str, body: Json) -> ProviderRequest:
        return json_request(self._path(target, method), target.headers, body)

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return self._request(target, method, generate_content_body(pivot, target))

    def chat_response(self, body: bytes) -> tuple[Json, Usage]:
        return chat_completion(body)

    def chat_stream(self) -> GeminiStreamTranslator:
        return GeminiStreamTranslator()

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        for name in pivot:
            if name not in _EMBED_FIELDS and name not in target.drop_unsupported:
                raise UnsupportedParameterError(name, KIND)
        texts = _embedding_inputs(pivot.get("input"))
        one: Json = {}
        dimensions = pivot.get("dimensions")
        if dimensions is not None:
            if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
                raise InvalidRequestError("dimensions must be a positive integer", "dimensions")
            one["outputDimensionality"] = dimensions
        if task := target.options.get("embedding_task_type"):
            one["taskType"] = task
        if isinstance(pivot.get("input"), str):
            return self._request(target, "embedContent", {"content": {"parts": [{"text": texts[0]}]}, **one})
        model = "models/" + target.model.removeprefix("models/")
        requests = [{"model": model, "content": {"parts": [{"text": text}]}, **one} for text in texts]
        return self._request(target, "batchEmbedContents", {"requests": requests})

    def embeddings_response(self, body: bytes) -> tuple[Json, Usage]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise malformed("not JSON" if body.strip() else "an empty body") from None
        if not isinstance(answer, dict):
            raise malformed("not a JSON object")
        vectors = answer.get("embeddings") if "embeddings" in answer else [answer.get("embedding")]
        if not isinstance(vectors, list):
            raise malformed("embeddings is not an array")
        data: list[Json] = []
        for index, vector in enumerate(vectors):
            values = vector.get("values") if isinstance(vector, dict) else None
            if not isinstance(values, list):
                raise malformed("an embedding without values")
            data.append({"object": "embedding", "index": index, "embedding": values})
        # The Gemini API reports no token counts for embeddings: the usage is recorded as missing.
        usage = Usage()
        return {"object": "list", "data": data, "model": "", "usage": usage.pivot()}, usage

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        error = _error_object(body)
        # Bounded and with addresses masked, as every adapter's (provider_errors.error_message).
        answer = None if error is None else {"error": error}
        message = error_message(answer, f"the gemini provider answered {status}")
        retry_after = _retry_info(error) if error is not None else None
        if retry_after is None:
            retry_after = header_retry_after(headers)
        return status_error(status, message, retry_after)


def _embedding_inputs(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise InvalidRequestError(
            "gemini embeds text: input must be a string or an array of strings", "input"
        )
    if len(texts) > MAX_EMBEDDING_BATCH:
        raise InvalidRequestError(f"gemini embeds at most {MAX_EMBEDDING_BATCH} inputs at once", "input")
    return texts


def _error_object(body: bytes) -> Json | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # an HTML page from a proxy in front of the provider, or nothing
    if isinstance(answer, list) and answer:  # the streaming endpoint wraps errors in an array
        answer = answer[0]
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else None


def _retry_info(error: Json) -> float | None:
    """``google.rpc.RetryInfo``'s ``retryDelay`` from the error's details."""
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and (seconds := parse_duration(delay)) is not None:
                return min(seconds, MAX_RETRY_AFTER)
    return None


ADAPTER: Final = GeminiAdapter()
_CONFORMS: Final[Adapter] = ADAPTER  # mypy checks the contract here
