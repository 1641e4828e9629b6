"""Throttling: requests over a limit with a queue wait for room instead of being refused, fairly between
clients; a full queue and a wait past max_wait are refused with 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tests.support.clients import get
from tests.support.gateways import Gateway
from tests.support.rate_limits import limited_config
from tests.support.upstreams import TestUpstream


def throttled_config(upstream_port: int, limit: str) -> str:
    return limited_config(upstream_port, limit, server='trusted_proxies = ["127.0.0.1/32"]')


def fire(port: int, clients: list[str]) -> list[tuple[str, int, float]]:
    """One request per entry, all at once, each from the client address named (X-Forwarded-For).
    Returns (client, status, seconds until the answer) per request."""
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def one(client: str) -> None:
        status = get(port, "/limited/x", headers=f"X-Forwarded-For: {client}\r\n").status
        with lock:
            results.append((client, status, time.monotonic() - start))

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
        time.sleep(0.002)  # in this order
    for t in threads:
        t.join(30)
    return results


def test_requests_over_the_limit_wait_for_room_instead_of_a_429(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        throttled_config(
            upstream.port,
            '{ name = "smooth", rate = 4, per = 1.0, key = "route", queue = 20, max_wait = 5.0 }',
        )
    )
    results = fire(gw.port, ["10.0.0.1"] * 10)
    statuses = sorted(status for _, status, _ in results)
    last = max(t for _, _, t in results)
    print(f"10 requests against 4/s with a queue: statuses {statuses}, the last answered after {last:.2f}s")
    assert statuses == [200] * 10
    assert last >= 0.9  # ten admissions at 4 a second (sliding) cannot all happen in the first second
    waits = [r for r in gw.wait_log(10) if r["status"] == 200]
    assert len(waits) == 10


def test_full_queue_and_expired_wait_are_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        throttled_config(
            upstream.port, '{ name = "slow", rate = 1, per = 60.0, key = "route", queue = 4, max_wait = 0.5 }'
        )
    )
    assert get(gw.port, "/limited/first").status == 200
    # Five waiting requests from three clients (none holding more than half): four places, so whichever
    # arrives last finds the queue full and is refused at once; the four others expire after max_wait.
    results = fire(gw.port, ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.3"])
    times = sorted(t for _, _, t in results)
    print(f"full queue answered after {times[0]:.2f}s; waiters expired after {times[1:]}")
    assert all(status == 429 for _, status, _ in results)
    assert times[0] < 0.4
    assert all(0.4 <= t <= 2.0 for t in times[1:])  # max_wait 0.5 s, expired by the 100 ms tick
    records = gw.wait_log(6)
    reasons = sorted(r.get("denial", "") for r in records[1:])
    assert reasons == ["rate_limit.slow"] + ["rate_limit.slow.wait"] * 4


def test_one_noisy_client_cannot_starve_a_quiet_one(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        throttled_config(
            upstream.port,
            '{ name = "shared", rate = 4, per = 1.0, key = "route", queue = 16, max_wait = 10.0 }',
        )
    )
    # The noisy client queues first and may hold at most half the queue (8); the quiet client's two
    # requests arrive after all of that and are served in turn with the noisy ones, not after them.
    results = fire(gw.port, ["10.0.0.66"] * 14 + ["10.0.0.7"] * 2)
    noisy_ok = sorted(t for c, s, t in results if c == "10.0.0.66" and s == 200)
    noisy_refused = [t for c, s, t in results if c == "10.0.0.66" and s == 429]
    quiet = sorted(t for c, s, t in results if c == "10.0.0.7")
    quiet_statuses = [s for c, s, _ in results if c == "10.0.0.7"]
    print(f"quiet answered at {quiet}, noisy at {noisy_ok} (+{len(noisy_refused)} refused)")
    assert quiet_statuses == [200, 200]
    assert (
        len(noisy_refused) >= 2
    )  # 4 admitted at once (at most), 8 waiting (its half of the queue), the rest refused
    assert quiet[-1] < noisy_ok[-1]  # the quiet client did not wait behind the noisy backlog


def test_a_wait_in_vain_says_when_to_retry(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    # A request that waited max_wait in vain gets the limit's own Retry-After (it was "1" whatever the
    # limit): at the start of a 2 s window with both admissions used, that is 1.6 + 2 x (1 - 1/2) -> 3 s.
    gw = gateway_factory(
        throttled_config(
            upstream.port, '{ name = "q", rate = 2, per = 2.0, key = "route", queue = 4, max_wait = 0.3 }'
        )
    )
    time.sleep((-time.time()) % 2.0 + 0.05)
    assert [get(gw.port, "/limited/x").status for _ in range(2)] == [200, 200]
    expired = get(gw.port, "/limited/x")
    assert expired.status == 429 and b"in vain" in expired.body
    retry = int(expired.header(b"retry-after") or b"0")
    assert (expired.header(b"ratelimit") or b"").endswith(b";r=0;t=%d" % retry)
    time.sleep(retry)
    assert get(gw.port, "/limited/x").status == 200, retry
