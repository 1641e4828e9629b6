"""The ``fastgw`` command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


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
