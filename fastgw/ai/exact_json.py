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
from typing import Any, Final

import orjson

# The text's digits as "0", anything else as " ": a run of 19 is then one memory search (1 ms a MiB,
# where a regex took 68 ms on a MiB of 18-digit numbers, each digit a start it tried).
_DIGITS: Final = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN: Final = b"0" * 19


def loads(data: bytes) -> Any:
    """``data`` parsed; raises ``orjson.JSONDecodeError`` as orjson does (what it refuses stays refused:
    the standard library reads only what orjson accepted)."""
    doc = orjson.loads(data)
    if _LONG_RUN not in data.translate(_DIGITS):
        return doc
    try:
        return json.loads(data)
    except RecursionError:  # past the interpreter's depth (orjson reads 1024 levels): orjson's reading
        return doc


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON; raises ``orjson.JSONEncodeError`` where neither can write it (nested
    past both libraries' depth: orjson writes 254 levels, the standard library about 990)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (RecursionError, ValueError, TypeError):
            pass
        raise
