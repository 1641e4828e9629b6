"""Fields that never cross a proxy (RFC 9110 7.6.1), the HTTP/1.1 field-line renderer, and the trailer
filter both directions share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",  # RFC 9113 3.1: belongs to an h2c upgrade, which is never forwarded
    }
)


def header_lines(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """HTTP/1.1 ``name: value`` lines for ``fields``, each ending in CRLF. (A list and one join: a
    generator of concatenated lines cost a handler's 9-field head 0.78 us compiled, this 0.49.)"""
    if not fields:
        return b""
    return b"\r\n".join([n + b": " + v for n, v in fields]) + b"\r\n"


# Never relayed in trailers (RFC 9110 6.5.1): framing, routing, authentication and controls.
_TRAILER_DROP: Final = HOP_BY_HOP | {
    b"content-length",
    b"content-type",
    b"content-encoding",
    b"host",
    b"authorization",
    b"set-cookie",
    b"cookie",
    b"cache-control",
    b"expires",
    b"date",
    b"location",
    b"retry-after",
    b"vary",
    b"warning",
    b"www-authenticate",
}


def filter_trailers(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The trailer fields that may pass through a proxy, either way."""
    return [(n, v) for n, v in fields if n not in _TRAILER_DROP and n[:1] != b":"]


def trailer_lines(fields: list[tuple[bytes, bytes]]) -> bytes:
    """The last chunk of a chunked HTTP/1.1 body, carrying ``fields`` as trailers."""
    return b"0\r\n" + header_lines(fields) + b"\r\n"
