"""One line on stderr naming the process that wrote it: ``fastgw[supervisor 1234]: ...``."""

from __future__ import annotations

import os
import sys


def log(who: str, message: str) -> None:
    sys.stderr.write(f"fastgw[{who} {os.getpid()}]: {message}\n")
    sys.stderr.flush()
