"""The OpenAI format's checks, worded like OpenAI's own 400s: each raises ``InvalidRequestError`` with the
offending parameter's path (``messages[2].content[0].image_url.url``) and OpenAI's error code, so an SDK
user reads the message OpenAI would have given. ``formats/openai.py`` composes them into request parsers.

Null counts as absent (OpenAI takes an explicit null as "the default").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from fastgw.ai.adapter import InvalidRequestError, Json
from fastgw.ai.json_schema import SchemaShapeError, check_schema

MAX_TOOLS: Final = 128  # OpenAI: "A max of 128 functions are supported"
# OpenAI: function names "must be a-z, A-Z, 0-9, or contain underscores and dashes, max length of 64".
FUNCTION_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")

_TYPE_NAMES: Final[dict[type, str]] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), "a value of another type")


def shown(value: object) -> str:
    """A client's value quoted in an error message, cut to 40 characters: errors echo, never reflect."""
    text = repr(value) if type(value) is str else type_name(value)
    return text if len(text) <= 40 else text[:37] + "..."


def invalid_type(param: str, expected: str, value: object) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param,
        "invalid_type",
    )


def invalid_value(param: str, value: object, allowed: Iterable[str]) -> InvalidRequestError:
    options = ", ".join(f"'{a}'" for a in allowed)
    return InvalidRequestError(
        f"Invalid value for '{param}': {shown(value)}. Supported values are: {options}.",
        param,
        "invalid_value",
    )


def missing(param: str) -> InvalidRequestError:
    return InvalidRequestError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _shown(number: float) -> str:
    """A number as OpenAI writes it: 2, not 2.0 (compiled, a float parameter holds 2 as 2.0)."""
    return str(int(number)) if float(number).is_integer() else str(number)


def _bound(param: str, value: float, kind: str, which: str, limit: float) -> InvalidRequestError:
    """OpenAI's range error, e.g. "decimal above maximum value" with code ``decimal_above_max_value``."""
    above = which == "above_max"
    words = "above maximum" if above else "below minimum"
    sign = "<=" if above else ">="
    return InvalidRequestError(
        f"Invalid '{param}': {kind} {words} value. Expected a value {sign} {_shown(limit)}, but got"
        f" {_shown(value)} instead.",
        param,
        f"{kind}_{which}_value",
    )


