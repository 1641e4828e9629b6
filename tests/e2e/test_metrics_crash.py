"""Counters survive crashes: a worker or the control process killed with SIGKILL takes no counts with it
beyond what the crash itself lost, and the access log loses at most what was not yet flushed.

The mechanism (metrics/shared.py): each worker copies its counters into its slot's shard of shared memory
at every flush of its records (every tick, 100 ms, and every 256 records), *before* it hands the records
to the access-log writer. So once a request's log line is in the file, its count is in shared memory and
no kill can take it: the tests wait for the lines, then kill, then expect exact counts. The control process
reads the shards on each scrape and keeps its own counters (restarts, reloads) in a shard of its own.

A real gateway (supervisor, control process, two workers) over real sockets.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from fastgw.proxy.deadlines import TICK_SECONDS
from tests.support.admin import TOKEN, Admin, admin_config
from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


@pytest.fixture
def crash_gateway(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> tuple[Gateway, Admin]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    # One SO_REUSEPORT socket per worker: the kernel spreads connections over both workers.
    config = admin_config(upstream.port, port, token_file).replace(
        "[admin]", "[process]\nreuse_port = true\n\n[admin]", 1
    )
    gw = gateway_factory(config, workers=2)
    return gw, Admin(port)


def counter(admin: Admin, series: str) -> float:
    """The value of one series (``name{labels}``) in a scrape; 0 when absent."""
    text = admin.call("GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


MAIN_2XX = 'fastgw_requests_total{code="2xx",method="GET",route="main"}'


CUMULATIVE = ("_total", "_bucket", "_count", "_sum")


def series(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def replaced(gw: Gateway, count: int) -> None:
    wait_until(lambda: gw.stderr().count("serving again") >= count, 10, f"{count} replacements")


def test_killed_workers_keep_every_count_that_reached_shared_memory(
    crash_gateway: tuple[Gateway, Admin],
) -> None:
    gw, admin = crash_gateway
    n = 40
    for i in range(n):
        assert get(gw.port, f"/a/{i}").status == 200
    gw.wait_log(n)  # every record was flushed, so its count was published first: nothing may be lost
    # No scrape before the kills: the counts must come from shared memory, not from a pull that
    # happened to run. Each worker in turn (whichever served the requests).
    os.kill(gw.worker_pid(0), signal.SIGKILL)
    replaced(gw, 1)
    os.kill(gw.worker_pid(1), signal.SIGKILL)
    replaced(gw, 2)
    assert counter(admin, MAIN_2XX) == n
    assert counter(admin, 'fastgw_request_duration_seconds_count{route="main"}') == n
    assert (
        counter(admin, 'fastgw_shadow_denials_total{policy="route_network",reason="deny",route="main"}') == n
    )
    # the replacements add to their slots' totals
    for i in range(5):
        assert get(gw.port, f"/b/{i}").status == 200
    assert counter(admin, MAIN_2XX) == n + 5


def test_a_killed_control_process_leaves_every_counter_where_it_was(
    crash_gateway: tuple[Gateway, Admin],
) -> None:
    gw, admin = crash_gateway
    n = 30
    for i in range(n):
        assert get(gw.port, f"/c/{i}").status == 200
    wait_until(lambda: counter(admin, MAIN_2XX) == n, 5, f"{n} requests counted")
    os.kill(gw.worker_pid(0), signal.SIGKILL)  # a dead worker's counts, then the aggregator's death
    replaced(gw, 1)
    before = admin.call("GET", "/metrics")[2].decode()
    old_control = gw.control_pid()
    os.kill(old_control, signal.SIGKILL)
    wait_until(lambda: gw.control_pid() != old_control, 10, "a new control process")

    def scrape() -> str | None:
        try:
            status, _, body = admin.call("GET", "/metrics")
        except (urllib.error.URLError, ConnectionError):
            return None
        return body.decode() if status == 200 else None

    after = wait_until(scrape, 10, "the new control process to serve /metrics")
    # Every counter and histogram series of the earlier scrape is there, and none is lower.
    values = {s: v for s, v in series(before).items() if s.split("{")[0].endswith(CUMULATIVE)}
    assert values[MAIN_2XX] == n and len(values) > 10
    now = series(after)
    lower = {s: (v, now.get(s)) for s, v in values.items() if now.get(s, -1.0) < v}
    assert not lower, f"counters went down across the control process's restart: {lower}"
    assert now[MAIN_2XX] == n
    assert now['fastgw_child_restarts_total{child="worker 0"}'] == 1
    assert now['fastgw_child_restarts_total{child="control"}'] == 1


def test_a_killed_worker_loses_at_most_its_last_ticks_of_log_lines(
    crash_gateway: tuple[Gateway, Admin],
) -> None:
    """Bound: a worker hands its records to the log writer every tick (TICK_SECONDS); the writer thread
    writes each batch at once. A kill -9 loses the records completed since the worker's last tick plus any
    batch the writer had not yet written: the responses of the last one or two ticks. We allow
    ``allowed_ticks`` (two more for scheduling delay on a loaded test machine) and check the lost lines are
    exactly the newest responses of each killed connection, never older ones."""
    gw, _admin = crash_gateway
    allowed_ticks = 4
    conns = 8  # keep-alive clients, each paced at ~50 requests a second: a modest load
    received: list[list[tuple[str, float]]] = [[] for _ in range(conns)]
    broke_at: list[float] = [0.0] * conns
    stop = threading.Event()

    def client(k: int) -> None:
        with connect(gw.port) as sock:
            reader = ResponseReader(sock)
            i = 0
            while not stop.is_set():
                path = f"/log/{k}/{i}"
                try:
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                    resp = reader.read(timeout=5)
                except (AssertionError, OSError):
                    broke_at[k] = time.monotonic()
                    return
                assert resp.status == 200
                received[k].append((path, time.monotonic()))
                i += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    wait_until(lambda: all(len(r) >= 20 for r in received), 10, "traffic on every connection")
    killed_at = time.monotonic()
    for slot in (0, 1):  # both: every connection is cut, whichever worker it was on
        os.kill(gw.worker_pid(slot), signal.SIGKILL)
    for t in threads:
        t.join(10)
    stop.set()
    replaced(gw, 2)
    logged = {r["path"] for r in gw.log_records()}
    total = sum(len(r) for r in received)
    lost = 0
    for k, responses in enumerate(received):
        assert broke_at[k], f"connection {k} outlived both workers"
        missing = [i for i, (path, _t) in enumerate(responses) if path not in logged]
        lost += len(missing)
        if missing:
            # a suffix: the log never skips a line and then writes a later one
            assert missing == list(range(missing[0], len(responses))), (k, missing)
            oldest = responses[missing[0]][1]
            assert killed_at - oldest <= allowed_ticks * TICK_SECONDS, (k, killed_at - oldest)
    assert lost < total, "nothing at all was logged"
    assert re.search(r"worker [01] \(pid \d+\) was killed by SIGKILL", gw.stderr())
