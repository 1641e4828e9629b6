"""Pool decisions without sockets: the half-open circuit's single trial and the retry budget."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest

from fastgw.snapshot import Target, UpstreamSettings
from fastgw.upstream.pool import RETRY_WINDOW, PoolManager

SETTINGS = UpstreamSettings(
    name="api",
    targets=(Target(host="127.0.0.1", port=1), Target(host="127.0.0.1", port=2)),
    balance="round_robin",
    max_connections=10,
    max_idle=10,
    idle_timeout=30.0,
    connect_timeout=1.0,
    read_timeout=1.0,
    first_byte_timeout=1.0,
    queue_timeout=1.0,
    max_failures=2,
    eject_seconds=0.05,
    retry=True,
    retry_budget=0.1,
    retry_min=2,
)


@pytest.fixture
def manager() -> Iterator[PoolManager]:
    loop = asyncio.new_event_loop()
    yield PoolManager(loop)
    loop.close()


def test_half_open_circuit_lets_one_trial_through(manager: PoolManager) -> None:
    group = manager.group(SETTINGS)
    bad, good = group.pools
    bad.record_failure()
    bad.record_failure()  # circuit open
    assert {group.pick() for _ in range(10)} == {good}
    time.sleep(0.06)  # eject_seconds passed: half-open
    picks = [group.pick() for _ in range(10)]
    assert picks.count(bad) == 1, "exactly one trial while it is in flight"
    bad.record_failure()  # the trial failed: open again
    assert {group.pick() for _ in range(10)} == {good}
    time.sleep(0.06)
    assert [group.pick() for _ in range(4)].count(bad) == 1
    bad.trial = False
    bad.failures = 0  # what release() does after a successful trial: closed
    assert [group.pick() for _ in range(10)].count(bad) == 5


def test_active_health_marks_targets_down_and_up(manager: PoolManager) -> None:
    group = manager.group(SETTINGS)
    manager.set_health("api", "127.0.0.1:1", healthy=False)
    assert {group.pick().label for _ in range(6)} == {"127.0.0.1:2"}
    # A pool created later (after a reload) starts with the known verdict.
    reloaded = manager.group(dataclasses.replace(SETTINGS))
    assert {reloaded.pick().label for _ in range(6)} == {"127.0.0.1:2"}
    manager.set_health("api", "127.0.0.1:1", healthy=True)
    assert {reloaded.pick().label for _ in range(6)} == {"127.0.0.1:1", "127.0.0.1:2"}
    # When every target is down, traffic goes to all of them rather than nowhere.
    manager.set_health("api", "127.0.0.1:1", healthy=False)
    manager.set_health("api", "127.0.0.1:2", healthy=False)
    assert {reloaded.pick().label for _ in range(6)} == {"127.0.0.1:1", "127.0.0.1:2"}


def test_retry_budget(manager: PoolManager) -> None:
    group = manager.group(SETTINGS)
    for _ in range(10):
        group.pick()
    # retry_min 2 + 10% of 10 requests = 3 retries
    assert [group.allow_retry() for _ in range(5)] == [True, True, True, False, False]
    for _ in range(20):
        group.pick()
    assert group.allow_retry() and group.allow_retry()  # 2 + 10% of 30 = 5 allowed
    assert not group.allow_retry()
    later = group.window_start + RETRY_WINDOW
    group.roll_window(later)
    group.roll_window(later + RETRY_WINDOW)  # two quiet windows: the budget is back to its floor
    assert group.requests == 0 and group.previous_requests == 0
    assert group.allow_retry() and group.allow_retry()


def test_host_names_are_resolved_again_after_their_ttl(capfd: pytest.CaptureFixture[str]) -> None:
    loop = asyncio.new_event_loop()
    answers: list[list[str] | OSError] = [["10.0.0.1", "10.0.0.2"], ["10.0.0.3"], OSError("SERVFAIL")]
    calls: list[str] = []

    async def fake_getaddrinfo(host: str, port: int, **kw: object) -> list[tuple[object, ...]]:
        calls.append(host)
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return [(2, 1, 6, "", (ip, port)) for ip in answer]

    loop.getaddrinfo = fake_getaddrinfo  # type: ignore[assignment,method-assign]
    settings = dataclasses.replace(
        SETTINGS, targets=(Target(host="backend.internal", port=80),), dns_ttl=0.05
    )
    pool = PoolManager(loop).group(settings).pools[0]
    try:
        first = [loop.run_until_complete(pool.address()) for _ in range(4)]
        assert sorted(set(first)) == ["10.0.0.1", "10.0.0.2"] and len(calls) == 1  # one lookup per TTL
        time.sleep(0.06)
        assert loop.run_until_complete(pool.address()) == "10.0.0.3" and len(calls) == 2
        time.sleep(0.06)
        # Resolution fails: the last good address stays in use, and the failure is said once per TTL.
        assert loop.run_until_complete(pool.address()) == "10.0.0.3"
        assert loop.run_until_complete(pool.address()) == "10.0.0.3" and len(calls) == 3
        assert "resolving backend.internal failed (SERVFAIL); keeping 10.0.0.3" in capfd.readouterr().err
        literal = PoolManager(loop).group(SETTINGS).pools[0]
        assert loop.run_until_complete(literal.address()) == "127.0.0.1" and len(calls) == 3
    finally:
        loop.close()