def check_number(body: Json, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if type(value) not in (int, float):
        raise invalid_type(name, "a number", value)
    if value < low:
        raise _bound(name, value, "decimal", "below_min", low)
    if value > high:
        raise _bound(name, value, "decimal", "above_max", high)


def check_integer(body: Json, name: str, low: int, high: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if type(value) is not int:
        raise invalid_type(name, "an integer", value)
    if value < low:
        raise _bound(name, value, "integer", "below_min", low)
    if high is not None and value > high:
        raise _bound(name, value, "integer", "above_max", high)


def typed(body: Json, name: str, kind: type, param: str | None = None) -> Any:
    value = body.get(name)
    if value is not None and type(value) is not kind:
        raise invalid_type(param or name, _TYPE_NAMES[kind], value)
    return value


def required(body: Json, name: str, kind: type, param: str) -> Any:
    if body.get(name) is None:
        raise missing(param)
    return typed(body, name, kind, param)


def array(value: object, param: str, low: int, high: int | None = None) -> list[Any]:
    if type(value) is not list:
        raise invalid_type(param, "an array", value)
    if len(value) < low:
        raise InvalidRequestError(
            f"Invalid '{param}': empty array. Expected an array with minimum length {low}, "
            "but got an empty array instead.",
            param,
            "empty_array",
        )
    if high is not None and len(value) > high:
        raise InvalidRequestError(
            f"Invalid '{param}': array too long. Expected an array with maximum length {high}, "
            f"but got an array with length {len(value)} instead.",
            param,
            "array_above_max_length",
        )
    return value


def json_object(value: object, param: str) -> Json:
    if type(value) is not dict:
        raise invalid_type(param, "an object", value)
    return value


def _part_text(part: Json, param: str) -> None:
    required(part, "text", str, f"{param}.text")


def _part_image(part: Json, param: str) -> None:
    image = json_object(part.get("image_url"), f"{param}.image_url")
    required(image, "url", str, f"{param}.image_url.url")
    detail = image.get("detail")
    if detail is not None and detail not in ("auto", "low", "high"):
        raise invalid_value(f"{param}.image_url.detail", detail, ("auto", "low", "high"))


def _part_audio(part: Json, param: str) -> None:
    audio = json_object(part.get("input_audio"), f"{param}.input_audio")
    required(audio, "data", str, f"{param}.input_audio.data")
    required(audio, "format", str, f"{param}.input_audio.format")


def _part_file(part: Json, param: str) -> None:
    json_object(part.get("file"), f"{param}.file")


def _part_refusal(part: Json, param: str) -> None:
    required(part, "refusal", str, f"{param}.refusal")


_PART_CHECKS: Final[dict[str, Callable[[Json, str], None]]] = {
    "text": _part_text,
    "image_url": _part_image,
    "input_audio": _part_audio,
    "file": _part_file,
    "refusal": _part_refusal,
}
# Which content part types each role may send (OpenAI's message types).
_ROLE_PARTS: Final[dict[str, tuple[str, ...]]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}


def _content(message: Json, role: str, param: str, required: bool) -> None:
    content = message.get("content")
    if content is None:
        if required:
            raise missing(f"{param}.content")
        return
    if type(content) is str:
        return
    if type(content) is not list:
        raise invalid_type(f"{param}.content", "a string or an array of content parts", content)
    allowed = _ROLE_PARTS[role]
    for index, part in enumerate(content):
        where = f"{param}.content[{index}]"
        json_object(part, where)
        kind = part.get("type")
        if kind is None:
            raise missing(f"{where}.type")
        if kind not in allowed:
            raise invalid_value(f"{where}.type", kind, allowed)
        _PART_CHECKS[kind](part, where)


def _tool_calls(message: Json, param: str) -> None:
    calls = message.get("tool_calls")
    if calls is None:
        return
    for index, call in enumerate(array(calls, f"{param}.tool_calls", 0)):
        where = f"{param}.tool_calls[{index}]"
        json_object(call, where)
        required(call, "id", str, f"{where}.id")
        kind = call.get("type", "function")
        if kind != "function":
            raise invalid_value(f"{where}.type", kind, ("function",))
        function = json_object(call.get("function"), f"{where}.function")
        required(function, "name", str, f"{where}.function.name")
        required(function, "arguments", str, f"{where}.function.arguments")


def check_messages(messages: object) -> None:
    """Raises InvalidRequestError naming the first malformed message field."""
    for index, message in enumerate(array(messages, "messages", 1)):
        param = f"messages[{index}]"
        json_object(message, param)
        role = message.get("role")
        if role is None:
            raise missing(f"{param}.role")
        if role not in ROLES:
            raise invalid_value(f"{param}.role", role, ROLES)
        typed(message, "name", str, f"{param}.name")
        if role == "assistant":
            _tool_calls(message, param)
            # OpenAI: content "is required unless tool_calls or function_call is specified" (or audio)
            answered = message.get("tool_calls") or message.get("function_call") or message.get("audio")
            _content(message, role, param, required=not answered)
        else:
            _content(message, role, param, required=role != "function")
        if role == "tool":
            required(message, "tool_call_id", str, f"{param}.tool_call_id")
        elif role == "function":
            required(message, "name", str, f"{param}.name")


def _object_schema(schema: object, param: str, label: str, code: str) -> None:
    """A function's parameters or a structured output's schema: an object schema, as OpenAI requires."""
    try:
        if type(schema) is not dict:
            raise SchemaShapeError("schema must be a JSON Schema object")
        check_schema(schema)
        kind = schema.get("type", "object")
        if kind != "object":
            got = f'"{kind}"' if type(kind) is str else "an array of types"
            raise SchemaShapeError(f"schema must be a JSON Schema of 'type: \"object\"', got 'type: {got}'")
    except SchemaShapeError as exc:
        raise InvalidRequestError(f"Invalid schema for {label}: {exc}.", param, code) from None


def _name(holder: Json, param: str) -> str:
    name: str = required(holder, "name", str, param)
    if FUNCTION_NAME.fullmatch(name) is None:
        raise InvalidRequestError(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the "
            "pattern '^[a-zA-Z0-9_-]{1,64}$'.",
            param,
            "invalid_value",
        )
    return name


def check_tools(body: Json) -> None:
    """``tools`` and ``tool_choice``."""
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        for index, tool in enumerate(array(tools, "tools", 1, MAX_TOOLS)):
            param = f"tools[{index}]"
            json_object(tool, param)
            if tool.get("type") != "function":
                raise invalid_value(f"{param}.type", tool.get("type"), ("function",))
            function = json_object(tool.get("function"), f"{param}.function")
            name = _name(function, f"{param}.function.name")
            names.append(name)
            typed(function, "description", str, f"{param}.function.description")
            typed(function, "strict", bool, f"{param}.function.strict")
            if "parameters" in function:
                where = f"{param}.function.parameters"
                _object_schema(
                    function["parameters"], where, f"function '{name}'", "invalid_function_parameters"
                )
    choice = body.get("tool_choice")
    if choice is None:
        return
    if type(choice) is str:
        if choice not in ("none", "auto", "required"):
            raise invalid_value("tool_choice", choice, ("none", "auto", "required"))
        if choice != "none" and not names:
            raise InvalidRequestError(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
                "invalid_value",
            )
        return
    json_object(choice, "tool_choice")
    if choice.get("type") != "function":
        raise invalid_value("tool_choice.type", choice.get("type"), ("function",))
    chosen = required(
        json_object(choice.get("function"), "tool_choice.function"), "name", str, "tool_choice.function.name"
    )
    if chosen not in names:
        raise InvalidRequestError(
            f"Invalid value for 'tool_choice': no function named {shown(chosen)} was specified in the "
            "'tools' parameter.",
            "tool_choice",
            "invalid_value",
        )


def check_response_format(body: Json) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    json_object(fmt, "response_format")
    kind = fmt.get("type")
    allowed = ("text", "json_object", "json_schema")
    if kind not in allowed:
        raise invalid_value("response_format.type", kind, allowed)
    if kind == "json_schema":
        spec = json_object(fmt.get("json_schema"), "response_format.json_schema")
        name = _name(spec, "response_format.json_schema.name")
        typed(spec, "strict", bool, "response_format.json_schema.strict")
        if "schema" in spec:
            param = "response_format.json_schema.schema"
            _object_schema(spec["schema"], param, f"response_format '{name}'", "invalid_json_schema")
