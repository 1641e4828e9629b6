"""The process model under load: zero-downtime reloads, a killed worker replaced, crash-loop backoff.

Real supervisor, control process and workers (subprocesses), real sockets on 127.0.0.1. Load comes from
threads: keep-alive clients and a client that opens a new connection per request.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway, basic_config
from tests.support.load import Load, gateway_side_inodes, socket_inodes
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

# Connections a round of the replacement probe opens before attributing them: enough that the survivor,
# sharing the accept socket, is unlikely to take them all, far below the per-address connection limit.
PROBES_PER_ROUND = 40


def test_killed_worker_is_replaced_within_a_second(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    load = Load(gw.port, keep_alive=6, fresh=1)
    load.start()
    try:
        wait_until(lambda: len(load.local_ports) >= 6 and load.ok > 100, 10, "load on both workers")
        victim = gw.worker_pid(0)
        victim_inodes = socket_inodes(victim)
        by_port = gateway_side_inodes(gw.port)
        on_victim = {p for p, inode in by_port.items() if inode in victim_inodes}
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(0) != victim, 5, "a replacement worker")
        wait_until(
            lambda: "worker 0 (pid" in gw.stderr() and "serving again" in gw.stderr(), 5, "the replacement"
        )
        replaced_after = time.monotonic() - killed_at
        # The replacement answers requests: open connections (kept open, so /proc still lists them) until
        # one answered is owned by the new worker. Both workers accept from one socket, so the survivor may
        # take a run of them. Attributed a round at a time: on a busy machine /proc/net/tcp holds thousands
        # of TIME_WAIT lines, and a scan per probe would make the test's own cost the measure.
        replacement = gw.worker_pid(0)
        served_after = float("inf")
        probes: list[tuple[socket.socket, float]] = []  # with when its answer came, after the kill
        sent = 0
        while served_after == float("inf") and time.monotonic() - killed_at < 5:
            round_ends = time.monotonic() + 0.2
            while time.monotonic() < round_ends and len(probes) < PROBES_PER_ROUND:
                probe = connect(gw.port)
                probe.sendall(b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n")
                assert ResponseReader(probe).read().status == 200
                probes.append((probe, time.monotonic() - killed_at))
            sent += len(probes)
            by_port, owned = gateway_side_inodes(gw.port), socket_inodes(replacement)
            on_replacement = [at for probe, at in probes if by_port.get(probe.getsockname()[1]) in owned]
            served_after = min(on_replacement, default=served_after)
            for probe, _ in probes:  # attributed: the next round opens its own
                probe.close()
            probes.clear()
        ok_before = load.ok
        wait_until(lambda: load.ok > ok_before + 50, 10, "traffic after the replacement")
    finally:
        load.stop()
    log = gw.stderr()
    reported = re.search(r"worker 0 \(pid \d+\) serving again (\d+) ms after the death", log)
    print(
        f"\nworker replaced: ready {replaced_after * 1000:.0f} ms after SIGKILL by the test's clock, "
        f"log says {reported.group(1) if reported else '?'} ms; first connection served at "
        f"{served_after * 1000:.0f} ms ({sent} probes); "
        f"failures {len(load.failures)} on {len(on_victim)} victim connections"
    )
    assert replaced_after < 1.0
    assert served_after < 1.0
    assert f"worker 0 (pid {victim}) was killed by SIGKILL" in log
    # Only the dead worker's connections may fail: each keep-alive client on it fails at most once
    # (then reconnects), and no client of the surviving worker fails at all.
    failed_ports = {p for p in load.per_conn_failures if p}
    assert failed_ports <= on_victim, (failed_ports - on_victim, load.failures)
    assert all(n == 1 for p, n in load.per_conn_failures.items() if p), load.per_conn_failures


def test_crash_loop_backs_off_and_is_reported(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=1)
    deaths = []
    for _ in range(5):
        pid = gw.worker_pid(0)
        os.kill(pid, signal.SIGKILL)
        deaths.append(time.monotonic())
        wait_until(lambda p=pid: gw.worker_pid(0) != p, 10, "a restart")
        wait_until(lambda: _ready_count(gw) >= len(deaths), 10, "the restarted worker to serve")
    log = gw.stderr()
    delays = [
        float(d)
        for d in re.findall(
            r"worker 0 \(pid \d+\) was killed by SIGKILL after [\d.]+s; restarting in ([\d.]+)s", log
        )
    ]
    print(f"\nrestart delays after quick deaths: {delays}")
    assert delays[0] == 0.0
    assert delays[1:] == sorted(delays[1:]) and delays[-1] > delays[1] > 0
    assert "crash loop: worker 0 died 5 times in a row" in log
    assert get(gw.port, "/alive").status == 200


def _ready_count(gw: Gateway) -> int:
    return gw.stderr().count("serving again")


def test_sigterm_stops_every_process(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    pids = [gw.worker_pid(0), gw.worker_pid(1), gw.control_pid()]
    assert gw.stop() == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_of_nobody(pid), pid
    assert not (gw.state / "fastgw.pid").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", gw.port)) != 0


def _is_zombie_of_nobody(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def test_hung_worker_is_killed_and_replaced(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, extra="[process]\nhang_timeout = 1.0"), workers=1)
    victim = gw.worker_pid(0)
    os.kill(victim, signal.SIGSTOP)  # alive, but its event loop no longer runs
    stopped_at = time.monotonic()
    wait_until(lambda: gw.worker_pid(0) != victim, 5, "the hung worker to be replaced")
    took = time.monotonic() - stopped_at
    print(f"\nhung worker replaced {took:.2f}s after it stopped (hang_timeout 1.0s)")
    assert 1.0 <= took < 3.0
    assert re.search(rf"worker 0 \(pid {victim}\) stopped ticking [\d.]+s ago; killing it", gw.stderr())
    wait_until(lambda: "serving again" in gw.stderr(), 5, "the replacement to serve")
    assert get(gw.port, "/after").status == 200


def test_worker_that_cannot_compile_a_reload_is_replaced(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """A real way for one worker to fail where the supervisor succeeded: it has run out of descriptors
    (held client connections) when the reload asks it to load the TLS certificates again."""
    certs = write_dev_certificates(tmp_path / "certs")
    tls_port = free_port()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    body = basic_config(
        upstream.port,
        route='response_headers = { set = { "x-v" = "1" } }',
        extra=f"""
        [[listeners]]
        name = "tls"
        bind = "127.0.0.1:{tls_port}"
        tls = {{ certificates = [{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}] }}
        """,
    )
    gw = gateway_factory(body, preexec=low_fd_limit)
    victim = gw.worker_pid(0)
    held = []
    for _ in range(60):  # past the worker's 48 descriptors: it is now at its limit
        try:
            held.append(connect(gw.port, timeout=2))
        except OSError:
            break
    wait_until(lambda: len(os.listdir(f"/proc/{victim}/fd")) >= 46, 5, "the worker to reach its fd limit")
    gw.config.write_text(gw.config.read_text().replace('"x-v" = "1"', '"x-v" = "2"'))
    gw.proc.send_signal(signal.SIGHUP)
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "reload (SIGHUP) complete" in ln], 10, "the reload"
    )[0]
    assert f"replacing workers [{victim}] that failed to compile" in line
    assert "Too many open files" in line
    for s in held:
        s.close()
    wait_until(lambda: gw.worker_pid(0) != victim, 10, "the replacement worker")
    # The replacement runs the new config: no worker is left on the old one.
    wait_until(lambda: _try_header(gw.port) == b"2", 10, "the new config to be served")


def _try_header(port: int) -> bytes | None:
    try:
        return get(port, "/v").header(b"x-v")
    except (OSError, AssertionError):
        return None


def test_a_worker_keeps_serving_when_the_control_process_dies(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    control = gw.control_pid()
    load = Load(gw.port, keep_alive=2, fresh=1)
    load.start()
    try:
        wait_until(lambda: load.ok > 50, 10, "load to flow")
        os.kill(control, signal.SIGKILL)
        wait_until(lambda: gw.control_pid() != control, 5, "a new control process")
        ok = load.ok
        wait_until(lambda: load.ok > ok + 100, 10, "traffic to go on")
    finally:
        load.stop()
    assert load.failures == []
    assert f"control (pid {control}) was killed by SIGKILL" in gw.stderr()
    # Workers reconnect to the new control process, which relays the next reload to them.
    gw.config.write_text(gw.config.read_text().replace('name = "main"', 'name = "main2"'))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 10, "the reload")
    line = next(ln for ln in gw.stderr().splitlines() if "reload (SIGHUP) complete" in ln)
    assert "replacing" not in line and "unconfirmed" not in line


@pytest.mark.parametrize("reuse_port", [False, True])
def test_connection_balance_across_workers(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, reuse_port: bool
) -> None:
    """How new connections spread over 2 workers: one shared accept queue vs one SO_REUSEPORT socket
    each. Measured and printed; with reuse_port the kernel hashes connections, so both get a share."""
    gw = gateway_factory(
        basic_config(upstream.port, extra=f"[process]\nreuse_port = {str(reuse_port).lower()}"), workers=2
    )
    socks = []
    for _ in range(200):
        s = connect(gw.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        ResponseReader(s).read()
        socks.append(s)
    try:
        by_port = gateway_side_inodes(gw.port)
        counts = [len(socket_inodes(gw.worker_pid(slot)) & set(by_port.values())) for slot in (0, 1)]
    finally:
        for s in socks:
            s.close()
    print(f"\nreuse_port={reuse_port}: 200 sequential connections -> workers {counts}")
    assert sum(counts) == 200
    if reuse_port:
        assert min(counts) >= 40, counts
