"""ClusterCounts against a real redis-server: outages noticed and recovered from without any traffic, the
store's URL never logged with its password, and a window's onset limited to this worker's share."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from fastgw.counters.cluster import PROBE_MAX, ClusterCounts
from fastgw.snapshot import RedisSettings
from tests.support.redis_server import RedisServer

INTERVAL = 0.05
TIMEOUT = 0.25


def settings(url: str, failure: str = "closed") -> RedisSettings:
    return RedisSettings(url=url, flush_interval=INTERVAL, timeout=TIMEOUT, failure=failure)  # type: ignore[arg-type]


async def until(predicate: object, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` is true (fails after ``timeout``)."""
    began = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - began


@pytest.mark.asyncio
async def test_an_idle_worker_notices_an_outage_and_the_return_by_itself(tmp_path: Path) -> None:
    # No key was ever counted: nothing but the flush loop itself (a probe while down) talks to Redis.
    server = RedisServer(tmp_path)
    counts = ClusterCounts(settings(server.url))
    counts.start()
    try:
        await until(lambda: counts.participants == 1 and counts.errors == 0, 2, "a first flush")
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(5)
        server.proc = None
        noticed = await until(lambda: not counts.up, 2, "the outage to be noticed")
        await asyncio.sleep(2.0)
        server.start()  # same port; returns once it answers PING
        back = await until(lambda: counts.up, 5, "the store to be seen again")
        print(f"idle worker: outage noticed after {noticed:.2f}s, return after {back:.2f}s")
        assert noticed <= INTERVAL + TIMEOUT + 0.5  # the next flush, plus scheduling slack
        assert back <= PROBE_MAX + TIMEOUT + 0.5
        assert counts.count(7, int(time.time()), 0.5, 1.0) == 0.0  # deciding again
    finally:
        await counts.stop()
        server.stop()


@pytest.mark.asyncio
async def test_the_log_names_the_store_without_its_password(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    counts = ClusterCounts(settings(f"redis://fastgw:hunter2-secret@127.0.0.1:{port}/0", "open"))
    counts.start()
    try:
        await until(lambda: not counts.up, 2, "the outage to be noticed")
    finally:
        await counts.stop()
    err = capfd.readouterr().err
    assert f"rate-limit store redis://127.0.0.1:{port} unavailable" in err, err
    assert "hunter2" not in err and "fastgw:" not in err.replace("fastgw: ", "")


def test_an_unread_window_admits_this_workers_share_only() -> None:
    # P participants, nothing read yet: own admissions count P times, so a worker stops at limit / P.
    counts = ClusterCounts(settings("redis://127.0.0.1:1/0"))
    counts.participants = 4
    window, limit, admitted = 1000, 200, 0
    while (estimate := counts.count(9, window, 0.0, 1.0)) is not None and estimate + 1 <= limit:
        counts.add(9, window)
        admitted += 1
    assert admitted == limit // 4
    # A floor above P (this node's workers) wins: 8 workers here, whatever the set said.
    assert counts.count(9, window, 0.0, 1.0, 8) == 8 * admitted
    # Settled (a read taken after everyone flushed): the read plus what is unsent, no share any more.
    counts.unsettled.clear()
    counts.remote[(9, window)] = 120
    assert counts.count(9, window, 0.0, 1.0) == 120 + admitted
