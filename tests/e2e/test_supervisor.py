"""The process model under load: zero-downtime reloads, a killed worker replaced, crash-loop backoff.

Real supervisor, control process and workers (subprocesses), real sockets on 127.0.0.1. Load comes from
threads: keep-alive clients and a client that opens a new connection per request.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.conftest import Gateway, ResponseReader, TestUpstream, basic_config, connect, get, wait_until


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


def reload_config(upstream_port: int, generation: int) -> str:
    return basic_config(
        upstream_port,
        route=f'response_headers = {{ set = {{ "x-generation" = "{generation}" }} }}',
    )


def test_twenty_reloads_under_load_fail_nothing(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(reload_config(upstream.port, 0), workers=2)
    valid = {snapshot_id(gw.config.read_text())}
    template = gw.config.read_text()
    load = Load(gw.port)
    load.start()
    try:
        wait_until(lambda: load.ok > 50, 10, "load to flow")
        for generation in range(1, 21):
            text = template.replace('"x-generation" = "0"', f'"x-generation" = "{generation}"')
            assert text != template
            gw.config.write_text(text)
            valid.add(snapshot_id(text))
            before = load.ok
            gw.proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda g=generation: gw.stderr().count("reload (SIGHUP) complete") >= g,
                10,
                f"reload {generation} to complete",
            )
            wait_until(lambda b=before: load.ok > b + 20, 10, "traffic after the reload")
    finally:
        load.stop()
    print(f"\n20 reloads under load: {load.ok} responses, {len(load.failures)} failures")
    assert load.failures == []
    assert "reload failed" not in gw.stderr()
    seen = {req.header(b"fastgw-snapshot") for req in upstream.requests}
    assert seen <= {v.encode() for v in valid}, seen - {v.encode() for v in valid}
    assert len(seen) >= 15, "reloads did not take effect while traffic flowed"
    records = gw.wait_log(load.ok)
    assert {r["snapshot"] for r in records} <= valid
    # The last generation is in force everywhere.
    assert get(gw.port, "/last").header(b"x-generation") == b"20"


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _gateway_side_inodes(gateway_port: int) -> dict[int, int]:
    """client port -> inode of the gateway's socket for that client connection (from /proc/net/tcp)."""
    out = {}
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(local.split(":")[1], 16) == gateway_port:
                out[int(remote.split(":")[1], 16)] = inode
    return out


def test_killed_worker_is_replaced_within_a_second(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    load = Load(gw.port, keep_alive=6, fresh=1)
    load.start()
    try:
        wait_until(lambda: len(load.local_ports) >= 6 and load.ok > 100, 10, "load on both workers")
        victim = gw.worker_pid(0)
        victim_inodes = _socket_inodes(victim)
        by_port = _gateway_side_inodes(gw.port)
        on_victim = {p for p, inode in by_port.items() if inode in victim_inodes}
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(0) != victim, 5, "a replacement worker")
        wait_until(
            lambda: "worker 0 (pid" in gw.stderr() and "serving again" in gw.stderr(), 5, "the replacement"
        )
        replaced_after = time.monotonic() - killed_at
        # The replacement answers requests; the test measures it itself as well as reading the log.
        served = False
        while not served and time.monotonic() - killed_at < 5:
            served = any(_socket_inodes(gw.worker_pid(0)) & set(_gateway_side_inodes(gw.port).values()))
            if not served:
                get(gw.port, "/probe")
        served_after = time.monotonic() - killed_at
        ok_before = load.ok
        wait_until(lambda: load.ok > ok_before + 50, 10, "traffic after the replacement")
    finally:
        load.stop()
    log = gw.stderr()
    reported = re.search(r"worker 0 \(pid \d+\) serving again (\d+) ms after the death", log)
    print(
        f"\nworker replaced: ready {replaced_after * 1000:.0f} ms after SIGKILL by the test's clock, "
        f"log says {reported.group(1) if reported else '?'} ms; first connection served at "
        f"{served_after * 1000:.0f} ms; failures {len(load.failures)} on {len(on_victim)} victim connections"
    )
    assert replaced_after < 1.0
    assert served_after < 1.5
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
