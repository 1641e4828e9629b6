"""Gateways sharing one PostgreSQL store: ``fastgw run`` processes with their own state directories and
ports, one real PostgreSQL (tests/support/postgres.py). Keys made through one node's CLI or admin API
work on the others; a key revoked on node A is refused by every worker of node B within a second.

The revocation path has no timer in it: the write commits and NOTIFYs in one transaction, node B's
control process is woken by the notification, reads the change log and pushes to its workers over their
control sockets. The 2 s poll of the log (control/cluster_sync.py) is only a safety net for a lost
notification, so each trial is held to the 1 s bar itself, plus the measuring margin below.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.support.api_keys import cli, issue, status_on_all_workers
from tests.support.cli import fastgw
from tests.support.cluster import ADMIN_TOKEN, admin_call, cluster_config
from tests.support.gateways import Gateway, start_gateway
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

TRIALS = 20
BAR_SECONDS = 1.0  # issue 24: a key revoked on node A is refused on every worker of node B within 1 s
# What the measurement itself adds: the clock starts before the revoke call is sent (so its HTTP round
# trip counts against the gateway), and one check is 8 requests on new connections (a few ms each on
# this loopback): 0.1 s covers both on a loaded CI machine.
MEASURING_MARGIN = 0.1
CHECKS = 8  # requests per check, each on a new connection, so both of node B's workers answer some


def test_a_gateway_on_postgres_creates_keys_and_authenticates_them(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path, postgres_dsn: str
) -> None:
    gw = gateway_factory(cluster_config(upstream.port, free_port(), secrets_dir, postgres_dsn), workers=2)
    assert status_on_all_workers(gw.port, "/api/x", "") == {401}
    key, key_id = issue(gw)  # the CLI, through the admin API, into PostgreSQL
    wait_until(
        lambda: status_on_all_workers(gw.port, "/api/x", f"X-API-Key: {key}\r\n") == {200}, 5, "the key"
    )
    assert "acme" in cli(gw, "consumers", "list")
    cli(gw, "keys", "revoke", key_id)
    wait_until(
        lambda: status_on_all_workers(gw.port, "/api/x", f"X-API-Key: {key}\r\n") == {401}, 5, "revoked"
    )


def test_a_key_revoked_on_node_a_is_refused_on_every_worker_of_node_b_within_a_second(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path, postgres_dsn: str
) -> None:
    admin_a = free_port()
    a = gateway_factory(cluster_config(upstream.port, admin_a, secrets_dir, postgres_dsn), workers=1)
    b = gateway_factory(cluster_config(upstream.port, free_port(), secrets_dir, postgres_dsn), workers=2)
    status, _ = admin_call(admin_a, "POST", "/consumers", {"name": "acme"})
    assert status in (200, 201)
    times = []

    def on_b(header: str) -> set[int]:
        return status_on_all_workers(b.port, "/api/x", header, CHECKS)

    for _ in range(TRIALS):
        status, made = admin_call(admin_a, "POST", "/keys", {"consumer": "acme"})
        assert status in (200, 201), made
        header = f"X-API-Key: {made['key']}\r\n"
        # Made on A, it reaches B's workers the same way.
        wait_until(lambda h=header: on_b(h) == {200}, 5, "the key on B")
        start = time.monotonic()
        status, _ = admin_call(admin_a, "POST", f"/keys/{made['id']}/revoke")
        assert status == 200
        while True:
            checked = time.monotonic()
            if on_b(header) == {401}:
                break
            assert checked - start < 5, f"node B accepts a key revoked on A 5 s before:\n{b.stderr()}"
        times.append(checked - start)
    print(
        f"\nrevoked on A, refused by every worker of B after: median"
        f" {1000 * statistics.median(times):.0f} ms, max {1000 * max(times):.0f} ms over {TRIALS} trials"
    )
    assert max(times) <= BAR_SECONDS + MEASURING_MARGIN, times
    assert a.proc.poll() is None and b.proc.poll() is None


def test_a_gateway_whose_database_is_unreachable_fails_to_start_with_one_clear_line(
    tmp_path: Path, upstream: TestUpstream, secrets_dir: Path
) -> None:
    dsn = f"postgresql://fastgw:pw-not-shown@127.0.0.1:{free_port()}/gw"
    body = cluster_config(upstream.port, free_port(), secrets_dir, dsn).replace(
        "connect_timeout = 5", "connect_timeout = 1"
    )
    try:
        gw = start_gateway(tmp_path, body)
    except AssertionError as exc:
        message = str(exc)
    else:
        gw.stop()
        raise AssertionError("the gateway started without its database")
    assert "cannot start: cannot connect to PostgreSQL at 127.0.0.1:" in message, message
    assert "pw-not-shown" not in message
    line = next(ln for ln in message.splitlines() if "cannot connect to PostgreSQL" in ln)
    assert "Connection refused" in line or "connection refused" in line.lower()


def test_with_postgres_down_workers_serve_from_their_caches_writes_get_503_and_recovery_is_automatic(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    secrets_dir: Path,
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.create_database()
    admin = free_port()
    gw = gateway_factory(cluster_config(upstream.port, admin, secrets_dir, dsn), workers=2)
    key, key_id = issue(gw)
    header = f"X-API-Key: {key}\r\n"
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {200}, 5, "the key")
    postgres_server.stop()
    try:
        # Every worker keeps answering the cached key, and keeps refusing what it does not hold.
        assert status_on_all_workers(gw.port, "/api/x", header, 24) == {200}
        assert status_on_all_workers(gw.port, "/api/x", "X-API-Key: fgw_unknown\r\n") == {401}
        status, problem = admin_call(admin, "POST", "/keys", {"consumer": "acme"})
        assert status == 503, problem
        assert problem["type"].endswith("/store-unavailable") and "cannot be reached" in problem["detail"]
        assert "127.0.0.1" not in str(problem)  # no internal address in an answer
        out = fastgw("keys", "revoke", key_id, "--config", str(gw.config))
        assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
        assert "the store cannot be reached" in out.stderr
        assert status_on_all_workers(gw.port, "/api/x", header) == {200}  # the failed revoke changed nothing
        # The outage shows in the metrics (what an alert watches) once the control process has noticed it.
        wait_until(lambda: stale_seconds(admin) > 0, 10, "fastgw_store_stale_seconds to rise")
        # A worker replaced during the outage gets the tables its control process sent last.
        old = gw.worker_pid(0)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(0) != old, 10, "worker 0 to be replaced")
        wait_until(lambda: "gets the tables sent last" in gw.stderr(), 10, "the replacement's hello")
        assert status_on_all_workers(gw.port, "/api/x", header, 24) == {200}
    finally:
        postgres_server.start()

    def revoked() -> bool:  # nobody restarts anything: the pool and the change listener reconnect
        return admin_call(admin, "POST", f"/keys/{key_id}/revoke")[0] == 200

    wait_until(revoked, 30, "the admin API to write again after PostgreSQL came back")
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {401}, 5, "the revocation")
    wait_until(lambda: stale_seconds(admin) == 0, 10, "fastgw_store_stale_seconds back to 0")
    assert "cannot start" not in gw.stderr()


def stale_seconds(admin_port: int) -> float:
    """fastgw_store_stale_seconds from the admin API's /metrics."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        text = resp.read().decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("fastgw_store_stale_seconds ")]
    return float(line.split()[1])
