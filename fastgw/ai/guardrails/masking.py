"""Reversible masking: what a detector found in the prompt is replaced by a placeholder (``[EMAIL_1]``)
before the provider sees it, and the placeholder is replaced back by the original in the answer, whole or
streamed, so the client reads its own data and the provider never does.

One ``Masks`` per request: the same value gets the same placeholder every time it occurs (the model can
refer to "[EMAIL_1]" consistently), numbered per label. A placeholder the model writes that this request
did not issue is left as it is. In a stream a placeholder may arrive split across chunks ("[EMA",
"IL_1]"): ``StreamRestorer`` holds back a trailing piece that could still become one, at most
``HOLD_MAX`` characters, and releases it as soon as it cannot (or at the end of the stream).
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from fastgw.ai.guardrails.detectors import DETECTORS
from fastgw.ai.guardrails.scan import Detector, find

# Placeholders are numbered per label per request; a prompt with more distinct values of one kind than
# this is refused rather than masked with ambiguous names.
PER_LABEL_MAX: Final = 9999
LABEL_MAX: Final = max(len("PROMPT_INJECTION"), *(len(d.label) for d in DETECTORS.values()))
# The longest placeholder, "[" + label + "_" + 4 digits + "]": the look-behind never holds more.
HOLD_MAX: Final = LABEL_MAX + 7
# Up to this many placeholders, an answer is restored by one ``str.replace`` each (a pass over the text
# each); past it, by one substitution.
REPLACE_MAX: Final = 8
PLACEHOLDER: Final = re.compile(r"\[[A-Z][A-Z_]*_\d{1,4}\]")
_PLACEHOLDER_CHARS: Final = re.compile(r"[A-Z_\d]+")  # what a placeholder holds between its brackets
# A tail that is the beginning of a placeholder and may still be completed by the next chunk.
_OPEN_TAIL: Final = re.compile(r"\[(?:[A-Z][A-Z_]*\d{0,4})?\Z")


class TooManyValuesError(Exception):
    """More than PER_LABEL_MAX distinct values of one kind in one prompt."""


class Masks:
    """One request's placeholders and the values they stand for."""

    __slots__ = ("by_placeholder", "by_value", "counts", "joinable", "taken")

    def __init__(self) -> None:
        self.by_placeholder: dict[str, str] = {}
        self.by_value: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}
        self.taken: set[str] = set()  # placeholder-like text the client wrote itself: never issued
        # A value could make a placeholder's text with what surrounds it, or hold one ("KEY", a masked
        # phrase, in "[AWS_ACCESS_" + "[PROMPT_INJECTION_1]" + "_1]"): restored by substitution only.
        self.joinable = False

    def reserve(self, text: str) -> None:
        """Keep the placeholders ``text`` already holds from being issued, so that an answer quoting the
        client's own "[EMAIL_1]" is never turned into a value."""
        if "[" in text:
            self.taken.update(PLACEHOLDER.findall(text))

    def placeholder(self, label: str, value: str) -> str:
        key = (label, value)
        found = self.by_value.get(key)
        if found is not None:
            return found
        n = self.counts.get(label, 0) + 1
        name = f"[{label}_{n}]"
        while name in self.taken:
            n += 1
            name = f"[{label}_{n}]"
        if n > PER_LABEL_MAX:
            raise TooManyValuesError(label)
        self.counts[label] = n
        self.by_value[key] = name
        self.by_placeholder[name] = value
        if "[" in value or "]" in value or _PLACEHOLDER_CHARS.fullmatch(value):
            self.joinable = True
        return name

    def mask(self, text: str, hits: list[tuple[int, int, Detector]]) -> str:
        """``text`` with each hit replaced by its placeholder."""
        pieces = []
        at = 0
        for start, end, detector in hits:
            pieces.append(text[at:start])
            pieces.append(self.placeholder(detector.label, text[start:end]))
            at = end
        pieces.append(text[at:])
        return "".join(pieces)

    def restore(self, text: str, json_string: bool = False) -> str:
        """``text`` with this request's placeholders replaced by their values; ``json_string``: ``text``
        is JSON (a tool call's arguments), where a value goes back escaped as the body of a string, so a
        key with its line breaks or a quoted phrase leaves the JSON valid."""
        if not self.by_placeholder or "[" not in text:
            return text
        table = self.by_placeholder
        if json_string:
            return PLACEHOLDER.sub(lambda m: _json_body(table.get(m.group(), m.group())), text)
        if len(table) <= REPLACE_MAX and not self.joinable:
            # The same result as the substitution below: a placeholder's text is found only where the
            # pattern matches (nothing it matches holds a "["), and no value put in makes one: a match
            # that took in a value's characters would start or end inside it (at a "[" or "]", which it
            # has not) or hold all of it (it has a character no placeholder has). A replace per
            # placeholder is C-speed and allocates only where one occurs (7 times faster on an answer
            # with a few).
            for name, value in table.items():
                text = text.replace(name, value)
            return text
        return PLACEHOLDER.sub(lambda m: table.get(m.group(), m.group()), text)


def _json_body(value: str) -> str:
    """``value`` as the inside of a JSON string: quotes, backslashes and control characters escaped."""
    return orjson.dumps(value)[1:-1].decode()


class StreamRestorer:
    """Restores placeholders in text that arrives in pieces, per stream field (``key``: a choice's
    content, a tool call's arguments: ``(index, "tool", call)``, restored as JSON), holding back at most
    HOLD_MAX characters per field."""

    __slots__ = ("held", "masks")

    def __init__(self, masks: Masks) -> None:
        self.masks = masks
        self.held: dict[tuple[Any, ...], str] = {}

    def feed(self, key: tuple[Any, ...], text: str) -> str:
        """What of ``text`` (after what was held for ``key``) can be released, restored."""
        held = self.held.pop(key, "")
        if held:
            text = held + text
        start = text.rfind("[", max(0, len(text) - HOLD_MAX))
        if start >= 0 and _OPEN_TAIL.match(text, start):
            self.held[key] = text[start:]
            text = text[:start]
        return self.masks.restore(text, key[1:2] == ("tool",))

    def flush(self, key: tuple[Any, ...]) -> str:
        """The text held for ``key``, restored as it is: the field ended."""
        return self.masks.restore(self.held.pop(key, ""), key[1:2] == ("tool",))


def redact(text: str, detectors: tuple[Detector, ...]) -> str:
    """``text`` with every match replaced by its bare label (``[EMAIL]``): for logs, irreversible."""
    hits = find(text, detectors)
    if not hits:
        return text
    pieces = []
    at = 0
    for start, end, detector in hits:
        pieces.append(text[at:start])
        pieces.append(f"[{detector.label}]")
        at = end
    pieces.append(text[at:])
    return "".join(pieces)
