"""The answer on its way back to the client through a masking route: the client format wrapped so that
placeholders become the client's own values again, in a whole answer (``render_response``) and in a
stream (``stream_encoder``), where each text field (a choice's content, a tool call's arguments) goes
through a ``StreamRestorer``: at most ``HOLD_MAX`` characters are held back per field, released when a
chunk shows they are no placeholder, when the choice finishes, or when the stream ends.
"""

from __future__ import annotations

from typing import Any

from fastgw.ai.adapter import Json
from fastgw.ai.client_format import ClientFormat, StreamEncoder
from fastgw.ai.guardrails.masking import Masks, StreamRestorer
from fastgw.ai.guardrails.report import GuardrailsReport


class GuardedFormat:
    """A ClientFormat whose answers are restored (and, with ``log_prompts``, copied to the report)."""

    __slots__ = ("inner", "masks", "name", "report")

    def __init__(self, inner: ClientFormat, masks: Masks, report: GuardrailsReport) -> None:
        self.inner = inner
        self.masks = masks
        self.report = report
        self.name = inner.name

    def parse_chat(self, body: bytes) -> Json:
        return self.inner.parse_chat(body)

    def parse_embeddings(self, body: bytes) -> Json:
        return self.inner.parse_embeddings(body)

    def render_embeddings(self, answer: Json, request: Json) -> bytes:
        return self.inner.render_embeddings(answer, request)

    def render_error(
        self, status: int, message: str, kind: str, param: str | None, code: str | None
    ) -> bytes:
        return self.inner.render_error(status, message, kind, param, code)

    def render_response(self, pivot: Json) -> bytes:
        restore = self.masks.restore
        for choice in pivot.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), str):
                message["content"] = restore(message["content"])
                self.report.add_answer(message["content"])
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    function["arguments"] = restore(function["arguments"], True)
        return self.inner.render_response(pivot)

    def stream_encoder(self, request: Json) -> StreamEncoder:
        return RestoringEncoder(self.inner.stream_encoder(request), StreamRestorer(self.masks), self.report)


class RestoringEncoder:
    """A StreamEncoder that restores each chunk's text fields before encoding it."""

    __slots__ = ("inner", "last", "report", "restorer")

    def __init__(self, inner: StreamEncoder, restorer: StreamRestorer, report: GuardrailsReport) -> None:
        self.inner = inner
        self.restorer = restorer
        self.report = report
        self.last: Json = {}  # the last chunk's envelope (id, model, ...), for a closing chunk of our own

    def encode(self, chunk: Json) -> bytes:
        self.last = chunk
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            finished = bool(choice.get("finish_reason"))
            if finished and not isinstance(choice.get("delta"), dict):
                choice["delta"] = {}  # what is held goes out with the finish, before the format closes
            if isinstance(choice.get("delta"), dict):
                self._restore(choice.get("index", 0), choice["delta"], finished)
        return self.inner.encode(chunk)

    def _restore(self, index: Any, delta: Json, finished: bool) -> None:
        restorer = self.restorer
        content = delta.get("content")
        if isinstance(content, str) or (finished and (index, "content") in restorer.held):
            text = restorer.feed((index, "content"), content or "")
            if finished:
                text += restorer.flush((index, "content"))
            delta["content"] = text
            self.report.add_answer(text)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                key = (index, "tool", call.get("index", 0))
                function["arguments"] = restorer.feed(key, function["arguments"])
        if finished:
            held = [k for k in restorer.held if k[0] == index and k[1] == "tool"]
            if held:
                flushed = [{"index": k[2], "function": {"arguments": restorer.flush(k)}} for k in held]
                delta["tool_calls"] = [*(calls if isinstance(calls, list) else ()), *flushed]

    def _flush_all(self) -> bytes:
        """What is still held when the stream ends without a finishing chunk, as one last chunk."""
        if not self.restorer.held:
            return b""
        choices: dict[Any, Json] = {}
        for key in list(self.restorer.held):
            index, field = key[0], key[1]
            delta = choices.setdefault(index, {})
            text = self.restorer.flush(key)
            if field == "content":
                delta["content"] = text
                self.report.add_answer(text)
            else:
                delta.setdefault("tool_calls", []).append({"index": key[2], "function": {"arguments": text}})
        envelope = {k: v for k, v in self.last.items() if k not in ("choices", "usage")}
        chunk = {
            **envelope,
            "choices": [{"index": i, "delta": d, "finish_reason": None} for i, d in choices.items()],
        }
        return self.inner.encode(chunk)

    def finish(self) -> bytes:
        return self._flush_all() + self.inner.finish()

    def error(self, status: int, message: str, kind: str) -> bytes:
        return self._flush_all() + self.inner.error(status, message, kind)
