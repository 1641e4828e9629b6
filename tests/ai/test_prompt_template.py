"""The [[prompt_api]] template language (fastgw/ai/prompt_template.py): what a template can reach (the
validated JSON, by key and index only), how values are inserted (once, never re-expanded), its escape,
and the load-time errors with their line."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.prompt_template import TemplateError, check_names, compile_template

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "n": {"type": "integer"},
        "style": {"type": "object", "properties": {"tone": {"type": "string"}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "free": {"type": "object"},
    },
}


def test_fields_paths_and_indexes_fill_from_the_json() -> None:
    template = compile_template("{{ text }} x{{n}} {{ style.tone }} {{ items.1.name }} {{ free.any }}")
    values = {"text": "hi", "n": 3, "style": {"tone": "calm"}, "items": [{"name": "a"}, {"name": "b"}]}
    assert template.fill(values) == "hi x3 calm b "


def test_a_digit_step_into_an_object_names_its_key() -> None:
    """{{ free.404 }} passed the load check but always filled "": the step became the int 404, which a
    dict lookup refused."""
    template = compile_template("{{ free.404 }}|{{ free.007 }}|{{ items.0.name }}")
    check_names(template, SCHEMA)
    values = {"free": {"404": "not found", "007": "bond"}, "items": [{"name": "a"}]}
    assert template.fill(values) == "not found|bond|a"


def test_non_strings_are_json_and_absent_fields_are_empty() -> None:
    template = compile_template("[{{ style }}] [{{ items }}] [{{ n }}] [{{ text }}] [{{ items.9 }}]")
    filled = template.fill({"style": {"tone": "é"}, "items": [1, True, None], "n": 1.5})
    assert filled == '[{"tone":"é"}] [[1,true,null]] [1.5] [] []'


def test_a_value_is_inserted_once_never_expanded_again() -> None:
    template = compile_template("A: {{ text }} B: {{ n }}")
    filled = template.fill({"text": "{{ n }} and {{ text }} \\{{ n }}", "n": 7})
    assert filled == "A: {{ n }} and {{ text }} \\{{ n }} B: 7"


def test_no_attribute_access_or_code() -> None:
    # Python attributes are not fields: a dunder path looks up the key "__class__" and finds nothing.
    template = compile_template("{{ text.__class__ }}|{{ text.upper }}|{{ style.__dict__ }}")
    assert template.fill({"text": "abc", "style": {}}) == "||"
    for expression in (
        "{{ text() }}",
        "{{ text | upper }}",
        "{{ 1 + 1 }}",
        "{{ text[0] }}",
        "{{ }}",
        "{{ a..b }}",
        "{{ __import__('os') }}",
    ):
        with pytest.raises(TemplateError):
            compile_template(expression)


def test_other_template_syntaxes_are_plain_text() -> None:
    template = compile_template("{% for x in y %}{{ text }}{% endfor %} {0.__class__} ${text}")
    assert template.fill({"text": "v"}) == "{% for x in y %}v{% endfor %} {0.__class__} ${text}"


def test_escape_writes_a_literal_opening() -> None:
    template = compile_template("literal \\{{ text }} and {{ text }}; a } and }} alone stay")
    assert template.fill({"text": "v"}) == "literal {{ text }} and v; a } and }} alone stay"
    assert template.placeholders[0].text == "{{ text }}"


def test_errors_name_the_line() -> None:
    with pytest.raises(TemplateError) as unclosed:
        compile_template("first\nsecond {{ text\n}}")
    assert unclosed.value.line == 2
    assert "not closed" in str(unclosed.value)
    with pytest.raises(TemplateError) as bad:
        compile_template("a\nb\n\nc {{ not a path }}")
    assert bad.value.line == 4
    assert str(bad.value).startswith("line 4: {{ not a path }}")


def test_undefined_names_are_refused_with_their_line() -> None:
    with pytest.raises(TemplateError) as top:
        check_names(compile_template("ok {{ text }}\n\nbad {{ txt }}"), SCHEMA)
    assert top.value.line == 3
    assert "'txt' is not a property of the input schema" in str(top.value)
    assert "declared: free, items, n, style, text" in str(top.value)
    with pytest.raises(TemplateError) as nested:
        check_names(compile_template("{{ style.colour }}"), SCHEMA)
    assert "'colour'" in str(nested.value)
    with pytest.raises(TemplateError):
        check_names(compile_template("{{ items.0.nme }}"), SCHEMA)
    # Declared paths, and anything below a free-form object, pass.
    check_names(compile_template("{{ style.tone }} {{ items.0.name }} {{ free.x.y }}"), SCHEMA)


def test_size_bound() -> None:
    with pytest.raises(TemplateError, match="at most"):
        compile_template("x" * (64 * 1024 + 1))


# As orjson parses a body: integers within 64 bits (it reads larger ones as floats).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(prefix=st.text(), value=json_values, suffix=st.text())
def test_fill_is_literal_text_around_the_value(prefix: str, value: Any, suffix: str) -> None:
    # Literal text without "{{" round-trips exactly; the one placeholder becomes the value's rendering.
    prefix, suffix = prefix.replace("{{", "{ {"), suffix.replace("{{", "{ {")
    prefix = prefix.rstrip("\\{")  # an escape or a brace just before "{{" would change the placeholder
    template = compile_template(prefix + "{{ v }}" + suffix)
    filled = template.fill({"v": value})
    assert filled.startswith(prefix)
    assert filled.endswith(suffix)
    middle = filled[len(prefix) : len(filled) - len(suffix)]
    if isinstance(value, str):
        assert middle == value
    elif value is None:
        assert middle == ""
