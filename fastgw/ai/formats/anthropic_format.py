"""The Anthropic Messages client format as the llm handler uses it (client_format.ClientFormat), over
``anthropic_request.py`` and ``anthropic_response.py``."""

from __future__ import annotations

from typing import Final

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json
from fastgw.ai.formats.anthropic_request import parse_messages_request
from fastgw.ai.formats.anthropic_response import (
    AnthropicStreamWriter,
    error_body,
    error_event,
    render_message,
)


class AnthropicStreamEncoder:
    __slots__ = ("_writer",)

    def __init__(self, model: str) -> None:
        self._writer = AnthropicStreamWriter(model)

    def encode(self, chunk: Json) -> bytes:
        return self._writer.feed(chunk)

    def finish(self) -> bytes:
        return self._writer.end()

    def error(self, status: int, message: str, kind: str) -> bytes:
        return error_event(status, message)


class AnthropicFormat:
    name = "anthropic"

    def parse_chat(self, body: bytes) -> Json:
        return parse_messages_request(body)

    def parse_embeddings(self, body: bytes) -> Json:
        raise InvalidRequestError("the Anthropic API has no embeddings endpoint")

    def render_response(self, pivot: Json) -> bytes:
        return orjson.dumps(render_message(pivot))

    def render_embeddings(self, answer: Json, request: Json) -> bytes:
        return orjson.dumps(answer)  # never reached: parse_embeddings refuses every request

    def stream_encoder(self, request: Json) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(str(request.get("model", "")))

    def render_error(
        self, status: int, message: str, kind: str, param: str | None, code: str | None
    ) -> bytes:
        return error_body(status, message)


FORMAT: Final = AnthropicFormat()
