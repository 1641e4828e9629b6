"""Files whose writes fail as on a full disk, without root or a small file system of their own: each path
is made a link to ``/dev/full``, where every write fails with ENOSPC ("No space left on device"). A
process that opens the path afresh for each write (the audit log, the status file's temporary file) then
fails there exactly as on a full disk; one that holds a file open (SQLite) does not notice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


@contextmanager
def no_space(*paths: Path) -> Iterator[None]:
    """Each path full for the block: a file there is set aside, and put back after it."""
    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(_full(path))
        yield


@contextmanager
def _full(path: Path) -> Iterator[None]:
    kept = path.with_name(path.name + ".kept")
    had = path.exists()
    if had:
        path.rename(kept)
    path.symlink_to("/dev/full")
    try:
        yield
    finally:
        path.unlink()
        if had:
            kept.rename(path)
