"""Gemini's answers as pivot (OpenAI Chat Completions) responses and stream chunks.

Reference: https://ai.google.dev/api/generate-content#generatecontentresponse (candidates, finishReason,
promptFeedback, usageMetadata). ``streamGenerateContent?alt=sse`` sends the same object as SSE events,
one per piece of the answer: text arrives as deltas, a function call whole, and the event that ends a
candidate carries its ``finishReason``; ``usageMetadata`` grows as it goes and the last one is final.
There is no ``[DONE]``: a stream is complete when every candidate has finished. Pure.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import orjson

from fastgw.ai.adapter import Json, ProviderError, Usage
from fastgw.ai.provider_errors import error_message, status_error
from fastgw.codec.sse import DEFAULT_MAX_EVENT_SIZE, SseError, SseParser

# Gemini's finishReason -> OpenAI's finish_reason (a candidate that called a function ends "tool_calls").
FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "OTHER": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}


def malformed(what: str) -> ProviderError:
    return ProviderError(502, f"the gemini provider sent a malformed answer: {what}", kind="bad_response")


def _count(value: Any) -> int:
    """A token count as sent, or 0 where it is absent or not a count."""
    return value if type(value) is int and value >= 0 else 0


def usage_of(metadata: Any, usage: Usage) -> None:
    """``usageMetadata`` into ``usage``, exactly: thoughts are reasoning tokens and, as in OpenAI's
    accounting, part of the completion; tool-use prompt tokens are part of the prompt (so the total is
    Gemini's ``totalTokenCount``)."""
    if not isinstance(metadata, dict):
        return
    get = metadata.get
    thoughts = _count(get("thoughtsTokenCount"))
    usage.prompt_tokens = _count(get("promptTokenCount")) + _count(get("toolUsePromptTokenCount"))
    usage.completion_tokens = _count(get("candidatesTokenCount")) + thoughts
    usage.cached_tokens = _count(get("cachedContentTokenCount"))
    usage.reasoning_tokens = thoughts
    usage.reported = True


class _Calls:
    """Tool call ids: Gemini gives none (or its own ``id``); ours are unique within the answer."""

    __slots__ = ("_prefix", "count")

    def __init__(self, response_id: str) -> None:
        self._prefix = f"call_{response_id}_" if response_id else f"call_{os.urandom(8).hex()}_"
        self.count = 0

    def tool_call(self, call: Json, signature: Any) -> Json:
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"{self._prefix}{self.count}"
        self.count += 1
        if not isinstance(call.get("name"), str):
            raise malformed("a functionCall without a name")
        out: Json = {
            "id": call_id,
            "type": "function",
            "function": {"name": call["name"], "arguments": orjson.dumps(call.get("args") or {}).decode()},
        }
        if isinstance(signature, str):  # handed back on the next turn (gemini_request reads it)
            out["extra_content"] = {"google": {"thought_signature": signature}}
        return out


def split_parts(candidate: Json, calls: _Calls) -> tuple[str | None, str | None, list[Json]]:
    """A candidate's parts as (text, thought text, tool calls)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[Json] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            raise malformed("a part is not an object")
        if isinstance(text := part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(text)
        elif isinstance(call := part.get("functionCall"), dict):
            tool_calls.append(calls.tool_call(call, part.get("thoughtSignature")))
    return ("".join(texts) if texts else None), ("".join(thoughts) if thoughts else None), tool_calls


def candidate_index(candidate: Json, position: int) -> int:
    index = candidate.get("index", position)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise malformed("a candidate's index is not a non-negative integer")
    return index


def finish_reason(candidate: Json, called: bool) -> str | None:
    reason = candidate.get("finishReason")
    if not isinstance(reason, str):
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def _decode(body: bytes | str) -> Json:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed("not JSON" if body.strip() else "an empty body") from None
    if not isinstance(answer, dict):
        raise malformed("not a JSON object")
    if isinstance(error := answer.get("error"), dict):
        raise in_band_error(error)
    return answer


def in_band_error(error: Json) -> ProviderError:
    """Google's error object in a 200 (a whole answer, or an event of a stream), judged by the HTTP code
    it carries, as that status would be: 429, 408 and 5xx fall back to the next target before the answer
    began; another 4xx is the request's own and goes back to the client. Without a code it is the
    provider's answer, not retried, as OpenAI's and Anthropic's error objects in a 200."""
    message = "gemini: " + error_message({"error": error}, "error")
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return status_error(code, message, None)
    return ProviderError(502, message, kind="provider_error")


def _blocked(answer: Json) -> bool:
    feedback = answer.get("promptFeedback")
    return isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str)


