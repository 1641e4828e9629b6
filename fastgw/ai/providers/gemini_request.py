"""A pivot (OpenAI Chat Completions) request as a Gemini ``GenerateContentRequest`` body.

Reference: https://ai.google.dev/api/generate-content (GenerateContentRequest, Content, Part, Tool,
ToolConfig, GenerationConfig) and https://ai.google.dev/api/caching#Schema for the JSON Schema subset.
Every pivot parameter is either translated, listed in ``IGNORED`` (it has no meaning for the provider),
or refused with UnsupportedParameterError unless the model's ``drop_unsupported`` names it: nothing is
dropped silently. Pure.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json, ProviderTarget, UnsupportedParameterError
from fastgw.ai.providers.gemini_schema import gemini_schema

KIND: Final = "gemini"

# Pivot parameters with no effect on Gemini's answer: the model (in the URL), stream (the method),
# stream_options (the handler's business), user / metadata / store (OpenAI-side bookkeeping).
IGNORED: Final = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata", "store"})

# Gemini's thinkingBudget (tokens) for OpenAI's reasoning_effort. Gemini 2.5 Flash accepts 0..24576 and
# 2.5 Pro 128..32768; these sit inside both where they can ("none" turns thinking off on Flash).
THINKING_BUDGETS: Final = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

# Gemini accepts at most 5 stop sequences (GenerationConfig.stopSequences).
MAX_STOP_SEQUENCES: Final = 5

_TOOL_CHOICE_MODES: Final = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_AUDIO_MIME: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _refuse(param: str, target: ProviderTarget, name: str | None = None) -> None:
    """Refuse ``param`` unless the model drops it (by ``name``, default ``param``; the caller skips it)."""
    if (name or param) not in target.drop_unsupported:
        raise UnsupportedParameterError(param, KIND)


def _text_of(content: Any, param: str) -> str:
    """A system or tool message's content (a string or a list of text parts) as one string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidRequestError("only text parts are allowed here", f"{param}[{index}]")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError("content must be a string or a list of parts", param)


def _data_url(url: str, param: str) -> Json:
    """``data:image/png;base64,...`` as an inlineData part (the base64 checked, not decoded twice)."""
    head, comma, data = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise InvalidRequestError("a data URL must be data:<mime type>;base64,<data>", param)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("the data URL's base64 is invalid", param) from None
    return {"inlineData": {"mimeType": head[5:-7] or "application/octet-stream", "data": data}}


def _image_part(part: Json, param: str, target: ProviderTarget) -> Json | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequestError("image_url.url must be a string", f"{param}.image_url")
    if url.startswith("data:"):
        return _data_url(url, f"{param}.image_url")
    if target.options.get("image_urls") == "file_data":  # the model fetches the URL itself
        mime = target.options.get("image_url_mime_type", "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    _refuse(f"{param}.image_url", target, "image_url")
    return None


def _user_parts(content: Any, param: str, target: ProviderTarget) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise InvalidRequestError("content must be a string or a list of parts", param)
    parts: list[Json] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            if (image := _image_part(part, where, target)) is not None:
                parts.append(image)
        elif kind == "input_audio" and isinstance(audio := part.get("input_audio"), dict):
            mime = _AUDIO_MIME.get(str(audio.get("format")))
            if mime is None or not isinstance(audio.get("data"), str):
                raise InvalidRequestError("input_audio needs data and a format of wav or mp3", where)
            parts.append(_data_url(f"data:{mime};base64,{audio['data']}", where))
        else:
            raise InvalidRequestError(f"unknown content part type {kind!r}", where)
    if not parts:  # Gemini refuses a turn without parts
        raise InvalidRequestError("a user message needs at least one content part", param)
    return parts


def _function_call_part(call: Any, param: str) -> Json:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("a tool call needs function.name", param)
    raw = function.get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequestError(
            "a tool call's arguments must be a JSON object", f"{param}.function.arguments"
        )
    out: Json = {"functionCall": {"name": function["name"], "args": args}}
    extra = call.get("extra_content")  # Gemini's thought signature, handed out with the call (see below)
    signature = extra.get("google", {}).get("thought_signature") if isinstance(extra, dict) else None
    if isinstance(signature, str):
        out["thoughtSignature"] = signature
    return out


def _function_response(message: Json, names: dict[str, str], param: str) -> Json:
    call_id = message.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise InvalidRequestError(
            "tool_call_id names no earlier assistant tool call", f"{param}.tool_call_id"
        )
    text = _text_of(message.get("content"), f"{param}.content")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    # Gemini's response is a JSON object; anything else is wrapped, as Google's own SDKs do.
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def contents(pivot: Json, target: ProviderTarget) -> tuple[list[Json], Json | None]:
    """The conversation as Gemini ``contents`` and the ``systemInstruction`` (None without one).

    System and developer messages, wherever they stand, join the one system instruction; assistant turns
    become ``model`` turns; consecutive tool results join one ``user`` turn (Gemini wants the responses
    to parallel calls together), each named after the call its ``tool_call_id`` answers.
    """
    messages = pivot.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array", "messages")
    system: list[Json] = []
    out: list[Json] = []
    names: dict[str, str] = {}  # tool call id -> function name, from the assistant turns so far
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append({"text": _text_of(message.get("content"), f"{param}.content")})
        elif role == "user":
            out.append(
                {"role": "user", "parts": _user_parts(message.get("content"), f"{param}.content", target)}
            )
        elif role == "assistant":
            parts: list[Json] = []
            content = message.get("content")
            if content:
                parts.append({"text": _text_of(content, f"{param}.content")})
            for call_index, call in enumerate(message.get("tool_calls") or ()):
                parts.append(_function_call_part(call, f"{param}.tool_calls[{call_index}]"))
                if isinstance(call.get("id"), str):
                    names[call["id"]] = call["function"]["name"]
            if not parts:
                raise InvalidRequestError("an assistant message needs content or tool_calls", param)
            out.append({"role": "model", "parts": parts})
        elif role == "tool":
            part = _function_response(message, names, param)
            if out and out[-1]["role"] == "user" and "functionResponse" in out[-1]["parts"][-1]:
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
        else:
            raise InvalidRequestError(f"unknown message role {role!r}", f"{param}.role")
    if not out:
        raise InvalidRequestError("messages must hold at least one user message", "messages")
    return out, ({"parts": system} if system else None)


def full_json_schema(target: ProviderTarget) -> bool:
    """The target's option ``json_schema = "full"``: send schemas as they are, in the fields newer Gemini
    models take full JSON Schema in (``parametersJsonSchema``, ``responseJsonSchema``: ``$ref``,
    ``oneOf`` and the rest allowed), instead of translating them to the OpenAPI subset."""
    return target.options.get("json_schema") == "full"


def _schema_object(schema: Any, param: str) -> Json:
    if not isinstance(schema, dict):
        raise InvalidRequestError("a JSON Schema must be an object", param)
    return schema


def tools(value: Any, target: ProviderTarget) -> list[Json]:
    if not isinstance(value, list):
        raise InvalidRequestError("tools must be an array", "tools")
    declarations: list[Json] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequestError("a tool must be {type: function, function: {...}}", param)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("a function needs a name", f"{param}.function.name")
        declaration: Json = {"name": name}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        if "parameters" in function:
            where = f"{param}.function.parameters"
            if full_json_schema(target):
                declaration["parametersJsonSchema"] = _schema_object(function["parameters"], where)
            else:
                declaration["parameters"] = gemini_schema(function["parameters"], where)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def tool_config(value: Any) -> Json:
    if isinstance(value, str) and value in _TOOL_CHOICE_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE_MODES[value]}}
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}}
    raise InvalidRequestError("tool_choice must be auto, none, required or a named function", "tool_choice")


