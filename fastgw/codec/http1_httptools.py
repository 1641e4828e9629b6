"""The default HTTP/1 request parser: llhttp through httptools, callbacks straight into the sink.

llhttp is strict by default (no lenient flags are set) and rejects obs-fold, bare CR/LF, CTL bytes in
values, whitespace before a colon, bad chunk lines and ``Content-Length`` with ``Transfer-Encoding``;
:mod:`fastgw.codec.framing` adds the rules llhttp leaves to the application (Host, versions, targets).
llhttp has no header-size limit, so this adapter counts head bytes itself: exactly for completed header
lines, and for a head that stops making progress (one giant header trickled in) by the bytes fed since
the last completed line.
"""

from __future__ import annotations

from typing import Final

import httptools

from fastgw.codec.framing import scan_request_head
from fastgw.codec.http1 import ParserLimits, RequestSink
from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange

_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0", "0.9": b"0.9"}


def _too_large(limit: int) -> CodecError:
    return CodecError(431, "headers-too-large", f"request header section exceeds {limit} bytes")


class HttptoolsReader:
    __slots__ = (
        "_head_bytes",
        "_headers",
        "_limits",
        "_parser",
        "_sink",
        "_stall",
        "_url",
    )

    def __init__(self, sink: RequestSink, limits: ParserLimits) -> None:
        self._sink = sink
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._stall = 0

    def feed(self, data: bytes) -> None:
        before = self._head_bytes + len(self._url)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0] :]
            if not self._sink.on_upgrade(rest):
                # Declined (h2c, unknown protocols): llhttp stopped at the head; go on with a fresh parser.
                self._parser = httptools.HttpRequestParser(self)
                if rest:
                    self.feed(rest)
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
        if self._url or self._headers:
            # The read ended inside a head: enforce the limits now, counting bytes that made no progress
            # (one giant header trickled in) so an unfinished head cannot grow without bound.
            if self._head_bytes + len(self._url) == before:
                self._stall += len(data)
            else:
                self._stall = 0
            self._check_head(self._stall)

    def _check_head(self, pending: int) -> None:
        limits = self._limits
        headers = self._headers
        if len(headers) > limits.max_header_count:
            raise CodecError(431, "headers-too-large", f"more than {limits.max_header_count} headers")
        if self._head_bytes + 4 * len(headers) + pending > limits.max_header_bytes:
            raise _too_large(limits.max_header_bytes)

    # -- llhttp callbacks (no on_message_begin: the head state is reset when a head completes) ----------
    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_target_bytes:
            raise CodecError(
                414, "uri-too-long", f"request target exceeds {self._limits.max_target_bytes} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        # Kept minimal (it runs per header line): limits are checked when the head completes or a read ends
        # inside it, which bounds memory by one read.
        # llhttp keeps trailing whitespace in a value; RFC 9110 5.5 excludes it (and h11 strips it), so
        # strip it here or "Content-Length: 3 " would mean different things on the two backends.
        self._headers.append((name.lower(), value.rstrip(b" \t")))
        self._head_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self._check_head(0)
        parser = self._parser
        ex = Exchange(
            parser.get_method(), self._url, _VERSIONS.get(parser.get_http_version(), b"?"), self._headers
        )
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._stall = 0
        scan_request_head(ex, self._limits.max_target_bytes)
        self._sink.on_request_head(ex)

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()
