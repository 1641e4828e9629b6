"""The shared counter table under the rate limits: what every worker reads must be what was admitted.

Windows are passed explicitly, so the tests can move time forward (and back) without sleeping. Two
CounterTables attached to one shared mapping stand for two workers (slots 0 and 1).
"""

from __future__ import annotations

import mmap

from fastgw.counters.table import CELL_INTS, CounterTable, KeyCells, key_hash


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
        assert table.sliding(key, 10, 0.0, 5.0) == 0.0  # each key counted once, in its own cell
    assert [seen(table, key, 10) for key in keys[:8]] == [1] * 8

    # Two windows later the old cells are stale: a new key takes one of them over.
    newcomer = keys[8]
    assert table.sliding(newcomer, 12, 0.0, 5.0) == 0.0
    for _ in range(2):
        table.sliding(newcomer, 12, 0.0, 5.0)
    assert seen(table, newcomer, 12) == 3
    # Every old key comes back (in this window, then with the clock stepped back to window 10): none of
    # them may count into the newcomer's cell, whatever its stale copy of its own cell says.
    for window in (12, 10):
        for key in keys[:8]:
            table.sliding(key, window, 0.0, 5.0)
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
