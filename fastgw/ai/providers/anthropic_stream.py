"""The ``anthropic`` provider, stream side: Messages API SSE events translated into pivot chunks as each
event completes.

Events (Anthropic API, "Streaming messages"): ``message_start`` (id, model, input usage), per content
block ``content_block_start`` / ``content_block_delta`` (text_delta, input_json_delta, thinking_delta,
signature_delta) / ``content_block_stop``, ``message_delta`` (stop_reason, cumulative usage),
``message_stop``; ``ping`` anytime; ``error`` mid-stream. Unknown event types are ignored, as Anthropic's
versioning policy asks. Bounded by the SSE parser: one incomplete event at most ``MAX_EVENT_SIZE``.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from fastgw.ai.adapter import Json, ProviderError, Usage
from fastgw.ai.anthropic_wire import ERROR_STATUS, FINISH_REASON, usage_from_anthropic
from fastgw.ai.provider_errors import error_message
from fastgw.codec.sse import DEFAULT_MAX_EVENT_SIZE, SseError, SseParser

# 1 MiB (the SSE parser's default and reason): a Messages event is a few hundred bytes; a tool call's
# input arrives in input_json_delta pieces of a few bytes each, so no honest event comes near it.
MAX_EVENT_SIZE: Final = DEFAULT_MAX_EVENT_SIZE


def stream_error(kind: str, message: str, provider_status: int = 0) -> ProviderError:
    """A ProviderError for an Anthropic error object (an ``error`` event or an error body's type).

    Rate limits keep their 429; overloaded (529) and server errors are the gateway's 502; all of those
    may be retried on another target (before the first byte reached the client)."""
    status = ERROR_STATUS.get(kind, 500)
    provider_status = provider_status or status
    retryable = status in (429, 529) or status >= 500
    client_status = 429 if status == 429 else 502 if status >= 500 else status
    return ProviderError(
        client_status, message, retryable=retryable, provider_status=provider_status, kind=kind or "api_error"
    )


class AnthropicStreamTranslator:
    """One streamed Messages answer in, pivot ``chat.completion.chunk`` objects out (a StreamTranslator)."""

    __slots__ = ("_blocks", "_created", "_id", "_model", "_parser", "_started", "_stopped", "_tools", "usage")

    def __init__(self) -> None:
        self._parser = SseParser(MAX_EVENT_SIZE)
        self.usage = Usage()
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._started = False  # message_start seen
        self._stopped = False  # message_stop seen
        self._blocks: dict[int, str] = {}  # block index -> block type
        self._tools: dict[int, int] = {}  # block index -> pivot tool-call index

    def feed(self, data: bytes) -> list[Json]:
        """The pivot chunks completed by ``data``.

        Raises:
            ProviderError: an event over the bound, malformed JSON, an ``error`` event, or events out of
                order (content before message_start). The translator is then unusable.
        """
        try:
            events = self._parser.feed(data)
        except SseError as exc:
            message = f"the provider's stream broke: {exc.detail}"
            raise ProviderError(502, message, kind="bad_stream") from None
        out: list[Json] = []
        try:
            for event in events:
                try:
                    payload = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise ProviderError(
                        502, "the provider sent an event that is not JSON", kind="bad_stream"
                    ) from None
                if not isinstance(payload, dict):
                    raise ProviderError(
                        502, "the provider sent an event that is not an object", kind="bad_stream"
                    )
                kind = payload.get("type", event.event)
                handler = _HANDLERS.get(kind)
                if handler is not None:
                    try:
                        chunk = handler(self, payload)
                    except (KeyError, TypeError, AttributeError, ValueError):
                        raise ProviderError(
                            502, f"the provider sent a malformed {kind} event", kind="bad_stream"
                        ) from None
                    if chunk is not None:
                        out.append(chunk)
        except ProviderError as exc:
            exc.completed = out  # the chunks before the broken event still go out
            raise
        return out

    def end(self) -> list[Json]:
        """The stream ended. Raises ProviderError if it ended before ``message_stop``."""
        truncated = self._parser.end()
        if not self._stopped or truncated:
            message = "the provider's stream ended before message_stop"
            raise ProviderError(502, message, kind="truncated_stream")
        return []

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _message_start(self, payload: Json) -> Json:
        message = payload["message"]
        self._id = str(message.get("id", ""))
        self._model = str(message.get("model", ""))
        self._started = True
        if isinstance(message.get("usage"), dict):
            usage_from_anthropic(message["usage"], self.usage)
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, payload: Json) -> Json | None:
        self._require_start()
        index: int = payload["index"]
        block: Json = payload["content_block"]
        kind = block["type"]
        self._blocks[index] = kind
        if kind == "tool_use":
            position = len(self._tools)
            self._tools[index] = position
            call = {"index": position, "id": block["id"], "type": "function"}
            call["function"] = {"name": block["name"], "arguments": ""}
            return self._chunk({"tool_calls": [call]})
        if kind == "redacted_thinking":
            return self._chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": block["data"]}]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        return None

    def _block_delta(self, payload: Json) -> Json | None:
        self._require_start()
        delta: Json = payload["delta"]
        kind = delta["type"]
        if kind == "text_delta":
            return self._chunk({"content": delta["text"]})
        if kind == "input_json_delta":
            position = self._tools[payload["index"]]
            call = {"index": position, "function": {"arguments": delta["partial_json"]}}
            return self._chunk({"tool_calls": [call]})
        if kind == "thinking_delta":
            return self._chunk({"reasoning_content": delta["thinking"]})
        if kind == "signature_delta":
            block = {"type": "thinking", "thinking": "", "signature": delta["signature"]}
            return self._chunk({"thinking_blocks": [block]})
        return None  # citations_delta and later delta kinds carry nothing the pivot holds

    def _message_delta(self, payload: Json) -> Json | None:
        self._require_start()
        if isinstance(payload.get("usage"), dict):
            usage_from_anthropic(payload["usage"], self.usage)
        delta = payload.get("delta") or {}
        stop_reason = delta.get("stop_reason")
        if stop_reason is None:
            return None
        chunk = self._chunk({}, FINISH_REASON.get(stop_reason, "stop"))
        if stop_reason == "stop_sequence" and delta.get("stop_sequence") is not None:
            chunk["choices"][0]["stop_reason"] = delta["stop_sequence"]
        return chunk

    def _message_stop(self, payload: Json) -> Json:
        self._require_start()
        self._stopped = True
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = self.usage.pivot()
        return chunk

    def _error(self, payload: Json) -> None:
        error = payload.get("error") or {}
        message = error_message(payload, "stream error")
        raise stream_error(str(error.get("type", "api_error")), message)

    def _ignore(self, payload: Json) -> None:
        return None

    def _require_start(self) -> None:
        if not self._started:
            raise ValueError("an event before message_start")


_HANDLERS: Final[dict[str, Any]] = {
    "message_start": AnthropicStreamTranslator._message_start,
    "content_block_start": AnthropicStreamTranslator._block_start,
    "content_block_delta": AnthropicStreamTranslator._block_delta,
    "content_block_stop": AnthropicStreamTranslator._ignore,
    "message_delta": AnthropicStreamTranslator._message_delta,
    "message_stop": AnthropicStreamTranslator._message_stop,
    "ping": AnthropicStreamTranslator._ignore,
    "error": AnthropicStreamTranslator._error,
}
