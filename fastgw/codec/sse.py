"""Server-Sent Events: an incremental, bounded parser and a writer, sans-IO.

All SSE framing lives here; this module does not know HTTP, providers or asyncio. The parser follows the
WHATWG HTML standard, "9.2.6 Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- the stream is UTF-8 (invalid bytes become U+FFFD) and one byte order mark at its start is dropped;
- a line ends with CRLF, LF or CR; a CR at the end of one chunk and an LF at the start of the next are one
  line end;
- an empty line dispatches the event; a line starting with ``:`` is a comment; ``name: value`` is a field
  (one space after the colon is dropped); a line without a colon is a field with an empty value;
- ``data`` lines accumulate, joined by LF; ``event`` sets the type (default ``message``); ``id`` sets the
  last event id unless it contains NUL, and the id persists across events; ``retry`` sets the
  reconnection time if it is all ASCII digits; other fields are ignored;
- an event whose data buffer is empty is not dispatched; at the end of the stream an incomplete event is
  discarded.

Why bytes until dispatch: CR, LF and ``:`` are ASCII, and UTF-8 never uses an ASCII byte inside a
multi-byte sequence, so splitting the raw bytes at them and decoding each piece gives exactly the text
that decoding the whole stream first would; the parser can then split a whole chunk with one C call
(``bytes.splitlines``, which splits at CR, LF and CRLF only) and decode only the data it dispatches.

It is used to translate LLM provider streams event by event, so :meth:`SseParser.feed` returns each event
as soon as its empty line arrives and keeps nothing beyond the incomplete event, whose size is bounded.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from fastgw.codec.problem import CodecError

BOM: Final = b"\xef\xbb\xbf"

# 1 MiB: an LLM stream event is a JSON chunk of a few hundred bytes (a tool call's arguments or a
# reasoning summary may reach tens of KiB); a megabyte leaves ample room while a provider that sends an
# endless line is cut off after 1 MiB instead of growing a worker without limit (h11's
# DEFAULT_MAX_INCOMPLETE_EVENT_SIZE is 16 KiB for a head; an event body is larger by nature).
DEFAULT_MAX_EVENT_SIZE: Final = 1 << 20

# Python refuses int() on strings over 4300 digits (sys.get_int_max_str_digits, CVE-2020-10735); a
# retry value that long is nonsense, so it is ignored like a value that is not all digits.
_RETRY_MAX_DIGITS: Final = 4300


class SseError(CodecError):
    """An event stream that cannot be parsed within its bounds.

    The status hint is 502: the stream comes from an upstream (an LLM provider) that broke the contract;
    the gateway cuts it off instead of buffering without limit.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(502, "bad-event-stream", detail)


