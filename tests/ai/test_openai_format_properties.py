"""Properties of the OpenAI format's parsers: any valid request is its own pivot (lossless), and any body
at all, however wrong, is either a request or an InvalidRequestError naming a parameter: never another
exception."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.adapter import InvalidRequestError
from fastgw.ai.formats.openai import parse_chat_request, parse_embeddings_request, render_embeddings
from tests.support import openai_examples as ex

TEXT = st.text(max_size=20)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": TEXT}, optional={"detail": st.sampled_from(["auto", "low"])}
            ),
        }
    ),
)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "assistant"]), "content": TEXT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.one_of(TEXT, st.lists(PART, max_size=3))}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": TEXT, "content": TEXT}),
)
NUMBER = st.floats(min_value=0, max_value=1, allow_nan=False)
OPTIONAL = {
    "temperature": st.one_of(st.none(), st.floats(min_value=0, max_value=2, allow_nan=False)),
    "top_p": NUMBER,
    "n": st.integers(min_value=1, max_value=128),
    "max_tokens": st.integers(min_value=1, max_value=1 << 31),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=4)),
    "seed": st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    "user": TEXT,
    "tools": st.just([ex.WEATHER_TOOL]),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "top_k": st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),  # an extension: kept as is
}
REQUEST = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=10), "messages": st.lists(MESSAGE, min_size=1, max_size=4)},
    optional=OPTIONAL,
)


@given(REQUEST)
def test_a_valid_request_is_its_own_pivot(request: dict[str, Any]) -> None:
    assert parse_chat_request(orjson.dumps(request)) == request


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    ["model", "messages", "role", "content", "type", "text", "tools", "function", "name", "parameters",
     "tool_choice", "stream", "stream_options", "n", "stop", "input", "response_format", "json_schema"]
)  # fmt: skip
# Bodies shaped like requests (the keys the parser looks at) with any values in any place.
NEAR_REQUEST = st.recursive(
    JSON,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300)
@given(st.one_of(NEAR_REQUEST, REQUEST.map(lambda r: {**r, "messages": [{"role": "user", "content": [1]}]})))
def test_any_body_is_a_request_or_a_named_400(body: Any) -> None:
    for parse in (parse_chat_request, parse_embeddings_request):
        try:
            parse(orjson.dumps(body))
        except InvalidRequestError as error:
            assert error.message
            assert error.param is None or isinstance(error.param, str)


@given(st.binary(max_size=64))
def test_any_bytes_are_a_request_or_a_400(body: bytes) -> None:
    try:
        parse_chat_request(body)
    except InvalidRequestError:
        pass


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=16),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, "float", "base64"]),
)
def test_embeddings_render_in_the_encoding_asked(vectors: list[list[float]], encoding: str | None) -> None:
    """base64 is little-endian float32 as the SDKs decode it (float32 values survive exactly); else floats."""
    answer = {"object": "list", "data": [{"index": i, "embedding": list(v)} for i, v in enumerate(vectors)]}
    data = orjson.loads(render_embeddings(answer, encoding))["data"]
    for item, vector in zip(data, vectors, strict=True):
        if encoding == "base64":
            raw = base64.b64decode(item["embedding"])
            assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == vector
        else:
            assert item["embedding"] == vector
