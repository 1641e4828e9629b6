"""Named shared-memory regions, created by the supervisor before it forks anything.

Anonymous ``MAP_SHARED`` mappings are inherited across ``fork`` and stay shared between the supervisor
and every child, with no file to clean up and nothing for another user to open. Regions are laid out
once at start (their sizes depend on the worker count, not on reloadable config); later features add
their own (the rate-limit counter shards). Each slot of a region has a single writer.

Region ``ratelimit``: the rate-limit counter table, one shard per worker slot (``counters/table.py``).

Region ``heartbeat``: one little-endian double per worker slot, the worker's monotonic clock at its last
tick. The supervisor reads it to find a worker whose event loop is stuck (alive but not ticking).

Region ``metrics``: cumulative metric counters, one shard per worker slot and one for the control process
(``metrics/shared.py``), so counters survive the death of the process that counted them.
"""

from __future__ import annotations

import mmap
import struct
from typing import Final

HEARTBEAT: Final = "heartbeat"
METRICS: Final = "metrics"  # cumulative metric counters, a shard per slot (metrics/shared.py)
RATELIMIT: Final = "ratelimit"  # rate-limit counter shards, one per worker (counters/table.py)
_DOUBLE: Final = struct.Struct("<d")


class SharedRegions:
    def __init__(self) -> None:
        self._regions: dict[str, mmap.mmap] = {}

    def create(self, name: str, size: int) -> mmap.mmap:
        if name in self._regions:
            raise ValueError(f"shared region {name!r} exists")
        region = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._regions[name] = region
        return region

    def get(self, name: str) -> mmap.mmap:
        return self._regions[name]

    def names(self) -> list[str]:
        return sorted(self._regions)


class Heartbeats:
    """Per-slot heartbeat doubles in the ``heartbeat`` region."""

    def __init__(self, region: mmap.mmap) -> None:
        self._region = region

    @classmethod
    def create(cls, regions: SharedRegions, slots: int) -> Heartbeats:
        return cls(regions.create(HEARTBEAT, slots * _DOUBLE.size))

    def beat(self, slot: int, now: float) -> None:
        _DOUBLE.pack_into(self._region, slot * _DOUBLE.size, now)

    def last(self, slot: int) -> float:
        return float(_DOUBLE.unpack_from(self._region, slot * _DOUBLE.size)[0])
