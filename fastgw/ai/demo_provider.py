"""The quick start's fake LLM provider: OpenAI's wire format, answered by the demo upstream
(``process/demo_upstream.py``) for paths under ``/v1/``, with no network and no model.

A chat completion answers "You said: <the last user message>" (a tool call instead when the request
offers tools and asks for one with tool_choice; a JSON object shaped by the schema when it asks for
``response_format`` json_schema: ``[[prompt_api]]`` output schemas), streamed in one chunk per word when
asked, with usage counted the same way every time: a token is a whitespace-separated word of the
message contents. That makes the counts checkable by hand (and by tests), which is the point of a demo
provider.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

Answer = tuple[int, bytes, list[bytes]]  # status, content type, body pieces (one per SSE event)
_JSON: Final = b"application/json"
_SSE: Final = b"text/event-stream"
MODELS: Final = ("demo-chat", "demo-embed")
EMBEDDING_SIZE: Final = 8  # a short vector: enough to show the shape


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):  # content parts
        return [w for part in value if isinstance(part, dict) for w in str(part.get("text", "")).split()]
    return []


def _error(status: int, message: str, param: str | None = None) -> Answer:
    body = orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    )
    return status, _JSON, [body]


def answer(method: bytes, path: bytes, body: bytes) -> Answer:
    """The response to one request under /v1/."""
    route = path.split(b"?", 1)[0].rstrip(b"/")
    if route == b"/v1/models" and method == b"GET":
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fastgw-demo"} for m in MODELS]
        return 200, _JSON, [orjson.dumps({"object": "list", "data": data})]
    if method != b"POST":
        return _error(405, "use POST")
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "the body is not JSON")
    if not isinstance(request, dict):
        return _error(400, "the body is not a JSON object")
    if route == b"/v1/embeddings":
        return _embeddings(request)
    if route == b"/v1/chat/completions":
        return _chat(request)
    return _error(404, f"no such endpoint: {path.decode('latin-1')}")


def _embeddings(request: dict[str, Any]) -> Answer:
    inputs = request.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    data = []
    tokens = 0
    for i, item in enumerate(items):
        text = str(item)
        tokens += len(text.split())
        vector = [((hash_word(text) >> (4 * k)) & 0xF) / 15.0 for k in range(EMBEDDING_SIZE)]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    doc = {"object": "list", "data": data, "model": str(request.get("model", "")), "usage": usage}
    return 200, _JSON, [orjson.dumps(doc)]


def hash_word(text: str) -> int:
    """A stable (not per-process) hash: the demo's vectors are the same on every run."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _chat(request: dict[str, Any]) -> Answer:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages must be a non-empty array", "messages")
    prompt = sum(len(_words(m.get("content"))) for m in messages if isinstance(m, dict))
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    said = " ".join(_words(last.get("content")))
    model = str(request.get("model", ""))
    tools = request.get("tools")
    choice = request.get("tool_choice")
    call = None
    if isinstance(tools, list) and tools and choice not in (None, "none", "auto"):
        fn = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
        call = {
            "id": "call_demo_1",
            "type": "function",
            "function": {"name": fn.get("name", "tool"), "arguments": orjson.dumps({"text": said}).decode()},
        }
    words = [] if call is not None else ["You", "said:", *said.split()]
    response_format = request.get("response_format")
    if call is None and isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        shaped = _shaped(response_format.get("json_schema", {}).get("schema"), " ".join(words))
        words = orjson.dumps(shaped).decode().split(" ")  # rejoined with single spaces: the same text
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
    base = {"id": "chatcmpl-demo", "created": 0, "model": model}
    finish = "tool_calls" if call is not None else "stop"
    if not request.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words) if call is None else None}
        if call is not None:
            message["tool_calls"] = [call]
        doc = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return 200, _JSON, [orjson.dumps(doc)]
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [
        _event(
            {
                **chunk,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
        )
    ]
    if call is not None:
        delta = {"tool_calls": [{"index": 0, **call}]}
        events.append(_event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    for i, word in enumerate(words):
        text = word if i == 0 else " " + word
        events.append(
            _event({**chunk, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        )
    events.append(_event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append(_event({**chunk, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return 200, _SSE, events


def _shaped(schema: Any, text: str) -> Any:
    """A value of the schema's shape (its first enum value, else by type; strings are ``text``): enough for
    a JSON-schema-mode answer to validate against simple schemas."""
    if not isinstance(schema, dict):
        return text
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        return {name: _shaped(sub, text) for name, sub in props.items()} if isinstance(props, dict) else {}
    defaults: dict[Any, Any] = {"array": [], "integer": 0, "number": 0, "boolean": False, "null": None}
    return defaults.get(kind, text)


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"
