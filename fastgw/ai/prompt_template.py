"""The prompt templates of ``[[prompt_api]]``: a small template language of our own, filled from the request's
validated JSON body and nothing else.

Why not Jinja2 (even its sandbox) or ``str.format``: a template here is written by an operator but filled
with text from any client, and what it may reach must be obvious from its grammar. ``str.format`` walks
attributes and indexes of Python objects (``{0.__class__}``); Jinja2's sandbox is a policy over a full
language (loops, calls, filters) whose escapes are a history of CVEs. This language has one construct:

    {{ name }}            the value of the body's top-level field ``name``
    {{ name.sub.0 }}      a path into the body's JSON: object keys, array indexes (digits)
    \\{{                   a literal ``{{`` (a backslash before any other text is itself)

Nothing else: no attribute access (the values are parsed JSON: dicts, lists, str, int, float, bool,
None, looked up by key only), no calls, no filters, no loops. Filling is a single pass: a value that
contains ``{{ x }}`` is inserted as that text, never expanded again, so a client cannot reach another
field or the template through its own input. A string is inserted as it is; any other value as compact
JSON; a field the body leaves out (optional in the input schema), or a path that does not exist in it,
as the empty string.

Parsing happens once, at config load: an unclosed ``{{``, an expression that is no path, or (with the
input schema's properties, ``check_names``) a name the schema does not declare is a ``TemplateError``
naming the template's line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastgw.ai import exact_json

_PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.(?:[A-Za-z_][A-Za-z0-9_-]*|[0-9]+))*")
# A template is operator-written text; 64 KiB is far beyond any prompt's instructions, and every fill
# copies it, per request.
TEMPLATE_MAX_CHARS: Final = 64 * 1024
# Depth of a path ({{ a.b.c }}): JSON bodies nest deeper, but a prompt that needs more is a schema smell.
PATH_MAX_DEPTH: Final = 16


class TemplateError(ValueError):
    """A template that cannot be compiled; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Placeholder:
    path: tuple[str, ...]  # as written: "0" is an index into a list, the key "0" in an object
    line: int
    text: str  # as written, for error messages: "{{ a.b }}"


Part = str | Placeholder


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[Part, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def fill(self, values: Mapping[str, Any]) -> str:
        """The text with every placeholder replaced by its value (single pass, never re-expanded)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(_render(_lookup(values, part.path)))
        return "".join(out)


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    """Key and index lookups on parsed JSON only: ``type(...) is`` checks, so a subclass with a custom
    ``__getitem__`` (none can come from a parsed body, but the rule is the sandbox) is never called."""
    current = values
    for step in path:
        if type(current) is dict:  # a step of digits is a key here: {{ codes.404 }}, {{ codes.007 }}
            current = current.get(step)
        elif type(current) is list and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
    return current


def _render(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return value
    return exact_json.dumps(value).decode()  # an integer past 64 bits as written


def compile_template(text: str) -> Template:
    """Parse ``text`` once; raises TemplateError with the line of the fault."""
    if len(text) > TEMPLATE_MAX_CHARS:
        raise TemplateError(1, f"a template is at most {TEMPLATE_MAX_CHARS} characters")
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while True:
        start = text.find("{{", i)
        if start < 0:
            literal.append(text[i:])
            break
        if start > 0 and text[start - 1] == "\\":  # \{{ is a literal {{
            literal.append(text[i : start - 1] + "{{")
            i = start + 2
            continue
        literal.append(text[i:start])
        line = text.count("\n", 0, start) + 1
        end = text.find("}}", start + 2)
        newline = text.find("\n", start + 2)
        if end < 0 or 0 <= newline < end:
            raise TemplateError(
                line, "'{{' is not closed by '}}' on the same line (write \\{{ for a literal)"
            )
        written = text[start : end + 2]
        expression = text[start + 2 : end].strip()
        if not _PATH.fullmatch(expression):
            raise TemplateError(
                line, f"{written} is not a field path (a name, or names and indexes joined by dots)"
            )
        steps = expression.split(".")
        if len(steps) > PATH_MAX_DEPTH:
            raise TemplateError(line, f"{written} is deeper than {PATH_MAX_DEPTH} steps")
        path = tuple(steps)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(Placeholder(path, line, written))
        i = end + 2
    if any(literal):
        parts.append("".join(literal))
    return Template(tuple(p for p in parts if p != ""))


def check_names(template: Template, schema: Mapping[str, Any]) -> None:
    """Every placeholder names a property the (object) input schema declares; a path into a nested object
    whose schema declares its own ``properties`` must name one of those too (a nested schema without
    ``properties`` is free-form: any key may be asked for, absent ones fill as ""). Raises TemplateError."""
    for placeholder in template.placeholders:
        node: Any = schema
        for step in placeholder.path:
            items = node.get("items") if isinstance(node, Mapping) else None
            if step.isdigit() and isinstance(items, Mapping):  # an index into an array's items
                node = items
                continue
            props = node.get("properties") if isinstance(node, Mapping) else None
            if not isinstance(props, Mapping):
                break  # free-form below here
            if step not in props:
                declared = ", ".join(sorted(props)) or "none"
                raise TemplateError(
                    placeholder.line,
                    f"{placeholder.text}: {step!r} is not a property of the input schema"
                    f" (declared: {declared})",
                )
            node = props[step]
