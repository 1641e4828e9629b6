"""Fields the pivot carries beyond OpenAI's Chat Completions schema, and how to strip them.

A client format may need to say something the OpenAI schema cannot (an Anthropic client's ``top_k``, its
exact thinking budget, a prompt-cache breakpoint, a failed tool result). Each such field is named here, in
the spelling an OpenAI-compatible server already uses for it where one exists (vLLM, OpenRouter, LiteLLM),
so that a provider adapter that understands it maps it and one that does not calls ``strip_extensions``
(or refuses the request parameters ``REQUEST_PARAMETERS`` lists with UnsupportedParameterError): nothing
the client asked for is dropped without the adapter choosing to.
"""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import Json

# Top-level request fields: refused by an adapter that cannot honour them (they change the answer).
REQUEST_PARAMETERS: Final = frozenset(
    {
        "top_k",  # int: sample from the k most likely tokens (vLLM, Together, OpenRouter accept it)
        "reasoning",  # {"max_tokens": int}: an exact thinking budget (OpenRouter's spelling)
    }
)
# A top-level field that is a routing hint, never a sampling parameter: stripped where unknown.
ANTHROPIC_BETA: Final = "anthropic_beta"  # list[str]: the client's anthropic-beta header values

# Fields inside messages, content parts, tools and choices: hints that change no answer's meaning on a
# provider without them, stripped there.
MESSAGE_FIELDS: Final = frozenset(
    {
        "thinking_blocks",  # assistant: [{"type": "thinking", "thinking", "signature"} | redacted] (LiteLLM)
        "reasoning_content",  # assistant: the thinking text (DeepSeek, vLLM)
        "is_error",  # tool: the tool failed (Anthropic's tool_result.is_error)
        "cache_control",  # tool: a prompt-cache breakpoint on the tool result
    }
)
PART_FIELDS: Final = frozenset({"cache_control"})  # parts, tools, tool calls: a prompt-cache breakpoint


def strip_extensions(pivot: Json) -> Json:
    """``pivot`` without the hint fields (a shallow copy where something was removed, else ``pivot``
    itself). ``REQUEST_PARAMETERS`` are left for the adapter to refuse or drop by its capability rules."""
    out = pivot
    if ANTHROPIC_BETA in out:
        out = {k: v for k, v in out.items() if k != ANTHROPIC_BETA}
    messages = out.get("messages")
    if isinstance(messages, list):
        cleaned = [_strip_message(m) for m in messages]
        if any(a is not b for a, b in zip(cleaned, messages, strict=True)):
            out = {**out, "messages": cleaned}
    tools = out.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "cache_control" in t for t in tools):
        out = {**out, "tools": [_without(t, PART_FIELDS) if isinstance(t, dict) else t for t in tools]}
    return out


def _strip_message(message: object) -> object:
    if not isinstance(message, dict):
        return message
    out = _without(message, MESSAGE_FIELDS)
    for name in ("content", "tool_calls"):  # parts, and tool calls (an Anthropic tool_use breakpoint)
        items = out.get(name)
        if isinstance(items, list) and any(isinstance(p, dict) and "cache_control" in p for p in items):
            out = {**out, name: [_without(p, PART_FIELDS) if isinstance(p, dict) else p for p in items]}
    return out


def _without(item: Json, names: frozenset[str]) -> Json:
    if names.isdisjoint(item):
        return item
    return {k: v for k, v in item.items() if k not in names}
