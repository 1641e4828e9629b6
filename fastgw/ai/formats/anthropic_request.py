"""The Anthropic Messages client format, request side: a ``POST /v1/messages`` (or ``count_tokens``) body
validated and turned into a pivot (OpenAI Chat Completions) request.

Every refusal is an InvalidRequestError whose ``param`` is the path Anthropic's own errors use
(``messages.1.content.0.source.media_type``). Nothing the client sent is dropped silently: a field this
gateway cannot carry is refused by name. Where the pivot has no field, the one named in
``ai/pivot_extensions.py`` carries it (top_k, the exact thinking budget, cache_control, is_error, thinking
blocks). Reference: Anthropic API, "Messages" (request body) and "Count message tokens".
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json
from fastgw.ai.anthropic_wire import IMAGE_MEDIA_TYPES, MIN_THINKING_BUDGET, effort_for_budget
from fastgw.ai.pivot_extensions import ANTHROPIC_BETA

# The request fields this format understands; anything else is refused by name rather than ignored.
_MESSAGES_FIELDS: Final = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    }
)  # fmt: skip
_COUNT_TOKENS_FIELDS: Final = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})
_TOOL_FIELDS: Final = frozenset({"name", "description", "input_schema", "cache_control", "type"})
# Anthropic's own bound on the stop_sequences list is undocumented; 16 (four times OpenAI's 4) keeps a
# hostile request from making the provider body large while leaving real clients room.
MAX_STOP_SEQUENCES: Final = 16


def parse_messages_request(body: bytes, beta: str | None = None) -> Json:
    """A ``/v1/messages`` body as a pivot chat request; ``beta`` is the client's ``anthropic-beta`` header.

    Raises:
        InvalidRequestError: the body is not JSON, a field is missing, mistyped, out of range or unknown.
    """
    request = _load(body)
    _known_fields(request, _MESSAGES_FIELDS)
    pivot = _conversation(request)
    max_tokens = request.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequestError("max_tokens: Field required", "max_tokens")
    pivot["max_tokens"] = _integer(max_tokens, "max_tokens", 1)
    budget = pivot.get("reasoning", {}).get("max_tokens")
    if budget is not None and budget >= pivot["max_tokens"]:
        raise InvalidRequestError(
            "thinking.budget_tokens: must be less than max_tokens", "thinking.budget_tokens"
        )
    if "stop_sequences" in request:
        stops = _list(request["stop_sequences"], "stop_sequences")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise InvalidRequestError(f"stop_sequences: at most {MAX_STOP_SEQUENCES} items", "stop_sequences")
        pivot["stop"] = [_string(s, f"stop_sequences.{i}", nonempty=True) for i, s in enumerate(stops)]
    for name in ("temperature", "top_p"):
        if name in request:
            pivot[name] = _number(request[name], name, 0.0, 1.0)
    if "top_k" in request:
        pivot["top_k"] = _integer(request["top_k"], "top_k", 0)
    if "metadata" in request:
        metadata = _object(request["metadata"], "metadata")
        _known_fields(metadata, frozenset({"user_id"}), "metadata.")
        if metadata.get("user_id") is not None:
            pivot["user"] = _string(metadata["user_id"], "metadata.user_id")
    if request.get("service_tier", "auto") != "auto":  # "standard_only" has no pivot equivalent
        raise InvalidRequestError("service_tier: only 'auto' is supported by this gateway", "service_tier")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream: Input should be a valid boolean", "stream")
    if stream:
        pivot["stream"] = True
        pivot["stream_options"] = {"include_usage": True}  # Anthropic's stream always ends with usage
    if beta:
        pivot[ANTHROPIC_BETA] = [b.strip() for b in beta.split(",") if b.strip()]
    return pivot


def parse_count_tokens_request(body: bytes) -> Json:
    """A ``/v1/messages/count_tokens`` body as a pivot chat request (no max_tokens: nothing is generated).

    Raises:
        InvalidRequestError: as ``parse_messages_request``.
    """
    request = _load(body)
    _known_fields(request, _COUNT_TOKENS_FIELDS)
    return _conversation(request)


def _load(body: bytes) -> Json:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return request


def _conversation(request: Json) -> Json:
    """model, system, messages, tools, tool_choice and thinking: what both endpoints share."""
    if "model" not in request:
        raise InvalidRequestError("model: Field required", "model")
    pivot: Json = {"model": _string(request["model"], "model", nonempty=True)}
    messages: list[Json] = []
    if "system" in request:
        system = _system(request["system"])
        if system is not None:
            messages.append({"role": "system", "content": system})
    if "messages" not in request:
        raise InvalidRequestError("messages: Field required", "messages")
    turns = _list(request["messages"], "messages")
    if not turns:
        raise InvalidRequestError("messages: at least one message is required", "messages")
    for i, turn in enumerate(turns):
        messages.extend(_message(turn, f"messages.{i}"))
    pivot["messages"] = messages
    if "tools" in request:
        pivot["tools"] = [_tool(t, f"tools.{i}") for i, t in enumerate(_list(request["tools"], "tools"))]
    if "tool_choice" in request:
        _tool_choice(request["tool_choice"], pivot)
    if "thinking" in request:
        _thinking(request["thinking"], pivot)
    return pivot


def _system(system: Any) -> str | list[Json] | None:
    if isinstance(system, str):
        return system or None
    parts = []
    for i, item in enumerate(_list(system, "system")):
        block = _object(item, f"system.{i}")
        if block.get("type") != "text":
            raise InvalidRequestError(f"system.{i}.type: system blocks must be text", f"system.{i}.type")
        parts.append(_text_part(block, f"system.{i}"))
    return parts


def _message(turn: Any, where: str) -> list[Json]:
    """One Anthropic message as pivot messages: a user turn's tool results become tool messages first."""
    turn = _object(turn, where)
    _known_fields(turn, frozenset({"role", "content"}), f"{where}.")
    role = turn.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequestError(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
    if "content" not in turn:
        raise InvalidRequestError(f"{where}.content: Field required", f"{where}.content")
    content = turn["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = _list(content, f"{where}.content")
    if role == "assistant":
        return [_assistant(blocks, where)]
    out: list[Json] = []
    parts: list[Json] = []
    for i, item in enumerate(blocks):
        path = f"{where}.content.{i}"
        block = _object(item, path)
        kind = block.get("type")
        if kind == "tool_result":
            out.append(_tool_result(block, path))
        else:
            parts.append(_user_part(block, path))
    if parts or not out:
        out.append({"role": "user", "content": parts})
    return out


def _user_part(block: Json, path: str) -> Json:
    kind = block.get("type")
    if kind == "text":
        return _text_part(block, path)
    if kind == "image":
        return _image_part(block, path)
    raise InvalidRequestError(
        f"{path}.type: content block type {kind!r} is not supported here "
        "(user messages take text, image and tool_result blocks)",
        f"{path}.type",
    )


def _assistant(blocks: list[Any], where: str) -> Json:
    parts: list[Json] = []
    calls: list[Json] = []
    thinking: list[Json] = []
    for i, item in enumerate(blocks):
        path = f"{where}.content.{i}"
        block = _object(item, path)
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, path))
        elif kind == "tool_use":
            _known_fields(block, frozenset({"type", "id", "name", "input", "cache_control"}), f"{path}.")
            tool_input = _object(block.get("input"), f"{path}.input")
            call: Json = {
                "id": _string(block.get("id"), f"{path}.id", nonempty=True),
                "type": "function",
                "function": {
                    "name": _string(block.get("name"), f"{path}.name", nonempty=True),
                    "arguments": orjson.dumps(tool_input).decode(),
                },
            }
            _cache_control(block, call, path)
            calls.append(call)
        elif kind == "thinking":
            _known_fields(block, frozenset({"type", "thinking", "signature"}), f"{path}.")
            text = _string(block.get("thinking"), f"{path}.thinking")
            thinking.append({"type": "thinking", "thinking": text, "signature": block.get("signature", "")})
        elif kind == "redacted_thinking":
            data = _string(block.get("data"), f"{path}.data")
            thinking.append({"type": "redacted_thinking", "data": data})
        else:
            raise InvalidRequestError(
                f"{path}.type: content block type {kind!r} is not supported in assistant messages",
                f"{path}.type",
            )
    message: Json = {"role": "assistant", "content": parts if parts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _tool_result(block: Json, path: str) -> Json:
    _known_fields(
        block, frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}), f"{path}."
    )
    message: Json = {
        "role": "tool",
        "tool_call_id": _string(block.get("tool_use_id"), f"{path}.tool_use_id", nonempty=True),
    }
    content = block.get("content", "")
    if isinstance(content, str):
        message["content"] = content
    else:
        parts = []
        for i, item in enumerate(_list(content, f"{path}.content")):
            parts.append(_user_part(_object(item, f"{path}.content.{i}"), f"{path}.content.{i}"))
        message["content"] = parts
    if "is_error" in block:
        if not isinstance(block["is_error"], bool):
            raise InvalidRequestError(f"{path}.is_error: Input should be a valid boolean", f"{path}.is_error")
        message["is_error"] = block["is_error"]
    _cache_control(block, message, path)
    return message


