"""Load from threads, for tests that break things under traffic and count what clients saw."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

from tests.support.clients import ResponseReader, connect, get


def snapshot_id(text: str) -> str:
    """What the gateway names a config: blake2b of its bytes (independent of the code under test)."""
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@dataclass
class Load:
    """Clients hammering the gateway until stopped; every failure is kept with what it was."""

    port: int
    keep_alive: int = 3
    fresh: int = 1
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    per_conn_failures: dict[int, int] = field(default_factory=dict)  # client local port -> failures
    local_ports: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for _ in range(self.keep_alive):
            self._threads.append(threading.Thread(target=self._keep_alive, daemon=True))
        for _ in range(self.fresh):
            self._threads.append(threading.Thread(target=self._fresh, daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _count(self, ok: bool, what: str = "", port: int = 0) -> None:
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failures.append(what)
                self.per_conn_failures[port] = self.per_conn_failures.get(port, 0) + 1

    def _keep_alive(self) -> None:
        while not self._stop.is_set():
            try:
                sock = connect(self.port)
            except OSError as exc:
                self._count(False, f"connect: {exc}")
                time.sleep(0.05)
                continue
            port = sock.getsockname()[1]
            with self._lock:
                self.local_ports.append(port)
            reader = ResponseReader(sock)
            try:
                while not self._stop.is_set():
                    sock.sendall(b"GET /load HTTP/1.1\r\nHost: t\r\n\r\n")
                    resp = reader.read()
                    self._count(resp.status == 200, f"status {resp.status}", port)
            except (OSError, AssertionError) as exc:
                self._count(False, f"keep-alive: {exc!r}", port)
            finally:
                sock.close()

    def _fresh(self) -> None:
        while not self._stop.is_set():
            try:
                resp = get(self.port, "/fresh")
                self._count(resp.status == 200, f"status {resp.status}")
            except (OSError, AssertionError) as exc:
                self._count(False, f"new connection: {exc!r}")


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def gateway_side_inodes(gateway_port: int) -> dict[int, int]:
    """client port -> inode of the gateway's socket for that client connection (from /proc/net/tcp)."""
    out = {}
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(local.split(":")[1], 16) == gateway_port and parts[3] != "0A":  # 0A: LISTEN
                out[int(remote.split(":")[1], 16)] = inode
    return out


@dataclass
class Traffic:
    """Keep-alive clients sending ``path`` until stopped, recording every outcome with its time, so a test
    can say which answers were allowed in which span (before, during, after a failure it caused).

    Each client has at most one request in flight: a failure can hit at most ``clients`` requests at once.
    An outcome is a status code, or 0 for a connection that failed (reset, closed, refused) with its reason.
    """

    port: int
    path: str = "/load"
    clients: int = 4
    events: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _note(self, status: int, why: str = "") -> None:
        with self._lock:
            self.events.append((time.monotonic(), status, why))

    def _client(self) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        while not self._stop.is_set():
            try:
                sock = connect(self.port)
            except OSError as exc:
                self._note(0, f"connect: {exc!r}")
                time.sleep(0.05)
                continue
            reader = ResponseReader(sock)
            try:
                while not self._stop.is_set():
                    sock.sendall(request)
                    self._note(reader.read().status)
            except (OSError, AssertionError) as exc:
                self._note(0, repr(exc))
            finally:
                sock.close()

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def between(self, start: float, end: float = float("inf")) -> list[int]:
        """The outcomes of requests answered in [start, end)."""
        with self._lock:
            return [status for at, status, _ in self.events if start <= at < end]

    def failures(self) -> list[tuple[float, int, str]]:
        with self._lock:
            return [e for e in self.events if e[1] != 200]
