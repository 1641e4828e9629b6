"""The default HTTP/1 request parser: llhttp through httptools, callbacks straight into the sink.

llhttp is strict by default (no lenient flags are set) and rejects obs-fold, bare CR/LF, CTL bytes in
values, whitespace before a colon, bad chunk lines and ``Content-Length`` with ``Transfer-Encoding``;
:mod:`fastgw.codec.framing` adds the rules llhttp leaves to the application (Host, versions, targets).
llhttp has no header-size limit, so this adapter counts head bytes itself: exactly for completed header
lines, and for a head that stops making progress (one giant header trickled in) by the bytes fed since
the last completed line.
"""

from __future__ import annotations

import httptools

from fastgw.codec.framing import scan_request_head
from fastgw.codec.http1 import ParserLimits, RequestSink
from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange


def _too_large(limit: int) -> CodecError:
    return CodecError(431, "headers-too-large", f"request header section exceeds {limit} bytes")


class HttptoolsReader:
    __slots__ = (
        "_headers",
        "_in_head",
        "_limits",
        "_parser",
        "_progress",
        "_head_bytes",
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
        self._in_head = False
        self._progress = False
        self._head_bytes = 0
        self._stall = 0

    def feed(self, data: bytes) -> None:
        self._progress = False
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
        if self._in_head:
            if self._progress:
                self._stall = 0
            else:
                self._stall += len(data)
            if self._head_bytes + self._stall > self._limits.max_header_bytes:
                raise _too_large(self._limits.max_header_bytes)

    # -- llhttp callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._head_bytes = 0
        self._stall = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._progress = True
        if len(self._url) > self._limits.max_target_bytes:
            raise CodecError(414, "uri-too-long", f"request target exceeds {self._limits.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        self._head_bytes += len(name) + len(value) + 4
        headers = self._headers
        headers.append((name.lower(), value))
        if len(headers) > self._limits.max_header_count:
            raise CodecError(431, "headers-too-large", f"more than {self._limits.max_header_count} headers")
        if self._head_bytes > self._limits.max_header_bytes:
            raise _too_large(self._limits.max_header_bytes)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        ex = Exchange(parser.get_method(), self._url, parser.get_http_version().encode(), self._headers)
        scan_request_head(ex, self._limits.max_target_bytes)
        self._sink.on_request_head(ex)

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()
