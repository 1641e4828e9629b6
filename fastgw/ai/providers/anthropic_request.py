"""The ``anthropic`` provider, request side: a pivot (OpenAI Chat Completions) request as a Messages API
body.

The mapping is the inverse of ``formats/anthropic_request.py``, so an Anthropic client's request reaches
an Anthropic provider unchanged for every feature both carry (tested by a hypothesis round trip). System
and developer messages anywhere become the top-level ``system`` (Anthropic has no system turn); a run of
tool messages and the user message after it become one user turn (tool_result blocks first, as Anthropic
requires). Reference: Anthropic API, "Messages" (request body).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json, ProviderTarget, UnsupportedParameterError
from fastgw.ai.anthropic_wire import EFFORT_BUDGET, MIN_THINKING_BUDGET, image_source_from_url

KIND: Final = "anthropic"
# Anthropic requires max_tokens; an OpenAI client may omit it. 4096 is what Anthropic's own examples use
# and every current Claude model allows; a target may set its own ("max_tokens" option).
DEFAULT_MAX_TOKENS: Final = 4096

# Pivot fields with no effect on an Anthropic answer's content: ignored. stream_options: Anthropic always
# reports usage in its stream. store/metadata: OpenAI's stored-completions bookkeeping. The anthropic_beta
# hint is read for the header.
_IGNORED: Final = frozenset({"model", "stream", "stream_options", "store", "metadata", "anthropic_beta"})
_HANDLED: Final = frozenset(
    {
        "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "top_k",
        "user", "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "reasoning", "n",
    }
)  # fmt: skip


def messages_body(pivot: Json, target: ProviderTarget, stream: bool, *, count_tokens: bool = False) -> Json:
    """The Messages API body for a pivot request (``count_tokens``: the count_tokens body, which takes no
    generation parameters).

    Raises:
        UnsupportedParameterError: a pivot parameter Anthropic cannot honour and the target does not drop.
        InvalidRequestError: a message cannot be expressed (an image URL that is neither data: nor http(s)).
    """
    dropped = target.drop_unsupported
    for name, value in pivot.items():
        if name in _IGNORED or name in _HANDLED or value is None:
            continue
        if name == "response_format" and value == {"type": "text"}:
            continue  # the default: nothing asked
        if name not in dropped:
            raise UnsupportedParameterError(name, KIND)
    if pivot.get("n", 1) != 1 and "n" not in dropped:
        raise UnsupportedParameterError("n", KIND)
    body: Json = {"model": target.model}
    system, messages = _messages(pivot.get("messages"))
    if system is not None:
        body["system"] = system
    body["messages"] = messages
    _tools(pivot, body)
    _thinking(pivot, body)
    if count_tokens:
        return body
    limit = pivot.get("max_completion_tokens") or pivot.get("max_tokens")
    body["max_tokens"] = limit or int(target.options.get("max_tokens", DEFAULT_MAX_TOKENS))
    if "thinking" in body:
        _fit_thinking(body, client_limit=bool(limit))
    stop = pivot.get("stop")
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p", "top_k"):
        if pivot.get(name) is not None:
            body[name] = pivot[name]
    if pivot.get("user") is not None:
        body["metadata"] = {"user_id": pivot["user"]}
    if stream:
        body["stream"] = True
    return body


def beta_header(pivot: Json, target: ProviderTarget) -> str:
    """The ``anthropic-beta`` value: the target's own betas, then the client's that the target allows
    (option ``allowed_betas``: a comma-separated list, or ``*``); others are not sent."""
    betas = [b.strip() for b in target.options.get("anthropic_beta", "").split(",") if b.strip()]
    allowed = {b.strip() for b in target.options.get("allowed_betas", "").split(",") if b.strip()}
    for beta in pivot.get("anthropic_beta") or ():
        if ("*" in allowed or beta in allowed) and beta not in betas:
            betas.append(beta)
    return ",".join(betas)


def _messages(raw: Any) -> tuple[str | list[Json] | None, list[Json]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("messages: at least one message is required", "messages")
    system: list[Json] = []
    system_text: list[str] = []
    turns: list[Json] = []
    pending_results: list[Json] = []  # tool_result blocks waiting for their user turn
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"{where}: must be an object", where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            if isinstance(content, str):
                system_text.append(content)
                system.append({"type": "text", "text": content})
            else:
                system.extend(_parts(content, where, text_only=True))
                system_text.append("\0")  # a block list: keep blocks
        elif role == "tool":
            pending_results.append(_tool_result(message, where))
        elif role == "user":
            if pending_results:  # one user turn: the tool results first, then what the user added
                extra = [] if content in ("", None) else _user_content(content, where)
                turns.append({"role": "user", "content": pending_results + extra})
                pending_results = []
            else:
                turns.append({"role": "user", "content": _user_content(content, where, keep_string=True)})
        elif role == "assistant":
            if pending_results:
                turns.append({"role": "user", "content": pending_results})
                pending_results = []
            turns.append({"role": "assistant", "content": _assistant(message, where)})
        else:
            raise InvalidRequestError(f"{where}.role: unknown role {role!r}", f"{where}.role")
    if pending_results:
        turns.append({"role": "user", "content": pending_results})
    if not system:
        return None, turns
    if len(system_text) == 1 and system_text[0] != "\0":
        return system_text[0], turns
    return system, turns


def _user_content(content: Any, where: str, *, keep_string: bool = False) -> Any:
    if isinstance(content, str):
        return content if keep_string else [{"type": "text", "text": content}]
    return _parts(content, where)


def _parts(content: Any, where: str, *, text_only: bool = False) -> list[Json]:
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content: must be a string or a list of parts", f"{where}.content")
    out: list[Json] = []
    for j, part in enumerate(content):
        path = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block: Json = {"type": "text", "text": part.get("text", "")}
        elif kind == "image_url" and not text_only:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            source = image_source_from_url(url) if isinstance(url, str) else None
            if source is None:
                raise InvalidRequestError(
                    f"{path}.image_url.url: must be a data: URL or an http(s) URL", f"{path}.image_url.url"
                )
            block = {"type": "image", "source": source}
        else:
            raise InvalidRequestError(
                f"{path}.type: content part {kind!r} is not supported by the {KIND} provider", f"{path}.type"
            )
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        out.append(block)
    return out


def _assistant(message: Json, where: str) -> Any:
    content = message.get("content")
    calls = message.get("tool_calls") or ()
    thinking = message.get("thinking_blocks") or ()
    if isinstance(content, str) and not calls and not thinking:
        return content
    blocks: list[Json] = [dict(b) for b in thinking]
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        blocks.extend(_parts(content, where, text_only=True))
    for j, call in enumerate(calls):
        path = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequestError(f"{path}.function: required", f"{path}.function")
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(
                f"{path}.function.arguments: must be a JSON object", f"{path}.function.arguments"
            )
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
        if "cache_control" in call:
            block["cache_control"] = call["cache_control"]
        blocks.append(block)
    return blocks


def _tool_result(message: Json, where: str) -> Json:
    content = message.get("content")
    block: Json = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    block["content"] = content if isinstance(content, str) or content is None else _parts(content, where)
    if block["content"] is None:
        block["content"] = ""
    for name in ("is_error", "cache_control"):
        if name in message:
            block[name] = message[name]
    return block


def _tools(pivot: Json, body: Json) -> None:
    tools = pivot.get("tools")
    if tools:
        out = []
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict):
                raise InvalidRequestError(
                    f"tools[{i}].type: only function tools are supported by the {KIND} provider",
                    f"tools[{i}].type",
                )
            entry: Json = {"name": function.get("name")}
            if "description" in function:
                entry["description"] = function["description"]
            entry["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
            if "cache_control" in tool:
                entry["cache_control"] = tool["cache_control"]
            out.append(entry)
        body["tools"] = out
    choice = pivot.get("tool_choice")
    parallel = pivot.get("parallel_tool_calls")
    mapped: Json | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("tool_choice.function.name: required", "tool_choice.function.name")
        mapped = {"type": "tool", "name": name}
    elif choice is not None:
        raise InvalidRequestError(
            "tool_choice: must be 'auto', 'required', 'none' or a function", "tool_choice"
        )
    if isinstance(parallel, bool):
        if mapped is None:
            mapped = {"type": "auto"}
        if mapped["type"] != "none":
            mapped["disable_parallel_tool_use"] = not parallel
    if mapped is not None:
        body["tool_choice"] = mapped


def _fit_thinking(body: Json, *, client_limit: bool) -> None:
    """Anthropic counts the thinking budget inside max_tokens and requires budget < max_tokens. OpenAI's
    max_completion_tokens also includes reasoning, so a client's limit stands and the budget shrinks to
    fit; without a client limit, the default answer room is added on top of the budget."""
    budget = body["thinking"]["budget_tokens"]
    if budget < body["max_tokens"]:
        return
    if not client_limit:
        body["max_tokens"] = budget + body["max_tokens"]
    elif body["max_tokens"] > MIN_THINKING_BUDGET:
        body["thinking"] = {"type": "enabled", "budget_tokens": body["max_tokens"] - 1}
    else:
        raise InvalidRequestError(
            f"reasoning on the {KIND} provider needs max_tokens above {MIN_THINKING_BUDGET}", "max_tokens"
        )


def _thinking(pivot: Json, body: Json) -> None:
    reasoning = pivot.get("reasoning")
    budget = reasoning.get("max_tokens") if isinstance(reasoning, dict) else None
    effort = pivot.get("reasoning_effort")
    if budget is None and effort is not None:
        if effort == "none":
            return
        if effort not in EFFORT_BUDGET:
            raise InvalidRequestError(f"reasoning_effort: unknown value {effort!r}", "reasoning_effort")
        budget = EFFORT_BUDGET[effort]
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
