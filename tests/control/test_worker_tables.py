"""What a connecting worker is sent first (control/worker_tables.py): the identity tables and its quota
bases; while the store is down, the last of each that was read, never an empty set of bases, which
wiped a reconnecting worker's own so that its quota counts started again from zero."""

from __future__ import annotations

from typing import Any

from fastgw.codec.control_messages import CachePush, QuotaBases
from fastgw.control.worker_tables import WorkerTables
from fastgw.store.base import QuotaBase, StoreError


class Table:
    def __init__(self, name: str) -> None:
        self.name = name

    def full_table(self) -> CachePush:
        return CachePush(self.name, full={"k": 1})


class Store:
    down = False

    def quota_bases(self, started: float, periods: list[int]) -> list[QuotaBase]:
        if self.down:
            raise StoreError("connection refused")
        return [QuotaBase(7, periods[0], 500)]


def bases(messages: list[Any]) -> list[QuotaBases]:
    return [m for m in messages if isinstance(m, QuotaBases)]


def test_a_worker_connecting_while_the_store_is_down_gets_the_bases_read_last() -> None:
    store = Store()
    logged: list[str] = []
    tables = WorkerTables(store, Table("keys"), Table("provider_keys"), 0.0, logged.append)  # type: ignore[arg-type]
    store.down = True
    first = tables.on_connect(0)  # none ever read: no bases at all, the worker keeps its own
    assert bases(first) == [] and "the store is down" in logged[-1]
    store.down = False
    [read] = bases(tables.on_connect(0))
    assert [entry[2] for entry in read.entries] == [500]
    store.down = True
    assert bases(tables.on_connect(1)) == [read]  # the last read, not an empty set
