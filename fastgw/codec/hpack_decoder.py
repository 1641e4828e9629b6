"""An HPACK decoder for request header blocks (RFC 7541), used by h2 in place of hpack's Decoder.

hpack's Decoder spends ~12 us on a 7-byte block of indexed fields (what a client sends for its second
request on a connection): a function call, a debug-log call and a HeaderTuple per field, and a pass to
convert the result. This one decodes the common representations inline in one loop (indexed fields and
string lengths that fit their prefix), and remembers Huffman-coded strings it has decoded (bounded, short
strings only): clients send the same names and values over and over.

The semantics are hpack's, so h2 maps errors exactly as before (``HPACKDecodingError``,
``InvalidTableIndex``, ``InvalidTableSizeError`` -> COMPRESSION_ERROR; ``OversizedHeaderListError`` -> a
denial-of-service error): the header list is limited by ``max_header_list_size`` (32 bytes + name + value
per field, RFC 7540 6.5.2), a table size update must come first in a block and stay within
``max_allowed_table_size``, integers longer than 5 bytes are refused. Fields come back as plain
``(name, value)`` byte tuples; the never-indexed flag is dropped (requests are only ever re-encoded as
HTTP/1.1). tests/codec/test_hpack_decoder.py checks it against hpack's own Encoder and Decoder.
"""

from __future__ import annotations

from typing import Final

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_LEN: Final = len(_STATIC)  # 61
DEFAULT_TABLE_SIZE: Final = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 7540 6.5.2)
_ENTRY_OVERHEAD: Final = 32  # RFC 7541 4.1
_MAX_INTEGER_BYTES: Final = 5  # the prefix byte and 4 continuation bytes: up to ~2**28

# Huffman-decoded strings by their coded bytes, shared by every connection of the worker. Bounded.
_HUFFMAN: dict[bytes, bytes] = {}
_HUFFMAN_MAX: Final = 4096
_HUFFMAN_CACHED_LEN: Final = 128  # longer coded strings are decoded every time


def _huffman(coded: bytes) -> bytes:
    text = _HUFFMAN.get(coded)
    if text is None:
        text = decode_huffman(coded)  # raises HPACKDecodingError on bad codes or padding
        if len(coded) <= _HUFFMAN_CACHED_LEN:
            if len(_HUFFMAN) >= _HUFFMAN_MAX:
                _HUFFMAN.clear()
            _HUFFMAN[coded] = text
    return text


def _integer(data: bytes, i: int, number: int) -> tuple[int, int]:
    """The rest of an integer whose prefix was all ones (``number``): continuation bytes from ``i``."""
    shift = 0
    for _ in range(_MAX_INTEGER_BYTES - 1):
        byte = data[i]
        i += 1
        number += (byte & 0x7F) << shift
        if byte < 0x80:
            return number, i
        shift += 7
    raise HPACKDecodingError("HPACK integer representation is too long")


class RequestDecoder:
    """Decodes one connection's header blocks; h2 calls :meth:`decode` and sets the two limits."""

    __slots__ = ("_entries", "_size", "max_allowed_table_size", "max_header_list_size", "table_size")

    def __init__(self, max_header_list_size: int = 65536) -> None:
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE  # what we announced (and the peer acknowledged)
        self.table_size = DEFAULT_TABLE_SIZE  # what the peer's encoder uses, set by its size updates
        self._entries: list[tuple[bytes, bytes]] = []  # the dynamic table, newest first
        self._size = 0

    @property
    def header_table_size(self) -> int:
        return self.table_size

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block into ``(name, value)`` byte pairs (``raw`` must be True)."""
        if not raw:
            raise ValueError("RequestDecoder returns bytes only (h2 asks with raw=True)")
        try:
            return self._decode(data)
        except IndexError:
            raise HPACKDecodingError("Truncated header block") from None

    def _decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        entries = self._entries
        limit = self.max_header_list_size
        inflated = 0
        end = len(data)
        i = 0
        while i < end:
            first = data[i]
            i += 1
            if first & 0x80:  # indexed field (RFC 7541 6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, i = _integer(data, i, index)
                field = self._field(index, entries)
            elif first & 0x40 or not first & 0x20:  # a literal (6.2.1 indexed, 6.2.2/6.2.3 not indexed)
                if first & 0x40:
                    mask = 0x3F
                    index = first & 0x3F
                else:
                    mask = 0x0F
                    index = first & 0x0F
                if index == mask:
                    index, i = _integer(data, i, index)
                if index:
                    name = self._field(index, entries)[0]
                else:
                    name, i = _string(data, i, end)
                value, i = _string(data, i, end)
                field = (name, value)
                if mask == 0x3F:
                    self._add(field)
            else:  # dynamic table size update (6.3): only before the first field of a block
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size = first & 0x1F
                if size == 0x1F:
                    size, i = _integer(data, i, size)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.table_size = size
                self._evict()
                continue
            headers.append(field)
            inflated += _ENTRY_OVERHEAD + len(field[0]) + len(field[1])
            if inflated > limit:
                raise OversizedHeaderListError(f"A header list larger than {limit} has been received")
        if self.table_size > self.max_allowed_table_size:
            # We lowered SETTINGS_HEADER_TABLE_SIZE and the peer has not followed with a size update.
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers

    def _field(self, index: int, entries: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_LEN:
            return _STATIC[index - 1]
        position = index - _STATIC_LEN - 1
        if 0 <= position < len(entries):
            return entries[position]
        raise InvalidTableIndex(f"Invalid table index {index}")

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = _ENTRY_OVERHEAD + len(field[0]) + len(field[1])
        if size > self.table_size:
            self._entries.clear()  # an entry larger than the table empties it (RFC 7541 4.4)
            self._size = 0
            return
        self._entries.insert(0, field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while self._size > self.table_size:
            name, value = entries.pop()
            self._size -= _ENTRY_OVERHEAD + len(name) + len(value)


def _string(data: bytes, i: int, end: int) -> tuple[bytes, int]:
    """A string literal (RFC 7541 5.2) starting at ``i``: its bytes and the index after it."""
    first = data[i]
    i += 1
    length = first & 0x7F
    if length == 0x7F:
        length, i = _integer(data, i, length)
    stop = i + length
    if stop > end:
        raise HPACKDecodingError("Truncated header block")
    text = data[i:stop]
    if first & 0x80:
        text = _huffman(text)
    return text, stop
