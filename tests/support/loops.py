"""Ending a test server's event loop with nothing left on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final

# Rounds of cancel-and-wait: an accept under way is a Task that ends in connection_made, which may start
# the connection's own Task (asyncio.start_server), which may be mid-answer; three rounds cover that chain.
_ROUNDS: Final = 4


async def shut_down(
    server: asyncio.Server | None, transports: Callable[[], Iterable[asyncio.BaseTransport]]
) -> None:
    """Stop accepting, drop every connection and end every other Task of this loop, then let the close
    callbacks run. A transport left behind by a loop that closes is an "unclosed transport"
    ResourceWarning, which pytest turns into an error of whichever later test the collector runs in."""
    if server is not None:
        server.close()
        # A connection accepted just before is handed to a Task not started yet: cancelled unstarted, it
        # would drop the accepted socket unclosed. One pass starts them; cancelled later, they close it.
        await asyncio.sleep(0)
    current = asyncio.current_task()
    for _ in range(_ROUNDS):
        for transport in list(transports()):
            transport.abort()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for transport in list(transports()) + _open_transports():
        transport.abort()
    await asyncio.sleep(0)  # each abort's connection_lost runs on this pass


def _open_transports() -> list[asyncio.BaseTransport]:
    """Every transport this (selector) loop still holds open, from the loop's own registry of them (by
    fd), not only those it reads or writes for: a transport made for a connection accepted just before
    the server closed is registered there before its connection_made and reader are (both call_soon),
    and one left so was reported unclosed in CI at the end of tests/policy/test_jwks_remote.py (three
    times, never locally). uvloop has no such registry: its servers are not shut down through here."""
    registry = getattr(asyncio.get_running_loop(), "_transports", None)
    if registry is None:
        return []
    # Those still holding their socket, closing or not (a close() with data unsent keeps it until the
    # data drains): what an "unclosed transport" warning would name. One that let its socket go may have
    # let its loop go too, and abort() on it fails.
    return [
        transport for transport in list(registry.values()) if getattr(transport, "_sock", None) is not None
    ]
