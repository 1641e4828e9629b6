"""Property tests: h11 is the oracle for the httptools path.

* any split of a stream of valid requests parses to the same events on both backends as the unsplit
  stream does;
* arbitrary bytes, and mutations of valid requests, never crash or hang either backend: the only
  exception allowed out of ``feed`` is CodecError, and both backends accept or refuse alike;
* the compiled Content-Length digit loop gives the number ``int()`` gives, or refuses what it refuses,
  and the field-name table lowers names exactly as ``bytes.lower()`` does.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.codec.framing import LOWER_FIELD_NAMES, decimal_value, lower_field_name
from fastgw.codec.problem import CodecError
from tests.support.recorder import reader_for

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_value = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.,;=/", max_size=30
)
_path = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8), max_size=5
)


@st.composite
def valid_request(draw: Any) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    target = "/" + "/".join(draw(_path))
    if draw(st.booleans()):
        target += "?" + draw(st.text(alphabet="abc=&123", max_size=10))
    headers = [("Host", "example.com")]
    for name in draw(st.lists(_token, max_size=6, unique=True)):
        if name not in ("host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"):
            headers.append((name, draw(_value).strip()))
    body = draw(st.binary(max_size=64)) if method in ("POST", "PUT", "PATCH") else b""
    framing = draw(st.sampled_from(["length", "chunked"])) if body else "none"
    raw = f"{method} {target} HTTP/1.1\r\n".encode()
    raw += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)
    if framing == "length":
        raw += b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        cut = draw(st.integers(0, len(body)))
        parts = [p for p in (body[:cut], body[cut:]) if p]
        raw += b"Transfer-Encoding: chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        raw += b"\r\n"
    return raw


def _run(backend: str, pieces: list[bytes]) -> tuple[list[tuple[object, ...]], int | None]:
    rec, reader = reader_for(backend)
    try:
        for piece in pieces:
            reader.feed(piece)
    except CodecError as err:
        return rec.events, err.status
    return rec.events, None


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


@given(st.lists(valid_request(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_parses_identically_on_both_backends(requests: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(requests)
    whole, err = _run("httptools", [stream])
    assert err is None
    assert sum(1 for e in whole if e[0] == "head") == len(requests)
    for backend in ("httptools", "h11"):
        events, err = _run(backend, _split(stream, cuts))
        assert err is None
        assert events == whole, backend


@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=4))
def test_random_bytes_never_crash_either_backend(data: bytes, cuts: list[int]) -> None:
    for backend in ("httptools", "h11"):
        _run(backend, _split(data, cuts))  # only CodecError may escape, which _run catches


@given(valid_request(), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_mutated_requests_are_accepted_or_refused_alike(raw: bytes, where: int, junk: bytes) -> None:
    i = where % (len(raw) + 1)
    mutated = raw[:i] + junk + raw[i:]
    a_events, _a_err = _run("httptools", [mutated])
    b_events, _b_err = _run("h11", [mutated])
    a_heads = [e for e in a_events if e[0] == "head"]
    b_heads = [e for e in b_events if e[0] == "head"]
    # Whatever one backend forwarded as a request head, the other produced identically (or refused it
    # first): no input is read as two different requests.
    for x, y in zip(a_heads, b_heads, strict=False):
        assert x == y


@given(
    st.one_of(
        st.integers(0, 10**19).map(lambda n: str(n).encode()),
        st.from_regex(rb"\A[ \t+\-]?[0-9_]{0,20}[ \t]?\Z"),
        st.binary(max_size=22),
    )
)
def test_content_length_digits_parse_as_int_does(value: bytes) -> None:
    # decimal_value is int() for the Content-Length fast path: the same number, or the same refusal.
    try:
        expected = int(value)
    except ValueError:
        with pytest.raises(ValueError):
            decimal_value(value)
        return
    assert decimal_value(value) == expected


@given(
    st.one_of(
        st.sampled_from(sorted(LOWER_FIELD_NAMES)),
        st.sampled_from(sorted(LOWER_FIELD_NAMES)).map(lambda n: n.swapcase()),
        st.binary(max_size=80),
    )
)
def test_field_names_lower_as_bytes_lower_does(name: bytes) -> None:
    # lower_field_name finds common names by length and first byte; anything else is bytes.lower().
    assert lower_field_name(name) == name.lower()
