"""Every provider kind by the name ``[[llm.providers]] kind`` gives: adding a kind is its adapter module
(``providers/<kind>.py``, implementing adapter.Adapter) and one line here."""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import Adapter

ADAPTERS: Final[dict[str, Adapter]] = {}
