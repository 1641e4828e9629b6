"""[[prompt_api]] at config load (fastgw/ai/prompt_config.py, prompt_kind.py): schemas compiled once,
templates checked against the input schema, and every mistake a one-line ConfigError naming the file, the
key and, for a template, its line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from fastgw.ai.prompt_config import PromptApi
from fastgw.ai.prompt_handler import PromptApiHandler, estimate_tokens
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from tests.support.configs import MINIMAL

BASE = """
[[listeners]]
bind = "127.0.0.1:8080"
[access_log]
target = "off"
[upstreams.demo]
targets = ["127.0.0.1:1"]
[[llm.providers]]
name = "demo"
kind = "openai"
upstream = "demo"
base_path = "/v1"
[[llm.models]]
name = "writer"
targets = [{ provider = "demo", model = "demo-chat" }]
context_window = 1000
[[routes]]
name = "prompts"
path = "/p"
kind = "prompt_api"
auth = "none"
ROUTE
[[prompt_api]]
name = "summarize"
path = "/p/summarize"
model = "writer"
template = '''
Summarize in {{ sentences }} sentences:

{{ text }}
'''
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" }, \
sentences = { type = "integer" } } }
"""


def config(extra: str = "", route: str = "", replace: tuple[str, str] = ("", "")) -> str:
    text = BASE.replace("ROUTE", route) + extra
    return text.replace(*replace) if replace[0] else text


def error_for(text: str, file: str = "conf/x.toml") -> str:
    with pytest.raises(ConfigError) as err:
        compile_config(text.encode(), file)
    return str(err.value)


def test_compiles_schemas_templates_and_the_route() -> None:
    snapshot = compile_config(config().encode(), "conf/x.toml")
    api: PromptApi = snapshot.sections["prompt_api"]["summarize"]
    assert api.context_window == 1000
    assert api.input_schema.first_error({"text": "x"}) is None
    assert api.input_schema.first_error({"text": 3}) == ("$.text", "3 is not of type 'string'")
    assert api.input_schema.first_error({}) == ("$", "'text' is a required property")
    assert api.template.fill({"text": "T", "sentences": 2}) == "Summarize in 2 sentences:\n\nT\n"
    handler = next(r.handler for r in snapshot.routes if r.name == "prompts")
    assert isinstance(handler, PromptApiHandler)
    assert [a.name for a in handler.apis] == ["summarize"]


def test_undefined_template_variable_names_file_key_and_line() -> None:
    text = config(replace=("{{ text }}\n'''", "{{ body }}\n'''"))
    assert error_for(text) == (
        "conf/x.toml: prompt_api[0].template: line 3: {{ body }}: 'body' is not a property of the input"
        " schema (declared: sentences, text)"
    )
    system = config(replace=('model = "writer"\n', 'model = "writer"\nsystem = "Be {{ tone }}."\n'))
    assert "prompt_api[0].system: line 1: {{ tone }}: 'tone' is not a property" in error_for(system)


def with_input(replacement: str) -> str:
    """The test config with its API's ``input_schema = {...}`` line replaced by ``replacement``."""
    text = config(replace=("input_schema = {", f"{replacement}\nunused = {{"))
    return text.replace("\nunused = {" + text.split("\nunused = {")[1].split("\n")[0], "")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            '{ type = "object", properties = { text = { type = "strin" } } }',
            "not a valid JSON Schema at /properties/text/type",
        ),
        ('{ type = "object", required = "text" }', "not a valid JSON Schema at /required"),
        ('{ type = "array" }', "prompt_api[0].input_schema.type: must be 'object'"),
        (
            '{ type = "object", properties = { text = { "$ref" = "https://example.com/s.json" } } }',
            "only references inside the schema",
        ),
        (  # loaded, then every request was a 500 (and an output schema's after the provider was paid)
            '{ type = "object", properties = { text = { "$ref" = "#/$defs/missing" } } }',
            "$ref = '#/$defs/missing': no such place in the schema",
        ),
        (  # loaded, then every request failed to validate: a pointer into a value, an unknown anchor
            '{ type = "object", properties = { text = { "$ref" = "#/properties/c/const" }, c = { const = {'
            ' type = "string" } } } }',
            "$ref = '#/properties/c/const': it points at no schema",
        ),
        (
            '{ type = "object", properties = { text = { "$dynamicRef" = "#nope" } } }',
            "$dynamicRef = '#nope': no such place in the schema",
        ),
        (  # a subschema's draft-4 id moves its base elsewhere: the validator would fetch it per request
            '{ "$schema" = "http://json-schema.org/draft-04/schema#", id = "http://good.example/root.json",'
            ' type = "object", definitions = { n = { type = "integer" } }, properties = { text = {'
            ' id = "http://169.254.169.254/latest/", properties = { b = { "$ref" = "root.json#/definitions/n"'
            " } } } } }",
            "$ref = 'root.json#/definitions/n': only references inside the schema",
        ),
        (  # draft 7 "dependencies" with a list of names first: its schemas were never checked
            '{ "$schema" = "http://json-schema.org/draft-07/schema#", type = "object", dependencies = {'
            ' sentences = ["text"], text = { "$ref" = "#/definitions/nope" } } }',
            "$ref = '#/definitions/nope': no such place in the schema",
        ),
    ],
)
def test_schemas_that_do_not_compile(schema: str, expected: str) -> None:
    text = with_input(f"input_schema = {schema}")
    message = error_for(text)
    assert message.startswith("conf/x.toml: prompt_api[0].input_schema"), message
    assert expected in message


