"""Node-wide rate limits: accuracy across 4 workers under 200 clients, headers, 429s, shadow mode."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.ports import free_port
from tests.support.rate_limits import (
    admitted_at,
    hammer,
    limited_config,
    obey,
    sliding_window_bounds,
)
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

LIMIT = 100


def test_sliding_window_is_accurate_across_four_workers(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    workers = 4
    limit = f'{{ name = "route", rate = {LIMIT}, per = 1.0, key = "route" }}'
    gw = gateway_factory(limited_config(upstream.port, limit), workers=workers)
    statuses = hammer(gw.port, clients=200, seconds=4.5)
    offered = sum(statuses.values())
    assert statuses[200] and statuses[429], statuses
    records = [r for r in gw.wait_log(offered, timeout=15) if r["path"] == "/limited"]
    bounds = sliding_window_bounds(records, LIMIT, 1.0, workers)
    rate = offered / 4.5
    print(
        f"\noffered {offered} requests ({rate:.0f}/s, {rate / LIMIT:.0f}x the limit) from 200 clients to "
        f"{workers} workers; per full aligned window (admitted, low, high): "
        f"{[(n, low, high) for _, n, low, high in bounds]}"
    )
    assert offered / 4.5 >= 3 * LIMIT
    assert len(bounds) >= 2
    for window, count, low, high in bounds:
        assert low <= count <= high, (window, count, low, high)


def test_gcra_admits_rate_times_time_plus_burst_across_four_workers(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    workers, rate, burst = 4, 100, 40
    limit = f'{{ name = "g", rate = {rate}, per = 1.0, key = "route", algorithm = "gcra", burst = {burst} }}'
    gw = gateway_factory(limited_config(upstream.port, limit), workers=workers)
    statuses = hammer(gw.port, clients=200, seconds=4.0)
    offered = sum(statuses.values())
    records = [r for r in gw.wait_log(offered, timeout=15) if r["path"] == "/limited"]
    stamps = sorted(admitted_at(r) for r in records)
    span = stamps[-1] - stamps[0]
    admitted = statuses[200]
    expected = rate * span + burst + workers  # each worker's share: one at once plus burst / workers
    print(
        f"\nGCRA {rate}/s + burst {burst}, {workers} workers, 200 clients offering {offered / span:.0f}/s "
        f"for {span:.2f}s: admitted {admitted}, rate x T + burst + workers = {expected:.0f} "
        f"({(admitted - expected) / expected * 100:+.1f}%)"
    )
    # Never more: each worker's share is exact. Fewer is possible when a worker gets no CPU for a while
    # (2 cores, 4 workers, 200 client threads, other tests beside): GCRA does not bank an unused share
    # beyond its burst, so a starved worker's share of that time is lost (measured once under xdist:
    # -25 %). The lower bound only tells the share from nothing (burst 0 once refused every request).
    assert admitted <= expected * 1.02 + workers - 1
    assert admitted >= expected * 0.5


def test_headers_429_keys_and_shadow(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra="""
            [[routes]]
            name = "per-ip"
            path = "/per-ip"
            upstream = "backend"
            auth = "none"
            limits = [
              { name = "burst", rate = 3, per = 60.0, key = "ip" },
              { name = "daily", rate = 1000, per = 86400.0, key = "ip" },
            ]

            [[routes]]
            name = "per-tenant"
            path = "/per-tenant"
            upstream = "backend"
            auth = "none"
            limits = [{ name = "tenant", rate = 2, per = 60.0, key = "header", header = "X-Tenant" }]

            [[routes]]
            name = "shadow"
            path = "/shadow"
            upstream = "backend"
            auth = "none"
            limits = [{ name = "watch", rate = 1, per = 60.0, key = "route", mode = "shadow" }]
            """,
        )
    )
    first = get(gw.port, "/per-ip/a")
    assert first.status == 200
    assert first.header(b"ratelimit-policy") == b'"burst";q=3;w=60, "daily";q=1000;w=86400'
    assert (first.header(b"ratelimit") or b"").startswith(b'"burst";r=2;t=')
    assert get(gw.port, "/per-ip/a").status == 200
    assert get(gw.port, "/per-ip/a").status == 200
    refused = get(gw.port, "/per-ip/a")
    assert refused.status == 429 and refused.header(b"content-type") == b"application/problem+json"
    # Retry-After is when a request would be admitted: past the window's end the previous window still
    # weighs (3 x (1 - x/60) + 1 <= 3 needs x >= 20 s), so it can reach 60 + 20 s, never two windows.
    assert 1 <= int(refused.header(b"retry-after") or b"0") <= 120
    assert (refused.header(b"ratelimit") or b"").startswith(b'"burst";r=0;t=')
    # Header-keyed: each tenant has its own budget.
    for tenant in ("a", "b"):
        for _ in range(2):
            assert get(gw.port, "/per-tenant/x", headers=f"X-Tenant: {tenant}\r\n").status == 200
        assert get(gw.port, "/per-tenant/x", headers=f"X-Tenant: {tenant}\r\n").status == 429
    # Shadow: nothing is refused; would-be rejections are logged.
    assert [get(gw.port, "/shadow/x").status for _ in range(3)] == [200, 200, 200]
    records = gw.wait_log(13)
    assert [r.get("shadow") for r in records if r["path"] == "/shadow/x"][-1] == ["rate_limit.watch"]
    # A reload that keeps a limit keeps its counts.
    gw.config.write_text(gw.config.read_text().replace('name = "main"', 'name = "main2"'))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 5, "the reload")
    assert get(gw.port, "/per-ip/a").status == 429


def test_a_request_refused_by_a_later_limit_is_not_counted_by_earlier_ones(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    # Limits count a request as they pass it; when a later one refuses, the earlier counts are taken back:
    # a sliding window, a GCRA, a daily quota and a concurrency limit, all per IP, before a tenant limit.
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra=f"""
            [[routes]]
            name = "stacked"
            path = "/stacked"
            upstream = "backend"
            auth = "none"
            limits = [
              {{ name = "ip", rate = 4, per = 60.0, key = "ip" }},
              {{ name = "paced", rate = 4, per = 60.0, key = "ip", algorithm = "gcra", burst = 4 }},
              {{ name = "daily", rate = 4, quota = "day", key = "ip" }},
              {{ name = "inflight", concurrency = 1, key = "ip" }},
              {{ name = "tenant", rate = 2, per = 60.0, key = "header", header = "X-Tenant" }},
            ]

            [state]
            dir = "{tmp_path / "state"}"
            """,
        )
    )

    def status(tenant: str) -> int:
        return get(gw.port, "/stacked/x", headers=f"X-Tenant: {tenant}\r\n").status

    assert [status("a") for _ in range(4)] == [200, 200, 429, 429]  # the tenant limit refuses
    # The two refusals left every per-IP limit at 2 of 4 (and nothing in flight): two more pass.
    assert [status("b") for _ in range(2)] == [200, 200]
    refused = get(gw.port, "/stacked/x", headers="X-Tenant: c\r\n")
    assert refused.status == 429
    assert any(f"'{name}'".encode() in refused.body for name in ("ip", "paced", "daily")), refused.body


def test_concurrency_limit_released_on_completion_abort_and_worker_death(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    import os
    import socket

    from tests.support.clients import connect

    upstream.delay = 0.6
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra="""
            [[routes]]
            name = "slow"
            path = "/slow"
            upstream = "backend"
            auth = "none"
            limits = [{ name = "inflight", concurrency = 2, key = "route" }]
            """,
        )
    )

    def fire(n: int) -> list[socket.socket]:
        socks = []
        for _ in range(n):
            s = connect(gw.port)
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(s)
        return socks

    def statuses(socks: list[socket.socket]) -> list[int]:
        from tests.support.clients import ResponseReader

        out = sorted(ResponseReader(s).read().status for s in socks)
        for s in socks:
            s.close()
        return out

    assert statuses(fire(5)) == [200, 200, 429, 429, 429]
    assert statuses(fire(2)) == [200, 200]  # released after completion
    # Clients that vanish mid-request release their slots too (on_complete runs on aborts).
    for s in fire(2):
        s.close()
    wait_until(lambda: statuses(fire(1)) == [200], 5, "the aborted requests' slots back")
    # A worker killed with requests in flight: the supervisor releases its slots.
    before = len(upstream.requests)
    held = fire(2)
    wait_until(lambda: len(upstream.requests) >= before + 2, 5, "the requests to reach the upstream")
    os.kill(gw.worker_pid(0), signal.SIGKILL)
    for s in held:
        s.close()
    wait_until(lambda: "released 2 in-flight request slots of the dead worker 0" in gw.stderr(), 5, "release")
    wait_until(lambda: "serving again" in gw.stderr(), 5, "the replacement")
    assert statuses(fire(2)) == [200, 200]


def test_limits_per_api_key_and_per_consumer_overrides(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path
) -> None:
    from tests.support.api_keys import cli, issue, keys_config

    config = keys_config(upstream.port, free_port(), secrets_dir).replace(
        'auth = "api_key"\n',
        'auth = "api_key"\n        limits = [{ name = "burst", rate = 2, per = 60.0, key = "api_key" },'
        ' { name = "team", rate = 3, per = 60.0, key = "consumer" }]\n',
        1,
    )
    gw = gateway_factory(config)
    cli(gw, "consumers", "create", "basic")
    cli(gw, "consumers", "create", "premium", "--limit", "burst=4", "--limit", "team=6")
    basic_1, _ = issue(gw, "basic")
    basic_2, _ = issue(gw, "basic")
    premium, _ = issue(gw, "premium")

    def status(key: str) -> int:
        return get(gw.port, "/api/x", headers=f"X-API-Key: {key}\r\n").status

    wait_until(lambda: status(premium) == 200, 5, "the keys to reach the worker")
    # Per key: each of basic's keys has its own 2; per consumer: basic has 3 across both keys.
    assert [status(basic_1), status(basic_1), status(basic_1)] == [200, 200, 429]
    assert [status(basic_2), status(basic_2)] == [200, 429]  # the consumer's 3 are used up
    # premium's own numbers (4 per key, 6 per consumer) apply to it alone; it already used 1 above.
    assert [status(premium) for _ in range(4)] == [200, 200, 200, 429]
    seen = get(gw.port, "/api/x", headers=f"X-API-Key: {premium}\r\n")
    assert seen.header(b"ratelimit-policy") == b'"burst";q=4;w=60, "team";q=6;w=60'
    assert get(gw.port, "/api/x", headers=f"X-API-Key: {basic_1}\r\n").header(b"ratelimit-policy") == (
        b'"burst";q=2;w=60, "team";q=3;w=60'
    )


def test_a_client_that_obeys_retry_after_passes_at_its_first_retry(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    # Sliding windows (shared by 2 workers, new connection per request) and GCRA (one worker: its state
    # is per worker, so only the worker that answered can promise). The first round starts a sliding
    # window: refused at ~0.1 s with the window full, the old answer (the window's end, 2 s) met a full
    # previous window still weighing ~1; the right one is 1.9 + 2 x (1 - 2/3) = 2.57 -> 3 s.
    sliding = gateway_factory(
        limited_config(upstream.port, '{ name = "s", rate = 3, per = 2.0, key = "ip" }'), workers=2
    )
    time.sleep((-time.time()) % 2.0 + 0.1)
    results = obey(sliding.port, "/limited/a", 3)
    print(f"\nsliding 3 per 2 s: {results}")
    assert [status for _, _, status in results] == [200] * 3, results
    gcra = gateway_factory(
        limited_config(
            upstream.port,
            '{ name = "g", rate = 3, per = 3.0, key = "ip", algorithm = "gcra", burst = 2 }',
            extra=f'[state]\ndir = "{tmp_path / "state"}"',
        )
    )
    results = obey(gcra.port, "/limited/a", 3)
    print(f"GCRA 3 per 3 s, burst 2: {results}")
    assert [status for _, _, status in results] == [200] * 3, results


def test_quota_retry_after_is_the_end_of_the_period(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    # A quota admits again when its UTC day ends: Retry-After says exactly that (not to be waited for).
    gw = gateway_factory(
        limited_config(
            upstream.port,
            '{ name = "daily", rate = 1, quota = "day", key = "ip" }',
            extra=f'[state]\ndir = "{tmp_path / "state"}"',
        )
    )
    assert get(gw.port, "/limited/a").status == 200
    refused = get(gw.port, "/limited/a")
    left = 86400 - time.time() % 86400
    assert refused.status == 429
    retry = int(refused.header(b"retry-after") or b"0")
    assert left <= retry <= left + 2, (retry, left)  # rounded up, one second of clock between the two
    assert refused.header(b"ratelimit") == b'"daily";r=0;t=%d' % retry


def test_a_reload_that_changes_a_limits_kind_keeps_each_kinds_counts_apart(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """One name, two kinds across reloads: a quota, then a rate per minute, then the quota again. Each
    counts in cells of its own (before, the rate took over the quota's cell and the quota's counts of
    this run were lost when it came back: the day admitted 5 more)."""
    quota = '{ name = "x", rate = 5, quota = "day", key = "ip" }'
    rate = '{ name = "x", rate = 100, per = 60, key = "ip" }'
    gw = gateway_factory(limited_config(upstream.port, quota, extra=f'[state]\ndir = "{tmp_path / "state"}"'))
    reloads = 0

    def reload_to(old: str, new: str) -> None:
        nonlocal reloads
        gw.config.write_text(gw.config.read_text().replace(old, new))
        gw.proc.send_signal(signal.SIGHUP)
        reloads += 1
        wait_until(lambda: gw.stderr().count("reload (SIGHUP) complete") == reloads, 5, "the reload")

    assert [get(gw.port, "/limited/a").status for _ in range(3)] == [200] * 3
    reload_to(quota, rate)
    for _ in range(2):
        assert (get(gw.port, "/limited/a").header(b"ratelimit") or b"").startswith(b'"x";r=')
    reload_to(rate, quota)
    answer = get(gw.port, "/limited/a")
    assert answer.status == 200 and (answer.header(b"ratelimit") or b"").startswith(b'"x";r=1;'), answer
    assert [get(gw.port, "/limited/a").status for _ in range(2)] == [200, 429]  # the fifth, then none


def test_a_shadow_limit_sends_no_header_a_client_would_slow_down_for(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra="""
            [[routes]]
            name = "watched"
            path = "/watched"
            upstream = "backend"
            auth = "none"
            limits = [{ name = "watch", rate = 1, per = 60.0, key = "route", mode = "shadow" }]

            [[routes]]
            name = "both"
            path = "/both"
            upstream = "backend"
            auth = "none"
            limits = [
              { name = "watch", rate = 1, per = 60.0, key = "route", mode = "shadow" },
              { name = "enforced", rate = 100, per = 60.0, key = "route" },
            ]
            """,
        )
    )
    for _ in range(3):  # past the shadow limit: would-be refusals, still no RateLimit headers
        answer = get(gw.port, "/watched/x")
        assert answer.status == 200
        assert answer.header(b"ratelimit") is None and answer.header(b"ratelimit-policy") is None
    for _ in range(3):  # beside an enforced limit: only the enforced one is advertised
        answer = get(gw.port, "/both/x")
        assert answer.status == 200
        assert answer.header(b"ratelimit-policy") == b'"enforced";q=100;w=60'
        assert (answer.header(b"ratelimit") or b"").startswith(b'"enforced";r=')
