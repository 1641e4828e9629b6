"""What a counter cell's window value means, and the order of windows in time.

Three kinds share the table's window field: a sliding window's index (``now // length``, >= 0) grows by
1 a window; a calendar period's code (counters/quota.py: days even, months odd, both <= -2) falls by 2 a
period, so the two never collide; ``IN_FLIGHT`` (requests in flight) never turns. Only windows of one
kind are ordered: a limit whose name a reload gives to a limit of another kind simply takes its cells
over.
"""

from __future__ import annotations

from typing import Final

IN_FLIGHT: Final = -1  # the window value that marks a concurrency cell (its count: requests in flight)
NO_WINDOW: Final = -(1 << 62)  # what follows IN_FLIGHT: a value no cell holds


def following(window: int) -> int:
    """The window after ``window``: the next sliding window, or the next day or month."""
    if window >= 0:
        return window + 1
    return window - 2 if window != IN_FLIGHT else NO_WINDOW


def is_older(window: int, other: int) -> bool:
    """Whether ``window`` began before ``other``, a window of the same kind (of another kind: False)."""
    if window >= 0:
        return window < other
    return IN_FLIGHT > window > other and (window - other) % 2 == 0
