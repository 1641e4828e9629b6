"""The OpenAI client format: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``
as the official SDKs speak them.

Parsing validates a body into the pivot (which *is* this format, so a valid body is the pivot unchanged)
and refuses a bad one with an ``InvalidRequestError`` worded like OpenAI's own 400s (``param`` names the
offending parameter, ``code`` is OpenAI's code), so an SDK user sees the message they would see from
OpenAI. Parameters this module does not know are kept: OpenAI-compatible servers accept extensions
(vLLM's ``top_k``, ...), and an adapter that cannot honour one decides (adapter.py). Rendering turns pivot
responses, chunks, model lists and errors back into bytes.

Bounds: the route's body limit bounds the work (every check is linear in the body); orjson refuses JSON
nested deeper than 1024; the explicit limits are OpenAI's own (a client gets the same 400 from us as from
OpenAI) or protect the recursion of the JSON Schema walk (json_schema.py).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from typing import Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json, ProviderError
from fastgw.ai.formats.openai_checks import (
    array,
    check_integer,
    check_messages,
    check_number,
    check_response_format,
    check_tools,
    invalid_type,
    invalid_value,
    missing,
    required,
    type_name,
    typed,
)

MAX_STOP: Final = 4  # OpenAI: "Up to 4 sequences where the API will stop generating"
MAX_N: Final = 128  # OpenAI refuses n above 128
MAX_TOP_LOGPROBS: Final = 20  # OpenAI: "an integer between 0 and 20"
MAX_METADATA: Final = 16  # OpenAI: "up to 16 key-value pairs"
MAX_METADATA_KEY: Final = 64  # OpenAI: "Keys are strings with a maximum length of 64 characters"
MAX_METADATA_VALUE: Final = 512  # OpenAI: "Values are strings with a maximum length of 512 characters"
MAX_EMBEDDING_INPUTS: Final = 2048  # OpenAI: "array must be 2048 dimensions or less"
REASONING_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh")
DONE: Final = b"data: [DONE]\n\n"


def load_object(body: bytes) -> Json:
    """The body as a JSON object. Raises InvalidRequestError (OpenAI's wording) for anything else."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
            "invalid_json",
        ) from None
    if type(value) is not dict:
        raise InvalidRequestError(
            f"Invalid request body: expected a JSON object, but got {type_name(value)} instead.",
            None,
            "invalid_type",
        )
    return value


def _model(body: Json) -> None:
    model = required(body, "model", str, "model")
    if not model:
        raise InvalidRequestError("Invalid 'model': empty string.", "model", "invalid_value")


