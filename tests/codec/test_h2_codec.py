"""The sans-IO HTTP/2 pieces: the response HPACK encoder (checked against hpack's decoder, as a client
decodes it), the frame-header guard (frames split at every byte boundary) and request field rules."""

from __future__ import annotations

import pytest
from hpack import Decoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
)

from fastgw.codec.h2_guard import PREFACE, FloodError, FrameGuard
from fastgw.codec.h2_request import parse_request
from fastgw.codec.hpack_encoder import ResponseEncoder
from fastgw.codec.problem import CodecError
from fastgw.snapshot import Http2Settings

FIELDS = [
    (b":status", b"200"),
    (b":status", b"404"),
    (b"content-type", b"application/json"),
    (b"content-length", b"123"),
    (b"x-request-id", b"0123456789abcdef"),
    (b"x-request-id", b"r" * 300),
    (b"etag", b'"v1"'),
    (b"x-custom", b"value with spaces"),
    (b"x-long", b"L" * 500),
    (b"via", b"1.1 fastgw"),
]


def test_response_encoder_round_trips_through_a_client_decoder() -> None:
    decoder = Decoder()
    decoder.header_table_size = 0  # we announce 0 in the first block; a client must accept it
    first = ResponseEncoder()
    for _ in range(3):  # cached encodings decode the same as fresh ones
        block = first.encode(FIELDS)
        assert decoder.decode(block, raw=True) == FIELDS
    second = ResponseEncoder()  # a new connection starts with the size update again
    fresh = Decoder()
    block = second.encode(FIELDS[:1])
    assert block[:1] == b"\x20" and fresh.decode(block, raw=True) == FIELDS[:1]
    assert len(fresh.header_table.dynamic_entries) == 0  # nothing was ever indexed


def frames(settings: Http2Settings, *chunks: bytes, split: int = 0) -> None:
    guard = FrameGuard(settings)
    data = PREFACE + b"".join(chunks)
    step = split or len(data)
    for i in range(0, len(data), step):
        guard.scan(data[i : i + step], 1000.0)


@pytest.mark.parametrize("split", [0, 1, 7, 9, 10])
def test_guard_counts_frames_split_at_any_boundary(split: int) -> None:
    limits = Http2Settings(max_resets_per_second=3, max_control_frames_per_second=3)
    ok = [RstStreamFrame(i).serialize() for i in (1, 3, 5)] + [PingFrame(0).serialize()] * 3
    frames(limits, *ok, split=split)
    with pytest.raises(FloodError, match="stream resets"):
        frames(limits, *[RstStreamFrame(i).serialize() for i in (1, 3, 5, 7)], split=split)
    with pytest.raises(FloodError, match="control frames"):
        frames(limits, *[PingFrame(0).serialize()] * 4, split=split)
    # DATA payloads are skipped, never read as frame headers.
    payload = DataFrame(1, PingFrame(0).serialize() * 50).serialize()
    frames(limits, payload, split=split)


@pytest.mark.parametrize("split", [1, 2, 5, 9, 10, 17, 1000])
def test_guard_reports_where_a_client_goaway_ends_however_it_is_split(split: int) -> None:
    # The connection hands h2 the bytes up to a GOAWAY on their own (h2 refuses any frame after one).
    before = PingFrame(0).serialize()
    goaway = GoAwayFrame(0, last_stream_id=0, additional_data=b"bye").serialize()
    data = PREFACE + before + goaway + PingFrame(0).serialize()
    guard = FrameGuard(Http2Settings())
    ends = []
    for i in range(0, len(data), split):
        guard.scan(data[i : i + split], 1000.0)
        if guard.goaway_end >= 0:
            ends.append(i + guard.goaway_end)
    assert ends == [len(PREFACE) + len(before) + len(goaway)]


def test_guard_bounds_header_blocks() -> None:
    limits = Http2Settings(
        max_header_list_size=4096, max_continuation_frames=4, max_empty_frames_per_second=2
    )
    head = HeadersFrame(1, b"x" * 100)
    conts = [ContinuationFrame(1, b"y" * 100) for _ in range(5)]
    with pytest.raises(FloodError, match="CONTINUATION"):
        frames(limits, head.serialize(), *(c.serialize() for c in conts))
    big = [ContinuationFrame(1, b"z" * 2000) for _ in range(3)]
    with pytest.raises(FloodError, match="header block larger"):
        frames(limits, head.serialize(), *(c.serialize() for c in big))
    empty = [ContinuationFrame(1, b"") for _ in range(3)]
    with pytest.raises(FloodError, match="empty frames"):
        frames(limits, head.serialize(), *(c.serialize() for c in empty))


BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.example"), (b":path", b"/a?b")]


def test_request_fields_become_an_exchange() -> None:
    ex = parse_request([*BASE, (b"cookie", b"a=1"), (b"x-y", b"z"), (b"cookie", b"b=2")], False, 8192)
    assert (ex.method, ex.target, ex.host, ex.version) == (b"GET", b"/a?b", b"api.example", b"2")
    assert ex.chunked and not ex.body_complete  # a body of unknown length follows
    assert ex.headers == [(b"x-y", b"z"), (b"cookie", b"a=1; b=2")]  # RFC 9113 8.2.3


@pytest.mark.parametrize(
    "fields",
    [
        [(b":method", b"GET"), (b":path", b"/")],  # no :scheme, no authority
        [*BASE, (b":path", b"/again")],
        [(b"x-a", b"1"), *BASE],  # pseudo-header after a regular one
        [*BASE, (b":protocol", b"websocket")],
        [*BASE, (b"keep-alive", b"1")],
        [*BASE, (b"x-a", b"1\x00")],
        [*BASE, (b"x a", b"1")],
        [*BASE, (b"content-length", b"-1")],
    ],
)
def test_malformed_requests_are_refused(fields: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(CodecError) as err:
        parse_request(fields, True, 8192)
    assert err.value.status == 400


def test_too_many_header_fields_is_431() -> None:
    fields = BASE + [(b"x-%d" % i, b"v") for i in range(101)]
    with pytest.raises(CodecError) as err:
        parse_request(fields, True, 8192, 100)
    assert err.value.status == 431
    assert parse_request(BASE + fields[4:104], True, 8192, 100).method == b"GET"  # exactly 100 pass
