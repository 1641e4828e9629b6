"""How detectors scan a text fast enough for the request path (2 KiB masked and restored in tens of
microseconds, in pure Python): a regex never runs over text that cannot match.

Python's regex engine spends several nanoseconds on every character a pattern could start at; only a
literal first character lets it skip ahead at memory-search speed. So a detector says where its matches
can be, and its patterns run only in those windows (``pos``/``endpos``: look-behinds still see the real
neighbours, and each window reaches far enough past a match for its look-aheads):

- ``hints``: substrings one of which every match contains; none in the text, no scan at all;
- ``starts``: where a match may start, found from a literal it holds (an email from its ``@``, scanning
  back over the local part; an injection phrase at its first word): one anchored ``match`` each;
- ``digits``: the match holds a cluster of at least this many digits (cards 13, IBANs 10, phones 8, ...).
  Digit clusters are found once per text, for every such detector, with their digit counts, so a date
  (8 digits) is never scanned for cards: the text is mapped byte for byte to "0" (a digit) and " "
  (anything else), where a regex with a literal first character finds runs of at least ``DIGITS_MIN``
  digits with gaps of at most ``GAP_MAX``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from fastgw.ai.guardrails.folding import fold

# Every digit detector's match has at least this many digits (a UK NINO has six, all others more) ...
DIGITS_MIN: Final = 6
# ... with at most this many other characters between two of them (an IBAN's letter group and a space).
GAP_MAX: Final = 6
# How far a match reaches beyond its first and last digit: an IBAN's country code before, its trailing
# letters after (Malta's end in 7 letters and 3 digits), a NINO's suffix letter.
DIGIT_REACH: Final = 16
_DIGIT_MAP: Final = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_CLUSTER: Final = re.compile(rb"0(?: {0,%d}0){%d,}" % (GAP_MAX, DIGITS_MIN - 1))

Window = tuple[int, int, int]  # start, end, and the digits in it (digit windows; 0 for the others)


class TextView:
    """One text and what the detectors scanning it share: its digit clusters and its lower-cased form,
    each computed at most once."""

    __slots__ = ("_digits", "_lower", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._digits: list[Window] | None = None
        self._lower: str | None = None

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower

    @property
    def digit_windows(self) -> list[Window]:
        """The digit clusters, widened by DIGIT_REACH each side, overlapping ones merged (in order)."""
        if self._digits is None:
            # One byte per character whatever the text (unencodable characters become "?"), so offsets
            # in the mapped bytes are offsets in the text.
            mapped = self.text.encode("latin-1", "replace").translate(_DIGIT_MAP)
            size = len(mapped)
            windows: list[Window] = []
            for m in _CLUSTER.finditer(mapped):
                first, last = m.span()
                digits = mapped.count(48, first, last)
                start, end = max(0, first - DIGIT_REACH), min(size, last + DIGIT_REACH)
                if windows and start <= windows[-1][1]:
                    windows[-1] = (windows[-1][0], end, windows[-1][2] + digits)
                else:
                    windows.append((start, end, digits))
            self._digits = windows
        return self._digits


# Characters from rarest to commonest in prose and code (the rest are commoner still): a hint is looked
# for only where its rarest character occurs.
_RARITY: Final = "`^~|\\{}<>=_#@$%*+[]QXJZKVYWUGBqjxzkvFHPMNOLDRCEASTIwybgfpmucdlhrsnioate"


def rare_char(hint: str) -> str:
    return min(hint, key=lambda c: _RARITY.find(c) % (len(_RARITY) + 1))


# Where matches may start: (position, endpos) pairs for an anchored ``match``; None: scan everything.
Starts = Callable[[TextView], list[tuple[int, int]] | None]


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of sensitive text: its patterns, the validation of a match, where matches can be."""

    name: str  # the config and log name, e.g. "email"
    group: str  # "pii", "national_id", "secrets" (a config key naming all of its detectors), "injection"
    patterns: tuple[re.Pattern[str], ...]
    valid: Callable[[str], bool] | None = None  # None: the pattern alone decides
    hints: tuple[str, ...] = ()  # every match contains one of these ((): no such test)
    rare: tuple[str, ...] = ()  # per hint, its rarest character (``rare_char``): looked for first
    starts: Starts | None = None  # where matches may start, from a literal they hold (None: no such rule)
    digits: int = 0  # scan only around clusters of at least this many digits (0: not a number)

    @property
    def label(self) -> str:
        """The placeholder's label: ``[EMAIL_1]``."""
        return self.name.upper()

    def spans(self, view: TextView) -> list[tuple[int, int]]:
        """Where this detector fires in the text: (start, end) pairs."""
        text = view.text
        if self.hints:
            # A one-character search is memchr (about 20 times faster than a longer needle's): only a
            # text holding a hint's rarest character is searched for the hint. A loop, not any(...): no
            # generator per call on the request path.
            for hint, rare in zip(self.hints, self.rare, strict=True):
                if rare in text and hint in text:
                    break
            else:
                return []
        valid = self.valid
        starts = self.starts(view) if self.starts is not None else None
        if starts is not None:
            found = (p.match(text, start, end) for start, end in starts for p in self.patterns)
            return [m.span() for m in found if m is not None and (valid is None or valid(m.group()))]
        windows = view.digit_windows if self.digits else [(0, len(text), 0)]
        least = self.digits
        return [
            m.span()
            for start, end, digits in windows
            if digits >= least
            for p in self.patterns
            for m in p.finditer(text, start, end)
            if valid is None or valid(m.group())
        ]


def find(
    text: str, detectors: tuple[Detector, ...], rank: Mapping[str, int] | None = None
) -> list[tuple[int, int, Detector]]:
    """Every match of ``detectors`` in ``text``, in order, overlaps resolved: the earliest start wins, and
    of two at the same start the longer (a JWT inside a log line is one secret, not three); with ``rank``
    (detector name -> its action's weight), a match that overlaps a lower-ranked one wins instead (a
    card to mask inside an address only logged is masked, not sent)."""
    folded = fold(text)  # lookalikes and invisible characters read as a model reads them (folding.py)
    view = TextView(text if folded is None else folded.text)
    hits = [(s, e, d) for d in detectors for s, e in d.spans(view)]
    if folded is not None and folded.dropped:
        hits = [(*folded.span(s, e), d) for s, e, d in hits]
    if len(hits) < 2:
        return hits
    hits.sort(key=lambda h: (h[0], -h[1]))
    kept = [hits[0]]
    for hit in hits[1:]:
        last = kept[-1]
        if hit[0] >= last[1]:
            kept.append(hit)
        elif rank is not None and rank[hit[2].name] > rank[last[2].name]:
            kept[-1] = hit  # starts at or after ``last``, so clear of the one before it too
    return kept
