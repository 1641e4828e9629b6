"""A real redis-server for the tests of cluster-wide counters."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import wait_until


class RedisServer:
    """A real redis-server on a free port, with no persistence; ``stop``/``start`` simulate an outage."""

    __test__ = False

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            # Never a skip: a missing service is a failure (scripts/dev.sh installs it).
            raise AssertionError("redis-server is not installed: run scripts/dev.sh system test")
        self.binary = binary
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(ready, 10, "redis-server to answer PING")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no goodbye to clients, connections just break."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
