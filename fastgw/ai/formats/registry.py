"""The client formats the llm handler speaks, by name: ``openai`` (Chat Completions, embeddings,
models) and ``anthropic`` (Messages)."""

from __future__ import annotations

from typing import Final

from fastgw.ai.client_format import ClientFormat

FORMATS: Final[dict[str, ClientFormat]] = {}
