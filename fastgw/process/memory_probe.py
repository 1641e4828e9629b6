"""A diagnostic for memory growth in a worker: off unless ``FASTGW_TRACEMALLOC=1`` is set.

With it set, the worker starts ``tracemalloc`` (about 2x slower allocation: never in production) and
answers SIGUSR2 by writing to stderr the allocation sites that grew most since the previous SIGUSR2 (the
first one: since start-up), the object types whose live counts grew most, the largest containers (a
cache keyed by client input that is never pruned is the one whose size keeps rising) and glibc's heap in
use vs free (free but kept is fragmentation, not a leak). ``bench/soak.py --trace``
sends the signal between its passes, so whatever keeps growing under repeated abuse names its own line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import sys
import tracemalloc
from collections import Counter, deque
from typing import Final

ENV: Final = "FASTGW_TRACEMALLOC"
TOP: Final = 15  # lines per report: the growth we look for is in the first few
CONTAINER_MIN: Final = 256  # smaller containers are not worth naming
FRAMES: Final = 6  # traceback depth kept per allocation: enough to see the caller of a dict insert


class MemoryProbe:
    __slots__ = ("_label", "_snapshot", "_types")

    def __init__(self, label: str) -> None:
        self._label = label
        tracemalloc.start(FRAMES)
        self._snapshot = tracemalloc.take_snapshot()
        self._types = self._count_types()

    @staticmethod
    def _count_types() -> Counter[str]:
        return Counter(type(o).__qualname__ for o in gc.get_objects())

    @staticmethod
    def _largest() -> list[str]:
        """The biggest dicts, lists, sets and deques, each named by what holds it: a cache keyed by
        client input that is never pruned shows up here as the one whose size keeps rising."""
        sized = [
            (len(o), o)
            for o in gc.get_objects()
            if isinstance(o, (dict, list, set, deque)) and len(o) >= CONTAINER_MIN
        ]
        sized.sort(key=lambda item: -item[0])
        named = []
        for size, container in sized[:TOP]:
            owners = [type(r).__qualname__ for r in gc.get_referrers(container) if not isinstance(r, tuple)]
            sample = next(iter(container), None)
            if isinstance(container, dict) and sample is not None:
                sample = container[sample]
            named.append(
                f"{type(container).__name__}[{size}] of {type(sample).__qualname__} "
                f"in {'/'.join(owners[:3]) or '?'}"
            )
        return named

    def report(self) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        types = self._count_types()
        traced, _peak = tracemalloc.get_traced_memory()
        lines = [
            f"memory probe {self._label} pid {os.getpid()}: Python heap {traced / 1048576:.1f} MiB traced, "
            f"{sys.getallocatedblocks()} blocks; {_malloc_info()}; top growth since the last report"
        ]
        for stat in snapshot.compare_to(self._snapshot, "traceback")[:TOP]:
            if stat.size_diff <= 0:
                break
            where = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in stat.traceback)
            lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {where}")
        grown = sorted(((n - self._types.get(t, 0), t) for t, n in types.items()), reverse=True)
        lines.append("  object counts grown: " + ", ".join(f"{t} {d:+d}" for d, t in grown[:TOP] if d > 0))
        lines.append("  largest containers: " + ", ".join(self._largest()))
        self._snapshot, self._types = snapshot, types
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2: ten size_t fields, in this order
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def _malloc_info() -> str:
    """glibc's view: bytes in use vs free inside its heap (free but kept: fragmentation, not a leak)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return "malloc: no mallinfo2"
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    mib = 1048576
    return (
        f"malloc: heap {info.arena / mib:.1f} MiB, in use {info.uordblks / mib:.1f}, "
        f"free {info.fordblks / mib:.1f}, mmapped {info.hblkhd / mib:.1f}"
    )


def install(label: str) -> MemoryProbe | None:
    """Start the probe and bind SIGUSR2 to its report when ``FASTGW_TRACEMALLOC=1``; else do nothing."""
    if os.environ.get(ENV) != "1":
        return None
    probe = MemoryProbe(label)
    signal.signal(signal.SIGUSR2, lambda _sig, _frame: probe.report())
    return probe
