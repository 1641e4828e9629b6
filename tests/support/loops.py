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
    for transport in list(transports()):
        transport.abort()
    await asyncio.sleep(0)  # each abort's connection_lost runs on this pass