def _text_part(block: Json, path: str) -> Json:
    _known_fields(block, frozenset({"type", "text", "cache_control", "citations"}), f"{path}.")
    part: Json = {"type": "text", "text": _string(block.get("text"), f"{path}.text")}
    if block.get("citations"):
        raise InvalidRequestError(f"{path}.citations: citations are not supported", f"{path}.citations")
    _cache_control(block, part, path)
    return part


def _image_part(block: Json, path: str) -> Json:
    _known_fields(block, frozenset({"type", "source", "cache_control"}), f"{path}.")
    source = _object(block.get("source"), f"{path}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise InvalidRequestError(
                f"{path}.source.media_type: must be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}",
                f"{path}.source.media_type",
            )
        data = _string(source.get("data"), f"{path}.source.data", nonempty=True)
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _string(source.get("url"), f"{path}.source.url", nonempty=True)
        if not url.startswith(("https://", "http://")):
            raise InvalidRequestError(f"{path}.source.url: must be an http(s) URL", f"{path}.source.url")
    else:
        raise InvalidRequestError(
            f"{path}.source.type: image sources are 'base64' or 'url'", f"{path}.source.type"
        )
    part: Json = {"type": "image_url", "image_url": {"url": url}}
    _cache_control(block, part, path)
    return part


