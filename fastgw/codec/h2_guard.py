"""A frame-header pre-scanner that enforces HTTP/2 abuse limits before the h2 library sees the bytes.

The h2 library is correct but trusting: it keeps every CONTINUATION frame of a header block until the
block ends (CVE-2024-27316 class), answers every PING and SETTINGS frame with an ACK queued for sending
(CVE-2019-9512, -9515), spends a stream's full setup on one that the client resets at once
(CVE-2023-44487 "rapid reset") and processes empty frames for free (CVE-2019-9518). This scanner walks
only the 9-byte frame headers (RFC 9113 4.1) of what a client sends, keeps no payload, and reports the
first limit crossed; the connection then answers GOAWAY and closes.

Rates are counted per whole second of the worker's tick clock: cheap, and a burst straddling two windows
can reach at most twice a limit before it is refused.
"""

from __future__ import annotations

from typing import Final

from fastgw.snapshot import Http2Settings

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

END_STREAM: Final = 0x1
END_HEADERS: Final = 0x4
_CONTROL: Final = frozenset({PRIORITY, SETTINGS, PING, WINDOW_UPDATE})

# Slack over the decoded header-list limit for a compressed block: HPACK literals cost a few bytes of
# framing per field, and a block larger than this cannot decode within the limit.
_BLOCK_SLACK: Final = 1024


class FloodError(Exception):
    """A client crossed an abuse limit; ``args[0]`` says which, for the log."""


class FrameGuard:
    __slots__ = (
        "_block_bytes",
        "_block_frames",
        "_control",
        "_empty",
        "_goaway_open",
        "_header",
        "_limits",
        "_max_block",
        "_preface",
        "_resets",
        "_skip",
        "_window",
        "goaway_end",
    )

    def __init__(self, limits: Http2Settings, *, preface_seen: int = 0) -> None:
        self._limits = limits
        self._max_block = limits.max_header_list_size + _BLOCK_SLACK
        self._preface = len(PREFACE) - preface_seen  # preface bytes still to pass over
        self._skip = 0  # payload bytes of the current frame still to pass over
        self._header = b""  # a frame header split across reads
        self._block_bytes = 0
        self._block_frames = 0
        self._window = -1
        self._control = 0
        self._resets = 0
        self._empty = 0
        self._goaway_open = False  # a GOAWAY frame whose payload has not all been scanned yet
        # Where, in the bytes of the last scan, a client's GOAWAY frame ended (-1: none did). The connection
        # hands h2 the bytes up to there on their own: h2 refuses every frame after a GOAWAY in one call.
        self.goaway_end = -1

    def scan(self, data: bytes, now: float) -> None:
        """Account for ``data``, the next bytes from the client. Raises FloodError."""
        second = int(now)
        if second != self._window:
            self._window = second
            self._control = self._resets = self._empty = 0
        self.goaway_end = -1
        pos = 0
        end = len(data)
        if self._preface:
            taken = min(self._preface, end)
            self._preface -= taken
            pos = taken
        if self._skip:
            taken = min(self._skip, end - pos)
            self._skip -= taken
            pos += taken
            if self._goaway_open and not self._skip:
                self._goaway_ends(pos)
        if self._header:
            need = 9 - len(self._header)
            self._header += data[pos : pos + need]
            pos += need
            if len(self._header) < 9:
                return
            self._skip = self._frame(self._header, 0)
            self._header = b""
            taken = min(self._skip, end - pos)
            self._skip -= taken
            pos += taken
            if self._goaway_open and not self._skip:
                self._goaway_ends(pos)
        while pos < end:
            if end - pos < 9:
                self._header = data[pos:]
                return
            length = self._frame(data, pos)
            pos += 9
            if length:
                taken = min(length, end - pos)
                self._skip = length - taken
                pos += taken
            if self._goaway_open and not self._skip:
                self._goaway_ends(pos)

    def _goaway_ends(self, pos: int) -> None:
        self._goaway_open = False
        if self.goaway_end < 0:
            self.goaway_end = pos  # the first one in a read; a later one is h2's to refuse

    def _frame(self, buf: bytes, at: int) -> int:
        """Check one frame header at ``buf[at:at+9]``; returns its payload length."""
        length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]
        kind = buf[at + 3]
        flags = buf[at + 4]
        limits = self._limits
        if kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                self._block_bytes = 0
                self._block_frames = 0
            else:
                self._block_frames += 1
                if self._block_frames > limits.max_continuation_frames:
                    raise FloodError(f"more than {limits.max_continuation_frames} CONTINUATION frames")
            self._block_bytes += length
            if self._block_bytes > self._max_block:
                raise FloodError(f"header block larger than {self._max_block} bytes")
            if not length and not flags & END_HEADERS:
                self._count_empty()
        elif kind == DATA:
            if not length and not flags & END_STREAM:
                self._count_empty()
        elif kind in _CONTROL:
            self._control += 1
            if self._control > limits.max_control_frames_per_second:
                raise FloodError(f"more than {limits.max_control_frames_per_second} control frames a second")
        elif kind == GOAWAY:
            self._goaway_open = True
        elif kind == RST_STREAM:
            self._resets += 1
            if self._resets > limits.max_resets_per_second:
                raise FloodError(f"more than {limits.max_resets_per_second} stream resets a second")
        return length

    def _count_empty(self) -> None:
        self._empty += 1
        if self._empty > self._limits.max_empty_frames_per_second:
            raise FloodError(f"more than {self._limits.max_empty_frames_per_second} empty frames a second")
