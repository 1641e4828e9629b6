"""HTTP/1 parser backend selection: ``http1 = "auto" | "httptools" | "h11"``.

Resolved once, at compile time (``resolve_backend``), to one of the names in :data:`BACKENDS`; each
connection then gets a reader from that table (uvicorn ``HTTP_PROTOCOLS`` precedent). Apart from the
interface (``codec/http1.py``) so that the backends can import it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastgw.codec.http1 import ParserLimits, RequestReader, RequestSink


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
