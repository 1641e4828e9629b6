"""What the supervisor tells the command line: a small JSON file beside its pid file.

``fastgw reload``, ``rollback`` and ``stop`` reach the supervisor by a signal, which carries no answer.
So the supervisor writes this file (atomically: a temporary file, then a rename) at start and after each
reload's outcome, and the commands read it to learn what happened instead of reporting a success they
cannot see:

* ``pid``: the supervisor, so a file left by an earlier run is never mistaken for an answer;
* ``reload_within`` / ``stop_within``: seconds the supervisor may take to finish a reload or a stop
  (from the config in force), which the commands wait before giving up;
* ``last``: the newest reload outcome: its ``generation`` (1, 2, ... for this supervisor), ``reason``,
  ``began`` (``time.monotonic()`` when the supervisor started on it: one clock for every process of the
  machine), ``ok``, the one-line ``error``, the ``snapshot`` in force and the ``previous`` one.

A command notes ``time.monotonic()`` before it signals and waits for an outcome that began after that: a
reload already running when the signal arrived does not count (the supervisor runs one more for it).
"""

from __future__ import annotations

import os
from typing import Any

import orjson


def path_for(pid_file: str) -> str:
    """``/run/fastgw/fastgw.pid`` -> ``/run/fastgw/fastgw.status.json``."""
    return os.path.splitext(pid_file)[0] + ".status.json"


def write(path: str, status: dict[str, Any]) -> None:
    """Replace the file atomically, so a reader never sees half of it. Raises OSError."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(status))
    os.replace(tmp, path)


def read(path: str) -> dict[str, Any] | None:
    """The status, or None when there is none (or it is not ours to understand)."""
    try:
        with open(path, "rb") as fh:
            status = orjson.loads(fh.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return status if isinstance(status, dict) else None