SENTENCES = 'sentences = { type = "integer" }'  # the test template's other variable


@pytest.mark.parametrize(
    "schema",
    [
        # A JSON Pointer with a percent-escape (a space in a $defs name) and one with ~1 ("/" in a name).
        f'{{ type = "object", properties = {{ {SENTENCES}, text = {{ "$ref" = "#/$defs/a%20b" }} }},'
        ' "$defs" = { "a b" = { type = "string" } } }',
        f'{{ type = "object", properties = {{ {SENTENCES}, text = {{ "$ref" = "#/$defs/a~1b" }} }},'
        ' "$defs" = { "a/b" = { type = "string" } } }',
        # A subschema with its own $id: its "#/..." is relative to it, and the root may name it.
        f'{{ "$id" = "https://example.com/root.json", type = "object", properties = {{ {SENTENCES},'
        ' text = { "$ref" = "item.json" }, n = { "$ref" = "item.json#/$defs/n" } }, "$defs" = { item = {'
        ' "$id" = "item.json", type = "string", "$defs" = { n = { type = "integer" } },'
        ' not = { "$ref" = "#/$defs/n" } } } }',
        f'{{ type = "object", properties = {{ {SENTENCES}, text = {{ "$ref" = "#name" }} }},'
        ' "$defs" = { s = { "$anchor" = "name", type = "string" } } }',
        # "$ref" as a value (const) or a property's name is data, not a reference.
        f'{{ type = "object", properties = {{ {SENTENCES}, text = {{ type = "string" }},'
        ' c = { const = { "$ref" = "#/nowhere" } }, "$ref" = { type = "string" } } }',
    ],
)
def test_references_the_validator_resolves_are_accepted(schema: str) -> None:
    """Checked as the validator resolves them: a schema refused at load that it would have taken (an
    escape, an $id base) was the other side of catching dangling references."""
    text = with_input(f"input_schema = {schema}")
    compile_config(text.encode(), "conf/x.toml")


CYCLE = "references that go round without consuming any data"
STUCK = (
    "(no value ends it: a request that reaches it recurses until the validator gives up; an unused"
    " definition is checked too)"
)


