"""An HPACK encoder for responses that never uses the dynamic table (RFC 7541), as nginx's does.

hpack's own Encoder searches its dynamic table linearly and Huffman-codes every literal in Python for each
field of each response; profiling the HTTP/2 bench showed it at about a third of the worker's time. The
fields a gateway sends repeat (content-type, via, security headers) or never repeat (request ids), and
neither gains much from indexing. Without a dynamic table every field's encoding depends on the field
alone, so it is computed once and cached: a response costs one dict probe per field.

The first header block starts with a dynamic table size update to 0 (RFC 7541 6.3), so the peer's table
size setting never obliges us to signal anything later. Repeating fields are Huffman-coded when shorter
(once, when cached); values that never repeat are sent as raw literals and not cached.
"""

from __future__ import annotations

from typing import Final

from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

_HUFFMAN: Final = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_TABLE_SIZE_ZERO: Final = b"\x20"  # 001 prefix, size 0
_CACHE_MAX: Final = 4096
# Values that differ in (nearly) every response: caching them would only churn the cache.
_VOLATILE: Final = frozenset({b"x-request-id", b"set-cookie", b"etag", b"last-modified", b"traceparent"})
_VALUE_CACHE_MAX: Final = 128  # longer values are not cached either

# Shared by every connection of the worker: an encoding depends on the field alone.
_CACHE: Final[dict[tuple[bytes, bytes], bytes]] = {}

_STATIC_FULL: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault((_name, _value), _index)
    _STATIC_NAME.setdefault(_name, _index)


def _string(data: bytes, huffman: bool) -> bytes:
    """An HPACK string literal (RFC 7541 5.2), Huffman-coded when asked and shorter."""
    if huffman:
        coded = _HUFFMAN.encode(data)
        if len(coded) < len(data):
            length = encode_integer(len(coded), 7)
            length[0] |= 0x80
            return bytes(length) + coded
    return bytes(encode_integer(len(data), 7)) + data


def encode_field(name: bytes, value: bytes, huffman: bool) -> bytes:
    """One field: indexed when the static table has it whole, else a literal without indexing."""
    index = _STATIC_FULL.get((name, value))
    if index is not None:
        prefix = encode_integer(index, 7)
        prefix[0] |= 0x80
        return bytes(prefix)
    index = _STATIC_NAME.get(name)
    if index is not None:
        return bytes(encode_integer(index, 4)) + _string(value, huffman)  # 0000 prefix: not indexed
    return b"\x00" + _string(name, huffman) + _string(value, huffman)


# Literal-without-indexing prefixes of the volatile names, and one-byte string lengths (RFC 7541 5.2).
_LENGTH: Final = tuple(bytes((n,)) for n in range(127))
_NAME_PREFIX: Final = {
    name: (
        bytes(encode_integer(_STATIC_NAME[name], 4))
        if name in _STATIC_NAME
        else b"\x00" + _string(name, True)
    )
    for name in _VOLATILE
}


class ResponseEncoder:
    """Drop-in for ``hpack.Encoder`` on a server connection (h2 calls ``encode`` and sets
    ``header_table_size``)."""

    __slots__ = ("_started", "header_table_size")

    def __init__(self) -> None:
        self._started = False
        self.header_table_size = 4096  # what the peer allows; we use none of it

    def encode(self, headers: list[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = _CACHE
        parts = []
        if not self._started:
            self._started = True
            parts.append(_TABLE_SIZE_ZERO)
        for field in headers:
            encoded = cache.get(field)
            if encoded is None:
                name, value = field[0], field[1]
                if name in _VOLATILE or len(value) > _VALUE_CACHE_MAX:
                    prefix = _NAME_PREFIX.get(name)
                    if prefix is not None and len(value) < 127:  # the usual request id: one join
                        encoded = prefix + _LENGTH[len(value)] + value
                    else:
                        encoded = encode_field(name, value, False)
                else:
                    encoded = encode_field(name, value, huffman)
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[(name, value)] = encoded
            parts.append(encoded)
        return b"".join(parts)
