"""The process model as an operator sees it: what a stop does to new connections, how connections spread
again after a worker restart, what `ps` shows, and what a listener that cannot be bound does.

Real supervisor, control process and workers (subprocesses), real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.load import gateway_side_inodes, socket_inodes
from tests.support.ports import free_port
from tests.support.systemd import NotifySocket
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

# -- stop: new connections are refused at once ---------------------------------------------------------


@pytest.mark.parametrize("reuse_port", [False, True], ids=["shared-socket", "reuse-port"])
def test_after_sigterm_new_connections_are_refused_not_queued(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, reuse_port: bool
) -> None:
    """While a request drains, a new connection gets ECONNREFUSED (what a load balancer needs to fail
    over at once) instead of sitting in a backlog nobody accepts from until the gateway exits."""
    upstream.delay = 3.0  # the in-flight request keeps the gateway alive for 3 s after SIGTERM
    gw = gateway_factory(
        basic_config(upstream.port, extra=f"[process]\nreuse_port = {str(reuse_port).lower()}"), workers=2
    )
    result: dict[str, int] = {}

    def in_flight() -> None:
        with connect(gw.port, timeout=10) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = ResponseReader(sock).read(timeout=10)
            result["status"] = resp.status

    t = threading.Thread(target=in_flight)
    t.start()
    wait_until(lambda: upstream.requests, 5, "the slow request to reach the upstream")
    stopped_at = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    # Until every worker has handled its SIGTERM a connection may still be accepted (and served); after
    # that, every attempt must be refused. The bound is the signal delivery, far below the 3 s drain.
    refused_at = 0.0
    attempts = 0
    while time.monotonic() - stopped_at < 2.0:
        attempts += 1
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", gw.port))
        except ConnectionRefusedError:
            refused_at = time.monotonic()
            break
        finally:
            probe.close()
        time.sleep(0.01)
    assert refused_at, f"new connections were still accepted 2 s after SIGTERM ({attempts} attempts)"
    # ...and stay refused while the request in flight drains.
    for _ in range(20):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", gw.port)) != 0
    assert gw.proc.poll() is None, "the gateway must still be draining"
    t.join(10)
    assert result == {"status": 200}
    assert gw.proc.wait(10) == 0
    print(f"\nreuse_port={reuse_port}: refused {(refused_at - stopped_at) * 1000:.0f} ms after SIGTERM")


# -- rebalancing: connections are recycled after process.max_connection_age --------------------------


def test_keep_alive_connection_is_recycled_gracefully_after_max_age(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, http1_backend: str
) -> None:
    gw = gateway_factory(
        basic_config(upstream.port, http1=http1_backend, extra="[process]\nmax_connection_age = 1.0")
    )
    opened = time.monotonic()
    with connect(gw.port) as sock:
        reader = ResponseReader(sock)
        served = 0
        while True:
            sock.sendall(b"GET /ka HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = reader.read()
            assert resp.status == 200  # no request is cut off: the connection ends after a response
            served += 1
            if resp.header(b"connection") == b"close":
                break
            assert time.monotonic() - opened < 3.0, "the connection was never recycled"
            time.sleep(0.05)
        age = time.monotonic() - opened
        assert reader.closed(), "the gateway closes the connection after Connection: close"
    # Age 1 s less up to 10% spread, counted from the worker's tick clock (it may lag real time by a
    # 100 ms tick, plus a late one), noticed by a once-a-second scan (+1 s) on that tick, +0.5 s slack.
    assert 0.9 - 0.2 <= age < 1.0 + 1.0 + 0.2 + 0.5, age
    assert get(gw.port, "/next").status == 200
    print(f"\nrecycled after {age:.2f}s and {served} requests")


def test_http2_connection_gets_a_graceful_goaway_after_max_age(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, extra="[process]\nmax_connection_age = 1.0"))
    client = H2Client(gw.port)
    opened = time.monotonic()
    try:
        while client.goaway is None:
            sid = client.start("/h2")
            try:
                assert client.wait(sid).status == 200
            except AssertionError:
                # The GOAWAY crossed this stream on the wire: a stream above last_stream_id was never
                # processed, which the client knows, so it retries it on a new connection.
                assert client.goaway is not None and sid > client.goaway.last_stream_id, client.goaway
            assert time.monotonic() - opened < 3.0, "no GOAWAY"
            time.sleep(0.05)
        assert client.goaway.error_code == ErrorCodes.NO_ERROR
        assert client.wait_closed(5)
    finally:
        client.close()


def test_connections_spread_over_the_workers_again_after_a_restart(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """Every keep-alive client lands on worker 1 while worker 0 does not accept (stopped, as during its
    restart). Recycled connections reconnect and the shared accept queue hands some to worker 0."""
    gw = gateway_factory(basic_config(upstream.port, extra="[process]\nmax_connection_age = 1.0"), workers=2)
    stopped = gw.worker_pid(0)
    failures: list[str] = []
    halt = threading.Event()
    clients = 8

    def client() -> None:
        while not halt.is_set():
            try:
                with connect(gw.port) as sock:
                    reader = ResponseReader(sock)
                    while not halt.is_set():
                        sock.sendall(b"GET /spread HTTP/1.1\r\nHost: t\r\n\r\n")
                        resp = reader.read()
                        if resp.status != 200:
                            failures.append(f"status {resp.status}")
                        if resp.header(b"connection") == b"close":
                            break
                        time.sleep(0.02)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    os.kill(stopped, signal.SIGSTOP)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    try:
        for t in threads:
            t.start()
        wait_until(
            lambda: (
                len(set(gateway_side_inodes(gw.port).values()) & socket_inodes(gw.worker_pid(1))) >= clients
            ),
            5,
            "every client on worker 1",
        )
    finally:
        os.kill(stopped, signal.SIGCONT)
    try:

        def on_worker_0() -> int:
            return len(set(gateway_side_inodes(gw.port).values()) & socket_inodes(stopped))

        # Connections are recycled 0.9-1 s after they opened (scan once a second): 3 s is two rounds.
        wait_until(on_worker_0, 3.0, "a recycled connection to land on worker 0")
    finally:
        halt.set()
        for t in threads:
            t.join(10)
    assert not failures, failures


# -- process titles ------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode().strip()


def test_ps_names_every_process(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    assert _cmdline(gw.proc.pid) == "fastgw: supervisor"
    assert _cmdline(gw.control_pid()) == "fastgw: control"
    assert _cmdline(gw.worker_pid(0)) == "fastgw: worker 0"
    assert _cmdline(gw.worker_pid(1)) == "fastgw: worker 1"
    ps = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(gw.proc.pid)], capture_output=True, text=True, check=True
    )
    titles = sorted(line.split(None, 1)[1] for line in ps.stdout.splitlines())
    assert titles == ["fastgw: control", "fastgw: worker 0", "fastgw: worker 1"], ps.stdout
    # A restarted worker gets its name too.
    victim = gw.worker_pid(1)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: gw.worker_pid(1) != victim, 5, "a replacement worker")
    wait_until(lambda: _cmdline(gw.worker_pid(1)) == "fastgw: worker 1", 5, "the replacement's title")


# -- listeners that cannot be bound --------------------------------------------------------------------


def _run_until_exit(
    tmp_path: Path, body: str, port: int, env: dict[str, str] | None = None, timeout: float = 15.0
) -> tuple[int, str, float]:
    config = tmp_path / "gw.toml"
    config.write_text(
        textwrap.dedent(body).replace("{port}", str(port)).replace("{log}", str(tmp_path / "a.log"))
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fastgw", "run", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state"), **(env or {})},
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


def _admin_config(upstream_port: int, admin_bind: str, token_file: Path) -> str:
    token_file.write_text("a-token-of-thirty-two-characters\n")
    return basic_config(
        upstream_port, extra=f'[admin]\nbind = "{admin_bind}"\ntoken = {{ file = "{token_file}" }}'
    )


@pytest.mark.parametrize("systemd", [False, True], ids=["shell", "systemd"])
def test_admin_port_in_use_is_one_line_and_a_clean_exit_before_ready(
    upstream: TestUpstream, tmp_path: Path, systemd: bool
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    admin_port = busy.getsockname()[1]
    notify = NotifySocket(tmp_path / "notify.sock") if systemd else None
    env = {"NOTIFY_SOCKET": str(notify.path)} if notify else {}
    try:
        body = _admin_config(upstream.port, f"127.0.0.1:{admin_port}", tmp_path / "token")
        port = free_port()
        code, stderr, took = _run_until_exit(tmp_path, body, port, env)
    finally:
        busy.close()
    assert code == 2, stderr
    assert stderr.splitlines() == [
        f"fastgw: cannot bind the admin listener to 127.0.0.1:{admin_port}: Address already in use "
        "(EADDRINUSE)"
    ], stderr
    assert took < 10.0
    if notify is not None:
        messages = notify.poll()
        notify.sock.close()
        assert not any(m.get("READY") == "1" for m in messages), messages
        assert any("cannot bind the admin listener" in m.get("STATUS", "") for m in messages), messages
    # The public port was bound and released: nothing listens on it any more.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_public_port_in_use_names_the_listener(upstream: TestUpstream, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, stderr, _ = _run_until_exit(tmp_path, basic_config(upstream.port), port)
    assert code == 2
    assert stderr.splitlines() == [
        f"fastgw: cannot bind listener 'public' to 127.0.0.1:{port}: Address already in use (EADDRINUSE)"
    ], stderr


def test_unix_admin_socket_that_a_live_process_answers_on_is_in_use(
    upstream: TestUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as busy:
        busy.bind(str(path))
        busy.listen(1)
        body = _admin_config(upstream.port, f"unix:{path}", tmp_path / "token")
        code, stderr, _ = _run_until_exit(tmp_path, body, free_port())
    assert code == 2
    assert stderr.splitlines() == [
        f"fastgw: cannot bind the admin listener to unix:{path}: another process answers there"
    ], stderr


def test_unix_admin_socket_is_0600_and_survives_a_control_restart(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    token = tmp_path / "token"
    gw = gateway_factory(_admin_config(upstream.port, f"unix:{path}", token))
    assert path.stat().st_mode & 0o777 == 0o600

    def health() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            return s.recv(4096).startswith(b"HTTP/1.1 200")

    assert health()
    control = gw.control_pid()
    os.kill(control, signal.SIGKILL)
    wait_until(lambda: gw.control_pid() != control, 5, "a new control process")
    wait_until(lambda: "control (pid" in gw.stderr() and "serving again" in gw.stderr(), 5, "it to serve")
    assert health()
    assert gw.stop() == 0
    assert not path.exists()


def test_reload_to_a_busy_admin_port_is_refused_and_changes_nothing(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    first = free_port()
    gw = gateway_factory(_admin_config(upstream.port, f"127.0.0.1:{first}", tmp_path / "token"))
    control = gw.control_pid()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        gw.config.write_text(gw.config.read_text().replace(f"127.0.0.1:{first}", f"127.0.0.1:{taken}"))
        gw.proc.send_signal(signal.SIGHUP)
        line = wait_until(
            lambda: [ln for ln in gw.stderr().splitlines() if "reload failed" in ln], 5, "the refusal"
        )[0]
    assert f"admin.bind: cannot bind the admin listener to 127.0.0.1:{taken}: Address already in use" in line
    assert "Traceback" not in gw.stderr()
    assert gw.control_pid() == control
    with socket.create_connection(("127.0.0.1", first), timeout=2) as s:  # the old admin port still serves
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert get(gw.port, "/still").status == 200


def test_a_child_that_cannot_start_fails_the_start_instead_of_looping(
    upstream: TestUpstream, tmp_path: Path
) -> None:
    """The control process cannot open its store (here: a directory where the database file goes): one
    line from it, one from the supervisor, exit 1 before READY=1 -- not a restart loop."""
    (tmp_path / "state" / "fastgw.db").mkdir(parents=True)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        code, stderr, took = _run_until_exit(
            tmp_path, basic_config(upstream.port), free_port(), {"NOTIFY_SOCKET": str(notify.path)}
        )
        messages = notify.poll()
    finally:
        notify.sock.close()
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "control process cannot start" in stderr or "cannot start:" in stderr, stderr
    assert "start-up failed: control (pid" in stderr
    assert stderr.count("control started as pid") == 1, stderr
    assert took < 10.0
    assert not any(m.get("READY") == "1" for m in messages), messages


def test_reload_moves_the_admin_listener(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    first, second = free_port(), free_port()
    gw = gateway_factory(_admin_config(upstream.port, f"127.0.0.1:{first}", tmp_path / "token"))
    control = gw.control_pid()
    gw.config.write_text(gw.config.read_text().replace(f"127.0.0.1:{first}", f"127.0.0.1:{second}"))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.control_pid() != control, 5, "the control process to restart on the new address")

    def healthz(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                return s.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    wait_until(lambda: healthz(second), 5, "the admin API on the new port")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", first)) != 0, "the old admin port is released"
