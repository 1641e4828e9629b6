"""Stopping the Redis flush Task always finishes, whenever the stop lands in the flush cycle.

With Redis unreachable every flush fails within one loop iteration, so a cancellation often arrives just
as the flush's inner future completes: the case in which Python 3.11's ``asyncio.wait_for`` swallows the
cancellation and a ``while True`` flush loop would keep running (a worker that never exits on SIGTERM).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from fastgw.counters.cluster import ClusterCounts
from fastgw.snapshot import RedisSettings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_stop_finishes_at_any_point_of_a_failing_flush_cycle() -> None:
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{closed_port()}/0", flush_interval=0.002, timeout=0.5, failure="open"
    )
    rng = random.Random(7)
    slowest = 0.0
    for _ in range(200):
        counts = ClusterCounts(settings)
        counts.start()
        counts.add(1, 1)
        await asyncio.sleep(rng.uniform(0, 0.006))
        began = time.monotonic()
        await asyncio.wait_for(counts.stop(), 5)  # a stop that hangs fails here, after 5 s
        slowest = max(slowest, time.monotonic() - began)
        assert counts._task is not None and counts._task.done()
    print(f"200 stops of a failing flush loop: slowest {slowest * 1000:.1f} ms")
    assert slowest < 1.0, slowest
