"""Chaos under load: kill or break each part of a running gateway and assert what clients saw.

Every test runs real processes (supervisor, control process, 2 workers), real upstreams and a real Redis
on 127.0.0.1 with keep-alive clients in threads (tests/support/load.py), and states its bound from the
mechanism: a client has at most one request in flight, so a crash can fail at most the requests in flight
on what crashed, and a failure that the gateway can route around must fail nothing.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.admin import TOKEN, Admin, admin_config
from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.load import Load, Traffic, snapshot_id
from tests.support.ports import free_port
from tests.support.rate_limits import limited_config
from tests.support.redis_server import RedisServer
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

CLIENTS = 4


def _requests_total(admin: Admin) -> float:
    text = admin.call("GET", "/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r"^fastgw_requests_total\{[^}]*\} ([\d.e+]+)$", text, re.M))


def test_worker_kill_9_fails_only_the_requests_in_flight_on_it(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """Three SIGKILLs of a worker (alternating slots) under keep-alive load: each kill fails at most the
    requests in flight on the victim (at most one per client), every failure is a broken connection (never
    an error status), and traffic flows again on both workers."""
    gw = gateway_factory(basic_config(upstream.port), workers=2)
    traffic = Traffic(gw.port, clients=CLIENTS)
    traffic.start()
    kills = 0
    try:
        wait_until(lambda: traffic.count() > 100, 10, "load to flow")
        for slot in (0, 1, 0):
            victim = gw.worker_pid(slot)
            os.kill(victim, signal.SIGKILL)
            kills += 1
            wait_until(lambda s=slot, v=victim: gw.worker_pid(s) != v, 5, "a replacement worker")
            done = traffic.count()
            wait_until(lambda d=done: traffic.count() > d + 100, 10, "traffic after the kill")
    finally:
        traffic.stop()
    failures = traffic.failures()
    print(f"\n{kills} worker kills under load: {traffic.count()} requests, {len(failures)} failed")
    assert all(status == 0 for _, status, _ in failures), failures  # broken connections, never a 5xx
    assert len(failures) <= kills * CLIENTS, failures


def test_control_process_kill_9_fails_nothing_and_no_counter_goes_down(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """The control process is off the request path: killing it three times under load fails no request,
    the admin API answers again within a second or two, and fastgw_requests_total never goes down."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    admin_port = free_port()
    gw = gateway_factory(admin_config(upstream.port, admin_port, token), workers=2)
    admin = Admin(admin_port)
    traffic = Traffic(gw.port, path="/", clients=CLIENTS)
    traffic.start()
    totals = []
    try:
        wait_until(lambda: traffic.count() > 100, 10, "load to flow")
        for _ in range(3):
            totals.append(_requests_total(admin))
            control = gw.control_pid()
            os.kill(control, signal.SIGKILL)
            wait_until(lambda c=control: gw.control_pid() != c, 5, "a new control process")
            killed_at = time.monotonic()

            def answers() -> bool:
                try:
                    return admin.call("GET", "/metrics")[0] == 200
                except OSError:
                    return False

            wait_until(answers, 5, "the admin API to answer again")
            print(f"admin API back {time.monotonic() - killed_at:.2f}s after the restart was logged")
            totals.append(_requests_total(admin))
            done = traffic.count()
            wait_until(lambda d=done: traffic.count() > d + 100, 10, "traffic after the kill")
    finally:
        traffic.stop()
    wait_until(lambda: _requests_total(admin) >= traffic.count(), 5, "every request to be counted")
    totals.append(_requests_total(admin))
    assert traffic.failures() == []
    assert totals == sorted(totals), totals  # monotonic for the supervisor's life
    assert totals[-1] == traffic.count()


