"""What a handler route is made of, as protocols: the handler, the response writer it writes to, and the
response filters that may wrap that writer.

A route of kind ``proxy`` forwards to an upstream on the callback fast path. Any other kind is served by a
:class:`Handler` (compiled from the route's config by its kind, see ``fastgw/handlers/``): an async
function of the authenticated Exchange and its buffered request body that writes its response through a
:class:`ResponseWriter`. ``proxy/handler.py`` runs it and implements the writer for HTTP/1.1 and HTTP/2,
so a handler never knows which protocol the client spoke. Pure: nothing here imports asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol, TypeVar

ExchangeT_contra = TypeVar("ExchangeT_contra", contravariant=True)  # generic: see verdict.py

Fields = Sequence[tuple[bytes, bytes]]

# Why a handler's Task was cancelled: the message of the CancelledError it gets at its next await. A
# handler that records its outcome (an LLM stream's usage) tells the two apart.
CANCELLED_CLIENT_GONE = "client_closed"  # the client closed the connection or reset the stream
CANCELLED_SHUTDOWN = "shutdown"  # the worker's drain_timeout passed and it closed the connection


class ResponseWriter(Protocol):
    """Where a handler writes its response: one head, body chunks, then the end (with trailers)."""

    @property
    def started(self) -> bool:
        """The head was given (a second ``start`` is an error)."""

    def start(self, status: int, headers: Fields) -> None:
        """The status and header fields (lower-case names). Without a ``content-length`` field the body
        is chunked (HTTP/1.1) or ends with the stream (HTTP/2). Framing fields are the gateway's."""

    async def write(self, data: bytes) -> None:
        """Send a body chunk; returns once the client can take more (waits while it does not read)."""

    async def end(self, trailers: Fields | None = None) -> None:
        """End the response, with trailer fields if any (chunked HTTP/1.1 and HTTP/2 only)."""

    def flush(self) -> None:
        """Send what was written now, not with the loop iteration's other writes at its end
        (upstream/write_batch.py): for bytes the client waits on while more work follows in the same
        iteration (a stream's first token, read together with the rest of a provider's burst). Bytes a
        response filter holds back stay held (no built-in filter does), and an HTTP/2 connection whose
        client stopped reading leaves them to its next write."""


class UpstreamReply(Protocol):
    """A response from an upstream, as a handler reads it (proxy/client.py's UpstreamResponse)."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def read(self, limit: int = -1) -> bytes:
        """The whole body; past ``limit`` bytes (when not -1) what arrived so far, longer than it."""

    def set_read_timeout(self, seconds: float) -> None:
        """The longest wait for the next body bytes from now on."""

    def limit_reads(self, seconds: float) -> None:
        """The whole rest of the body within ``seconds`` from now, however slowly it trickles."""

    def close(self) -> None:
        """Stop reading: a response not read to its end gives up its connection (never waits)."""


class Upstreams(Protocol):
    """How a handler calls an upstream: through the gateway's own pools (TLS, timeouts, circuit
    breaking, health), by the name of an ``[upstreams.NAME]`` table (proxy/client.py)."""

    async def request(
        self,
        upstream: str,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        head_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamReply: ...


class Handler(Protocol[ExchangeT_contra]):
    """A compiled handler: one instance per route, shared by its requests (keep per-request state local)."""

    async def handle(
        self, ex: ExchangeT_contra, body: bytes, out: ResponseWriter, upstreams: Upstreams
    ) -> None: ...


class ResponseFilter(Protocol):
    """Wraps a handler's response writer for one response: sees the head, may rewrite each chunk and may
    add bytes at the end. A filter that changes the body's length drops ``content-length`` in on_head."""

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Edit the header fields in place."""

    def on_chunk(self, data: bytes) -> bytes:
        """The bytes to send for ``data`` (may be empty while the filter buffers)."""

    def on_end(self) -> bytes:
        """Bytes still held, sent before the end of the response."""


class ResponseFilterFactory(Protocol[ExchangeT_contra]):
    """Compiled on a route: makes the filter of one response (filters keep per-response state)."""

    def response_filter(self, ex: ExchangeT_contra) -> ResponseFilter | None: ...
