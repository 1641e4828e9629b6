"""The ``fastgw`` command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor


def fastgw(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``stdin``: text piped to the command (None: it inherits the test's stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def fastgw_each(
    calls: Sequence[tuple[Sequence[str], dict[str, str] | None]],
) -> list[subprocess.CompletedProcess[str]]:
    """``fastgw(*args, env=env)`` for each call, on every core at once (each is a Python start-up and a
    config compile, ~0.5 s of one core: a test of many bad configs took 8-17 s one at a time); the
    results in the calls' order."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda call: fastgw(*call[0], env=call[1]), calls))
