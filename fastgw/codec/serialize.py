"""Bytes out: status lines, header blocks, chunked framing and the cached ``Date`` header.

All response serialisation helpers live here so both HTTP/1 backends emit identical bytes. Nothing in
this module allocates per request beyond the final join; the status-line table and the ``Date`` slot
are built once (uvicorn ``STATUS_LINE`` precedent) and the ``Date`` value is refreshed by the worker's
100 ms tick rather than formatted per response (RFC 9110 6.6.1 allows a clock resolution of seconds).
"""

from __future__ import annotations

import email.utils
import http
import time
from typing import Final

STATUS_LINES: Final[dict[int, bytes]] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("latin-1")) for s in http.HTTPStatus
}
REASONS: Final[dict[int, str]] = {s.value: s.phrase for s in http.HTTPStatus}

# RFC 9112 6.3: these responses never carry a body, whatever their headers say.
NO_BODY_STATUSES: Final[frozenset[int]] = frozenset({204, 304}) | frozenset(range(100, 200))

CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    """Return the status line for ``status``. An unknown code gets an empty reason phrase, which
    RFC 9112 4 allows (clients ignore the phrase)."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


class DateHeader:
    """The ``date: ...\\r\\n`` header bytes, refreshed at most once a second by the worker tick."""

    __slots__ = ("_second", "value")

    def __init__(self) -> None:
        self._second = -1
        self.value = b""
        self.refresh(time.time())

    def refresh(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._second = second
            self.value = b"date: " + email.utils.formatdate(second, usegmt=True).encode() + CRLF


DATE: Final = DateHeader()


def chunk(data: bytes) -> bytes:
    """Frame one chunk (RFC 9112 7.1). Empty data would end the body, so callers never pass it."""
    return b"%x\r\n%s\r\n" % (len(data), data)
