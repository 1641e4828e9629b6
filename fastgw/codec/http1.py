"""The interface every HTTP/1 request parser backend implements, and backend selection.

A backend turns bytes from a client into calls on a :class:`RequestSink`; it never writes and never
imports asyncio. ``http1 = "auto" | "httptools" | "h11"`` is resolved once, at compile time, to one of the
reader factories in :data:`BACKENDS` (uvicorn ``HTTP_PROTOCOLS`` precedent); each connection then gets
its reader from :func:`make_reader`.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _httptools_reader(sink: RequestSink, limits: ParserLimits) -> RequestReader:
    from fastgw.codec.http1_httptools import HttptoolsReader  # imported when first used: h11 needs none

    return HttptoolsReader(sink, limits)


def _h11_reader(sink: RequestSink, limits: ParserLimits) -> RequestReader:
    from fastgw.codec.http1_h11 import H11Reader

    return H11Reader(sink, limits)


# Backend name (as the compiled Snapshot holds it, "auto" already resolved) -> reader factory.
BACKENDS: Final[dict[str, Callable[[RequestSink, ParserLimits], RequestReader]]] = {
    "httptools": _httptools_reader,
    "h11": _h11_reader,
}


def make_reader(backend: str, sink: RequestSink, limits: ParserLimits) -> RequestReader:
    """A reader of the named backend (one per client connection)."""
    return BACKENDS[backend](sink, limits)


def resolve_backend(name: str) -> str:
    """Map ``auto`` to the fastest importable backend."""
    if name != "auto":
        return name
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - httptools is a hard dependency, kept for wheels-less installs
        return "h11"
    return "httptools"
