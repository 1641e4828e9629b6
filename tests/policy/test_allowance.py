"""Allowances (counters/allowance.py): amounts (tokens, micro-USD) reserved before the work and settled
after it, on the shared table that two CounterTables attached to one mapping stand for two workers of.

Time is passed explicitly: minutes and days move without sleeping.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.counters.allowance import DAY, MINUTE, MONTH, Allowance, AmountKey
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.quota import QUOTAS
from fastgw.counters.table import CELL_INTS, CounterTable, key_hash
from fastgw.snapshot import RedisSettings

NOON = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 43200.0  # a UTC noon: a minute starts here too


def workers(shards: int, capacity: int = 64) -> list[CounterTable]:
    region = mmap.mmap(-1, shards * capacity * CELL_INTS * 8)
    tables = []
    for slot in range(shards):
        table = CounterTable()
        table.attach(region, slot, shards, capacity)
        tables.append(table)
    return tables


def key_of(table: CounterTable, limit: bytes = b"llm:team.tokens_per_minute") -> AmountKey:
    hashed = key_hash(limit, b"team:a")
    return AmountKey(hashed, table.locate(hashed))


@pytest.fixture(autouse=True)
def quota_book() -> Iterator[None]:
    """The quota book is the worker's global: each test starts from an empty one and leaves it so."""
    saved = QUOTAS.base, QUOTAS.pending
    QUOTAS.base, QUOTAS.pending = {}, {}
    yield
    QUOTAS.base, QUOTAS.pending = saved


