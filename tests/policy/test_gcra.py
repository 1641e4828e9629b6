"""GCRA (counters/algorithms.py ``Gcra``) as one worker's share of a limit: from idle it admits one
request plus its share of the burst at once, then one per interval, and says how long to wait."""

from __future__ import annotations

import pytest

from fastgw.counters.algorithms import Gcra
from fastgw.counters.table import KeyCells
from tests.support.counter_tables import memory_table


def admitted_at_once(gcra: Gcra, key: KeyCells, now: float, rate: int) -> int:
    count = 0
    while count < 1000:
        gcra.admit(key, "k", now, rate, rate, True, None)
        if not gcra.counted:
            return count
        count += 1
    raise AssertionError("no end")


@pytest.mark.parametrize(
    ("workers", "burst", "at_once"), [(1, 0, 1), (4, 0, 1), (4, 2, 1), (4, 8, 3), (1, 5, 6)]
)
def test_from_idle_one_request_and_the_burst_share_pass_at_once(
    workers: int, burst: int, at_once: int
) -> None:
    """The default burst 0 (and any burst under the workers' count) admitted no request at all: every
    one was a 429 with Retry-After 1, for good."""
    table = memory_table(shards=workers)
    gcra = Gcra(table, 1.0, burst)
    key = KeyCells(1, table.locate(1))
    rate = 10 * workers  # this worker's share: 10 a second, one per 0.1 s
    assert admitted_at_once(gcra, key, 100.0, rate) == at_once
    assert gcra.reset == pytest.approx(at_once * 0.1 - burst / workers * 0.1)  # until the next fits
    later = 100.0 + gcra.reset + 1e-9
    gcra.admit(key, "k", later, rate, rate, True, None)
    assert gcra.counted
    gcra.admit(key, "k", later, rate, rate, True, None)  # the one after: its own interval later
    assert not gcra.counted


def test_a_steady_client_within_the_rate_is_never_refused() -> None:
    table = memory_table(shards=1)
    gcra = Gcra(table, 1.0, 0)
    key = KeyCells(7, table.locate(7))
    for i in range(100):
        gcra.admit(key, "k", 50.0 + i * 0.1001, 10, 10, True, None)  # 9.99 a second
        assert gcra.counted, i


def test_a_reload_keeps_each_keys_arrival_times() -> None:
    """Each compile made a new Gcra with no arrival times: every reload gave every key a fresh burst
    (docs: a reload that keeps a limit keeps its counts). They are kept by the limit's id."""
    table = memory_table(shards=1)
    key = KeyCells(3, table.locate(3))
    before = Gcra(table, 1.0, 2, b"route:paced/gcra")
    assert admitted_at_once(before, key, 10.0, 10) == 3
    after = Gcra(table, 1.0, 2, b"route:paced/gcra")  # the reload's
    after.admit(key, "k", 10.0, 10, 10, True, None)
    assert not after.counted
    assert admitted_at_once(Gcra(table, 1.0, 2, b"route:other/gcra"), key, 10.0, 10) == 3