def test_a_cycle_of_references_is_refused_at_load_with_its_chain() -> None:
    """Each request recursed to the validator's bound (~8 ms of CPU on the event loop) and answered 400."""
    pair = (
        'input_schema = { type = "object", "$ref" = "#/$defs/a", "$defs" = { a = { "$ref" = "#/$defs/b" },'
        ' b = { "$ref" = "#/$defs/a" } } }'
    )
    assert error_for(with_input(pair)) == (
        f"conf/x.toml: prompt_api[0].input_schema: {CYCLE}: #/$defs/a ($ref) -> #/$defs/b ($ref) ->"
        f" #/$defs/a {STUCK}"
    )
    itself = 'input_schema = { type = "object", "$ref" = "#" }'
    assert (
        error_for(with_input(itself))
        == f"conf/x.toml: prompt_api[0].input_schema: {CYCLE}: # ($ref) -> # {STUCK}"
    )
    unused = 'input_schema = { type = "object", "$defs" = { a = { "$ref" = "#/$defs/a" } } }'
    assert error_for(with_input(unused)) == (  # no request reaches it, and it is a mistake all the same
        f"conf/x.toml: prompt_api[0].input_schema: {CYCLE}: #/$defs/a ($ref) -> #/$defs/a {STUCK}"
    )
    output = 'output_schema = { type = "object", allOf = [{ not = { "$ref" = "#" } }] }\n'
    text = config(replace=('model = "writer"\n', f'model = "writer"\n{output}'))
    assert error_for(text) == (
        f"conf/x.toml: prompt_api[0].output_schema: {CYCLE}: # (allOf) -> #/allOf/0 (not) -> #/allOf/0/not"
        f" ($ref) -> # {STUCK}"
    )


DRAFT7 = "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize(
    ("schema", "chain"),
    [
        (  # under a property: every body that has it
            {
                "properties": {"text": {"$ref": "#/$defs/t"}},
                "$defs": {"t": {"anyOf": [{"$ref": "#/$defs/t"}]}},
            },
            "#/$defs/t (anyOf) -> #/$defs/t/anyOf/0 ($ref) -> #/$defs/t",
        ),
        ({"if": {"$ref": "#"}}, "# (if) -> #/if ($ref) -> #"),
        ({"if": True, "then": {"$ref": "#"}}, "# (then) -> #/then ($ref) -> #"),
        (
            {"dependentSchemas": {"text": {"$ref": "#"}}},
            "# (dependentSchemas) -> #/dependentSchemas/text ($ref) -> #",
        ),
        (  # a dynamic reference: to every schema with the anchor (here the root)
            {"$dynamicAnchor": "node", "oneOf": [{"$dynamicRef": "#node"}]},
            "# (oneOf) -> #/oneOf/0 ($dynamicRef) -> #",
        ),
        (
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "$recursiveAnchor": True,
                "allOf": [{"$recursiveRef": "#"}],
            },
            "# (allOf) -> #/allOf/0 ($recursiveRef) -> #",
        ),
        (  # draft 7: "dependencies" mixing names and schemas (the schemas were not walked at all)
            {
                "$schema": DRAFT7,
                "dependencies": {"sentences": ["text"], "text": {"$ref": "#/definitions/a"}},
                "definitions": {"a": {"$ref": "#"}},
            },
            "# (dependencies) -> #/dependencies/text ($ref) -> #/definitions/a ($ref) -> #",
        ),
        (  # draft 3: a schema among a property's types (not walked either)
            {
                "$schema": "http://json-schema.org/draft-03/schema#",
                "properties": {"text": {"$ref": "#/definitions/t"}},
                "definitions": {"t": {"type": ["string", {"$ref": "#/definitions/t"}]}},
            },
            "#/definitions/t (type) -> #/definitions/t/type/1 ($ref) -> #/definitions/t",
        ),
    ],
)
def test_cycles_through_every_in_place_keyword_are_refused(
    tmp_path: Path, schema: dict[str, Any], chain: str
) -> None:
    (tmp_path / "in.json").write_text(json.dumps({"type": "object", **schema}))
    conf = str(tmp_path / "gw.toml")
    message = error_for(with_input('input_schema_file = "in.json"'), conf)
    assert message == f"{conf}: prompt_api[0].input_schema: {CYCLE}: {chain} {STUCK}"


