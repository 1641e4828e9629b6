"""The client formats the llm handler speaks, by name: ``openai`` (Chat Completions, embeddings,
models) and ``anthropic`` (Messages)."""

from __future__ import annotations

from typing import Final

from fastgw.ai.client_format import ClientFormat
from fastgw.ai.formats import anthropic_format, openai_format

FORMATS: Final[dict[str, ClientFormat]] = {
    "openai": openai_format.FORMAT,
    "anthropic": anthropic_format.FORMAT,
}
