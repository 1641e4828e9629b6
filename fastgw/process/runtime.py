"""Process-level tuning applied once when a worker starts: the garbage collector and glibc's allocator.

* GC: everything alive after start-up (modules, the Snapshot, ~100k objects) is frozen out of the
  collector's sight and young collections run every 20,000 allocations instead of 700. Otherwise the
  access-log records that live for one batch get promoted and trigger full collections over the whole
  start-up heap, on every worker, all the time.
* Allocator: uvloop reads TLS records with a 256 KiB buffer per read call. glibc serves that with a fresh
  mmap (zeroed pages, then munmap) until its *dynamic* mmap threshold happens to rise, so whether HTTPS
  paid for a mapping per read depended on the run's luck. Pinning the threshold at 1 MiB keeps those
  buffers on the heap from the first request on. (The measurements behind both are in the commit messages
  that introduced them.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Final

GC_GEN0_THRESHOLD: Final = 20_000  # allocations between young collections (CPython's default is 700)
_M_TRIM_THRESHOLD: Final = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD: Final = 1 << 20  # requests >= 1 MiB still get their own mapping
TRIM_THRESHOLD: Final = 8 << 20  # free heap kept before it is returned to the kernel


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def tune_allocator() -> bool:
    """Pin glibc's mmap and trim thresholds. Returns False where there is no glibc mallopt (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