@pytest.mark.parametrize(
    "schema",
    [
        # "then" without "if" is never applied; draft 7 ignores $ref's siblings.
        {"then": {"$ref": "#"}},
        {"$schema": DRAFT7, "$ref": "#/definitions/o", "allOf": [{"$ref": "#"}], "definitions": {"o": {}}},
        # A recursion through properties, items, additionalProperties, contains: each step a smaller value.
        {"additionalProperties": {"anyOf": [{"type": "string"}, {"$ref": "#"}]}},
        {"properties": {"text": {"contains": {"$ref": "#"}}}},
        # The extensible tree of the 2020-12 specification: the dynamic reference is under items.
        {
            "$id": "https://example.com/strict-tree",
            "$dynamicAnchor": "node",
            "$ref": "tree",
            "unevaluatedProperties": False,
            "$defs": {
                "tree": {
                    "$id": "tree",
                    "$dynamicAnchor": "node",
                    "type": "object",
                    "properties": {
                        "text": True,
                        "sentences": True,
                        "children": {"type": "array", "items": {"$dynamicRef": "#node"}},
                    },
                }
            },
        },
    ],
)
def test_recursion_that_consumes_data_is_accepted(tmp_path: Path, schema: dict[str, Any]) -> None:
    (tmp_path / "in.json").write_text(json.dumps({"type": "object", **schema}))
    text = (
        with_input('input_schema_file = "in.json"').replace("{{ sentences }}", "3").replace("{{ text }}", "x")
    )
    compile_config(text.encode(), str(tmp_path / "gw.toml"))


def nested(leaf: dict[str, Any], levels: int) -> dict[str, Any]:
    """``leaf`` under ``levels`` object schemas, each adding two levels (the schema and its properties)."""
    for _ in range(levels):
        leaf = {"type": "object", "properties": {"a": leaf}}
    return leaf


def test_a_schema_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    """check_schema recursed past Python's stack on ~100 levels of properties: a crash of the load. The
    bound is 100 objects and arrays: 101 is refused in one line, 100 loads."""
    text = with_input('input_schema_file = "in.json"')
    (tmp_path / "in.json").write_text(json.dumps(nested({"type": "string"}, 50)))  # 1 + 2 x 50 = 101
    message = error_for(text, str(tmp_path / "gw.toml"))
    assert message.endswith("prompt_api[0].input_schema: nested deeper than 100 objects and arrays"), message
    (tmp_path / "in.json").write_text(json.dumps(nested({"type": "string", "enum": ["x"]}, 49)))  # 100
    plain = text.replace("{{ sentences }}", "3").replace("{{ text }}", "x")
    compile_config(plain.encode(), str(tmp_path / "gw.toml"))


def test_a_tree_schema_loads_and_validates_nested_bodies() -> None:
    tree = (
        f'input_schema = {{ type = "object", properties = {{ {SENTENCES}, text = {{ type = "string" }},'
        ' children = { type = "array", items = { "$ref" = "#" } } } }'
    )
    api: PromptApi = compile_config(with_input(tree).encode(), "x.toml").sections["prompt_api"]["summarize"]
    body = {"text": "a", "children": [{"text": "b", "children": [{"text": "c", "children": []}]}]}
    assert api.input_schema.first_error(body) is None
    body["children"][0]["children"][0]["text"] = 3  # type: ignore[index]
    assert api.input_schema.first_error(body) == (
        "$.children[0].children[0].text",
        "3 is not of type 'string'",
    )


