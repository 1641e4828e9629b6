"""systemd integration with real sockets: the sd_notify protocol and socket activation (LISTEN_FDS).

The test plays systemd: it binds the NOTIFY_SOCKET datagram socket and reads what the gateway says, and
for socket activation it binds the listening socket itself and passes it as fd 3 with LISTEN_PID set to
the gateway's own pid (a tiny exec wrapper does what systemd does between fork and exec).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.systemd import NotifySocket
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.sock.close()


def test_notify_ready_reloading_stopping_and_watchdog(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, notify: NotifySocket
) -> None:
    started = time.monotonic()
    gw = gateway_factory(
        basic_config(upstream.port),
        workers=2,
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"},
    )
    ready = notify.wait_for("READY", "1")
    assert "serving snapshot" in notify.messages[ready].get("STATUS", "")
    # READY=1 only after every worker serves: the ready file (written at the same moment) exists.
    assert get(gw.port, "/").status == 200
    pings = notify.wait_for("WATCHDOG", "1", after=ready)
    assert time.monotonic() - started < 10
    gw.proc.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", after=pings)
    assert int(notify.messages[reloading]["MONOTONIC_USEC"]) > 0
    notify.wait_for("READY", "1", after=reloading)
    # Watchdog pings keep coming, about every 100 ms (half of WatchdogSec).
    count = sum(1 for m in notify.poll() if m.get("WATCHDOG") == "1")
    wait_until(
        lambda: sum(1 for m in notify.poll() if m.get("WATCHDOG") == "1") >= count + 3,
        5,
        "more watchdog pings",
    )
    gw.proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING", "1", after=reloading)
    assert gw.proc.wait(15) == 0


def test_invalid_reload_reports_ready_again_with_the_error(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, notify: NotifySocket
) -> None:
    gw = gateway_factory(basic_config(upstream.port), env={"NOTIFY_SOCKET": str(notify.path)})
    ready = notify.wait_for("READY", "1")
    gw.config.write_text(gw.config.read_text().replace('path = "/"', 'path = "no-slash"'))
    gw.proc.send_signal(signal.SIGHUP)
    again = notify.wait_for("READY", "1", after=ready + 1)
    status = notify.messages[again]["STATUS"]
    assert "reload failed" in status and f"{gw.config}: routes[0].path: must start with '/'" in status
    assert get(gw.port, "/still-served").status == 200


WRAPPER = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    os.dup2(fd, 3)
    if fd != 3:
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_FDNAMES"] = "public"
    os.execv(sys.executable, [sys.executable, "-m", "fastgw", *sys.argv[2:]])
    """
)


@contextlib.contextmanager
def activated_gateway(upstream: TestUpstream, tmp_path: Path, backlog: int) -> Iterator[socket.socket]:
    """A 2-worker gateway started as systemd socket activation would: the listening socket (bound here
    with ``backlog``, as the socket unit's Backlog=) passed as fd 3. Yields our copy of the socket, which
    the gateway serves on the port its config names; stopped with SIGTERM (exit 0) afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    port = listener.getsockname()[1]
    config = tmp_path / "gw.toml"
    config.write_text(
        textwrap.dedent(basic_config(upstream.port))
        .replace("{port}", str(port))
        .replace("{log}", str(tmp_path / "access.log"))
    )
    ready = tmp_path / "ready"
    err = open(tmp_path / "stderr", "wb")  # noqa: SIM115 - closed below
    argv = ["run", str(config), "--workers", "2", "--ready-file", str(ready)]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(listener.fileno()), *argv],
        pass_fds=(listener.fileno(),),
        stderr=err,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 15, "the gateway to start")
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        yield listener
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err.close()
        listener.close()


def test_socket_activation_serves_on_the_passed_socket(upstream: TestUpstream, tmp_path: Path) -> None:
    # The config names a port nobody could bind twice; the gateway must adopt fd 3 by its name instead.
    with activated_gateway(upstream, tmp_path, 128) as listener:
        port = listener.getsockname()[1]
        listener.close()  # our copy: from now on only the gateway holds the socket systemd bound
        for i in range(10):
            assert get(port, f"/activated/{i}").status == 200
        assert "cannot listen" not in (tmp_path / "stderr").read_text()


def test_socket_activation_keeps_the_socket_units_backlog(upstream: TestUpstream, tmp_path: Path) -> None:
    """fastgw.socket sets Backlog=; serving the passed socket must not listen() again with the config's
    backlog (a second listen() replaces the first). Our copy of the socket reports its accept-queue limit
    (TCP_INFO), as systemd's would."""
    from fastgw.process.systemd import listen_backlog

    with activated_gateway(upstream, tmp_path, 37) as listener:  # the config keeps its default (2048)
        assert get(listener.getsockname()[1], "/activated").status == 200
        assert listen_backlog(listener) == 37
