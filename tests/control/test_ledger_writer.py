"""The control process's ledger writer: each report is written once; a write that fails is kept and
added to the next one (so nothing is lost to a store that was briefly away, and nothing is doubled), up
to RETRY_ROWS_MAX rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from fastgw.control import ledger as ledger_module
from fastgw.control.ledger import LedgerWriter
from fastgw.store.base import StoreError, UsageDelta, UsageQuery
from fastgw.store.sqlite import SQLiteStore


class FlakyStore(SQLiteStore):
    """A real SQLite store whose next ``fail`` writes raise, as a locked or full disk does."""

    fail = 0

    def add_usage(self, deltas: Sequence[UsageDelta], now: float) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreError("database is locked")
        super().add_usage(deltas, now)


def entry(requests: int) -> tuple[object, ...]:
    return ("2025-06-10", "acme", "k_1", "blue", "m", "oa", "llm", requests, 10, 5, 0, 0, 500, 0, 0)


def test_a_failed_write_is_added_to_the_next_and_never_doubled(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    logged: list[str] = []
    writer = LedgerWriter(store, logged.append)
    writer.write([entry(1)])
    store.fail = 1
    writer.write([entry(2)])
    assert "USAGE LEDGER WRITE FAILED" in logged[0]
    writer.write([entry(4)])
    [total] = store.usage(UsageQuery())
    assert (total.requests, total.prompt_tokens) == (7, 30)
    writer.write([])
    assert store.usage(UsageQuery())[0].requests == 7
    store.close()


def test_what_failed_writes_keep_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "RETRY_ROWS_MAX", 3)
    store = FlakyStore(str(tmp_path / "fastgw.db"))
    writer = LedgerWriter(store, lambda line: None)
    store.fail = 2
    writer.write([entry(1), entry(1)])
    writer.write([entry(1), entry(1)])
    assert len(writer.unwritten) == 3 and writer.dropped == 1
    writer.write([])
    assert store.usage(UsageQuery())[0].requests == 3
    store.close()
