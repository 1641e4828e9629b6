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
from typing import Final

LINGER_SECONDS: Final = 2.0
"""How long a half-closed connection waits for the client's FIN. A client that reads its answer closes
within a round trip of the FIN; one that keeps sending (an upload answered 413 at its first bytes) has
had the answer in its receive buffer all along, so after this much the close may be abrupt. It bounds
how long a closed connection keeps its slot (server.max_connections) and delays a worker's shutdown."""


def half_close(transport: asyncio.Transport, now: float) -> float:
    """Start a lingering close of ``transport``: the monotonic time by which to end it (``end_linger``),
    or 0.0 when it was closing already."""
    if transport.is_closing():
        return 0.0
    if transport.can_write_eof():
        transport.resume_reading()  # bytes held back by a paused read are exactly the ones to drain
        transport.write_eof()
    else:
        transport.close()  # TLS: close_notify, then its own reading until the client's
    return now + LINGER_SECONDS


def end_linger(transport: asyncio.Transport) -> bool:
    """The linger bound passed: close for good. True when response bytes still wait to be sent (a slow
    reader of the last response): the transport closes once they are out, and the caller bounds that
    wait with its send deadline rather than cut them off here."""
    if transport.get_write_buffer_size():
        transport.close()
        return True
    if transport.is_closing():
        transport.abort()  # TLS whose close_notify exchange had its time
    else:
        transport.close()
    return False
