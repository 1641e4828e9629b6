"""Request ids and W3C ``traceparent`` values: an incoming one is kept when well-formed, else one is
generated, unique per worker."""

from __future__ import annotations

import os
import re
from typing import Final

_SAFE_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT: Final = re.compile(rb"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


_LOW_BYTE: Final = tuple(b"%02x" % i for i in range(256))


class IdSource:
    """Request ids and trace ids, unique per worker: a random per-process prefix plus a counter.

    Cheaper than ``uuid4`` (~0.15 us vs ~1.5 us) and still unique across workers and restarts. The counter's
    hex form is rendered in blocks of 256: its high 14 digits once a block, the low byte from a table, so
    an id costs one concatenation.
    """

    __slots__ = (
        "_counter",
        "_id_block",
        "_last",
        "_prefix",
        "_span_block",
        "_trace_block",
        "_trace_prefix",
    )

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode()
        self._trace_prefix = b"00-" + os.urandom(8).hex().encode()
        self._counter = 0
        self._last = b""  # the low byte of the last generated request id, reused by traceparent()
        self._new_block(0)

    def _new_block(self, high: int) -> None:
        digits = b"%014x" % high
        self._id_block = self._prefix + digits
        self._trace_block = self._trace_prefix + digits
        self._span_block = b"-" + digits

    def _next_low(self) -> bytes:
        """The next counter value's low byte in hex; a new block's high digits when it rolls over."""
        n = self._counter = self._counter + 1
        low = n & 0xFF
        if not low:
            self._new_block(n >> 8)
        return _LOW_BYTE[low]

    def request_id(self, candidate: bytes) -> bytes:
        if candidate and _SAFE_REQUEST_ID.fullmatch(candidate) is not None:
            self._last = b""
            return candidate
        self._last = lo = self._next_low()
        return self._id_block + lo

    def traceparent(self, candidate: bytes) -> bytes:
        """A valid incoming traceparent, else a new one (its ids share the request id's counter)."""
        if candidate and _TRACEPARENT.fullmatch(candidate) is not None:
            return candidate
        lo = self._last or self._next_low()
        self._last = b""
        return self._trace_block + lo + self._span_block + lo + b"-01"
