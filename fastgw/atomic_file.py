"""Files the gateway keeps in its state directory, written whole or not at all.

A reader (another worker, the next start) must never see half a file, and a process killed mid-write
must leave at most a temporary file beside it: the bytes go to ``<path><suffix>`` (created 0600, never
through a symlink), then one rename puts them in place. Not fsynced: these files must outlive the
process (the page cache does), and callers on the request path cannot wait for a disk.
"""

from __future__ import annotations

import os
from typing import Final

TMP_SUFFIX: Final = ".tmp"


def write_whole(path: str, data: bytes, temporary: str = "") -> None:
    """Replace ``path`` with ``data`` atomically (``temporary``: the name written first; by default
    ``path`` + ``.tmp``). Raises OSError; the temporary file may be left, and the next write reuses it."""
    tmp = temporary or path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)