def test_upstream_target_dies_and_returns(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """One of two targets dies under load: requests that pick it move to the sibling (a refused connect
    sent nothing) or are retried there (a reused connection that broke before answering), so at most the
    requests in flight on it fail (at most one per client) and none after; once it comes back on its port
    it is used again after its ejection ends (max_failures = 1, eject_seconds = 1)."""
    second = TestUpstream()
    port = second.port
    extra = "max_failures = 1\neject_seconds = 1.0"
    config = basic_config(upstream.port, route="").replace(
        f'targets = ["127.0.0.1:{upstream.port}"]',
        f'targets = ["127.0.0.1:{upstream.port}", "127.0.0.1:{port}"]\n{extra}',
    )
    gw = gateway_factory(config, workers=2)
    traffic = Traffic(gw.port, clients=CLIENTS)
    traffic.start()
    revived: TestUpstream | None = None
    try:
        wait_until(lambda: len(second.requests) > 50, 10, "load on both targets")
        second.close()
        died_at = time.monotonic()
        done = traffic.count()
        wait_until(lambda: traffic.count() > done + 200, 10, "traffic after the death")
        settled = time.monotonic()
        revived = TestUpstream(port=port)
        wait_until(lambda: len(revived.requests) > 20, 10, "the target to be used again")
        back_after = time.monotonic() - settled
    finally:
        traffic.stop()
        if revived is not None:
            revived.close()
    failures = traffic.failures()
    print(f"\ntarget died: {len(failures)} failures of {traffic.count()}; used again {back_after:.2f}s after")
    assert len(failures) <= CLIENTS, failures
    assert all(at < died_at + 1.0 for at, _, _ in failures), failures  # only what was in flight then
    assert traffic.between(settled) and set(traffic.between(settled)) == {200}


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


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_redis_kill_9_and_restart_under_load(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    redis_server: RedisServer,
    tmp_path: Path,
    failure: str,
) -> None:
    """Redis is killed (SIGKILL) and restarted under load on a cluster-limited route with room to spare.
    Open: every request is answered 200 throughout (node-local limits). Closed: 503 only while Redis is
    away (from the kill until shortly after it answers again), never a hang; every worker reports the
    store up within 2 s of the restart (the reconnect probe, not traffic, brings it back), and from then
    on every request is 200 again."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    admin_port = free_port()
    limit = '{ name = "minute", rate = 1000000, per = 60.0, key = "route" }'
    gw = gateway_factory(
        limited_config(
            upstream.port,
            limit,
            extra=f"""
            [rate_limits.redis]
            url = "{redis_server.url}"
            flush_interval = 0.05
            failure = "{failure}"
            [admin]
            bind = "127.0.0.1:{admin_port}"
            token = {{ file = "{token}" }}
            """,
        ),
        workers=2,
    )
    admin = Admin(admin_port)

    def redis_up() -> float:
        """Workers whose last exchange with the store worked (the gauge sums the workers)."""
        text = admin.call("GET", "/metrics")[2].decode()
        m = re.search(r"^fastgw_ratelimit_redis_up ([\d.e+]+)$", text, re.M)
        return float(m.group(1)) if m else -1.0

    wait_until(lambda: redis_up() == 2.0, 5, "the store to be up on both workers")
    traffic = Traffic(gw.port, path="/limited/x", clients=CLIENTS)
    traffic.start()
    try:
        wait_until(lambda: traffic.count() > 100, 10, "load to flow")
        killed_at = time.monotonic()
        redis_server.kill()
        wait_until(lambda: redis_up() == 0.0, 5, "the outage to be seen")
        time.sleep(1.0)  # an outage of a few seconds, traffic flowing all along
        redis_server.start()
        restarted_at = time.monotonic()
        wait_until(lambda: redis_up() == 2.0, 2.0, "every worker to report the store up within 2 s")
        up_after = time.monotonic() - restarted_at
        recovered_at = time.monotonic()
        # One flush interval plus a tick after every worker reported the store up, decisions use it.
        settled = recovered_at + 0.2
        wait_until(lambda: len(traffic.between(settled)) > 200, 10, "traffic after the recovery")
    finally:
        traffic.stop()
    before = traffic.between(0, killed_at)
    during = traffic.between(killed_at, recovered_at)
    after = traffic.between(settled)
    print(f"\nredis {failure}: up {up_after:.2f}s after restart; during the outage {sorted(set(during))}")
    assert set(before) == {200}
    assert set(after) == {200}, sorted(set(after))
    assert 0 not in during  # never a hang or a broken connection
    assert set(during) <= ({200} if failure == "open" else {200, 503}), sorted(set(during))
    if failure == "closed":
        assert 503 in during  # the outage was enforced as configured
