"""An upstream response as llhttp reports it: the head cut from the bytes received, the body, the trailer
fields and the end, handed to a :class:`ResponseSink`.

The response is parsed by llhttp (strict: ``Content-Length`` with ``Transfer-Encoding``, repeated
lengths, bare LF, obs-fold and garbage are errors and become a 502, never relayed). Two llhttp gaps are
closed here and in ``upstream/connection.py``, which feeds the parser: it has no header-size limit (the
bytes received since the response began bound its head; trailer fields are counted) and it cannot be told
a response answers a HEAD, so after a HEAD response's head the parser is replaced and any body bytes make
the connection unusable.

The parser is given no ``on_header`` callback, so llhttp validates the head without calling Python once
per field line (two bytes objects, a Cython-to-Python call and a tuple each). When llhttp reports the
head complete it has accepted every byte of it: the head is cut from the bytes received (one ``split``)
and handed to the sink as lines. Trailer fields of a chunked body do need the callback, so such a
response's body goes on in a second parser, primed with a chunked head, that has one
(:class:`ChunkedTail`).
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools
from mypy_extensions import mypyc_attr

from fastgw.codec.framing import lower_field_name
from fastgw.proxy_headers.response_head import FRAMING_CHUNKED, FRAMING_NONE

MAX_RESPONSE_HEAD: Final = 65536  # bytes of upstream response head before it is a 502
MAX_RESPONSE_HEADERS: Final = 200
# What primes a ChunkedTail's parser: it then expects chunks, as the response's own parser did.
CHUNKED_HEAD: Final = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseSink(asyncio.Protocol):
    """What a response is streamed to: the HTTP/1.1 client connection, or an HTTP/2 stream.

    A base class, not a typing.Protocol: compiled code calls a compiled base class's methods through its
    vtable, where a call on a Protocol type is a generic method lookup and call with argument parsing (~300
    instructions by callgrind; three a response). It derives asyncio.Protocol only because mypyc allows a
    compiled class one base and the client connection must be an asyncio.Protocol. Interpreted subclasses
    (the HTTP/2 stream) are called through Python, as before.
    """

    def on_upstream_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        """The response head, validated by llhttp: ``head`` runs from the status line to the CRLF that ends
        the last field line, and ``lines`` is ``head.split(b"\\r\\n")`` (the status line, each field line,
        then an empty string). Returns its framing: a Content-Length, FRAMING_NONE or FRAMING_CHUNKED."""
        raise NotImplementedError

    def on_upstream_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_upstream_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def on_upstream_end(self, reusable: bool) -> None:
        raise NotImplementedError

    def on_upstream_error(self, status: int, problem: str, detail: str, retryable: bool) -> None:
        raise NotImplementedError

    def on_upstream_upgrade(self, rest: bytes) -> None:
        raise NotImplementedError

    def on_upstream_tunnel_data(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def pause_client_reading(self) -> None:
        raise NotImplementedError

    def resume_client_reading(self) -> None:
        raise NotImplementedError


class ChunkedTail:
    """llhttp callbacks for the body of a chunked response and its trailer fields (see the module doc)."""

    __slots__ = ("conn", "primed")

    def __init__(self, conn: ResponseReader) -> None:
        self.conn = conn
        self.primed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.primed:  # a trailer field (the priming head's own field is not one)
            self.conn.trailer_field(name, value)

    def on_headers_complete(self) -> None:
        if self.primed:  # a second head after the chunked response, in the same read: nobody asked for it
            self.conn.unsolicited()
        self.primed = True

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.chunked_tail_complete()


class ResponseReader(asyncio.Protocol):
    """The response-reading half of an upstream connection: llhttp's callbacks and the state they keep.
    ``UpstreamConnection`` (``upstream/connection.py``) extends it with the socket, the request and the
    deadlines; one object at run time, split by concept (compiled, the calls between them are native)."""

    __slots__ = (
        "_body_at",
        "_buf",
        "_head_at",
        "_headers",
        "_in_head",
        "_interim",
        "_no_body",
        "_parser",
        "_until_close",
        "closed",
        "deadline",
        "sink",
        "upgrading",
        "upstream_keep_alive",
    )

    def __init__(self) -> None:
        self.sink: ResponseSink | None = None
        self._headers: list[tuple[bytes, bytes]] = []  # trailer fields of a chunked body
        # While a head is incomplete: the bytes received of it (with the read being parsed), and where the
        # head starts in them (after an interim 1xx response, the next head starts behind it).
        self._buf = b""
        self._head_at = 0
        self._body_at = -1  # where a chunked body starts in _buf, while the parser is being switched
        self._in_head = False
        self._interim = False
        self._no_body = False
        self._until_close = False
        self.closed = False
        self.upgrading = False
        self.upstream_keep_alive = True
        self.deadline = 0.0
        # Last: the parser holds ``self``, and compiled, attributes set after ``self`` is handed out are
        # checked for being defined at each read.
        self._parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        """Close the connection (``UpstreamConnection``)."""
        raise NotImplementedError

    def unsolicited(self) -> None:
        """A response head nobody asked for (``UpstreamConnection``)."""
        raise NotImplementedError

    # -- llhttp callbacks (no on_header, see the module doc; no on_message_begin/on_status) ------------
    def trailer_field(self, name: bytes, value: bytes) -> None:
        self._headers.append((lower_field_name(name), value))

    def chunked_tail_complete(self) -> None:
        """A chunked response ended: the next response is parsed without on_header again."""
        self._parser = httptools.HttpResponseParser(self)
        self.on_message_complete()

    def on_headers_complete(self) -> None:
        parser = self._parser
        buf = self._buf
        start = self._head_at
        size = len(buf)
        while start < size and (buf[start] == 0x0D or buf[start] == 0x0A):
            start += 1  # llhttp skips CR and LF before a status line
        # llhttp accepted the head: it ends at the first empty line, and every line ends in CRLF.
        blank = buf.find(b"\r\n\r\n", start)
        if blank < 0:
            raise ValueError("response head without its end")  # cannot happen: llhttp saw the end
        end = blank + 2
        self._head_at = end + 2
        head = buf[start:end]
        lines = head.split(b"\r\n")
        if len(lines) - 2 > MAX_RESPONSE_HEADERS or end - start > MAX_RESPONSE_HEAD:
            raise ValueError(
                f"response header section exceeds {MAX_RESPONSE_HEAD} bytes or {MAX_RESPONSE_HEADERS} lines"
            )
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/"):
            raise ValueError("not an HTTP/1.x status line")  # llhttp also takes RTSP/ and ICE/ ones
        # llhttp accepted "HTTP/d.d ddd": the status is read here, not by a method call (~700 instructions).
        status = (status_line[9] - 48) * 100 + (status_line[10] - 48) * 10 + status_line[11] - 48
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue / 103 Early Hints: not relayed (we answered 100 ourselves)
            return
        self._in_head = False
        self.upstream_keep_alive = parser.should_keep_alive()
        sink = self.sink
        if sink is None:
            self.unsolicited()
            return
        self.upgrading = status == 101
        # The sink reads Content-Length and Transfer-Encoding while it filters the head (one pass).
        framing = sink.on_upstream_head(status, head, lines)
        self._until_close = framing == FRAMING_NONE and not self._no_body and status not in (101, 204, 304)
        if self._no_body and status != 101:
            # A HEAD response has no body whatever its headers say; llhttp cannot be told, so start a fresh
            # parser for the next response and report completion now.
            self._buf = b""
            self._parser = httptools.HttpResponseParser(self)
            self._finish(sink)
        elif framing == FRAMING_CHUNKED and status not in (101, 204, 304):
            # Trailer fields may follow: stop this parser here; data_received switches to a _ChunkedTail.
            self._body_at = self._head_at
            raise RuntimeError("a chunked body follows")  # told apart from errors by _body_at
        else:
            self._buf = b""

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is None:
            self.close()  # body bytes after a HEAD response: this connection's framing is not trustworthy
            return
        sink.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.upgrading:
            return  # llhttp completes a 101 head, then raises HttpParserUpgrade: the tunnel starts there
        sink = self.sink
        if sink is not None:
            self._finish(sink)

    def _finish(self, sink: ResponseSink) -> None:
        self._until_close = False
        self.sink = None
        self.deadline = 0.0
        trailers = self._headers  # llhttp reports a chunked body's trailer fields through on_header
        if trailers:
            self._headers = []
            sink.on_upstream_trailers(trailers)
        sink.on_upstream_end(self.upstream_keep_alive and not self.closed)