def parse_chat_request(body: bytes) -> Json:
    """A ``POST /v1/chat/completions`` body as the pivot request.

    Raises:
        InvalidRequestError: the body is not JSON, not an object, or a parameter is missing, of the wrong
            type or out of range; ``param`` names it as OpenAI would.
    """
    request = load_object(body)
    _model(request)
    if request.get("messages") is None:
        raise missing("messages")
    check_messages(request["messages"])
    stream = typed(request, "stream", bool)
    options = typed(request, "stream_options", dict)
    if options is not None:
        if not stream:
            raise InvalidRequestError(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        typed(options, "include_usage", bool, "stream_options.include_usage")
    check_integer(request, "n", 1, MAX_N)
    check_number(request, "temperature", 0, 2)
    check_number(request, "top_p", 0, 1)
    check_number(request, "presence_penalty", -2, 2)
    check_number(request, "frequency_penalty", -2, 2)
    check_integer(request, "max_tokens", 1)
    check_integer(request, "max_completion_tokens", 1)
    check_integer(request, "seed", -(1 << 63), (1 << 63) - 1)
    typed(request, "user", str)
    typed(request, "parallel_tool_calls", bool)
    logprobs = typed(request, "logprobs", bool)
    check_integer(request, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if request.get("top_logprobs") is not None and not logprobs:
        raise InvalidRequestError(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
        )
    effort = request.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid_value("reasoning_effort", effort, REASONING_EFFORTS)
    stop = request.get("stop")
    if stop is not None and type(stop) is not str:
        for index, item in enumerate(array(stop, "stop", 0, MAX_STOP)):
            if type(item) is not str:
                raise invalid_type(f"stop[{index}]", "a string", item)
    metadata = typed(request, "metadata", dict)
    if metadata is not None:
        if len(metadata) > MAX_METADATA:
            raise InvalidRequestError(
                f"Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA} "
                f"properties, but got an object with {len(metadata)} properties instead.",
                "metadata",
                "object_above_max_properties",
            )
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY:
                raise InvalidRequestError(
                    f"Invalid 'metadata': a key is longer than {MAX_METADATA_KEY} characters.",
                    "metadata",
                    "string_above_max_length",
                )
            if type(value) is not str:
                raise invalid_type(f"metadata.{key}", "a string", value)
            if len(value) > MAX_METADATA_VALUE:
                raise InvalidRequestError(
                    f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                    f"{MAX_METADATA_VALUE}, but got a string with length {len(value)} instead.",
                    f"metadata.{key}",
                    "string_above_max_length",
                )
    check_tools(request)
    check_response_format(request)
    return request


def wants_usage(request: Json) -> bool:
    """Whether the client asked for the final usage chunk (``stream_options.include_usage``)."""
    options = request.get("stream_options")
    return type(options) is dict and options.get("include_usage") is True


def parse_embeddings_request(body: bytes) -> Json:
    """A ``POST /v1/embeddings`` body as the pivot request. Raises InvalidRequestError."""
    request = load_object(body)
    _model(request)
    data = request.get("input")
    if data is None:
        raise missing("input")
    if type(data) is str:
        if not data:
            raise InvalidRequestError("Invalid 'input': empty string.", "input", "invalid_value")
    else:
        for index, item in enumerate(array(data, "input", 1, MAX_EMBEDDING_INPUTS)):
            where = f"input[{index}]"
            if type(item) is str:
                if not item:
                    raise InvalidRequestError(f"Invalid '{where}': empty string.", where, "invalid_value")
            elif type(item) is list:  # one input as token ids
                if not item or any(type(token) is not int for token in item):
                    raise invalid_type(where, "a non-empty array of integers", item)
            elif type(item) is not int:  # a flat array of ints is one input as token ids
                raise invalid_type(where, "a string, an integer or an array of integers", item)
    fmt = request.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise invalid_value("encoding_format", fmt, ("float", "base64"))
    check_integer(request, "dimensions", 1)
    typed(request, "user", str)
    return request


# --- rendering ----------------------------------------------------------------------------------------


def render_response(response: Json) -> bytes:
    """A pivot ``chat.completion`` (or embeddings list) as the response body."""
    return orjson.dumps(response)


def render_chunk(chunk: Json, include_usage: bool = True) -> bytes:
    """A pivot chunk as one SSE event; b"" for the usage-only chunk when the client did not ask for it.

    Written directly rather than with codec/sse.py's ``encode_event``: orjson never emits CR or LF, so the
    bytes are the same and the per-event line scan is saved (tests compare both).
    """
    if not include_usage and not chunk.get("choices") and chunk.get("usage") is not None:
        return b""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def render_embeddings(answer: Json, encoding_format: object) -> bytes:
    """An embeddings list as the response body, each vector in the encoding the client asked for.

    The official SDKs ask ``base64`` unless told otherwise (little-endian float32, then base64: four
    times smaller on the wire) and decode it themselves; a provider that answers floats (Gemini, or an
    OpenAI-compatible server that ignores the parameter) is encoded here, so the client gets what it
    asked for whichever provider answered. Absent or ``float``: floats, OpenAI's documented default.
    """
    if encoding_format == "base64":
        for item in answer.get("data") or ():
            vector = item.get("embedding") if type(item) is dict else None
            if type(vector) is list:
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return orjson.dumps(answer)


# Status -> OpenAI's error type. The SDKs pick their exception class by status; the type is informative.
ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def render_error(error: InvalidRequestError | ProviderError) -> tuple[int, bytes]:
    """The status and body for an error raised by a format or an adapter."""
    if isinstance(error, InvalidRequestError):
        return 400, error_body(400, error.message, error.param, error.code)
    return error.status, error_body(error.status, error.message, None, error.kind)


def render_stream_error(error: InvalidRequestError | ProviderError) -> bytes:
    """An error after the stream began, as the SSE event the SDKs raise from (``data: {"error": ...}``)."""
    return b"data: " + render_error(error)[1] + b"\n\n"


def render_models(models: Iterable[str], created: int, owned_by: str = "fastgw") -> bytes:
    """``GET /v1/models``: the models the caller may use, in OpenAI's list shape."""
    data = [{"id": m, "object": "model", "created": created, "owned_by": owned_by} for m in models]
    return orjson.dumps({"object": "list", "data": data})
