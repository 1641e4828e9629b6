"""Tool-call arguments as the detectors read them: the keys and strings of their JSON, decoded.

Read as raw text, a JSON escape (``alice\\u0040example.com``) hid an address, and a mask that took a
key's name and quotes with its match (the AWS secret key detector's) left JSON that the Anthropic and
Gemini adapters refused. So each string is a text of its own: a value in an object is read after its
key's name (``aws_secret_access_key: ...``: a secret known by its name is still found) and masked alone;
a key is read and masked as the key it is. The raw text is read too (``raw_hits``): a value hidden under
a duplicate key, which parsing drops, still fires its detector, and its call is written again from the
parsed JSON, so the provider never gets the hidden copy. A call is written again (compact) only when
something in it was masked.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

VALUE: Final = 0  # a string in a list
NAMED: Final = 1  # a string value in an object: read after its key's name
NAME: Final = 2  # an object's key


class ToolCall:
    """One tool call's arguments, parsed; ``dirty`` once something in them is masked."""

    __slots__ = ("dirty", "function", "value")

    def __init__(self, function: dict[str, Any], value: Any) -> None:
        self.function = function
        self.value = value
        self.dirty = False

    @property
    def raw(self) -> str:
        text: str = self.function["arguments"]
        return text

    def write_back(self) -> None:
        if self.dirty:
            self.function["arguments"] = orjson.dumps(self.value).decode()


class ArgumentText:
    """A text inside a tool call's arguments: where it is, so a mask can replace it."""

    __slots__ = ("call", "container", "key", "kind")

    def __init__(self, call: ToolCall, container: Any, key: Any, kind: int) -> None:
        self.call = call
        self.container = container
        self.key = key
        self.kind = kind

    @property
    def text(self) -> str:
        text: str = self.key if self.kind == NAME else self.container[self.key]
        return text

    @property
    def prefix(self) -> str:
        """What the detectors read before the text: its key's name for a value in an object."""
        return f"{self.key}: " if self.kind == NAMED else ""

    def replace(self, text: str) -> None:
        self.call.dirty = True
        if self.kind == NAME:  # the key renamed (its value, masked first, goes with it)
            container = self.container
            if text not in container:
                container[text] = container.pop(self.key)
            self.key = text
        else:
            self.container[self.key] = text


def parse(function: dict[str, Any]) -> ToolCall | None:
    """The call's arguments parsed, or None when they are no JSON object or array (read as text)."""
    try:
        value = orjson.loads(function["arguments"])
    except orjson.JSONDecodeError:
        return None
    return ToolCall(function, value) if isinstance(value, (dict, list)) else None


def argument_texts(call: ToolCall) -> list[ArgumentText]:
    """Every key and string of the call's JSON; keys last, so a value is masked before its key is renamed.
    A walk, not a recursion: a client's JSON may be nested past the recursion limit."""
    values: list[ArgumentText] = []
    names: list[ArgumentText] = []
    stack = [call.value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                names.append(ArgumentText(call, node, key, NAME))
                if isinstance(item, str):
                    values.append(ArgumentText(call, node, key, NAMED))
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    values.append(ArgumentText(call, node, index, VALUE))
                elif isinstance(item, (dict, list)):
                    stack.append(item)
    return values + names
