"""The supervisor's pid file (``state.pid_file``), by which `fastgw reload|stop|rollback` find it.

Written atomically at start (a temporary file, then a rename) and removed at exit only while it still
names this process, so a newer supervisor's file is never taken away. A failure is logged, never fatal:
the gateway serves without it.
"""

from __future__ import annotations

import errno
import os

from fastgw.process.log import log


def write(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)  # the state directory
        with open(path + ".tmp", "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(path + ".tmp", path)
    except OSError as exc:
        log("supervisor", f"cannot write pid file {path}: {exc.strerror}")


def remove(path: str) -> None:
    try:
        with open(path) as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log("supervisor", f"cannot remove pid file {path}: {exc.strerror}")
