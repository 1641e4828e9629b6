"""A counter table in anonymous memory, as a worker attaches the node's shared one (counters/table.py)."""

from __future__ import annotations

import mmap

from fastgw.counters.table import CELL_INTS, CounterTable


def memory_table(shards: int = 2, cells: int = 64) -> CounterTable:
    """A table of ``shards`` shards of ``cells`` cells, attached as shard 0 (one worker's view)."""
    table = CounterTable()
    table.attach(mmap.mmap(-1, shards * cells * CELL_INTS * 8), 0, shards, cells)
    return table
