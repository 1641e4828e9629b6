"""One line to the process's stderr, the way every fastgw process writes its own events (a dependency's
outage and its end, a worker's lifecycle): ``fastgw[PID]: message``. The pid says which worker or
control process; systemd's journal keeps the lines in order. Request outcomes go to the access log."""

from __future__ import annotations

import os
import sys


def log_line(message: str) -> None:
    sys.stderr.write(f"fastgw[{os.getpid()}]: {message}\n")
    sys.stderr.flush()
