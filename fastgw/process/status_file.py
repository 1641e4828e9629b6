"""What the supervisor tells the command line: a small JSON file beside its pid file.

``fastgw reload``, ``rollback`` and ``stop`` reach the supervisor by a signal, which carries no answer.
So the supervisor writes this file (atomically: a temporary file, then a rename) at start and after each
reload's outcome, and the commands read it to learn what happened instead of reporting a success they
cannot see. On a full disk no new file fits: the answer is then written in place over the file written
before (:func:`overwrite`), which every write pads to STATUS_BYTES so that it holds the answer without a
new block:

* ``pid``: the supervisor, so a file left by an earlier run is never mistaken for an answer;
* ``reload_within`` / ``stop_within``: seconds the supervisor may take to finish a reload or a stop
  (from the config in force), which the commands wait before giving up;
* ``last``: the newest reload outcome: its ``generation`` (1, 2, ... for this supervisor), ``reason``,
  ``began`` (``time.monotonic()`` when the supervisor started on it: one clock for every process of the
  machine), ``ok``, the one-line ``error``, the ``snapshot`` in force and the ``previous`` one.

* ``digest``: a CRC-32 of the rest (its keys sorted), so that a reader racing an in-place rewrite never
  takes a mixture of the old and the new answer that happens to parse for either (:func:`read`).

A command notes ``time.monotonic()`` before it signals and waits for an outcome that began after that: a
reload already running when the signal arrived does not count (the supervisor runs one more for it).
"""

from __future__ import annotations

import errno
import os
import zlib
from typing import Any, Final

import orjson

# Every write pads the JSON with spaces to this size (a block on ext4, xfs and tmpfs; JSON allows the
# trailing spaces), so that a rewrite in place needs no new block: how a refusal for a full disk still
# reaches `fastgw reload`. A file system that copies on write (btrfs, zfs) needs one all the same.
STATUS_BYTES: Final = 4096


def path_for(pid_file: str) -> str:
    """``/run/fastgw/fastgw.pid`` -> ``/run/fastgw/fastgw.status.json``."""
    return os.path.splitext(pid_file)[0] + ".status.json"


def _digest(status: dict[str, Any]) -> int:
    return zlib.crc32(
        orjson.dumps({k: v for k, v in status.items() if k != "digest"}, option=orjson.OPT_SORT_KEYS)
    )


def _encoded(status: dict[str, Any]) -> bytes:
    return orjson.dumps({**status, "digest": _digest(status)})


def write(path: str, status: dict[str, Any]) -> None:
    """Replace the file atomically, so a reader never sees half of it. Raises OSError naming ``path``
    (a write error names no file); the temporary file may be left, and the next write reuses it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(_encoded(status).ljust(STATUS_BYTES))
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def overwrite(path: str, status: dict[str, Any]) -> None:
    """Write over the file in place, for when :func:`write` cannot (a full disk): every byte of the old
    file is overwritten (spaces past the new JSON), within the blocks it holds. Not atomic: a reader that
    catches it half-written reads invalid JSON, or JSON whose digest does not match (:func:`read`: None),
    and reads again. Raises OSError (no file yet, an answer longer than the file, which would need new
    blocks and could leave a torn file where the old answer was, or the disk refuses even that)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        data = _encoded(status)
        size = os.fstat(fd).st_size
        if len(data) > size:
            raise OSError(errno.ENOSPC, f"the answer ({len(data)} bytes) does not fit the old file", path)
        view = memoryview(data.ljust(size))
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
    finally:
        os.close(fd)


def read(path: str) -> dict[str, Any] | None:
    """The status, or None when there is none (or it is not ours to understand)."""
    try:
        with open(path, "rb") as fh:
            status = orjson.loads(fh.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(status, dict):
        return None
    digest = status.get("digest")
    if digest is not None and digest != _digest(status):
        return None  # caught in the middle of a rewrite in place: read again
    return status
