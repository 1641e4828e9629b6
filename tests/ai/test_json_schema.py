"""json_schema.py: schemas of every documented shape pass; a malformed one is refused with the path of its
fault; nesting is bounded before Python's recursion limit is."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.ai.json_schema import MAX_SCHEMA_DEPTH, SchemaShapeError, check_schema
from tests.support import openai_examples as ex

GOOD: list[Any] = [
    {},
    True,
    False,
    ex.WEATHER_TOOL["function"]["parameters"],
    ex.CHAT_JSON_SCHEMA["response_format"]["json_schema"]["schema"],
    {"type": ["string", "null"]},
    {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
    {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
    {
        "type": "object",
        "properties": {
            "step": {"$ref": "#/$defs/step"},
            "any": {"anyOf": [{"type": "string"}, {"enum": [1, 2]}]},
        },
        "$defs": {"step": {"type": "object", "properties": {"explanation": {"type": "string"}}}},
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", GOOD)
def test_well_formed_schemas_pass(schema: Any) -> None:
    check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "fault"),
    [
        ([], "'/' is not a schema object"),
        ({"type": "strng"}, "'/type' is \"strng\""),
        ({"type": ["string", 3]}, "'/type' is 3"),
        ({"type": {"a": 1}}, "'/type' is dict"),
        (
            {"properties": {"a": {"type": "x" * 100}}},
            "'/properties/a/type' is \"" + "x" * 36 + "..., not",  # cut to 40 characters
        ),
        ({"properties": ["a"]}, "'/properties' is not an object"),
        ({"properties": {"a": 1}}, "'/properties/a' is not a schema object"),
        ({"required": "a"}, "'/required' is not an array of strings"),
        ({"required": ["a", 1]}, "'/required' is not an array of strings"),
        ({"items": {"items": "x"}}, "'/items/items' is not a schema object"),
        ({"items": [{}, 5]}, "'/items/1' is not a schema object"),
        ({"anyOf": []}, "'/anyOf' is not a non-empty array"),
        ({"oneOf": [{"type": "nope"}]}, "'/oneOf/0/type'"),
        ({"additionalProperties": "no"}, "'/additionalProperties' is not a schema object"),
        ({"$defs": {"x": {"not": 3}}}, "'/$defs/x/not' is not a schema object"),
        ({"enum": "a"}, "'/enum' is not an array"),
    ],
)
def test_malformed_schemas_name_the_path(schema: Any, fault: str) -> None:
    with pytest.raises(SchemaShapeError) as caught:
        check_schema(schema)
    assert fault in str(caught.value)


def test_depth_is_bounded() -> None:
    schema: dict[str, Any] = {}
    for _ in range(MAX_SCHEMA_DEPTH):
        schema = {"items": schema}
    check_schema(schema)
    with pytest.raises(SchemaShapeError, match=f"nested deeper than {MAX_SCHEMA_DEPTH} levels"):
        check_schema({"items": schema})
    deep: dict[str, Any] = {}
    for _ in range(5000):  # deeper than Python's recursion limit: still a clean error
        deep = {"not": deep}
    with pytest.raises(SchemaShapeError):
        check_schema(deep)
