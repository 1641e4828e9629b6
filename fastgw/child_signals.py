"""Stop signals in the supervisor's children: held from the fork until the child's event loop handles
them.

A child forked with SIGTERM's default action died on the spot when a stop came during its start: a
control process stopped moments after it started never replayed the usage ledger's spool, so until the
next start ``fastgw usage`` missed what the spool held (found by CI). The supervisor blocks SIGTERM and
SIGINT in each fresh child (``hold_stop_signals``); the child unblocks them once its loop has a handler
(``handle_stop_signals``), and a stop sent meanwhile is delivered then, to that handler. The children
exec nothing, so no other program inherits the blocked mask.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Final

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def hold_stop_signals() -> None:
    """In a fresh child: a stop waits (pending) until ``handle_stop_signals``."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def handle_stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], object]) -> None:
    """``stop`` runs on the loop for SIGTERM and SIGINT, including one held since the fork."""
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
