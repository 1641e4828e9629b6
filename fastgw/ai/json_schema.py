"""The shape of a JSON Schema, as tool definitions and structured outputs carry it (every client format).

Shape only: ``type`` names, ``properties`` objects of schemas, ``required`` arrays of strings, ``items``,
``anyOf``/``oneOf``/``allOf`` arrays, ... A malformed schema is the client's error, found here with its
path, before a provider answers it with a less precise 400 (or, worse, silently ignores it); what a
well-formed schema means stays the provider's business.
"""

from __future__ import annotations

from typing import Final

import orjson

# The walk is recursive; 64 levels is far beyond any real tool definition (OpenAI allows 10 for strict
# schemas) and far below Python's recursion limit of 1000 (orjson alone would allow 1024).
MAX_SCHEMA_DEPTH: Final = 64
SCHEMA_TYPES: Final = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Keywords whose value is an object of schemas, one schema, or a non-empty array of schemas.
_SCHEMA_MAPS: Final = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_SINGLES: Final = ("additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LISTS: Final = ("anyOf", "oneOf", "allOf", "prefixItems")


class SchemaShapeError(ValueError):
    """A schema that is not a JSON Schema; the message names the path of the fault (``/properties/x``)."""


def _shown(value: object) -> str:
    text = orjson.dumps(value).decode() if type(value) in (str, int, float, bool) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_schema(schema: object, where: str = "", depth: int = 0) -> None:
    """Check that ``schema`` has a JSON Schema's shape.

    Raises:
        SchemaShapeError: naming the path of the first fault, or the depth over MAX_SCHEMA_DEPTH.
    """
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaShapeError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels at '{where}'")
    if type(schema) is bool:  # true and false are schemas (accept anything, accept nothing)
        return
    if type(schema) is not dict:
        raise SchemaShapeError(f"'{where or '/'}' is not a schema object")
    kind = schema.get("type")
    if kind is not None:
        for name in kind if type(kind) is list else (kind,):
            if type(name) is not str or name not in SCHEMA_TYPES:
                raise SchemaShapeError(f"'{where}/type' is {_shown(name)}, not a JSON Schema type")
    for key in _SCHEMA_MAPS:
        members = schema.get(key)
        if members is not None:
            if type(members) is not dict:
                raise SchemaShapeError(f"'{where}/{key}' is not an object")
            for name, member in members.items():
                check_schema(member, f"{where}/{key}/{name}", depth + 1)
    for key in _SCHEMA_SINGLES:
        if key in schema:
            check_schema(schema[key], f"{where}/{key}", depth + 1)
    items = schema.get("items")
    if type(items) is list:  # the draft-07 tuple form
        for position, item in enumerate(items):
            check_schema(item, f"{where}/items/{position}", depth + 1)
    elif items is not None:
        check_schema(items, f"{where}/items", depth + 1)
    for key in _SCHEMA_LISTS:
        if key in schema:
            options = schema[key]
            if type(options) is not list or not options:
                raise SchemaShapeError(f"'{where}/{key}' is not a non-empty array")
            for position, option in enumerate(options):
                check_schema(option, f"{where}/{key}/{position}", depth + 1)
    required = schema.get("required")
    if required is not None and (type(required) is not list or any(type(r) is not str for r in required)):
        raise SchemaShapeError(f"'{where}/required' is not an array of strings")
    enum = schema.get("enum")
    if enum is not None and type(enum) is not list:
        raise SchemaShapeError(f"'{where}/enum' is not an array")
