"""The fallback HTTP/1 request parser on h11, also the conformance oracle in tests.

h11 is a sans-IO state machine for a full server; we only use its reading half. Two adaptations:

* h11 tolerates bare LF line endings, obs-fold and CTL bytes in values, which llhttp refuses. Every head is
  pre-scanned on the raw bytes (h11 keeps unparsed bytes in ``trailing_data``) so both backends refuse the
  same inputs; any difference between two parsers is a smuggling vector.
* h11 will not parse the next request until a response was sent through it, so after each request we feed
  it a placeholder response (its output is discarded: responses are serialised by ``serialize.py``).

It costs 70-110 us per exchange against ~2 us for httptools, so it is selectable, never the default.
"""

from __future__ import annotations

import re
from typing import Final

import h11

from fastgw.codec.framing import scan_request_head
from fastgw.codec.http1 import DETACHED, ParserLimits, RequestSink
from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange

# Not in h11's typed exports, but a documented state (h11 docs, "Switching protocols").
_MIGHT_SWITCH: Final = h11._state.MIGHT_SWITCH_PROTOCOL

_CTL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PLACEHOLDER: Final = h11.Response(status_code=200, headers=[(b"content-length", b"0")])


def _head_end(buf: bytes) -> int:
    """Index just past the blank line ending a head, or -1 if the head is incomplete."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n")
    ends = [i for i in (crlf, lf) if i >= 0]
    if not ends:
        return -1
    first = min(ends)
    return first + (3 if first == crlf else 2)


def _prescan(head: bytes) -> None:
    if head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        raise CodecError(400, "bad-request", "malformed request: bare CR or LF in head")
    if b"\n " in head or b"\n\t" in head:
        raise CodecError(400, "bad-request", "malformed request: obsolete line folding")
    if _CTL.search(head) is not None:
        raise CodecError(400, "bad-request", "malformed request: control character in head")
    # h11 merges repeated identical Content-Length headers (and "3, 3" lists) before we see them; the
    # shared rules refuse both, so they are checked here on the raw lines.
    lengths = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            lengths += 1
            if lengths > 1:
                raise CodecError(400, "bad-framing", "more than one Content-Length header")
            if not value.strip().isdigit():
                raise CodecError(400, "bad-framing", "Content-Length is not a decimal number")


class H11Reader:
    __slots__ = ("_conn", "_head_checked", "_limits", "_sink")

    def __init__(self, sink: RequestSink, limits: ParserLimits) -> None:
        self._sink = sink
        self._limits = limits
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head_checked = False

    def close(self) -> None:
        self._sink = DETACHED

    def feed(self, data: bytes) -> None:
        self._conn.receive_data(data)
        while True:
            conn = self._conn
            if conn.their_state is h11.IDLE and not self._head_checked:
                buf = conn.trailing_data[0]
                end = _head_end(buf.lstrip(b"\r\n"))
                if end < 0:
                    if len(buf) > self._limits.max_header_bytes:
                        raise CodecError(431, "headers-too-large", "request header section too large")
                    return
                if end > self._limits.max_header_bytes:
                    raise CodecError(431, "headers-too-large", "request header section too large")
                _prescan(buf.lstrip(b"\r\n")[:end])
                self._head_checked = True
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                problem = "headers-too-large" if status == 431 else "bad-request"
                raise CodecError(status, problem, f"malformed request: {exc}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if (
                    event is h11.PAUSED
                    and conn.their_state is _MIGHT_SWITCH
                    and not self._sink.on_upgrade(conn.trailing_data[0])
                ):
                    self._advance_cycle()  # an upgrade we declined: the buffered bytes are the next request
                    continue
                return
            if isinstance(event, h11.Request):
                self._head_checked = False
                headers = list(event.headers)
                if len(headers) > self._limits.max_header_count:
                    raise CodecError(
                        431, "headers-too-large", f"more than {self._limits.max_header_count} headers"
                    )
                ex = Exchange(event.method, event.target, event.http_version, headers)
                scan_request_head(ex, self._limits.max_target_bytes)
                self._sink.on_request_head(ex)
            elif isinstance(event, h11.Data):
                self._sink.on_request_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if conn.their_state is _MIGHT_SWITCH:
                    self._sink.on_request_end()
                    continue  # the next call returns PAUSED and reports the upgrade
                self._advance_cycle()
                self._sink.on_request_end()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _advance_cycle(self) -> None:
        conn = self._conn
        conn.send(_PLACEHOLDER)
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            # h11 closes after every HTTP/1.0 exchange; keep-alive is decided by the shared framing rules
            # (the connection stops reading when it closes), so continue on a fresh state machine.
            rest = conn.trailing_data[0]
            self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
            if rest:
                self._conn.receive_data(rest)  # b"" would mean EOF to h11