def test_output_schema_and_schema_files(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(
        json.dumps({"type": "object", "properties": {"text": {"type": "string"}}})
    )
    (tmp_path / "out.json").write_text(json.dumps({"type": "object", "properties": {"x": {"type": "nope"}}}))
    conf = tmp_path / "gw.toml"
    text = with_input('input_schema_file = "in.json"')
    text = text.replace("{{ sentences }}", "3")
    snapshot = compile_config(text.encode(), str(conf))
    assert snapshot.sections["prompt_api"]["summarize"].input_schema.document["type"] == "object"
    bad_out = text.replace('model = "writer"\n', 'model = "writer"\noutput_schema_file = "out.json"\n')
    assert "prompt_api[0].output_schema: not a valid JSON Schema at /properties/x/type" in error_for(
        bad_out, str(conf)
    )
    missing = text.replace("in.json", "missing.json")
    assert "prompt_api[0].input_schema_file: cannot read missing.json" in error_for(missing, str(conf))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('model = "writer"', 'model = "writr"', "prompt_api[0].model: no [[llm.models]] named 'writr'"),
        ('path = "/p/summarize"', 'path = "p/x/"', "prompt_api[0].path: 'p/x/' is not an absolute path"),
        (
            'model = "writer"',
            'model = "writer"\nmax_tokens = 1000',
            "prompt_api[0].max_tokens: 1000 leaves no room",
        ),
        (
            'model = "writer"',
            'model = "writer"\ntemperature = 3.0',
            "prompt_api[0].temperature: 3.0 is more than the maximum 2.0",
        ),
        (
            'path = "/p/summarize"',
            'path = "/elsewhere/x"',
            "routes[0].handler.apis: no [[prompt_api]] path lies under",
        ),
    ],
)
def test_bad_entries(old: str, new: str, expected: str) -> None:
    assert expected in error_for(config(replace=(old, new)))


def test_route_names_apis() -> None:
    assert "routes[0].handler.apis: no [[prompt_api]] named 'nope'" in error_for(
        config(route='handler = { apis = ["nope"] }')
    )
    other = (
        '\n[[prompt_api]]\nname = "other"\npath = "/q/other"\nmodel = "writer"\ntemplate = "x"\n'
        'input_schema = { type = "object" }\n'
    )
    assert "'other' answers /q/other, outside this route's /p" in error_for(
        config(other, route='handler = { apis = ["other"] }')
    )
    twice = other.replace('"other"', '"summarize"', 1).replace("/q/other", "/p/two")
    assert "prompt_api[1].name: a prompt API named 'summarize' is defined twice" in error_for(config(twice))


def test_estimate_is_bytes_over_four_plus_overhead_and_answer() -> None:
    messages = [
        {"role": "system", "content": "a" * 40},
        {"role": "user", "content": "é" * 10},
    ]  # 40 + 20 bytes
    assert estimate_tokens(messages, 100) == 15 + 2 * 4 + 100


ANTHROPIC = """
[upstreams.an]
targets = ["127.0.0.1:1"]
[[llm.providers]]
name = "an"
kind = "anthropic"
upstream = "an"
[[llm.models]]
name = "claude"
targets = [{ provider = "an", model = "claude-sonnet-4-5" }]
DROP
"""


def test_an_output_schema_needs_json_schema_mode_or_a_drop() -> None:
    schema = 'output_schema = { type = "object", properties = { x = { type = "string" } } }\n'
    text = config(ANTHROPIC, replace=('model = "writer"\n', f'model = "claude"\n{schema}'))
    assert (
        "prompt_api[0].output_schema: model 'claude' has a target of kind 'anthropic', which has no"
        " JSON-schema mode" in (error_for(text.replace("DROP", "")))
    )
    dropped = compile_config(
        text.replace("DROP", 'drop_unsupported = ["response_format"]').encode(), "x.toml"
    )
    assert dropped.sections["prompt_api"]["summarize"].output_schema is not None
    # An OpenAI target has the mode.
    assert compile_config(
        config(replace=('model = "writer"\n', f'model = "writer"\n{schema}')).encode(), "x.toml"
    )