def _cache_control(block: Json, part: Json, path: str) -> None:
    if "cache_control" in block:
        control = _object(block["cache_control"], f"{path}.cache_control")
        if control.get("type") != "ephemeral":
            raise InvalidRequestError(
                f"{path}.cache_control.type: must be 'ephemeral'", f"{path}.cache_control.type"
            )
        part["cache_control"] = control


def _tool(tool: Any, path: str) -> Json:
    tool = _object(tool, path)
    if tool.get("type", "custom") != "custom":  # server tools (web_search_..., bash_...) run at Anthropic
        raise InvalidRequestError(
            f"{path}.type: server tool {tool.get('type')!r} is not supported by this gateway", f"{path}.type"
        )
    _known_fields(tool, _TOOL_FIELDS, f"{path}.")
    schema = _object(tool.get("input_schema"), f"{path}.input_schema")
    if schema.get("type") != "object":
        raise InvalidRequestError(
            f"{path}.input_schema.type: a tool's input schema must be of type 'object'",
            f"{path}.input_schema.type",
        )
    function: Json = {"name": _string(tool.get("name"), f"{path}.name", nonempty=True)}
    if "description" in tool:
        function["description"] = _string(tool["description"], f"{path}.description")
    function["parameters"] = schema
    out: Json = {"type": "function", "function": function}
    _cache_control(tool, out, path)
    return out


def _tool_choice(choice: Any, pivot: Json) -> None:
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    _known_fields(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), "tool_choice.")
    if kind == "auto":
        pivot["tool_choice"] = "auto"
    elif kind == "any":
        pivot["tool_choice"] = "required"
    elif kind == "none":
        pivot["tool_choice"] = "none"
    elif kind == "tool":
        name = _string(choice.get("name"), "tool_choice.name", nonempty=True)
        pivot["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequestError(
            "tool_choice.type: must be one of 'auto', 'any', 'tool', 'none'", "tool_choice.type"
        )
    if "disable_parallel_tool_use" in choice:
        disable = choice["disable_parallel_tool_use"]
        if not isinstance(disable, bool):
            raise InvalidRequestError(
                "tool_choice.disable_parallel_tool_use: Input should be a valid boolean",
                "tool_choice.disable_parallel_tool_use",
            )
        pivot["parallel_tool_calls"] = not disable


def _thinking(thinking: Any, pivot: Json) -> None:
    thinking = _object(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        _known_fields(thinking, frozenset({"type"}), "thinking.")
        return
    if kind != "enabled":
        raise InvalidRequestError("thinking.type: must be 'enabled' or 'disabled'", "thinking.type")
    _known_fields(thinking, frozenset({"type", "budget_tokens"}), "thinking.")
    if "budget_tokens" not in thinking:
        raise InvalidRequestError("thinking.budget_tokens: Field required", "thinking.budget_tokens")
    budget = _integer(thinking["budget_tokens"], "thinking.budget_tokens", MIN_THINKING_BUDGET)
    pivot["reasoning_effort"] = effort_for_budget(budget)
    pivot["reasoning"] = {"max_tokens": budget}


def _known_fields(obj: Json, known: frozenset[str], prefix: str = "") -> None:
    for name in obj:
        if name not in known:
            raise InvalidRequestError(f"{prefix}{name}: Extra inputs are not permitted", f"{prefix}{name}")


def _object(value: Any, path: str) -> Json:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{path}: Input should be an object", path)
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequestError(f"{path}: Input should be a valid list", path)
    return value


def _string(value: Any, path: str, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{path}: Input should be a valid string", path)
    if nonempty and not value:
        raise InvalidRequestError(f"{path}: String should have at least 1 character", path)
    return value


def _integer(value: Any, path: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequestError(f"{path}: Input should be a valid integer", path)
    if value < minimum:
        raise InvalidRequestError(f"{path}: Input should be greater than or equal to {minimum}", path)
    return value


def _number(value: Any, path: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidRequestError(f"{path}: Input should be a valid number", path)
    if not low <= value <= high:
        raise InvalidRequestError(f"{path}: must be between {low:g} and {high:g}", path)
    return value
