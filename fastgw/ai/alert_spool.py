"""Budget alerts kept on disk until delivered, so a worker killed (kill -9, the OOM killer) or stopped
before its webhooks answered loses none (ai/budget_alerts.py queues them in memory).

One file per alert and webhook in ``<state dir>/alerts/worker-<pid>/``, written when the alert is
queued and removed once that webhook's delivery ended (delivered, refused, given up, dropped from a full
queue, or handed to a reloaded config, which writes its own). Each worker holds an ``flock`` on its
directory's lock file while it lives (the kernel drops it on any death), and a starting worker adopts
every directory whose lock nobody holds: the supervisor restarts a dead worker at once, so its alerts go
out again within a second; a stopped gateway's, at its next start. Directories are per process, not per
slot, so a replacement worker that overlaps its predecessor and a smaller worker count need no rule.

Files are written whole to a temporary name and renamed, so a worker killed mid-write leaves a stray
``.tmp`` (removed) and never half an alert. They are not fsynced: alerts are raised on the request path,
and the threat is a process dying, not the machine (the page cache outlives the process). Mode 0600:
an alert names consumers and keys, a webhook URL may carry a token. A spool that cannot be written (a
full or read-only state disk) is logged once and leaves delivery in memory, as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import orjson

from fastgw.atomic_file import TMP_SUFFIX, write_whole
from fastgw.log_line import log_line

ALERTS_DIR: Final = "alerts"
OWNER_PREFIX: Final = "worker-"
LOCK_SUFFIX: Final = ".lock"
# An entry is one alert body (~300 bytes), its route and URL; a file past this is not ours (or damaged)
# and is removed unread rather than loaded into a worker's memory.
ENTRY_BYTES_MAX: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class SpooledAlert:
    """An alert a previous worker queued and never finished delivering to ``url``."""

    route: str
    url: str
    body: bytes
    path: str


class AlertSpool:
    """One worker's spool directory; the lock on it is held for the process's life."""

    def __init__(self, state_dir: str, pid: int) -> None:
        self.root = os.path.join(state_dir, ALERTS_DIR)
        self.dir = os.path.join(self.root, f"{OWNER_PREFIX}{pid}")
        self._lock_fd = -1
        self._broken = False  # logged once: the spool could not be written

    def open(self) -> None:
        """Take this process's lock, then create its directory (a directory left by a dead process of
        the same pid is this one's: its entries are adopted with the rest). The lock first: a worker
        starting beside this one must never find the directory unlocked and adopt it away."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = _open_lock(self.dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def name_for(self, body: bytes, url: str) -> str:
        """The file of one alert at one webhook (the body holds the alert's id)."""
        digest = hashlib.blake2b(body + b"\n" + url.encode(), digest_size=12).hexdigest()
        return os.path.join(self.dir, digest + ".json")

    def keep(self, route: str, url: str, body: bytes) -> str | None:
        """Write the entry; its path, or None where the spool cannot be written (logged once)."""
        path = self.name_for(body, url)
        entry = orjson.dumps({"route": route, "url": url, "body": body.decode()})
        try:
            write_whole(path, entry)
        except OSError as exc:
            if not self._broken:
                self._broken = True
                log_line(f"budget alerts: cannot keep them in {self.dir} ({exc.strerror}); in memory only")
            return None
        return path

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log_line(f"budget alerts: cannot remove {path} ({exc.strerror})")

    def adopt(self) -> list[SpooledAlert]:
        """The entries left in this directory and in those no live worker holds, the latter moved into
        this one and removed; stray temporary files removed, unreadable entries logged and removed."""
        for other in self._orphans():
            try:
                names = sorted(os.listdir(other))
            except OSError:  # adopted and removed by another worker a moment ago: its lock file is ours
                _unlink(other + LOCK_SUFFIX)
                continue
            for name in names:
                try:
                    os.replace(os.path.join(other, name), os.path.join(self.dir, name))
                except OSError as exc:
                    log_line(f"budget alerts: cannot adopt {name} from {other} ({exc.strerror})")
            try:
                os.rmdir(other)
                os.unlink(other + LOCK_SUFFIX)
            except OSError:
                pass  # an entry it could not move stays for the next start
        return list(self._entries())

    def _orphans(self) -> Iterator[str]:
        """Other workers' directories whose lock nobody holds (their process is gone)."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return
        for name in names:
            path = os.path.join(self.root, name)
            if not name.startswith(OWNER_PREFIX) or name.endswith(LOCK_SUFFIX) or path == self.dir:
                continue
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue  # a stray file or a symlink: never followed, never emptied
                fd = _open_lock(path)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # its worker lives: its alerts are its own
            try:
                yield path
            finally:
                os.close(fd)  # releases the lock

    def _entries(self) -> Iterator[SpooledAlert]:
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if name.endswith(TMP_SUFFIX):
                self.remove(path)  # a write cut by the worker's death: never renamed, never an alert
                continue
            try:
                regular = stat.S_ISREG(os.lstat(path).st_mode)
            except OSError:
                continue
            if not regular:
                log_line(f"budget alerts: {path} is not a spooled alert (not a file); left alone")
                continue
            try:
                if os.path.getsize(path) > ENTRY_BYTES_MAX:
                    raise ValueError("too large")
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    entry = orjson.loads(f.read())
                yield SpooledAlert(str(entry["route"]), str(entry["url"]), str(entry["body"]).encode(), path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log_line(f"budget alerts: {path} is not a spooled alert ({exc}); removed")
                self.remove(path)


def _open_lock(directory: str) -> int:
    """The lock file of a worker's directory (never through a symlink)."""
    return os.open(directory + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
