"""A JSON Schema (OpenAI tool parameters, ``response_format`` schemas) as Gemini's ``Schema`` subset.

Gemini's Schema (https://ai.google.dev/api/caching#Schema) is an OpenAPI 3.0 subset: ``type`` is one of
STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT; a nullable type is ``nullable: true`` instead of
``["string", "null"]``. Keywords that only annotate or constrain what a valid answer looks like and that
Gemini lacks (``$schema``, ``additionalProperties``, ``examples``, ``$comment``, ``strict``) are left out:
the model's output is still checked by the client. Keywords that change what the schema means and that
Gemini cannot express (``$ref``, ``allOf``, ``oneOf``, ``not``, ...) are refused with a 400 naming the
place, never dropped. Pure.
"""

from __future__ import annotations

from typing import Any, Final

from fastgw.ai.adapter import InvalidRequestError, Json

# Nesting beyond this is refused: a schema is written by a person, and the bound keeps a hostile one from
# recursing the worker's stack.
MAX_DEPTH: Final = 32

_TYPES: Final = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
# Copied as they are (their values are plain data in both dialects).
_PLAIN: Final = frozenset(
    {
        "format", "title", "description", "nullable", "enum", "required", "propertyOrdering", "default",
        "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "pattern",
        "minimum", "maximum", "example",
    }
)  # fmt: skip
_LEFT_OUT: Final = frozenset({"$schema", "$id", "$comment", "additionalProperties", "examples", "strict"})


def gemini_schema(schema: Any, param: str, depth: int = 0) -> Json:
    """``schema`` in Gemini's dialect; InvalidRequestError naming ``param`` (and the path inside)."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("a JSON Schema must be an object", param)
    if depth > MAX_DEPTH:
        raise InvalidRequestError(f"the schema nests deeper than {MAX_DEPTH} levels", param)
    out: Json = {}
    for key, value in schema.items():
        where = f"{param}.{key}"
        if key == "type":
            _type(value, where, out)
        elif key in _PLAIN:
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            if not isinstance(value, dict):
                raise InvalidRequestError("properties must be an object", where)
            out[key] = {name: gemini_schema(sub, f"{where}.{name}", depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, where, depth + 1)
        elif key == "anyOf":
            if not isinstance(value, list) or not value:
                raise InvalidRequestError("anyOf must be a non-empty array", where)
            out[key] = [gemini_schema(sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(value)]
        elif key not in _LEFT_OUT:
            raise InvalidRequestError(
                f"JSON Schema keyword {key!r} is not supported by the gemini provider", where
            )
    return out


def _type(value: Any, where: str, out: Json) -> None:
    names = value if isinstance(value, list) else [value]
    concrete = [name for name in names if name != "null"]
    if len(concrete) != 1 or concrete[0] not in _TYPES:
        raise InvalidRequestError("type must be one JSON Schema type, optionally with null", where)
    out["type"] = _TYPES[concrete[0]]
    if len(concrete) != len(names):
        out["nullable"] = True
