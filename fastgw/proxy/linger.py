"""Closing a client connection without losing its last bytes: a lingering close.

``transport.close()`` while bytes from the client wait unread (the rest of a request body after an
early 413, a pipelined request, an HTTP/2 WINDOW_UPDATE or PING), or arrive after it, makes the kernel
answer with RST and throw away what it had not yet sent: often the very response or GOAWAY that explains
the close, which the client then never reads. A connection that ends while the client may still be
sending therefore half-closes instead: FIN after its last byte (``write_eof``), then it keeps reading and
dropping until the client closes its side or :data:`LINGER_SECONDS` pass, and only then closes (nginx's
``lingering_close`` does the same). The connection's ``closing`` flag makes it drop what it reads.

TLS transports cannot half-close; their ``close()`` already sends close_notify and reads (and drops)
until the client's own, so they close at once, and the same bound then ends their shutdown.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol

from fastgw.proxy.context import DL_LINGER, DL_NONE

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext

LINGER_SECONDS: Final = 2.0
"""How long a half-closed connection waits for the client's FIN. A client that reads its answer closes
within a round trip of the FIN; one that keeps sending (an upload answered 413 at its first bytes) has
had the answer in its receive buffer all along, so after this much the close may be abrupt. It bounds
how long a closed connection keeps its slot (server.max_connections) and delays a worker's shutdown."""


class Lingering(Protocol):
    """A client connection as its lingering close sees it (HTTP/1 or HTTP/2)."""

    transport: asyncio.Transport | None
    deadline: float
    deadline_kind: int
    send_deadline: float

    @property
    def worker(self) -> WorkerContext: ...


def start_linger(conn: Lingering) -> None:
    """Half-close ``conn`` after its last byte and arm the linger bound (``end_linger``, called by the
    deadline sweep), once: a connection lingering already is left as it is."""
    transport = conn.transport
    if transport is None or conn.deadline_kind == DL_LINGER or transport.is_closing():
        return
    if transport.can_write_eof():
        transport.resume_reading()  # bytes held back by a paused read are exactly the ones to drain
        transport.write_eof()
    else:
        transport.close()  # TLS: close_notify, then its own reading until the client's
    conn.deadline = conn.worker.now + LINGER_SECONDS
    conn.deadline_kind = DL_LINGER


def end_linger(conn: Lingering, now: float) -> None:
    """The linger bound passed: close for good. Response bytes still unread by a slow client are not cut
    off: the transport closes once they are out, within the connection's send deadline."""
    conn.deadline = 0.0
    conn.deadline_kind = DL_NONE
    transport = conn.transport
    if transport is None:
        return
    if transport.get_write_buffer_size():
        transport.close()
        if not conn.send_deadline:
            conn.send_deadline = now + conn.worker.holder.current.server.send_timeout
    elif transport.is_closing():
        transport.abort()  # TLS whose close_notify exchange had its time
    else:
        transport.close()


# Connections refused at accept (server.max_connections) lingering at once, per worker. They hold no
# slot, so a flood at the limit must not keep unbounded numbers of them open: past this many within
# LINGER_SECONDS, a refusal closes at once (its 503 may then be lost to a reset, as before lingering).
REFUSED_LINGERING_MAX: Final = 256
_refused_lingering = 0


def linger_refused(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
    """Half-close a connection refused at accept, after its 503: the client has often sent its request
    by then, and a plain close would answer it with a reset that loses the 503. The connection is not
    counted among the worker's (nor swept by its deadlines), so a timer of its own ends it at
    LINGER_SECONDS, if the client has not closed first; the reading protocol drops what arrives."""
    global _refused_lingering
    if _refused_lingering >= REFUSED_LINGERING_MAX or not transport.can_write_eof():
        transport.close()  # TLS: close_notify, then its own reading until the client's
        return
    _refused_lingering += 1
    transport.write_eof()
    loop.call_later(LINGER_SECONDS, _end_refused, transport)


def _end_refused(transport: asyncio.Transport) -> None:
    global _refused_lingering
    _refused_lingering -= 1
    if not transport.is_closing():
        transport.close()
