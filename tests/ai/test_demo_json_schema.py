"""The quick start's demo provider answers a JSON-schema-mode request with JSON of the schema's shape, so a
[[prompt_api]] with an output schema works against it (conf/examples/prompt-apis.toml)."""

from __future__ import annotations

import orjson
from jsonschema import validators

from fastgw.ai.demo_provider import answer

SCHEMA = {
    "type": "object",
    "required": ["category", "urgent", "summary", "tags", "score"],
    "additionalProperties": False,
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug"]},
        "urgent": {"type": "boolean"},
        "summary": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "score": {"type": "number"},
    },
}


def chat(extra: dict[str, object]) -> dict[str, object]:
    request = {"model": "demo-chat", "messages": [{"role": "user", "content": "my  card was charged twice"}]}
    status, _, pieces = answer(b"POST", b"/v1/chat/completions", orjson.dumps({**request, **extra}))
    assert status == 200
    return orjson.loads(b"".join(pieces))  # type: ignore[no-any-return]


def test_json_schema_mode_answers_a_matching_object() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}
    doc = chat({"response_format": response_format})
    content = doc["choices"][0]["message"]["content"]  # type: ignore[index]
    value = orjson.loads(content)
    validators.Draft202012Validator(SCHEMA).validate(value)
    assert value["summary"] == "You said: my card was charged twice"
    assert doc["usage"]["completion_tokens"] == len(content.split(" "))  # type: ignore[index]


def test_without_it_the_answer_is_text() -> None:
    doc = chat({})
    assert doc["choices"][0]["message"]["content"] == "You said: my card was charged twice"  # type: ignore[index]
