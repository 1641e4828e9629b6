"""The Anthropic Messages client format, answer side: a pivot response rendered as an Anthropic
``message``, pivot stream chunks as Anthropic's SSE events, errors in Anthropic's shape.

The stream writer is a small state machine over the open content block: pivot deltas arrive as text,
reasoning and tool-call argument pieces; Anthropic's stream opens one block per text run, thinking run or
tool call (``content_block_start``), streams its deltas and closes it (``content_block_stop``) before the
next opens. Usage comes from the pivot's final usage chunk (or the Usage the handler passes). Reference:
Anthropic API, "Messages" (response), "Streaming messages" and "Errors".
"""

from __future__ import annotations

from typing import Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json, ProviderError, Usage
from fastgw.ai.anthropic_wire import ERROR_TYPE, STOP_REASON, anthropic_usage, usage_from_pivot


def render_message(response: Json, usage: Usage | None = None) -> Json:
    """A pivot ``chat.completion`` as an Anthropic ``message`` (``usage`` overrides the response's).

    Raises:
        ProviderError: the response has no choice, or a tool call's arguments are not a JSON object.
    """
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError(502, "the provider's answer has no choices", kind="api_error")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Json] = []
    for block in message.get("thinking_blocks") or ():
        content.append(dict(block))
    if not message.get("thinking_blocks") and message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    if message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = _stop(choice)
    if usage is None:
        raw = response.get("usage")
        usage = usage_from_pivot(raw) if isinstance(raw, dict) else Usage()
    return {
        "id": _message_id(response.get("id")),
        "type": "message",
        "role": "assistant",
        "model": response.get("model", ""),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage),
    }


def render_count_tokens(input_tokens: int) -> bytes:
    """The ``/v1/messages/count_tokens`` answer."""
    return orjson.dumps({"input_tokens": input_tokens})


def error_type(status: int, kind: str = "") -> str:
    """Anthropic's error type for a status (``kind`` wins when it is one of Anthropic's types)."""
    if kind in _ERROR_TYPES:
        return kind
    return ERROR_TYPE.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(status: int, message: str, kind: str = "") -> bytes:
    """An error body the Anthropic SDK parses: ``{"type": "error", "error": {"type", "message"}}``."""
    return orjson.dumps({"type": "error", "error": {"type": error_type(status, kind), "message": message}})


def error_for(exc: InvalidRequestError | ProviderError) -> tuple[int, bytes]:
    """The status and body for an error raised while serving an Anthropic-format request."""
    if isinstance(exc, ProviderError):
        return exc.status, error_body(exc.status, exc.message, exc.kind)
    return 400, error_body(400, exc.message)


def error_event(status: int, message: str, kind: str = "") -> bytes:
    """The ``error`` event that ends a stream that already started (status no longer sendable)."""
    return _event(b"error", error_body(status, message, kind))


_ERROR_TYPES: Final = frozenset(ERROR_TYPE.values())
_TEXT: Final = "text"
_THINKING: Final = "thinking"
_TOOL: Final = "tool_use"


