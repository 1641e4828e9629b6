"""The ledger spool file: batches appended are read back in order, from where replay stopped; its bound
refuses what would pass it; a torn last line (a crash mid-append) is cut off with a log line and the
next append starts clean; a line damaged elsewhere is skipped with a log line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.control import ledger_spool
from fastgw.control.ledger_spool import LedgerSpool

ROW = ["2025-06-10", "acme", "k_1", "blue", "m", "oa", "llm", 1, 10, 5, 0, 0, 500, 0, 0]


def test_batches_come_back_in_order_and_from_where_replay_stopped(tmp_path: Path) -> None:
    spool = LedgerSpool(str(tmp_path / "spool"), lambda line: None)
    for seq in (1, 2, 3):
        assert spool.append("w1", seq, [ROW] * seq)
    assert (spool.rows, spool.batches, spool.pending) == (6, 3, True)
    first = next(spool.read())
    spool.consumed(first)
    assert [(b.writer, b.seq, len(b.rows)) for b in spool.read()] == [("w1", 2, 2), ("w1", 3, 3)]
    assert spool.rows == 5
    spool.close()
    again = LedgerSpool(str(tmp_path / "spool"), lambda line: None)  # a restart reads them all again
    assert [b.seq for b in again.read()] == [1, 2, 3] and again.rows == 6
    again.clear()
    assert not again.pending and (tmp_path / "spool").stat().st_size == 0
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o600


def test_the_bound_refuses_a_batch_that_would_pass_it(tmp_path: Path) -> None:
    spool = LedgerSpool(str(tmp_path / "spool"), lambda line: None, max_bytes=250)
    assert spool.append("w", 1, [ROW])
    assert not spool.append("w", 2, [ROW, ROW])
    assert spool.batches == 1 and (tmp_path / "spool").stat().st_size == spool.size <= 250


def test_a_torn_last_line_is_cut_off_with_a_log_line(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    spool = LedgerSpool(str(path), lambda line: None)
    spool.append("w", 1, [ROW])
    spool.append("w", 2, [ROW])
    spool.close()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 20])  # the second append was cut short by a crash
    logged: list[str] = []
    reopened = LedgerSpool(str(path), logged.append)
    assert [b.seq for b in reopened.read()] == [1]
    assert any("torn last line" in line for line in logged), logged
    reopened.append("w", 3, [ROW])  # starts on a line of its own
    assert [b.seq for b in reopened.read()] == [1, 3]


def test_a_damaged_line_is_skipped_with_a_log_line(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    spool = LedgerSpool(str(path), lambda line: None)
    spool.append("w", 1, [ROW])
    spool.close()
    with path.open("ab") as file:
        file.write(b'{"writer": "w", "se\xff\n')
    logged: list[str] = []
    reopened = LedgerSpool(str(path), logged.append)
    reopened.append("w", 3, [ROW])
    assert [b.seq for b in reopened.read()] == [1, 3]
    assert any("does not parse" in line for line in logged)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8), st.integers(0, 400))
def test_any_torn_tail_keeps_every_whole_batch_before_it(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], cut: int
) -> None:
    path = tmp_path_factory.mktemp("spool") / "spool"
    spool = LedgerSpool(str(path), lambda line: None)
    ends = []
    for seq, size in enumerate(sizes, start=1):
        spool.append("w", seq, [ROW] * size)
        ends.append(spool.size)
    spool.close()
    whole = path.read_bytes()
    kept = max(0, len(whole) - cut)
    path.write_bytes(whole[:kept])
    reopened = LedgerSpool(str(path), lambda line: None)
    assert [b.seq for b in reopened.read()] == [seq for seq, end in enumerate(ends, start=1) if end <= kept]
    reopened.close()


def test_an_append_the_disk_cuts_short_leaves_no_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that failed halfway (ENOSPC) left its bytes in the file: the next batch was appended to
    the fragment (one line that does not parse, skipped), and the replay stopped before the batches
    after it, then emptied the file: batches acknowledged as kept were lost without a count."""
    path = tmp_path / "spool"
    spool = LedgerSpool(str(path), lambda line: None)
    assert spool.append("w", 1, [ROW])
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        monkeypatch.setattr(ledger_spool.os, "write", failing)
        return real_write(fd, data[: len(data) // 2])

    def failing(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_spool.os, "write", half_then_full)
    with pytest.raises(OSError):
        spool.append("w", 2, [ROW])
    monkeypatch.setattr(ledger_spool.os, "write", real_write)
    assert path.stat().st_size == spool.size  # the half line is cut
    assert spool.append("w", 3, [ROW]) and spool.append("w", 4, [ROW])
    assert [b.seq for b in spool.read()] == [1, 3, 4]
    assert [b.seq for b in LedgerSpool(str(path), lambda line: None).read()] == [1, 3, 4]


def test_the_bound_counts_what_is_not_yet_replayed(tmp_path: Path) -> None:
    """A spool filled during a long outage went on refusing new batches while its replay ran, the store
    back: the bound counted the batches replayed already."""
    spool = LedgerSpool(str(tmp_path / "spool"), lambda line: None)
    assert spool.append("w", 1, [ROW])
    spool.max_bytes = spool.size * 3 // 2  # room for one batch, not two
    assert not spool.append("w", 2, [ROW])
    spool.consumed(next(spool.read()))
    assert spool.append("w", 2, [ROW])
    assert [b.seq for b in spool.read()] == [2]
