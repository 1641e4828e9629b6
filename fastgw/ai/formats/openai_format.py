"""The OpenAI client format as the llm handler uses it (client_format.ClientFormat), over the parsing
and rendering functions of ``openai.py``."""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import Json
from fastgw.ai.formats import openai


class OpenAIStreamEncoder:
    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage  # the usage-only chunk goes out only when the client asked

    def encode(self, chunk: Json) -> bytes:
        return openai.render_chunk(chunk, self.include_usage)

    def finish(self) -> bytes:
        return openai.DONE

    def error(self, status: int, message: str, kind: str) -> bytes:
        return b"data: " + openai.error_body(status, message, None, kind) + b"\n\n"


class OpenAIFormat:
    name = "openai"

    def parse_chat(self, body: bytes) -> Json:
        return openai.parse_chat_request(body)

    def parse_embeddings(self, body: bytes) -> Json:
        return openai.parse_embeddings_request(body)

    def render_response(self, pivot: Json) -> bytes:
        return openai.render_response(pivot)

    def render_embeddings(self, answer: Json, request: Json) -> bytes:
        return openai.render_embeddings(answer, request.get("encoding_format"))

    def stream_encoder(self, request: Json) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(openai.wants_usage(request))

    def render_error(
        self, status: int, message: str, kind: str, param: str | None, code: str | None
    ) -> bytes:
        return openai.error_body(status, message, param, code)


FORMAT: Final = OpenAIFormat()