def test_a_recursive_schema_over_a_very_deep_body_is_a_refusal_not_a_crash() -> None:
    recursive = '{ type = "object", properties = { text = { type = "string" }, sub = { "$ref" = "#" } } }'
    text = with_input(f"input_schema = {recursive}")
    text = text.replace("{{ sentences }}", "3")
    api: PromptApi = compile_config(text.encode(), "x.toml").sections["prompt_api"]["summarize"]
    deep: dict[str, object] = {"text": "x"}
    for _ in range(3000):
        deep = {"sub": deep, "text": "x"}
    assert api.input_schema.first_error(deep) == ("$", "the document is nested too deeply to validate")
    assert api.input_schema.first_error({"text": "x", "sub": {"text": 1}}) == (
        "$.sub.text",
        "1 is not of type 'string'",
    )


def test_an_api_no_route_publishes_is_listed_without_routes_and_left_out_of_openapi() -> None:
    from fastgw.ai.prompt_openapi import listing, openapi

    other = (
        '\n[[prompt_api]]\nname = "other"\npath = "/q/other"\nmodel = "writer"\ntemplate = "x"\n'
        'input_schema = { type = "object" }\n'
    )
    snapshot = compile_config(config(other).encode(), "x.toml")
    apis = snapshot.sections["prompt_api"]
    routes = {api["name"]: api["routes"] for api in listing(apis, snapshot)}
    assert routes == {"summarize": [{"name": "prompts", "auth": ["none"]}], "other": []}
    document = openapi(apis, snapshot)
    assert list(document["paths"]) == ["/p/summarize"]
    assert document["paths"]["/p/summarize"]["post"]["security"] == []
    assert "securitySchemes" not in document["components"]


def test_an_api_is_listed_under_the_route_that_serves_its_path_not_a_shadowed_one() -> None:
    """Under /p, /p/inner is another prompt_api route and /p/proxied a proxy route: the APIs whose paths
    lie there are served by them (the router takes the longest prefix), so /p's route must not claim them
    in the listing or in OpenAPI (whose security would then be /p's, not the serving route's)."""
    from fastgw.ai.prompt_openapi import listing, openapi

    extra = "".join(
        f'\n[[prompt_api]]\nname = "{name}"\npath = "{path}"\nmodel = "writer"\ntemplate = "x"\n'
        'input_schema = { type = "object" }\n'
        for name, path in (("deep", "/p/inner/deep"), ("elsewhere", "/p/proxied/x"))
    )
    routes = (
        '\n[[routes]]\nname = "inner"\npath = "/p/inner"\nkind = "prompt_api"\nauth = "none"\n'
        '\n[[routes]]\nname = "proxied"\npath = "/p/proxied"\nupstream = "demo"\nauth = "none"\n'
    )
    snapshot = compile_config(config(extra + routes).encode(), "x.toml")
    apis = snapshot.sections["prompt_api"]
    listed = {api["name"]: [r["name"] for r in api["routes"]] for api in listing(apis, snapshot)}
    assert listed == {"summarize": ["prompts"], "deep": ["inner"], "elsewhere": []}
    assert sorted(openapi(apis, snapshot)["paths"]) == ["/p/inner/deep", "/p/summarize"]


