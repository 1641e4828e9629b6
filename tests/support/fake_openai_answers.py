"""What the fake OpenAI provider answers, and the token counts it reports: simple rules, so that a test
can predict every count exactly.

``prompt_tokens`` is the number of whitespace-separated words in the messages' text; ``completion_tokens``
is the number of pieces the answer is streamed in (one word of ``REPLY`` each, or eight characters of a
tool call's arguments), times ``n``; an embeddings input counts its words (or its token ids).
Standard library only, like the server (tests/support/fake_openai.py).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

REPLY: Final = "Hello! This is the fake provider answering."
ECHO_PIECE: Final = 5  # characters per streamed piece of an echo


@dataclass
class Answer:
    """What the fake sent for one chat request: the text, the tool call's arguments, the usage it reported."""

    model: str
    text: str = ""
    arguments: str = ""
    usage: dict[str, int] = field(default_factory=dict)


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The fake's prompt token count: words in every message's text (string content or text parts)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += count_words(content)
        elif isinstance(content, list):
            total += sum(count_words(p.get("text", "")) for p in content if isinstance(p, dict))
    return total


def reply_pieces(max_tokens: int | None) -> tuple[list[str], str]:
    """The answer's pieces (one token each) and the finish reason."""
    words = REPLY.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    if max_tokens is not None and max_tokens < len(pieces):
        return pieces[:max_tokens], "length"
    return pieces, "stop"


def tool_arguments(tool: dict[str, Any]) -> str:
    """A call's arguments: each required property of the tool's schema set to "fake"."""
    schema = tool.get("function", {}).get("parameters") or {}
    return json.dumps({name: "fake" for name in schema.get("required", [])})


def plan_answer(request: dict[str, Any], fault: str) -> tuple[Answer, list[str], str, dict[str, Any] | None]:
    """The answer to a chat request: its text or tool call and usage, the pieces it is streamed in, the
    finish reason and the tool called (if any)."""
    tools = request.get("tools") or []
    choice = request.get("tool_choice")
    last_role = (request.get("messages") or [{}])[-1].get("role")
    answer = Answer(request["model"])
    tool: dict[str, Any] | None = None
    if tools and choice != "none" and last_role != "tool":
        tool = tools[0]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            tool = next((t for t in tools if t.get("function", {}).get("name") == wanted), tools[0])
        answer.arguments = tool_arguments(tool)
        pieces = [answer.arguments[i : i + 8] for i in range(0, len(answer.arguments), 8)] or [""]
        finish = "tool_calls"
    elif fault == "echo":  # what the provider was sent, back: in pieces that split words and brackets
        text = "You said: " + str((request.get("messages") or [{}])[-1].get("content"))
        pieces, finish = [text[i : i + ECHO_PIECE] for i in range(0, len(text), ECHO_PIECE)], "stop"
        answer.text = text
    else:
        pieces, finish = reply_pieces(request.get("max_completion_tokens") or request.get("max_tokens"))
        answer.text = "".join(pieces)
    n = request.get("n") or 1
    prompt = prompt_tokens(request.get("messages") or [])
    completion = len(pieces) * n
    if fault == "inflated-usage":  # a provider billing far more answer tokens than it sent
        completion = 1_000_000
    if fault != "no-usage":
        answer.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return answer, pieces, finish, tool


def usage_object(answer: Answer) -> dict[str, Any]:
    return {
        **answer.usage,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def embeddings_answer(request: dict[str, Any]) -> bytes:
    inputs = request.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    dims = request.get("dimensions") or 8
    data = []
    tokens = 0
    for k, item in enumerate(inputs or []):
        tokens += count_words(item) if isinstance(item, str) else len(item)
        vector = [((k * 31 + i * 7) % 100) / 100 for i in range(dims)]
        encoded: Any = vector
        if request.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": k, "embedding": encoded})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json.dumps({"object": "list", "data": data, "model": request["model"], "usage": usage}).encode()
