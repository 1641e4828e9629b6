"""The control channel's codec: every message survives the wire, and nothing else gets through."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.codec.control_messages import (
    MESSAGES,
    Ack,
    ControlMessage,
    Hello,
    MessageError,
    decode,
    from_wire,
    to_wire,
)
from fastgw.control.channel import ChannelError, FrameDecoder, encode

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def _values(hint: Any) -> st.SearchStrategy[Any]:
    """Values a field of this annotation may hold (what the codec must carry unchanged)."""
    if hint is Any:
        return _JSON
    if hint is int:
        return st.integers(-(2**63), 2**63 - 1)
    if hint is str:
        return st.text()
    if hint is bool:
        return st.booleans()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else _values(a) for a in args])
    if origin is dict:
        return st.dictionaries(st.text(), _values(args[1]), max_size=4)
    if origin is tuple and args[-1] is Ellipsis:
        return st.lists(_values(args[0]), max_size=4).map(tuple)
    if origin is tuple:
        return st.tuples(*(_values(a) for a in args))
    raise AssertionError(f"no strategy for {hint!r}")


def _messages(cls: type[ControlMessage]) -> st.SearchStrategy[ControlMessage]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _values(hints[f.name]) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))  # type: ignore[misc]


ANY_MESSAGE = st.sampled_from(sorted(MESSAGES.values(), key=lambda c: c.TAG)).flatmap(_messages)


@given(st.lists(ANY_MESSAGE, min_size=1, max_size=5), st.data())
def test_every_message_survives_the_wire_however_the_bytes_are_split(
    messages: list[ControlMessage], data: st.DataObject
) -> None:
    stream = b"".join(encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    decoder = FrameDecoder()
    out: list[ControlMessage] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == messages


@given(st.dictionaries(st.text(), _JSON, max_size=5), st.sampled_from([None, *MESSAGES]))
def test_any_json_object_is_a_message_or_a_message_error(wire: dict[str, Any], tag: str | None) -> None:
    if tag is not None:
        wire["t"] = tag
    try:
        message = from_wire(wire)
    except MessageError as exc:
        assert str(exc)
    else:
        assert tag == message.TAG
        assert from_wire(to_wire(message)) == message


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ({"t": "keys", "full": []}, "unknown control message type 'keys'"),
        ({"slot": 1}, "unknown control message type None"),
        ({"t": "hello", "slot": 1, "snapshot": "s"}, "hello message: missing field 'pid'"),
        ({"t": "hello", "slot": "1", "pid": 2, "snapshot": "s"}, "hello message: field 'slot' must be int"),
        ({"t": "hello", "slot": True, "pid": 2, "snapshot": "s"}, "hello message: field 'slot' must be int"),
        ({"t": "ack", "seq": 1, "ok": True, "extra": 1}, "ack message: unexpected field 'extra'"),
        (
            {"t": "quota", "writer": "w", "seq": 1, "entries": [[1, 2, "l", "k"]]},
            "quota message: field 'entries' must be array of 5",
        ),
        ({"t": "cache", "cache": "identities", "put": []}, "cache message: field 'put' must be object"),
    ],
)
def test_a_malformed_message_is_a_message_error_naming_what_is_wrong(
    wire: dict[str, Any], error: str
) -> None:
    with pytest.raises(MessageError) as caught:
        from_wire(wire)
    assert str(caught.value) == error


def test_a_frame_of_an_unknown_message_is_a_channel_error() -> None:
    body = orjson.dumps({"t": "teleport"})
    with pytest.raises(ChannelError, match="unknown control message type 'teleport'"):
        FrameDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_lists_on_the_wire_become_tuples_and_defaults_fill_what_is_left_out() -> None:
    assert decode(b'{"t": "ack", "seq": 3, "ok": false}') == Ack(seq=3, ok=False, snapshot="", error="")
    assert decode(orjson.dumps(to_wire(Hello(1, 2, "s")))) == Hello(slot=1, pid=2, snapshot="s")
