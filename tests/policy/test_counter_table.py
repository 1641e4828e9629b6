"""The shared counter table under the rate limits: what every worker reads must be what was admitted.

Windows are passed explicitly, so the tests can move time forward (and back) without sleeping. Two
CounterTables attached to one shared mapping stand for two workers (slots 0 and 1).
"""

from __future__ import annotations

import mmap

from fastgw.counters.quota import day_code, month_code
from fastgw.counters.table import CELL_INTS, CounterTable, KeyCells, key_hash
from fastgw.counters.windows import IN_FLIGHT


def workers(shards: int, capacity: int) -> list[CounterTable]:
    region = mmap.mmap(-1, shards * capacity * CELL_INTS * 8)
    tables = []
    for slot in range(shards):
        table = CounterTable()
        table.attach(region, slot, shards, capacity)
        tables.append(table)
    return tables


def key_of(table: CounterTable, name: str) -> KeyCells:
    hashed = key_hash(b"route:limit", name.encode())
    return KeyCells(hashed, table.locate(hashed))


def seen(table: CounterTable, key: KeyCells, window: int) -> float:
    """What any worker reads for the key: current window plus the whole previous one."""
    return table.count(key.hash, list(key.where), window, 1.0)


def test_admissions_are_summed_over_workers_and_roll_into_the_previous_window() -> None:
    first, second = workers(2, 64)
    mine, theirs = key_of(first, "10.0.0.1"), key_of(second, "10.0.0.1")
    admitted = 0
    for _ in range(7):
        admitted += first.sliding(mine, 100, 0.0, 10.0) + 1 <= 10
        admitted += second.sliding(theirs, 100, 0.0, 10.0) + 1 <= 10
    assert admitted == 10  # a limit of 10 holds across both workers' shards
    assert seen(first, mine, 100) == 10 and seen(second, theirs, 100) == 10

    # The next window starts empty; the previous one counts with its weight.
    assert first.sliding(mine, 101, 0.5, 100.0) == 5.0
    assert second.sliding(theirs, 101, 0.5, 100.0) == 6.0  # the admission just counted by the first
    assert seen(first, mine, 101) == 2 + 10  # two in window 101, ten in window 100
    # Two windows on, nothing of window 100 is left.
    assert first.sliding(mine, 103, 1.0, 100.0) == 0.0
    assert seen(second, theirs, 103) == 1


def test_a_cell_given_to_another_key_is_never_written_through_an_old_copy() -> None:
    (table,) = workers(1, 8)  # every key probes the same 8 cells: the table is full at 8 keys
    keys = [key_of(table, f"client-{n}") for n in range(9)]
    for key in keys[:8]:
        assert table.sliding(key, 10, 0.0, 5.0, 1, 1.0) == 0.0  # each key counted once, in its own cell
    assert [seen(table, key, 10) for key in keys[:8]] == [1] * 8

    # Two windows later the old cells are stale: a new key takes one of them over.
    newcomer = keys[8]
    assert table.sliding(newcomer, 12, 0.0, 5.0, 1, 1.0) == 0.0
    assert table.table_full == 0, "a stale cell was given to the newcomer"
    for _ in range(2):
        table.sliding(newcomer, 12, 0.0, 5.0, 1, 1.0)
    assert seen(table, newcomer, 12) == 3
    # Every old key comes back (in this window, then with the clock stepped back to window 10): none of
    # them may count into the newcomer's cell, whatever its stale copy of its own cell says.
    for window in (12, 10):
        for key in keys[:8]:
            table.sliding(key, window, 0.0, 5.0, 1, 1.0)
            assert seen(table, newcomer, 12) == 3, f"window {window}: an old key wrote the newcomer's cell"
        if window == 12:  # each old key counted once in window 12 (one of them outside the full table)
            assert [seen(table, key, 12) for key in keys[:8]] == [1] * 8
    assert table.table_full >= 1


def test_a_count_taken_back_is_seen_by_the_next_check() -> None:
    (table,) = workers(1, 64)
    key = key_of(table, "consumer-7")
    for _ in range(3):
        table.sliding(key, 50, 0.0, 10.0)
    table.take_back(key.hash, key.where, 50)  # a later limit refused the last one
    table.drop_copy(key)  # as the counters do after a take-back
    assert table.sliding(key, 50, 0.0, 10.0) == 2.0
    assert seen(table, key, 50) == 3


