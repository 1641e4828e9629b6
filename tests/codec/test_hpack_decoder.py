"""The request HPACK decoder against hpack's own Encoder and Decoder: any sequence of header blocks a
conforming encoder may produce (indexing on or off, never-indexed fields, Huffman on or off, table size
changes) decodes to the same fields and leaves the same dynamic table; malformed blocks raise the errors
h2 maps to COMPRESSION_ERROR, and oversized header lists the one it maps to a DoS refusal."""

from __future__ import annotations

from typing import Any

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hypothesis import given
from hypothesis import strategies as st

from fastgw.codec.hpack_decoder import RequestDecoder

_names = st.sampled_from(
    [b":method", b":path", b":authority", b":scheme", b"accept", b"user-agent", b"x-api-key", b"cookie"]
) | st.binary(min_size=1, max_size=20).map(lambda b: b.hex().encode())
_values = st.sampled_from([b"GET", b"/", b"/small", b"http", b"*/*", b""]) | st.binary(max_size=300)
_field = st.tuples(_names, _values, st.sampled_from(["index", "never", "plain"]))
_block = st.lists(_field, max_size=12)


def _table(decoder: Decoder) -> list[tuple[bytes, bytes]]:
    return [(bytes(n), bytes(v)) for n, v in decoder.header_table.dynamic_entries]


@given(
    st.lists(st.tuples(_block, st.booleans(), st.sampled_from([None, 0, 64, 256, 4096])), max_size=8),
)
def test_decodes_what_hpack_encodes_exactly_as_hpack_does(
    blocks: list[tuple[list[tuple[bytes, bytes, str]], bool, int | None]],
) -> None:
    encoder = Encoder()
    reference = Decoder()
    ours = RequestDecoder()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size  # the next block starts with a size update
        headers: list[Any] = []
        for name, value, mode in fields:
            if mode == "never":
                headers.append(NeverIndexedHeaderTuple(name, value))
            else:
                headers.append((name, value))
        block = encoder.encode(headers, huffman=huffman)
        expected = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        assert ours.decode(block) == expected == [(n, v) for n, v, _ in fields]
        assert ours._entries == _table(reference)
        assert ours.header_table_size == reference.header_table_size


def test_huffman_strings_are_remembered_and_decode_the_same() -> None:
    encoder = Encoder()
    ours = RequestDecoder()
    fields = [(b"x-custom", b"a value that Huffman coding shortens")]
    first = ours.decode(encoder.encode(fields, huffman=True))
    again = RequestDecoder().decode(Encoder().encode(fields, huffman=True))
    assert first == again == fields


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", HPACKDecodingError),  # indexed field 0
        (b"\xbe", InvalidTableIndex),  # index 62: the dynamic table is empty
        (b"\xff\x80\x80\x80\x80\x01", HPACKDecodingError),  # an integer over 5 bytes
        (b"\xff", HPACKDecodingError),  # an integer cut short
        (b"\x00\x05ab", HPACKDecodingError),  # a name shorter than its length
        (b"\x01", HPACKDecodingError),  # a literal without its value
        (b"\x82\x20", HPACKDecodingError),  # a table size update after a field
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # a size update over 4096
        (b"\x00\x01x\x81\xff", HPACKDecodingError),  # Huffman: padding longer than 7 bits / EOS
    ],
)
def test_malformed_blocks_raise_the_errors_h2_maps(block: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        RequestDecoder().decode(block)
    with pytest.raises(error):  # the reference agrees on the kind of error
        Decoder().decode(block, raw=True)


def test_header_list_size_is_bounded_like_hpack_bomb_protection_expects() -> None:
    # One 4000-byte value indexed, then referenced 20 times: 80 KB from a ~4 KB block.
    encoder = Encoder()
    block = encoder.encode([(b"x-bomb", b"b" * 4000)]) + encoder.encode([(b"x-bomb", b"b" * 4000)] * 20)
    ours = RequestDecoder(max_header_list_size=16384)
    with pytest.raises(OversizedHeaderListError):
        ours.decode(block)


def test_a_lowered_table_size_must_be_followed_by_the_peer() -> None:
    ours = RequestDecoder()
    ours.decode(Encoder().encode([(b"x-a", b"1")]))
    ours.max_allowed_table_size = 0  # we announced 0; the next block must start with a size update
    with pytest.raises(InvalidTableSizeError):
        ours.decode(b"\x82")
    assert ours.decode(b"\x20\x82") == [(b":method", b"GET")]
    assert ours._entries == []