class AnthropicStreamWriter:
    """Pivot ``chat.completion.chunk`` objects in, Anthropic SSE event bytes out, for one stream.

    ``usage`` (optional) is the provider translator's Usage: when its input counts are already known at
    the first chunk (Anthropic and Gemini report them first), message_start carries them as Anthropic's
    does; the final counts come from the pivot's usage chunk, else from ``usage`` at the end.
    """

    __slots__ = (
        "_block",
        "_finished",
        "_index",
        "_model",
        "_open",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, model: str = "", usage: Usage | None = None) -> None:
        self._model = model  # the public model name; the chunks' own model when empty
        self._usage = usage
        self._started = False
        self._open = ""  # the kind of the open block ("" when none)
        self._index = -1  # the open (or last) block's index
        self._block = 0  # the next block's index
        self._tools: dict[int, int] = {}  # pivot tool-call index -> block index
        self._stop: tuple[str, str | None] | None = None  # (stop_reason, stop_sequence) once finished
        self._finished = False  # message_delta and message_stop sent
        self.done = False

    def feed(self, chunk: Json) -> bytes:
        """The events for one pivot chunk (possibly none)."""
        if self._finished:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start(chunk, out)
        choices = chunk.get("choices") or ()
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per message; n > 1 is refused before the call
            delta = choice.get("delta") or {}
            self._delta(delta, out)
            if choice.get("finish_reason"):
                self._close(out)
                self._stop = _stop(choice)
        usage = chunk.get("usage")
        if isinstance(usage, dict) and self._stop is not None:
            self._finish(usage_from_pivot(usage), out)
        return b"".join(out)

    def end(self) -> bytes:
        """The closing events when the pivot stream ended without its usage chunk."""
        if self._finished:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        self._close(out)
        if self._stop is None:
            self._stop = ("end_turn", None)
        self._finish(self._usage or Usage(), out)
        return b"".join(out)

    def _start(self, chunk: Json, out: list[bytes]) -> None:
        self._started = True
        usage = anthropic_usage(self._usage) if self._usage is not None else anthropic_usage(Usage())
        usage["output_tokens"] = 0
        message: Json = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model or chunk.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(_event(b"message_start", orjson.dumps({"type": "message_start", "message": message})))

    def _delta(self, delta: Json, out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if reasoning:
            self._open_block(_THINKING, {"type": "thinking", "thinking": ""}, out)
            self._block_delta({"type": "thinking_delta", "thinking": reasoning}, out)
        for block in delta.get("thinking_blocks") or ():
            if block.get("type") == "redacted_thinking":
                self._close(out)
                self._open_block("redacted", dict(block), out)
                self._close(out)
            elif block.get("signature"):
                self._open_block(_THINKING, {"type": "thinking", "thinking": ""}, out)
                self._block_delta({"type": "signature_delta", "signature": block["signature"]}, out)
                self._close(out)  # a signature seals its block: more reasoning is a new block
        text = delta.get("content")
        if text:
            self._open_block(_TEXT, {"type": "text", "text": ""}, out)
            self._block_delta({"type": "text_delta", "text": text}, out)
        refusal = delta.get("refusal")
        if refusal:
            self._open_block(_TEXT, {"type": "text", "text": ""}, out)
            self._block_delta({"type": "text_delta", "text": refusal}, out)
        for call in delta.get("tool_calls") or ():
            self._tool_delta(call, out)

    def _tool_delta(self, call: Json, out: list[bytes]) -> None:
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tools:
            self._close(out)
            start = {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": {},
            }
            self._open_block(_TOOL, start, out)
            self._tools[position] = self._index
        arguments = function.get("arguments")
        if arguments:
            index = self._tools[position]
            payload = {"type": "input_json_delta", "partial_json": arguments}
            out.append(_delta_event(index, payload))

    def _open_block(self, kind: str, start: Json, out: list[bytes]) -> None:
        if self._open == kind and kind != _TOOL:
            return
        self._close(out)
        self._open = kind
        self._index = self._block
        self._block += 1
        payload = {"type": "content_block_start", "index": self._index, "content_block": start}
        out.append(_event(b"content_block_start", orjson.dumps(payload)))

    def _block_delta(self, delta: Json, out: list[bytes]) -> None:
        out.append(_delta_event(self._index, delta))

    def _close(self, out: list[bytes]) -> None:
        if self._open:
            self._open = ""
            payload = {"type": "content_block_stop", "index": self._index}
            out.append(_event(b"content_block_stop", orjson.dumps(payload)))

    def _finish(self, usage: Usage, out: list[bytes]) -> None:
        assert self._stop is not None
        stop_reason, stop_sequence = self._stop
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        payload = {"type": "message_delta", "delta": delta, "usage": anthropic_usage(usage)}
        out.append(_event(b"message_delta", orjson.dumps(payload)))
        out.append(_MESSAGE_STOP)
        self._finished = True
        self.done = True


def _event(name: bytes, data: bytes) -> bytes:
    """One SSE event: orjson never writes a line break, so the JSON is one data line."""
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def _delta_event(index: int, delta: Json) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return _event(b"content_block_delta", orjson.dumps(payload))


_MESSAGE_STOP: Final = _event(b"message_stop", b'{"type":"message_stop"}')


def _stop(choice: Json) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a pivot choice; the matched sequence travels in its stop_reason."""
    finish = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return STOP_REASON.get(finish, "end_turn"), None


def _message_id(raw: object) -> str:
    text = raw if isinstance(raw, str) else ""
    return text if text.startswith("msg_") else f"msg_{text}" if text else "msg_fastgw"


def _arguments(raw: object) -> Json:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ProviderError(502, "the provider returned tool call arguments that are not a JSON object")
    return value
