"""What the detectors read: a text folded to the characters a model reads through.

A pattern for an email or a card number misses ``alice\u200b@example.com``, ``\uff14\uff11\uff11\uff11 ...``
(fullwidth digits), ``4111\u00a01111...`` or a phone number in Arabic-Indic digits, while the model reads
each as the plain one; and a prompt injection can hide in Unicode tag characters (U+E0020-U+E007E, "ASCII
smuggling"), invisible to a reviewer and readable by a model. Before scanning, invisible characters are
dropped and lookalikes mapped to ASCII: fullwidth forms, other decimal digits, Unicode spaces and dashes,
tag characters. Matches are found in the folded text and their spans mapped back to the original one, so
masking replaces the original characters (invisible ones inside the match included).

Cost: none for ASCII text (``str.isascii``), about a microsecond for other Latin-1 text (accented
European languages); otherwise one regex search for a foldable character (~30 us on a 2 KiB Chinese
prompt), and a substitution of each foldable one when there is one.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache
from typing import Final

# Rendered as nothing, or only steering direction or joining: dropped. (Soft hyphen, combining grapheme
# joiner, Arabic letter mark, Hangul fillers, Khmer vowel inherents, Mongolian vowel separator, zero-width
# space / non-joiner / joiner, LRM / RLM, bidi embeddings and isolates, word joiner and invisible
# operators, deprecated format characters, variation selectors, BOM, halfwidth Hangul filler, tag
# begin and cancel.)
_INVISIBLE: Final = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
    "\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0\U000e0001\U000e007f"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
_SPACES: Final = (
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
)
_DASHES: Final = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"


# Decimal digits of other scripts a value is written in, by their zero: Arabic-Indic, Extended
# Arabic-Indic (Persian, Urdu), Devanagari, Bengali, Thai; and the five mathematical digit sets. Not every
# Nd digit of Unicode: each range is one more step of the check every non-ASCII text pays (the whole of
# Nd, 60-odd ranges, made it 7 times slower on a 2 KiB Chinese prompt: 180 us).
_DIGIT_ZEROS: Final = (0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6)


# Fullwidth forms a value is written with (digits, letters, + - . @ _); not the fullwidth punctuation of
# Chinese and Japanese prose (commas, colons, brackets: U+FF01 and the like), on every such prompt and in
# no value.
_FULLWIDTH: Final = (0xFF0B, 0xFF0D, 0xFF0E, *range(0xFF10, 0xFF1A), *range(0xFF20, 0xFF3B), 0xFF3F)
_FULLWIDTH_LOWER: Final = range(0xFF41, 0xFF5B)


@cache
def _table() -> dict[str, str]:
    """Each foldable character and what it reads as ("": dropped), built on first use (only routes with
    guardrails pay for it)."""
    table = dict.fromkeys(_INVISIBLE, "")
    table.update(dict.fromkeys(_SPACES, " "))
    table.update(dict.fromkeys(_DASHES, "-"))
    table.update((chr(c), chr(c - 0xFEE0)) for c in (*_FULLWIDTH, *_FULLWIDTH_LOWER))
    table.update((chr(c), chr(c - 0xE0000)) for c in range(0xE0020, 0xE007F))  # tag characters
    for zero in _DIGIT_ZEROS:
        table.update((chr(zero + digit), str(digit)) for digit in range(10))
    return table


def _class(codes: list[int]) -> str:
    """A regex character class of ``codes``, as ranges."""
    codes = sorted(codes)
    parts: list[str] = []
    start = prev = codes[0]
    for code in [*codes[1:], -2]:
        if code != prev + 1:
            parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
            start = code
        prev = code
    return "[" + "".join(parts) + "]"


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """A foldable character; an invisible one (dropped: the spans after it move)."""
    table = _table()
    return (
        re.compile(_class([ord(c) for c in table])),
        re.compile(_class([ord(c) for c, v in table.items() if not v])),
    )


class Folded:
    """A text folded for scanning, and how to map a span in it back to the original."""

    __slots__ = ("_kept_before", "dropped", "text")

    def __init__(self, text: str, dropped: list[int]) -> None:
        self.text = text
        self.dropped = dropped  # the original positions of the dropped characters, in order
        # Per dropped character, how many kept ones come before it (non-decreasing): a folded position's
        # dropped predecessors are found by bisection, so mapping h matches back costs h log k, not h x k
        # (a prompt of a MiB of zero-width characters would otherwise cost hours).
        self._kept_before = [at - index for index, at in enumerate(dropped)]

    def original(self, position: int) -> int:
        """The original position of the folded text's character at ``position``."""
        return position + bisect_right(self._kept_before, position)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the folded span ``[start, end)`` (non-empty)."""
        return self.original(start), self.original(end - 1) + 1


def fold(text: str) -> Folded | None:
    """``text`` folded, or None when there is nothing to fold (the common case: no cost but a check)."""
    if text.isascii():
        return None
    try:
        text.encode("latin-1")  # a copy of one byte a character, or a failure at the first beyond
    except UnicodeEncodeError:
        pass
    else:  # accented Latin (most European text): only a no-break space or a soft hyphen can fold
        if "\u00a0" not in text and "\u00ad" not in text:
            return None
        dropped = []
        at = text.find("\u00ad")
        while at >= 0:
            dropped.append(at)
            at = text.find("\u00ad", at + 1)
        return Folded(text.replace("\u00a0", " ").replace("\u00ad", ""), dropped)
    foldable, invisible = _patterns()
    if foldable.search(text) is None:  # ~15 ns a character
        return None
    table = _table()
    folded = foldable.sub(lambda m: table[m.group()], text)  # a call per foldable character only
    return Folded(folded, [m.start() for m in invisible.finditer(text)])
