"""The worker tick: subscribers run on every tick, in the order they subscribed."""

from __future__ import annotations

import asyncio

import pytest

from fastgw.config.compiler import compile_config
from fastgw.process.worker import Worker
from fastgw.proxy.deadlines import TICK_SECONDS

CONFIG = b"""
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""


@pytest.mark.asyncio
async def test_subscribers_run_every_tick_in_subscription_order() -> None:
    worker = Worker(compile_config(CONFIG, "tick.toml"))
    calls: list[tuple[str, float]] = []
    worker.on_tick(lambda now: calls.append(("first", now)))
    worker.on_tick(lambda now: calls.append(("second", now)))
    await worker.start()
    try:
        await asyncio.sleep(TICK_SECONDS * 4.5)
    finally:
        await worker.shutdown()
        await worker.wait_stopped()
    assert len(calls) >= 6
    names = [name for name, _ in calls]
    assert names[: len(names) // 2 * 2] == ["first", "second"] * (len(names) // 2)
    times = [now for _, now in calls]
    assert times == sorted(times)
    assert all(times[i] == times[i + 1] for i in range(0, len(times) - 1, 2))  # one tick, one clock reading