def test_two_workers_share_one_token_limit_and_the_refused_amount_is_not_counted() -> None:
    tables = workers(2)
    allowances = [Allowance(t, MINUTE, b"llm:team") for t in tables]
    keys = [key_of(t) for t in tables]
    admitted = []
    for n in range(10):
        worker = n % 2
        allowances[worker].reserve(keys[worker], "team:a", 300, NOON + n, 1000, None)
        admitted.append(allowances[worker].counted)
    assert admitted == [True, True, True] + [False] * 7  # 3 x 300 fit under 1000, a fourth does not
    assert tables[0].count(keys[0].hash, keys[0].where, int(NOON // 60), 0.0) == 900
    assert allowances[1].used == 900  # what the refusal read: every worker's reservations
    assert allowances[1].reset > 0  # a refusal says when the amount would fit again


def test_settling_gives_back_or_adds_the_difference_even_past_the_cap() -> None:
    (table,) = workers(1)
    allowance = Allowance(table, MINUTE, b"llm:team")
    key = key_of(table)
    window = int(NOON // 60)
    assert allowance.reserve(key, "team:a", 500, NOON, 1000, None) and allowance.counted
    allowance.settle(key, allowance.when, 120 - 500, None)  # the answer was shorter: 380 given back
    assert table.count(key.hash, key.where, window, 0.0) == 120
    allowance.reserve(key, "team:a", 100, NOON + 1, 1000, None)
    allowance.settle(key, allowance.when, 5000 - 100, None)  # a stream that ran past its estimate
    assert table.count(key.hash, key.where, window, 0.0) == 5120  # counted in full, over the cap
    allowance.reserve(key, "team:a", 1, NOON + 2, 1000, None)
    assert not allowance.counted  # and the next request waits for the window to slide


def test_a_settlement_after_the_minute_turned_corrects_the_previous_window() -> None:
    (table,) = workers(1)
    allowance = Allowance(table, MINUTE, b"llm:team")
    key = key_of(table)
    allowance.reserve(key, "team:a", 400, NOON + 59, 1000, None)
    reserved_in = allowance.when
    allowance.reserve(key, "team:a", 10, NOON + 61, 1000, None)  # the next minute: the cell rolled
    allowance.settle(key, reserved_in, -300, None)  # the first request ends, having used 100
    both = table.count(key.hash, key.where, reserved_in + 1, 1.0)
    assert both == 10 + 100


def test_a_zero_cap_admits_nothing() -> None:
    (table,) = workers(1)
    allowance = Allowance(table, MINUTE, b"llm:team")
    allowance.reserve(key_of(table), "team:a", 1, NOON, 0, None)
    assert not allowance.counted


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([MINUTE, DAY]),
    st.lists(
        st.tuples(
            st.integers(0, 2),  # the worker
            st.integers(0, 1),  # which of its two objects for the key (a reload compiles a second one)
            st.integers(1, 400),  # the estimate
            st.integers(0, 900),  # the real amount
            st.integers(0, 119),  # seconds after noon
            st.integers(0, 3),  # settled after this many later requests (answers overlap)
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_reserve_then_settle_never_loses_nor_doubles_an_amount(
    period: str, requests: list[tuple[int, int, int, int, int, int]]
) -> None:
    """Whatever the workers, estimates, real amounts, times within two minutes and order of the
    settlements, and whichever of two objects for the same key (the old and the new snapshot's, across
    a reload) counts: once every request is settled, the table holds exactly the real amounts of the
    admitted ones, per window. Each worker keeps a copy of its own cell in the key that counts last:
    a second object counting must not write over the first's counts."""
    tables = workers(3)
    allowances = [Allowance(t, period, b"llm:team") for t in tables]
    keys = [(key_of(t), key_of(t)) for t in tables]
    expected: dict[int, int] = {}
    waiting: list[tuple[int, Allowance, AmountKey, int, int]] = []  # (due, allowance, key, when, delta)
    in_time_order = sorted(requests, key=lambda request: request[4])
    for index, (worker, which, estimate, real, offset, lag) in enumerate(in_time_order):
        allowance, key = allowances[worker], keys[worker][which]
        allowance.reserve(key, "team:a", estimate, NOON + offset, 2000, None)
        if allowance.counted:
            waiting.append((index + lag, allowance, key, allowance.when, real - estimate))
            expected[allowance.when] = expected.get(allowance.when, 0) + real
        for entry in [entry for entry in waiting if entry[0] <= index]:
            waiting.remove(entry)
            entry[1].settle(entry[2], entry[3], entry[4], None)
    for _due, allowance, key, when, delta in waiting:
        allowance.settle(key, when, delta, None)
    probe = keys[0][0]
    if period == DAY:
        code = QUOTAS.period(DAY, NOON)[0]
        assert tables[0].count(probe.hash, list(probe.where), code, 0.0) == expected.get(code, 0)
        return
    last = int((NOON + 119) // 60)
    current = tables[0].count(probe.hash, list(probe.where), last, 0.0)
    both = tables[0].count(probe.hash, list(probe.where), last, 1.0)
    assert current == expected.get(last, 0)
    assert both - current == expected.get(last - 1, 0)


def test_a_day_budget_adds_the_stores_base_and_sends_the_settled_amount_to_it() -> None:
    (table,) = workers(1)
    allowance = Allowance(table, DAY, b"llm:team.usd_per_day")
    key = key_of(table, b"llm:team.usd_per_day")
    code, _ = QUOTAS.period(DAY, NOON)
    QUOTAS.base[(key.hash, code)] = 900_000  # spent before this run: 0.90 USD in micro-USD
    allowance.reserve(key, "team:a", 50_000, NOON, 1_000_000, None)
    assert allowance.counted and allowance.used == 900_000
    allowance.settle(key, allowance.when, 70_000 - 50_000, None)
    assert QUOTAS.pending[(key.hash, code)] == [70_000]  # what reaches the store: the real spend
    allowance.reserve(key, "team:a", 50_000, NOON + 60, 1_000_000, None)
    assert not allowance.counted and allowance.used == 970_000
    assert 0 < allowance.reset <= 43200  # until midnight UTC
    tomorrow = NOON + 86400
    allowance.reserve(key, "team:a", 50_000, tomorrow, 1_000_000, None)
    assert allowance.counted and allowance.used == 0  # a new day


@pytest.mark.parametrize("period", [DAY, MONTH])
def test_a_calendar_period_turns_at_its_end_and_back_when_the_clock_steps_back(period: str) -> None:
    """Each allowance keeps the period it last counted in; a request past its end (or before its start:
    the clock stepped back) counts in the period it falls in, with the seconds left in that one, and
    reads that period's spend: a step back and forth across the boundary loses neither period's."""
    (table,) = workers(1)
    allowance = Allowance(table, period, b"llm:team.usd")
    key = key_of(table, b"llm:team.usd")
    code, left = QUOTAS.period(period, NOON)
    end = NOON + left
    steps = ((end - 0.25, 600, 0), (end + 0.25, 700, 0), (end - 0.5, 100, 600), (end + 1.0, 200, 700))
    for now, amount, used in steps:
        allowance.reserve(key, "team:a", amount, now, 1000, None)
        assert allowance.counted and allowance.reset == QUOTAS.period(period, now)[1]
        assert allowance.when == QUOTAS.period(period, now)[0]
        assert allowance.used == used, f"{allowance.used} used read at {now - end:+} s from the boundary"
    assert allowance.when != code
    # What reaches the store, per period: each amount in the period its request fell in.
    assert QUOTAS.pending[(key.hash, code)] == [600 + 100]
    assert QUOTAS.pending[(key.hash, allowance.when)] == [700 + 200]


def test_a_day_budget_sent_to_the_store_midway_sends_each_amount_once() -> None:
    """Keys keep their cell of counts to send while the quota book's epoch stands: a flush between a
    reservation and its settlement, or a base from the store arriving, must not lose or repeat a count."""
    (table,) = workers(1)
    allowance = Allowance(table, DAY, b"llm:team.usd_per_day")
    key = key_of(table, b"llm:team.usd_per_day")
    code, _ = QUOTAS.period(DAY, NOON)
    allowance.reserve(key, "team:a", 50_000, NOON, 1_000_000, None)
    sent = [entry[4] for entry in QUOTAS.take()]  # the worker's flush: the reservation goes out
    allowance.settle(key, allowance.when, 20_000 - 50_000, None)  # settled after the flush
    allowance.reserve(key, "team:a", 10_000, NOON + 1, 1_000_000, None)
    sent += [entry[4] for entry in QUOTAS.take()]
    assert sum(sent) == 30_000  # 20,000 spent, then 10,000 reserved: each counted once
    QUOTAS.apply_bases([[key.hash, code, 500_000]])  # the store's total arrives (another run's spend)
    allowance.reserve(key, "team:a", 1, NOON + 2, 1_000_000, None)
    assert allowance.used == 500_000 + 30_000


def test_in_cluster_mode_a_month_budget_counts_through_the_cluster_batch() -> None:
    (table,) = workers(1)
    cluster = ClusterCounts(
        RedisSettings(url="redis://127.0.0.1:1", flush_interval=0.05, timeout=0.1, failure="open")
    )
    allowance = Allowance(table, MONTH, b"llm:team.usd_per_month")
    key = key_of(table, b"llm:team.usd_per_month")
    allowance.reserve(key, "team:a", 1000, NOON, 10_000, cluster)
    assert allowance.counted
    allowance.settle(key, allowance.when, 2500 - 1000, cluster)
    assert cluster.pending == {(key.hash, allowance.when): 2500}  # what the next flush sends to Redis
    cluster.remote[(key.hash, allowance.when)] = 7000  # what the other nodes spent, as last read
    allowance.reserve(key, "team:a", 1000, NOON + 1, 11_000, cluster)
    assert allowance.counted and allowance.used == 9500
    allowance.reserve(key, "team:a", 1000, NOON + 2, 11_000, cluster)
    assert not allowance.counted
    assert not QUOTAS.pending  # the cluster, not the node's store, keeps the count
