"""What the llm handler needs from a client format (``formats/openai.py``, ``formats/anthropic.py``):
the client's request as a pivot request, and pivot answers, stream chunks and errors in the client's
own shape, so its SDK parses them."""

from __future__ import annotations

from typing import Protocol

from fastgw.ai.adapter import Json


class StreamEncoder(Protocol):
    """Pivot chunks of one streamed answer as the client format's SSE bytes (stateful: Anthropic's
    content blocks open and close as the chunks go)."""

    def encode(self, chunk: Json) -> bytes: ...

    def finish(self) -> bytes:
        """The closing events (OpenAI ``data: [DONE]``, Anthropic ``message_stop``)."""
        ...

    def error(self, status: int, message: str, kind: str) -> bytes:
        """An error event for a stream already under way."""
        ...


class ClientFormat(Protocol):
    name: str  # "openai" or "anthropic": which SDKs speak it

    def parse_chat(self, body: bytes) -> Json:
        """The client's chat request as a pivot request; InvalidRequestError with the parameter named."""
        ...

    def parse_embeddings(self, body: bytes) -> Json:
        """An embeddings request (OpenAI's format only; others raise InvalidRequestError)."""
        ...

    def render_response(self, pivot: Json) -> bytes:
        """A pivot ``chat.completion`` (usage included) as the client's response body."""
        ...

    def render_embeddings(self, answer: Json, request: Json) -> bytes:
        """A pivot embeddings list as the response body, vectors encoded as ``request`` asked."""
        ...

    def stream_encoder(self, request: Json) -> StreamEncoder:
        """The encoder of one streamed answer to ``request`` (the pivot request: what it asked for,
        e.g. OpenAI's ``stream_options.include_usage``)."""
        ...

    def render_error(
        self, status: int, message: str, kind: str, param: str | None, code: str | None
    ) -> bytes:
        """An error body in the client's shape (the status goes in the head)."""
        ...