def _number(name: str, low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise InvalidRequestError(f"{name} must be a number from {low} to {high}", name)
        return value

    return check


def _positive_int(name: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{name} must be a positive integer", name)
        return value

    return check


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError("seed must be an integer", "seed")
    return value


def _stop(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequestError("stop must be a string or an array of strings", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"gemini takes at most {MAX_STOP_SEQUENCES} stop sequences", "stop")
    return stops


def _thinking(value: Any) -> Json:
    if value not in THINKING_BUDGETS:
        raise InvalidRequestError(
            f"reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}", "reasoning_effort"
        )
    return {"thinkingBudget": THINKING_BUDGETS[value]}


# pivot name -> (generationConfig name, check-and-convert)
_GENERATION: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "temperature": ("temperature", _number("temperature", 0.0, 2.0)),
    "top_p": ("topP", _number("top_p", 0.0, 1.0)),
    "max_tokens": ("maxOutputTokens", _positive_int("max_tokens")),
    "max_completion_tokens": ("maxOutputTokens", _positive_int("max_completion_tokens")),
    "n": ("candidateCount", _positive_int("n")),
    "seed": ("seed", _seed),
    "stop": ("stopSequences", _stop),
    "presence_penalty": ("presencePenalty", _number("presence_penalty", -2.0, 2.0)),
    "frequency_penalty": ("frequencyPenalty", _number("frequency_penalty", -2.0, 2.0)),
    "reasoning_effort": ("thinkingConfig", _thinking),
}


def response_format(value: Any, config: Json, target: ProviderTarget) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    spec = value.get("json_schema") if kind == "json_schema" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise InvalidRequestError(
            "response_format must be text, json_object or json_schema with a schema", "response_format"
        )
    config["responseMimeType"] = "application/json"
    if full_json_schema(target):
        config["responseJsonSchema"] = spec["schema"]
    else:
        config["responseSchema"] = gemini_schema(spec["schema"], "response_format.json_schema.schema")


def generate_content_body(pivot: Json, target: ProviderTarget) -> Json:
    """The ``GenerateContentRequest`` for ``pivot``."""
    body: Json = {}
    body["contents"], system = contents(pivot, target)
    if system is not None:
        body["systemInstruction"] = system
    config: Json = {}
    for name, value in pivot.items():
        if name in IGNORED or value is None:
            continue
        if (generation := _GENERATION.get(name)) is not None:
            config[generation[0]] = generation[1](value)
        elif name == "tools":
            if declared := tools(value, target):
                body["tools"] = declared
        elif name == "tool_choice":
            body["toolConfig"] = tool_config(value)
        elif name == "response_format":
            response_format(value, config, target)
        elif (name == "parallel_tool_calls" and value is True) or (name == "logprobs" and value is False):
            continue  # what Gemini does anyway (it may always call functions in parallel)
        else:
            _refuse(name, target)
    if config:
        body["generationConfig"] = config
    return body
