"""What a handler's upstream request (proxy/client.py) raises besides its answer: kept apart from the
client so that the handlers and their tests name them without the client's machinery."""

from __future__ import annotations

import asyncio
from typing import Final

# Set on the CancelledError of a request cancelled (its client left, the worker stopped) while it waited
# for a connection to carry it: nothing of it left the gateway, so no upstream can have run it (an LLM
# budget gives such a request's estimate back). An attribute, not a subclass: Python 3.11's
# asyncio.timeout and TaskGroup recognise a cancellation by its exact type.
_NOT_SENT: Final = "fastgw_not_sent"


def mark_not_sent(cancelled: asyncio.CancelledError) -> None:
    setattr(cancelled, _NOT_SENT, True)


def not_sent(cancelled: BaseException) -> bool:
    """Whether ``cancelled`` cut a request before any byte of it left (``mark_not_sent``)."""
    return getattr(cancelled, _NOT_SENT, False) is True


class UpstreamError(Exception):
    """The upstream could not be reached or failed mid-response (after the retries allowed).

    ``status`` and ``problem`` are what a proxied request would have been answered (502, 503, 504 and
    ``upstream-*``); ``detail`` names the target and the OS error (for logs, not for clients)."""

    def __init__(
        self,
        status: int,
        problem: str,
        detail: str,
        *,
        past_deadline: bool = False,
        connecting: bool = False,
    ) -> None:
        super().__init__(f"{status} {problem}: {detail}")
        self.status = status
        self.problem = problem
        self.detail = detail
        # A stall that ran into the request's whole deadline (``timeout``), not its read timeout: told by
        # the timer's own clock (the loop's), which a caller's time.monotonic() may read a little ahead of.
        self.past_deadline = past_deadline
        # No connection ever carried the request (a connect that failed or timed out, or the wait for a
        # pooled one): a caller names its connect deadline, not a silent answer.
        self.connecting = connecting