def test_two_objects_for_one_key_never_write_over_each_others_counts() -> None:
    """A reload compiles the limit again, and a full key cache is cleared: a worker may then count one
    key through two objects, each wanting a copy of the same cell. Only the latest to count keeps one."""
    first, second = workers(2, 64)
    old, new = key_of(first, "consumer-1"), key_of(first, "consumer-1")
    other_worker = key_of(second, "consumer-1")
    for turn in range(30):
        key = (old, new, other_worker)[turn % 3 if turn < 15 else (turn // 2) % 2]
        (second if key is other_worker else first).sliding(key, 7, 0.0, 1000.0)
    assert seen(first, old, 7) == 30
    for _ in range(3):  # settlements through either object move the one count
        first.adjust_key(old, 7, 2)
        first.adjust_key(new, 7, -1)
    assert first.sliding(new, 7, 0.0, 1000.0) == 33.0
    assert first.sliding(old, 7, 0.0, 1000.0) == 34.0
    assert seen(second, other_worker, 7) == 35


NOW = 1_765_000_000.0  # a time in December 2025: window indices of every length are far apart


def counted_in(table: CounterTable, key_hash: int, length: float, at: float, times: int = 1) -> float:
    """``times`` admissions of the key in its window of ``length`` seconds at ``at``; what it read last."""
    where = table.locate(key_hash)
    seen_before = 0.0
    for _ in range(times):
        seen_before = table.count(key_hash, where, int(at // length), 0.0, 1e9, 1, length)
    return seen_before


def reads(table: CounterTable, key_hash: int, length: float, at: float) -> float:
    return table.count(key_hash, table.locate(key_hash), int(at // length), 0.0)


def test_a_live_count_is_never_given_to_a_new_key_of_another_window_length() -> None:
    """Window indices are ``now // length``: a second's index is ~3,600 times an hour's, and a 60 s
    window's ~1.6 % above a 61 s one's. Compared as numbers, a live cell of the longer window looked
    more than one window old, and the first request of a new key probing it took it over: the first
    key's count restarted at 0 (a whole extra window admitted)."""
    for long, short in ((3600.0, 1.0), (61.0, 60.0), (86400.0, 3600.0)):
        (table,) = workers(1, 8)  # hashes 1 and 9 share their first probe slot
        counted_in(table, 1, long, NOW, times=5)
        counted_in(table, 9, short, NOW + 1)
        assert reads(table, 1, long, NOW + 2) == 5, f"a {short:g} s key took a live {long:g} s count"
        assert reads(table, 9, short, NOW + 1) == 1


def test_a_cell_is_reused_once_its_window_and_the_one_after_have_ended() -> None:
    (table,) = workers(1, 2)  # two cells: a third key is counted only in one given up
    counted_in(table, 1, 3600.0, NOW, times=5)
    counted_in(table, 2, 3600.0, NOW, times=5)
    hour_start = (NOW // 3600) * 3600
    # Before the hour after the key's hour ends, its count still weighs as the previous window.
    counted_in(table, 3, 1.0, hour_start + 2 * 3600 - 1)
    assert table.table_full == 1 and reads(table, 1, 3600.0, NOW) == 5
    # Two hours on, nothing of it counts any more: the cell goes to the next new key.
    counted_in(table, 5, 1.0, hour_start + 2 * 3600)
    assert table.table_full == 1, "the stale hour cell was not reused"
    assert reads(table, 5, 1.0, hour_start + 2 * 3600) == 1


def test_a_cell_whose_length_this_process_never_saw_is_reused_only_when_it_holds_nothing() -> None:
    """A worker restarted into its slot finds its predecessor's cells without their lengths: a cell
    holding counts is kept (it may be live), one holding nothing may go to any key."""
    region = mmap.mmap(-1, 2 * CELL_INTS * 8)
    before = CounterTable()
    before.attach(region, 0, 1, 2)
    counted_in(before, 1, 1.0, NOW)
    counted_in(before, 2, 1.0, NOW)
    where = before.locate(2)
    before.count(2, where, int(NOW), 0.0)
    before.take_back(2, where, int(NOW))  # key 2's request ended: its cell holds 0
    after = CounterTable()
    after.attach(region, 0, 1, 2)
    counted_in(after, 3, 1.0, NOW + 3600)  # key 1's cell is an hour stale, but of unknown length
    assert reads(after, 1, 1.0, NOW) == 1, "a cell of unknown length holding a count was given away"
    assert reads(after, 3, 1.0, NOW + 3600) == 1 and after.table_full == 0  # in key 2's empty cell


def test_a_clock_stepped_back_a_window_keeps_the_newer_windows_count() -> None:
    """The clock steps back into the previous window and forward again: the newer window's admissions are
    still counted (the cell was rewritten for the older window before, and they were lost), and the
    older window reads what it held. What a worker admits while its clock is behind it counts apart,
    in its own process: every worker reads the shared counts, only the admitting one its own extra."""
    first, second = workers(2, 64)
    mine, theirs = key_of(first, "10.0.0.1"), key_of(second, "10.0.0.1")
    for _ in range(4):
        first.sliding(mine, 100, 0.0, 1000.0)
    for _ in range(3):
        first.sliding(mine, 101, 0.0, 1000.0)
        second.sliding(theirs, 101, 0.0, 1000.0)
    assert first.sliding(mine, 100, 0.0, 1000.0) == 4  # stepped back: window 100 as it was
    assert first.count(mine.hash, list(mine.where), 100, 0.0) == 5  # and the admission just counted
    assert second.count(theirs.hash, list(theirs.where), 100, 0.0) == 4
    assert seen(second, theirs, 101) == 6 + 4  # forward again: window 101 intact, 100 as its previous
    assert first.sliding(mine, 101, 0.0, 1000.0) == 6
    first.adjust_key(mine, 100, -1)  # a correction in window 100 (the cell's previous, or apart)
    assert first.count(mine.hash, list(mine.where), 100, 0.0) == 4
    first.adjust_key(mine, 99, 2)  # older than the cell's previous: apart, or nothing where none is
    assert first.local.get((mine.hash, 99)) is None and seen(first, mine, 101) == 7 + 3


def test_a_day_count_survives_a_clock_stepped_back_across_midnight() -> None:
    """Calendar codes fall by 2 a period (counters/quota.py): a cell turning to the next day keeps the day
    that ended as its previous count, and a request dated the day before counts apart."""
    today, yesterday = day_code(20_000), day_code(19_999)
    (table,) = workers(1, 64)
    key = key_of(table, "team:a")
    table.sliding(key, yesterday, 0.0, 1e9, 300)
    table.sliding(key, today, 0.0, 1e9, 500)
    assert table.sliding(key, yesterday, 0.0, 1e9, 7) == 300  # the clock stepped back across midnight
    assert table.sliding(key, today, 0.0, 1e9, 11) == 500  # and forward: today's spend is all there
    assert table.count(key.hash, list(key.where), yesterday, 0.0) == 307
    assert table.count(key.hash, list(key.where), today, 0.0) == 511


def test_a_calendar_cell_is_reused_once_its_period_and_the_one_after_have_ended() -> None:
    (table,) = workers(1, 1)  # one cell: a second key is counted only in one given up
    day = 20_000
    table.add(1, table.locate(1), day_code(day), 5)
    table.add(2, table.locate(2), day_code(day + 1), 1)
    assert table.table_full == 1  # yesterday's count still weighs as the previous period
    table.add(3, table.locate(3), month_code(700), 1)
    assert table.table_full == 2  # a month is never compared with a day
    table.add(4, table.locate(4), day_code(day + 2), 1)
    assert table.table_full == 2, "a day cell two days old was not reused"
    assert table.count(4, table.locate(4), day_code(day + 2), 0.0) == 1


def test_a_limit_of_another_kind_takes_the_cell_of_its_name_over() -> None:
    """A reload gives a quota's name to a concurrency limit: requests in flight are not "older" than a day,
    so they count in the key's cell (not apart, where the supervisor would never release them)."""
    (table,) = workers(1, 64)
    where = table.locate(1)
    table.add(1, where, day_code(20_000), 5)
    table.add(1, where, IN_FLIGHT, 1)
    assert table.count(1, where, IN_FLIGHT, 0.0) == 1 and not table.local
    assert table.release_shard(0) == 1


def test_a_key_whose_window_length_a_reload_changed_counts_shared_again() -> None:
    """A per-second limit becomes per-minute under the same name (same key): the minute's index is far
    below the second's, yet it is no window the clock stepped back to. The cell is taken over and both
    workers count in the shared table, not each in its own memory (a limit per worker)."""
    first, second = workers(2, 64)
    counted_in(first, 7, 1.0, NOW, times=3)
    counted_in(second, 7, 1.0, NOW, times=3)
    counted_in(first, 7, 60.0, NOW + 1, times=2)
    assert counted_in(second, 7, 60.0, NOW + 1, times=2) == 3  # the other worker's two, and its own one
    assert not first.local and not second.local
    assert reads(first, 7, 60.0, NOW + 1) == 4
