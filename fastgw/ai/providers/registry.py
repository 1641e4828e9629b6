"""Every provider kind by the name ``[[llm.providers]] kind`` gives: adding a kind is its adapter module
(``providers/<kind>.py``, implementing adapter.Adapter) and one line here."""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import Adapter
from fastgw.ai.providers import anthropic, azure_openai, gemini, openai

ADAPTERS: Final[dict[str, Adapter]] = {
    "openai": openai.OpenAIAdapter(),
    "anthropic": anthropic.ADAPTER,
    "azure_openai": azure_openai.ADAPTER,
    "gemini": gemini.ADAPTER,
}
