"""How detectors scan a text fast enough for the request path (2 KiB masked and restored in tens of
microseconds): a regex never runs over text that cannot match.

Python's regex engine spends several nanoseconds on every character a pattern could start at, and a few
hundred on each call; only a literal first character lets it skip ahead at memory-search speed. So a
detector says where its matches can be, and its patterns run only in those windows (``pos``/``endpos``:
look-behinds still see the real neighbours, and each window reaches far enough past a match for its
look-aheads):

- ``hints``: substrings one of which every match contains; none in the text, no scan at all;
- ``token_run``: every match holds TOKEN_RUN key characters in a row (cloud and provider keys): a text
  without such a run (prose) is not scanned for them;
- ``starts``: where a match may start, found from a literal it holds (an email from its ``@``, scanning
  back over the local part; an injection phrase at its first word): one anchored ``match`` each;
- ``digits``: the match holds a cluster of at least this many digits (cards 13, IBANs 6, phones 8, ...).
  Digit clusters are found once per text, for every such detector, with their digit counts, so a date
  (8 digits) is never scanned for cards: the text is mapped byte for byte to "0" (a digit) and " "
  (anything else), where a regex with a literal first character finds runs of at least ``DIGITS_MIN``
  digits with gaps of at most ``GAP_MAX``. Each detector scans around a cluster only as far as its
  matches reach (``reach``), and each of its patterns only in a text holding the character and in a
  window holding the digits its matches hold (``Pattern``).

Compiled with mypyc (fastgw/native.py): the loops here cost more interpreted than the regex work.
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
# How far a match may reach beyond its first and last digit unless its detector says less (``reach``): an
# IBAN's country code before, its trailing letters after (Malta's end in 7 letters and 3 digits).
DIGIT_REACH: Final = 16
# Digits read as "0", ASCII capitals as "A", anything else as " ": digit clusters are found in this
# "shape" of the text, and a pattern needing two capitals before its digits (an IBAN's country code) is
# not searched in a window whose shape lacks them.
_SHAPE_MAP: Final = bytes(48 if 48 <= b <= 57 else 65 if 65 <= b <= 90 else 32 for b in range(256))
# The first DIGITS_MIN digits written out and each gap possessive (a gap holds no digit, so that changes
# no match): a run of digits too short to be a cluster is given up at the first step that fails,
# with no repeat to set up for each attempt (the regex tries one at every digit: half the time on prose
# with dates and prices).
_CLUSTER: Final = re.compile(
    b"0" + b"[^0]{0,%d}+0" % GAP_MAX * (DIGITS_MIN - 1) + b"(?:[^0]{0,%d}+0)*+" % GAP_MAX
)

# Prose has no 16 letters, digits, "_", "+", "/" or "-" in a row, and every cloud or provider key is such
# a run: one search for one decides for four detectors (each had a substring or two to look for).
TOKEN_RUN: Final = 16
_TOKEN_MAP: Final = bytes(
    97 if 48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"_+/-" else 32 for b in range(256)
)
_TOKEN_NEEDLE: Final = b"a" * TOKEN_RUN

Window = tuple[int, int, int]  # start, end, and the digits in it
# A pattern, a character its every match holds ("": none) and the digits its every match holds (0: no
# such count): a text without the character, or a window with fewer digits, is not searched with it.
Pattern = tuple[re.Pattern[str], str, int, bytes]
# Characters a match may hold before its first digit, and after its last digit plus what its look-ahead
# reads (a pattern searched up to ``endpos`` sees nothing past it; its look-behind sees the real text).
Reach = tuple[int, int]


class TextView:
    """One text and what the detectors scanning it share: its digit clusters and its lower-cased form,
    each computed at most once."""

    __slots__ = ("_digits", "_lower", "_token_run", "shape", "text", "wide")

    def __init__(self, text: str) -> None:
        self.text = text
        self.shape = b""  # set with the digit windows
        # Set with them too: the text has characters past Latin-1, among which decimal digits folding.py
        # leaves as they are (Gujarati, Tamil, Khmer, ...): ``\d`` matches them, the shape does not count
        # them. Such a text is scanned as widely as any match can reach, whatever a detector's own reach
        # and its patterns' digits and shapes say (a phone number ending in Gujarati digits was cut after
        # its last ASCII one).
        self.wide = False
        self._digits: list[Window] | None = None
        self._lower: str | None = None
        self._token_run: bool | None = None

    @property
    def token_run(self) -> bool:
        """Whether the text holds TOKEN_RUN token characters in a row (a key's body can be there)."""
        if self._token_run is None:
            mapped = self.text.encode("latin-1", "replace").translate(_TOKEN_MAP)
            self._token_run = _TOKEN_NEEDLE in mapped
        return self._token_run

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower

    @property
    def digit_windows(self) -> list[Window]:
        """The digit clusters, those within 2 x DIGIT_REACH of each other merged (in order): (first digit,
        past the last one, digits). Each detector widens them by its own ``reach``."""
        if self._digits is None:
            # One byte per character whatever the text (unencodable characters become "?"), so offsets
            # in the mapped bytes are offsets in the text.
            text = self.text
            mapped = self.shape = text.encode("latin-1", "replace").translate(_SHAPE_MAP)
            self.wide = not text.isascii() and max(text) > "\xff"
            windows: list[Window] = []
            for m in _CLUSTER.finditer(mapped):
                first, last = m.span()
                digits = mapped.count(48, first, last)
                if windows and first - windows[-1][1] <= 2 * DIGIT_REACH:
                    windows[-1] = (windows[-1][0], last, windows[-1][2] + digits)
                else:
                    windows.append((first, last, digits))
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
    patterns: tuple[Pattern, ...]
    valid: Callable[[str], bool] | None = None  # None: the pattern alone decides
    hints: tuple[str, ...] = ()  # every match contains one of these ((): no such test)
    gates: tuple[tuple[str, str], ...] = ()  # per hint, (its rarest character (``rare_char``), it)
    starts: Starts | None = None  # where matches may start, from a literal they hold (None: no such rule)
    digits: int = 0  # scan only around clusters of at least this many digits (0: not a number)
    reach: Reach = (DIGIT_REACH, DIGIT_REACH)  # with ``digits``: how far around a cluster to scan
    token_run: bool = False  # every match holds TOKEN_RUN token characters in a row (a key's body)

    @property
    def label(self) -> str:
        """The placeholder's label: ``[EMAIL_1]``."""
        return self.name.upper()

    def spans(self, view: TextView) -> list[tuple[int, int]]:
        """Where this detector fires in the text: (start, end) pairs. Plain loops and ``search``, not
        comprehensions and ``finditer``: each of those allocates (a frame, an iterator), which costs more
        than the regex's work on a prose window."""
        text = view.text
        if self.token_run and not view.token_run:
            return []
        if self.hints:
            # A one-character search is memchr (about 20 times faster than a longer needle's): only a
            # text holding a hint's rarest character is searched for the hint.
            for rare, hint in self.gates:
                if rare in text and hint in text:
                    break
            else:
                return []
        valid = self.valid
        out: list[tuple[int, int]] = []
        starts = self.starts(view) if self.starts is not None else None
        if starts is not None:
            for start, end in starts:
                for p, _, _, _ in self.patterns:
                    m = p.match(text, start, end)
                    if m is not None and (valid is None or valid(m.group())):
                        out.append(m.span())
            return out
        windows = view.digit_windows if self.digits else [(0, len(text), 0)]
        # Each window widened by this detector's reach: the regex engine tries a pattern at every position
        # it is given (a date's window of 42 characters instead of 13 made the phone detector 3 times
        # dearer).
        least = self.digits
        wide = view.wide
        before, after = (DIGIT_REACH, DIGIT_REACH) if wide else self.reach if least else (0, 0)
        size = len(text)
        shape = view.shape
        for p, needs, p_digits, shape_needs in self.patterns:
            if needs and needs not in text:
                continue
            shaped = b"" if wide else shape_needs
            fewest = p_digits if p_digits > least and not wide else least
            for first, last, digits in windows:
                if digits < fewest:
                    continue
                at = first - before if first > before else 0
                end = last + after if last + after < size else size
                if shaped and shape.find(shaped, at, end) < 0:
                    continue
                while (m := p.search(text, at, end)) is not None:
                    if valid is None or valid(m.group()):
                        out.append(m.span())
                    at = m.end() if m.end() > m.start() else m.end() + 1
        return out


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
