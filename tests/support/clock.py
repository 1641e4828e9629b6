"""A clock a test moves by hand, injected through the compile context: tokens and keys age without
sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """Starts at the real time (tokens signed now are valid now) and moves only when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
