"""The gateway under test: ``fastgw run`` in a subprocess on a config written from a template."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.support.ports import free_port
from tests.support.waiting import wait_until


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    access_log: Path
    stderr_path: Path
    state: Path
    extra_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[dict[str, Any]]:
        if not self.access_log.exists():
            return []
        data = self.access_log.read_bytes()
        # A line the gateway is still writing has no newline yet: read only whole lines (a test that
        # polls the log while requests complete would otherwise parse half a record).
        whole = data[: data.rfind(b"\n") + 1]
        return [orjson.loads(line) for line in whole.splitlines() if line]

    def wait_log(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        try:
            return wait_until(  # type: ignore[no-any-return]
                lambda: (r := self.log_records()) and len(r) >= count and r,
                timeout,
                f"{count} access-log records",
            )
        except AssertionError as missing:
            # How many came, and what the gateway said (a worker that died loses the records it held).
            tail = "\n".join(self.stderr().splitlines()[-15:])
            raise AssertionError(f"{missing}; {len(self.log_records())} came; stderr ends:\n{tail}") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def worker_pid(self, slot: int = 0) -> int:
        """The pid of worker ``slot`` (the newest, after restarts), from the supervisor's log."""
        pids = re.findall(rf"worker {slot} started as pid (\d+)", self.stderr())
        assert pids, f"no worker {slot} in the log:\n{self.stderr()}"
        return int(pids[-1])

    def control_pid(self) -> int:
        pids = re.findall(r"control started as pid (\d+)", self.stderr())
        assert pids, f"no control process in the log:\n{self.stderr()}"
        return int(pids[-1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_gateway(
    tmp_path: Path,
    body: str,
    *,
    name: str = "gw",
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    workers: int = 1,
    args: tuple[str, ...] = (),
) -> Gateway:
    """Start ``fastgw run`` (supervisor, control process, ``workers`` workers) on a config whose text is
    ``body`` with {port}, {log} and {state} filled in. Each gateway gets its own state directory."""
    port = free_port()
    state = tmp_path / f"{name}-state"
    log = tmp_path / f"{name}-access.log"
    config = tmp_path / f"{name}.toml"
    text = textwrap.dedent(body).replace("{port}", str(port)).replace("{log}", str(log))
    config.write_text(text.replace("{state}", str(state)))
    ready = tmp_path / f"{name}.ready"
    stderr_path = tmp_path / f"{name}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fastgw", "run", str(config), "--ready-file", str(ready)),
                *("--workers", str(workers), *args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "STATE_DIRECTORY": str(state), **(env or {})},
            preexec_fn=preexec,  # noqa: PLW1509 - only resource limits, set before exec
        )
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 15, "the gateway to listen")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"gateway exited {proc.returncode}: {stderr_path.read_text()}")
    return Gateway(proc, port, config, log, stderr_path, state=state)


def basic_config(
    upstream_port: int, *, http1: str = "httptools", server: str = "", route: str = "", extra: str = ""
) -> str:
    return f"""
        [server]
        http1 = "{http1}"
        {server}

        [[listeners]]
        bind = "127.0.0.1:{{port}}"

        [access_log]
        target = "{{log}}"

        [upstreams.backend]
        targets = ["127.0.0.1:{upstream_port}"]

        [[routes]]
        name = "main"
        path = "/"
        upstream = "backend"
        auth = "none"
        {route}
        {extra}
        """
