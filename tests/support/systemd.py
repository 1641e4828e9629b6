"""A stand-in for systemd's notify socket, to see what the gateway tells systemd."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.waiting import wait_until


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait_for(self, key: str, value: str, after: int = 0, timeout: float = 10) -> int:
        """Index of the first message after ``after`` with key=value."""

        def find() -> int | None:
            for i, m in enumerate(self.poll()[after:], after):
                if m.get(key) == value:
                    return i + 1  # wait_until needs a truthy value
            return None

        return int(wait_until(find, timeout, f"{key}={value} on NOTIFY_SOCKET")) - 1
