"""One line on stderr naming the process that wrote it: ``fastgw[supervisor 1234]: ...``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def log(who: str, message: str) -> None:
    sys.stderr.write(f"fastgw[{who} {os.getpid()}]: {message}\n")
    sys.stderr.flush()


def log_warnings(who: str, warnings: Iterable[str]) -> None:
    """A config's warnings (``Snapshot.warnings``), a line each: what ``fastgw check`` prints, in the log
    of the gateway that starts or reloads with that config."""
    for warning in warnings:
        log(who, f"warning: {warning}")