class Event(NamedTuple):
    """One dispatched event.

    ``event`` is the type (``message`` when the stream named none), ``id`` the last event id at dispatch
    (it persists across events until an ``id`` field changes it), ``retry`` the reconnection time in
    milliseconds set by a ``retry`` field inside this event's lines, else None.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


# Building the tuple directly skips NamedTuple's Python-level __new__: 120 ns instead of 230 ns per event.
_new_event: Final = tuple.__new__


class SseParser:
    """Incremental event stream parser: ``feed`` bytes as they arrive, get complete events back.

    The memory it holds between calls is the incomplete line plus the data buffer of the incomplete event
    (each data line's value and its LF, as the standard defines the buffer), at most ``max_event_size``
    bytes together; the event type and the last event id are single lines, each also at most
    ``max_event_size``.
    """

    __slots__ = (
        "_at_start",
        "_closed",
        "_data",
        "_event",
        "_fields_seen",
        "_id_buffer",
        "_max",
        "_partial",
        "_retry",
        "_size",
        "_skip_lf",
        "last_event_id",
        "retry",
    )

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size < 1:
            raise ValueError("max_event_size must be positive")
        self._max = max_event_size
        self._partial = b""  # the incomplete line: bytes after the last line end
        self._skip_lf = False  # the last chunk ended with CR: an LF first in the next one ends no line
        self._at_start = True  # no byte seen yet: a BOM may still come (possibly split across chunks)
        self._closed = False
        self._data: list[bytes] = []  # values of this event's data lines
        self._size = 0  # the data buffer's length: each value plus its LF
        self._event = ""  # the event type buffer ("" means "message")
        self._retry: int | None = None  # set by a retry field since the last empty line
        self._fields_seen = False  # a field other than data since the last empty line
        self._id_buffer = ""
        self.last_event_id = ""
        """The standard's "last event ID string": the id buffer as of the last empty line."""
        self.retry: int | None = None
        """The reconnection time in milliseconds set by the latest valid retry field, else None."""

    @property
    def buffered(self) -> int:
        """Bytes held for the incomplete event: the incomplete line plus the data buffer."""
        return len(self._partial) + self._size

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``, the next bytes of the stream; return the events completed by it, in order.

        Raises:
            SseError: a line, or the incomplete line plus the event's data, exceeds ``max_event_size``.
                Events completed earlier in the same chunk are not returned; the parser is closed (its
                buffers dropped) and the caller ends the stream.
            RuntimeError: the parser is closed: ``end()`` was called or SseError raised (a caller bug).
        """
        if self._closed:
            raise RuntimeError("feed() on a closed SseParser")
        if self._partial:
            data = self._partial + data
        elif self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 10:  # the LF of a CRLF split across chunks
                data = data[1:]
        if self._at_start:
            if len(data) < 3 and BOM.startswith(data):
                self._partial = data  # all of it may be the start of a BOM: wait for more
                return []
            self._at_start = False
            if data.startswith(BOM):
                data = data[3:]
        if not data:
            self._partial = b""
            return []
        lines = data.splitlines()
        last = data[-1]
        if last == 10:  # LF
            self._partial = b""
        elif last == 13:  # CR: the next chunk may start with its LF
            self._partial = b""
            self._skip_lf = True
        else:
            self._partial = lines.pop()
        limit = self._max
        if len(data) > limit:
            self._check_line_lengths(lines)
        events: list[Event] = []
        buffer = self._data
        for line in lines:
            if not line:  # an empty line: dispatch
                self.last_event_id = self._id_buffer
                if buffer:
                    text = b"\n".join(buffer).decode("utf-8", "replace")
                    event = _new_event(
                        Event, (text, self._event or "message", self.last_event_id, self._retry)
                    )
                    events.append(event)
                    buffer.clear()
                    self._size = 0
                self._event = ""
                self._retry = None
                self._fields_seen = False
            elif line.startswith(b"data: "):  # the common field first
                self._size += len(line) - 5  # the value (after "data: ") and its LF
                if self._size > limit:
                    raise self._overflow(f"an event's data exceeds {limit} bytes")
                buffer.append(line[6:])
            elif line[0] != 58:  # not a comment (":")
                self._field(line)
        if len(self._partial) + self._size > limit:
            raise self._overflow(f"an incomplete event exceeds {limit} bytes")
        return events

    def _check_line_lengths(self, lines: list[bytes]) -> None:
        """Refuse any complete line over the bound (called only for chunks longer than the bound)."""
        limit = self._max
        for line in lines:
            if len(line) > limit:
                raise self._overflow(f"a line exceeds {limit} bytes")

    def _field(self, line: bytes) -> None:
        """Process a field line other than ``data`` (the standard's "process the field")."""
        self._fields_seen = True
        colon = line.find(b":")
        if colon < 0:
            name = line
            value = b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"data":  # spelled "data:value" or "data" (feed() takes "data: value" itself)
            self._size += len(value) + 1
            if self._size > self._max:
                raise self._overflow(f"an event's data exceeds {self._max} bytes")
            self._data.append(value)
        elif name == b"id":
            if b"\x00" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit() and len(value) <= _RETRY_MAX_DIGITS:
            self._retry = self.retry = int(value)
        # any other field name is ignored

    def _overflow(self, what: str) -> SseError:
        """Close the parser, dropping its buffers, and return the error to raise."""
        self.end()
        return SseError(f"event stream: {what} (max_event_size)")

    def end(self) -> bool:
        """The stream ended: discard the incomplete event, as the standard says.

        Returns:
            True if the stream was truncated: it ended inside a line, or after field lines with no empty
            line to dispatch them. False if it ended cleanly (after an empty line, a comment, or nothing).
        The parser is then closed: a further ``feed`` raises RuntimeError.
        """
        truncated = bool(self._partial) or bool(self._data) or self._fields_seen
        self._closed = True
        self._partial = b""
        self._data = []
        self._size = 0
        return truncated


def _split_lines(data: str | bytes) -> list[bytes]:
    """``data`` as UTF-8 lines, split at CRLF, LF and CR (an event's data cannot hold a CR)."""
    raw = data.encode() if isinstance(data, str) else data
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw.split(b"\n")


def _single_line(value: str, what: str) -> bytes:
    raw = value.encode()
    if b"\n" in raw or b"\r" in raw:
        raise ValueError(f"an SSE {what} cannot contain CR or LF: {value!r}")
    return raw


def encode_event(
    data: str | bytes, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """The bytes of one event, ending with the empty line that dispatches it.

    Multi-line data becomes one ``data:`` line per line (CRLF and CR count as line ends, so a CR in
    ``data`` arrives as LF: the format cannot carry it). ``event`` None or "" means the default type
    ``message``; ``id`` "" resets the receiver's last event id; ``retry`` is in milliseconds.

    Raises:
        ValueError: ``event`` or ``id`` contains CR or LF, ``id`` contains NUL (receivers would ignore
            it), or ``retry`` is negative. Nothing is returned then.
    """
    raw = data.encode() if isinstance(data, str) else data
    if b"\n" in raw or b"\r" in raw:
        body = b"data: " + b"\ndata: ".join(_split_lines(raw)) + b"\n\n"
    else:
        body = b"data: " + raw + b"\n\n"
    if event is None and id is None and retry is None:
        return body
    head: list[bytes] = []
    if event:
        head.append(b"event: " + _single_line(event, "event type") + b"\n")
    if id is not None:
        if "\x00" in id:
            raise ValueError(f"an SSE id cannot contain NUL: {id!r}")
        head.append(b"id: " + _single_line(id, "id") + b"\n")
    if retry is not None:
        if retry < 0:
            raise ValueError(f"an SSE retry must be a non-negative integer: {retry}")
        head.append(b"retry: %d\n" % retry)
    head.append(body)
    return b"".join(head)


def encode_comment(text: str | bytes = b"") -> bytes:
    """A comment line (one per line of ``text``): receivers ignore it; proxies see traffic (keep-alive)."""
    return b"".join(b": " + line + b"\n" for line in _split_lines(text))
