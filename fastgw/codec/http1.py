"""The interface every HTTP/1 request parser backend implements.

A backend turns bytes from a client into calls on a :class:`RequestSink`; it never writes and never
imports asyncio. Which backend serves a connection is chosen in ``codec/http1_backends.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from fastgw.exchange import Exchange


@dataclass(frozen=True, slots=True, kw_only=True)
class ParserLimits:
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_target_bytes: int = 8192


class RequestSink(Protocol):
    """What a parser backend reports to; implemented by the client connection."""

    def on_request_head(self, ex: Exchange) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...
    def on_upgrade(self, rest: bytes) -> bool:
        """The parser stopped after an upgrade request; ``rest`` is what followed its head.

        Return True to take the connection over (a tunnel), False to decline: the reader then goes on
        parsing ``rest`` as HTTP/1.1.
        """


class RequestReader(Protocol):
    def feed(self, data: bytes) -> None:
        """Parse ``data``, calling the sink. Raises CodecError; the connection is then unusable."""

    def close(self) -> None:
        """The connection is gone: drop the sink and the parser. The reader, its parser and the connection
        refer to each other; breaking those cycles lets reference counting free a closed connection at
        once instead of leaving it to the cyclic GC, whose full collections over dead connections pause
        a worker for milliseconds at a time."""


class DetachedSink:
    """The sink of a closed reader: reports go nowhere (a base for sinks that keep only what they need)."""

    def on_request_head(self, ex: Exchange) -> None:
        pass

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass

    def on_upgrade(self, rest: bytes) -> bool:
        return False


DETACHED: Final[RequestSink] = DetachedSink()
