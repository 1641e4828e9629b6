"""JSON whose integers keep every digit, for prompt APIs: a client's 25-digit order number is a number in
its body and must reach the template as written, and so must a model's answer reach the client.

orjson, used everywhere else (it is faster), reads an integer past 64 bits as a float
(1.2345678901234568e+29: digits lost, silently) and refuses to write one. The standard library's json
keeps them exact; it is used only for a document that may hold one, told by a run of 19 digits or more
(-2**63 - 1 has 19; a long run of digits inside a string or a fraction costs the slower parse, nothing
else).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

_LONG_DIGITS: Final = re.compile(rb"\d{19,}")


def loads(data: bytes) -> Any:
    """``data`` parsed; raises ``orjson.JSONDecodeError`` as orjson does (what it refuses stays refused:
    the standard library reads only what orjson accepted)."""
    doc = orjson.loads(data)
    if _LONG_DIGITS.search(data) is None:
        return doc
    try:
        return json.loads(data)
    except RecursionError:  # nested past the interpreter's limit (orjson reads 1024 levels)
        return doc


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON; raises ``orjson.JSONEncodeError`` where neither can write it (nested
    past both libraries' depth)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        except (RecursionError, ValueError, TypeError):
            pass
        raise