def chat_completion(body: bytes, created: int | None = None) -> tuple[Json, Usage]:
    """A ``generateContent`` answer as a pivot ``chat.completion``."""
    answer = _decode(body)
    candidates = answer.get("candidates", [])  # none at all when the prompt was blocked
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise malformed("candidates is not an array of objects")
    if not candidates and not _blocked(answer):
        raise malformed("no candidates")
    response_id = answer.get("responseId")
    response_id = response_id if isinstance(response_id, str) else ""
    calls = _Calls(response_id)
    choices: list[Json] = []
    for position, candidate in enumerate(candidates):
        text, thoughts, tool_calls = split_parts(candidate, calls)
        message: Json = {"role": "assistant", "content": text}
        if thoughts is not None:
            message["reasoning_content"] = thoughts
        if tool_calls:
            message["tool_calls"] = tool_calls
        reason = finish_reason(candidate, bool(tool_calls))
        index = candidate_index(candidate, position)
        choices.append(
            {"index": index, "message": message, "finish_reason": reason or "stop", "logprobs": None}
        )
    if not choices:  # the prompt itself was blocked: an empty, filtered answer
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter",
                "logprobs": None,
            }
        )
    usage = Usage()
    usage_of(answer.get("usageMetadata"), usage)
    completion: Json = {
        "id": f"chatcmpl-{response_id or os.urandom(12).hex()}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": answer.get("modelVersion", ""),
        "choices": choices,
    }
    if usage.reported:
        completion["usage"] = usage.pivot()
    return completion, usage


class GeminiStreamTranslator:
    """``streamGenerateContent?alt=sse`` events as pivot ``chat.completion.chunk`` objects.

    Each event becomes at most one chunk per candidate, as soon as its empty line arrives; the usage
    chunk (``choices: []``, as OpenAI sends it for ``stream_options.include_usage``) comes from ``end()``
    once the provider's last ``usageMetadata`` is known. The handler drops it when the client did not
    ask for usage.
    """

    __slots__ = (
        "_called",
        "_calls",
        "_created",
        "_finished",
        "_id",
        "_model",
        "_parser",
        "_started",
        "usage",
    )

    def __init__(self, created: int | None = None, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._parser = SseParser(max_event_size)
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._model = ""
        self._calls: _Calls | None = None
        self._started: set[int] = set()  # candidates whose first chunk (with the role) went out
        self._finished: set[int] = set()
        self._called: dict[int, int] = {}  # candidate -> tool calls so far (a delta's tool_calls index)
        self.usage = Usage()

    def feed(self, data: bytes) -> list[Json]:
        try:
            events = self._parser.feed(data)
        except SseError as exc:
            raise ProviderError(
                502, f"the gemini stream was cut off: {exc.detail}", kind="bad_stream"
            ) from None
        chunks: list[Json] = []
        try:
            for event in events:
                chunks.extend(self._event(event.data))
        except ProviderError as exc:
            exc.completed = chunks  # the chunks before the broken event still go out
            raise
        return chunks

    def _event(self, data: str) -> list[Json]:
        answer = _decode(data)
        if self._calls is None:
            response_id = answer.get("responseId")
            response_id = response_id if isinstance(response_id, str) else ""
            self._id = f"chatcmpl-{response_id or os.urandom(12).hex()}"
            self._calls = _Calls(response_id)
            model = answer.get("modelVersion")
            self._model = model if isinstance(model, str) else ""
        usage_of(answer.get("usageMetadata"), self.usage)
        candidates = answer.get("candidates")
        if candidates is None:
            if _blocked(answer):
                self._started.add(0)
                self._finished.add(0)
                return [
                    self._chunk(
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": "content_filter",
                            "logprobs": None,
                        }
                    )
                ]
            return []
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise malformed("candidates is not an array of objects")
        return [self._candidate(position, candidate) for position, candidate in enumerate(candidates)]

    def _candidate(self, position: int, candidate: Json) -> Json:
        assert self._calls is not None
        index = candidate_index(candidate, position)
        first_call = self._called.get(index, 0)
        text, thoughts, tool_calls = split_parts(candidate, self._calls)
        delta: Json = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if thoughts is not None:
            delta["reasoning_content"] = thoughts
        if tool_calls:
            delta["tool_calls"] = [{"index": first_call + n, **call} for n, call in enumerate(tool_calls)]
            self._called[index] = first_call + len(tool_calls)
        reason = finish_reason(candidate, index in self._called)
        if reason is not None:
            self._finished.add(index)
        return self._chunk({"index": index, "delta": delta, "finish_reason": reason, "logprobs": None})

    def _chunk(self, choice: Json) -> Json:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [choice],
        }

    def end(self) -> list[Json]:
        self._parser.end()
        if not self._finished or self._finished != self._started:
            raise ProviderError(
                502, "the gemini stream ended before the answer was finished", kind="truncated_stream"
            )
        if not self.usage.reported:
            return []
        return [
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": self.usage.pivot(),
            }
        ]
