"""Upstream pools across reloads: pools of removed targets close, kept ones keep their connections."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import SeenRequest, TestUpstream, ok_response
from tests.support.waiting import wait_until


@pytest.fixture
def second_upstream() -> Iterator[TestUpstream]:
    up = TestUpstream()
    yield up
    up.close()


def open_connections(up: TestUpstream) -> int:
    return len(up._transports)


def test_reload_closes_pools_of_removed_targets_and_keeps_the_rest(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, second_upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    for _ in range(3):
        assert get(gw.port, "/a").status == 200
    assert open_connections(upstream) == 1  # one pooled keep-alive connection, reused
    # Reload with an unrelated change: the pool and its connection are kept.
    gw.config.write_text(gw.config.read_text().replace('name = "main"', 'name = "main2"'))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reload (SIGHUP) complete") == 1, 5, "the first reload")
    assert get(gw.port, "/b").status == 200
    assert upstream.connections == 1, "a reload that keeps the target must keep its pooled connection"
    # Reload onto another target: the old target's idle connection is closed, traffic moves.
    text = gw.config.read_text().replace(f"127.0.0.1:{upstream.port}", f"127.0.0.1:{second_upstream.port}")
    gw.config.write_text(text)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reload (SIGHUP) complete") == 2, 5, "the second reload")
    wait_until(lambda: open_connections(upstream) == 0, 5, "the removed target's pool to close")
    assert get(gw.port, "/c").status == 200
    assert len(second_upstream.requests) == 1
    assert len(upstream.requests) == 4


def test_active_health_checks_take_a_target_out_and_bring_it_back(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, second_upstream: TestUpstream
) -> None:
    sick = {"on": False}

    def handler(req: SeenRequest) -> bytes:
        if req.target == b"/health" and sick["on"]:
            return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        return ok_response(req)

    upstream.handler = handler
    config = basic_config(upstream.port).replace(
        f'targets = ["127.0.0.1:{upstream.port}"]',
        f'targets = ["127.0.0.1:{upstream.port}", "127.0.0.1:{second_upstream.port}"]\n'
        '        health_check = { path = "/health", interval = 0.1, timeout = 0.5, '
        "unhealthy_threshold = 2, healthy_threshold = 2 }",
    )
    gw = gateway_factory(config, workers=2)

    def traffic_split(n: int = 20) -> tuple[int, int]:
        a0 = sum(1 for r in upstream.requests if r.target == b"/t")
        b0 = sum(1 for r in second_upstream.requests if r.target == b"/t")
        for _ in range(n):
            assert get(gw.port, "/t").status == 200
        a1 = sum(1 for r in upstream.requests if r.target == b"/t")
        b1 = sum(1 for r in second_upstream.requests if r.target == b"/t")
        return a1 - a0, b1 - b0

    wait_until(lambda: all(traffic_split(4)), 5, "both targets to take traffic")
    # Probes run once per node (in the control process), not once per worker.
    probes = lambda: sum(1 for r in upstream.requests if r.target == b"/health")  # noqa: E731
    start, t0 = probes(), time.monotonic()
    time.sleep(1.0)
    rate = (probes() - start) / (time.monotonic() - t0)
    assert 5 <= rate <= 14, f"{rate:.1f} probes/s for a 0.1 s interval with 2 workers"
    sick["on"] = True
    wait_until(
        lambda: "is DOWN: 2 probes failed, last: status 503" in gw.stderr(), 5, "the target to go down"
    )
    assert traffic_split() == (0, 20)
    sick["on"] = False
    wait_until(lambda: f"target 127.0.0.1:{upstream.port} is healthy" in gw.stderr(), 5, "the recovery")
    wait_until(lambda: traffic_split(10)[0] > 0, 5, "traffic to come back")
