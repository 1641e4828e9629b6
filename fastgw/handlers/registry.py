"""Every handler kind by the name a route's ``kind`` gives: adding a kind is its module and one line here."""

from __future__ import annotations

from fastgw.ai import kind as llm
from fastgw.ai import prompt_kind
from fastgw.handlers import static
from fastgw.handlers.kind import HandlerKind

KINDS: dict[str, HandlerKind] = {
    "static": static.KIND,
    "llm": llm.KIND,
    "prompt_api": prompt_kind.KIND,  # after llm: its section reads the compiled [llm]
}