def test_jsonschema_is_loaded_only_by_configs_with_prompt_apis() -> None:
    # ~75 ms and ~8 MiB per process: a gateway without prompt APIs never pays them.
    import subprocess
    import sys

    code = (
        "import sys\nfrom fastgw.config.compiler import compile_config\n"
        f"compile_config({MINIMAL!r}.encode(), 'x.toml')\nprint('jsonschema' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_a_value_a_format_check_cannot_take_is_a_refusal_not_a_crash() -> None:
    """A "regex" format whose pattern is too large for the regex engine raised OverflowError: a 500."""
    pattern = '{ type = "string", format = "regex" }'
    schema = f'{{ type = "object", properties = {{ text = {{ type = "string" }}, p = {pattern} }} }}'
    text = with_input(f"input_schema = {schema}")
    text = text.replace("{{ sentences }}", "3")
    api: PromptApi = compile_config(text.encode(), "x.toml").sections["prompt_api"]["summarize"]
    assert api.input_schema.first_error({"text": "x", "p": "a{99999999999999999999}"}) == (
        "$",
        "the document cannot be validated (OverflowError)",
    )


GEMINI = """
[upstreams.gm]
targets = ["127.0.0.1:1"]
[[llm.providers]]
name = "gm"
kind = "gemini"
upstream = "gm"
[[llm.models]]
name = "gem"
targets = [{ provider = "gm", model = "gemini-2.5-flash" }]
"""


def test_a_request_a_target_cannot_take_is_a_config_error_not_every_callers_400() -> None:
    """The API's request is built for each target at load: Gemini's schema subset has no $defs, and
    Anthropic takes temperature 0 to 1. Both loaded, and every request was then a 400 blaming a caller
    who controls only the values of the input's fields."""
    schema = (
        'output_schema = { type = "object", "$defs" = { s = { type = "string" } },'
        ' properties = { x = { "$ref" = "#/$defs/s" } } }\n'
    )
    text = config(GEMINI, replace=('model = "writer"\n', f'model = "gem"\n{schema}'))
    assert error_for(text) == (
        "conf/x.toml: prompt_api[0]: target gm/gemini-2.5-flash cannot take this API's request: JSON Schema"
        " keyword '$defs' is not supported by the gemini provider"
    )
    hot = config(
        ANTHROPIC.replace("DROP", ""), replace=('model = "writer"\n', 'model = "claude"\ntemperature = 1.5\n')
    )
    assert error_for(hot) == (
        "conf/x.toml: prompt_api[0].temperature: at most 1 for target an/claude-sonnet-4-5"
        " (an anthropic provider)"
    )
    assert compile_config(hot.replace("temperature = 1.5", "temperature = 1.0").encode(), "x.toml")


def test_a_prompt_route_takes_a_megabyte_unless_it_says_more() -> None:
    """A prompt API's body is validated on the worker's loop value by value; the server's 10 MiB default
    let one request hold it for seconds."""
    route = compile_config(config().encode(), "x.toml").routes[0]
    assert route.max_body_bytes == 1024 * 1024
    wider = compile_config(config(route="max_body_bytes = 4194304").encode(), "x.toml").routes[0]
    assert wider.max_body_bytes == 4 * 1024 * 1024


def test_a_body_with_many_wrong_values_draws_a_few_errors_not_one_per_value() -> None:
    """best_match weighed every error of the document: an array of 100,000 wrong items made 100,000
    error objects (seconds of the worker's loop for a 10 MiB body) for one 400."""
    from fastgw.ai.prompt_schema import ERRORS_WEIGHED

    tags = 'sentences = { type = "integer" }, tags = { type = "array", items = { type = "string" } }'
    api: PromptApi = compile_config(
        config(replace=('sentences = { type = "integer" }', tags)).encode(), "x.toml"
    ).sections["prompt_api"]["summarize"]
    real = api.input_schema.validator
    drawn = 0

    class Counting:
        def iter_errors(self, instance: Any) -> Any:
            nonlocal drawn
            for error in real.iter_errors(instance):
                drawn += 1
                yield error

    schema = dataclasses.replace(api.input_schema, validator=Counting())
    error = schema.first_error({"text": "x", "tags": [0] * 100_000})
    assert error is not None and error[1] == "0 is not of type 'string'"
    assert error[0].startswith("$.tags[") and int(error[0][7:-1]) < ERRORS_WEIGHED  # one of the first few
    assert drawn <= ERRORS_WEIGHED
