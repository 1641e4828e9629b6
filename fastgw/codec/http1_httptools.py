"""The default HTTP/1 request parser: llhttp through httptools, callbacks straight into the sink.

llhttp is strict by default (no lenient flags are set) and rejects obs-fold, bare CR/LF, CTL bytes in
values, whitespace before a colon, bad chunk lines and ``Content-Length`` with ``Transfer-Encoding``;
:mod:`fastgw.codec.framing` adds the rules llhttp leaves to the application (Host, versions, targets).
llhttp has no header-size limit, so this adapter enforces one itself, without paying for it per header:
``_fed`` counts the bytes fed since a point at or before the current head's first byte, an upper bound
on the head's size. Only when that bound passes the limit is the head measured exactly (completed lines,
4 bytes of framing each), and a head that then stops making progress (one giant header trickled in)
is charged the bytes fed without progress. An unfinished head is bounded by twice the limit plus a read.
"""

from __future__ import annotations

from typing import Final

import httptools

from fastgw.codec.framing import (
    lower_field_name,
    scan_request_head,
    section_size,
    without_trailing_whitespace,
)
from fastgw.codec.http1 import DETACHED, ParserLimits, RequestSink
from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange

_NO_CALLBACKS: Final = object()  # the protocol of a closed reader's parser, which is never fed
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0", "0.9": b"0.9"}


def _names_connection(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a ``Connection`` field is present. llhttp accepts the versions 0.9, 1.0, 1.1 and 2.0 only,
    and without a ``Connection`` field it keeps a request's connection alive for 1.1 alone: then
    ``should_keep_alive()`` tells the version without the cost of ``get_http_version()``
    (tests/codec/test_http1.py checks every version against both Connection cases)."""
    return any(name == b"connection" for name, _value in headers)  # compiled to a plain loop


def _too_large(limit: int) -> CodecError:
    return CodecError(431, "headers-too-large", f"request header section exceeds {limit} bytes")


class HttptoolsReader:
    __slots__ = (
        "_fed",
        "_headers",
        "_last_size",
        "_max_count",
        "_max_head",
        "_max_target",
        "_parser",
        "_read",
        "_sink",
        "_stall",
        "_url",
    )

    def __init__(self, sink: RequestSink, limits: ParserLimits) -> None:
        self._sink = sink
        # The limits as native ints (ParserLimits is an interpreted dataclass: a generic lookup per read).
        self._max_head = limits.max_header_bytes
        self._max_count = limits.max_header_count
        self._max_target = limits.max_target_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._fed = 0  # bytes fed since a point at or before the current head's start
        self._read = 0  # length of the read being parsed
        self._last_size = -1  # head bytes (target included) at the last measurement (-1: none yet)
        self._stall = 0

    def feed(self, data: bytes) -> None:
        while True:
            self._read = size = len(data)
            self._fed += size
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                rest = data[exc.args[0] :]
                if not self._sink.on_upgrade(rest):
                    # Declined (h2c, unknown protocols): llhttp stopped at the head; go on with a fresh
                    # parser. A loop, not a call on the rest: a read of N such requests nested N calls
                    # deep, each holding its copy of the rest (one 256 KiB read held ~500 MB).
                    self._parser = httptools.HttpRequestParser(self)
                    if rest:
                        data = rest
                        continue
                return
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, CodecError):
                    raise cause from None
                raise
            except httptools.HttpParserInvalidMethodError:
                raise CodecError(400, "bad-request", "invalid or unsupported request method") from None
            except httptools.HttpParserError as exc:
                raise CodecError(400, "bad-request", f"malformed request: {exc}") from None
            break
        if (self._url or self._headers) and (
            self._fed > self._max_head or len(self._headers) > self._max_count
        ):
            # The read ended inside a head that may be too large: measure it, charging bytes that made no
            # progress (one giant header trickled in) so an unfinished head cannot grow without bound.
            exact = section_size(self._headers)
            progress = exact + len(self._url)  # a target that still grows is progress too
            if progress == self._last_size:
                self._stall += size
            else:
                self._last_size = progress
                self._stall = 0
            self._check_head(exact + self._stall)

    def close(self) -> None:
        self._sink = DETACHED
        self._parser = httptools.HttpRequestParser(_NO_CALLBACKS)  # the old one held this reader
        self._headers = []

    def _check_head(self, size: int) -> None:
        if len(self._headers) > self._max_count:
            raise CodecError(431, "headers-too-large", f"more than {self._max_count} headers")
        if size > self._max_head:
            raise _too_large(self._max_head)

    # -- llhttp callbacks (no on_message_begin: the head state is reset when a head completes) ----------
    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url  # one piece unless a read split the target
        if len(self._url) > self._max_target:
            raise CodecError(414, "uri-too-long", f"request target exceeds {self._max_target} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Kept minimal (it runs per header line): limits are checked when the head completes or a read ends
        # inside it, which bounds memory by one read.
        self._headers.append((lower_field_name(name), without_trailing_whitespace(value)))

    def on_headers_complete(self) -> None:
        headers = self._headers
        if self._fed > self._max_head or len(headers) > self._max_count:
            self._check_head(section_size(self._headers))
        parser = self._parser
        if parser.should_keep_alive() and not _names_connection(headers):
            version = b"1.1"  # see _names_connection: get_http_version() formats a str (~0.5 us a call)
        else:
            version = _VERSIONS.get(parser.get_http_version(), b"?")
        ex = Exchange(parser.get_method(), self._url, version, headers)
        self._url = b""
        self._headers = []
        self._fed = self._read  # the next head starts within this read, or later
        self._last_size = -1
        self._stall = 0
        scan_request_head(ex, self._max_target)
        self._sink.on_request_head(ex)

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()
