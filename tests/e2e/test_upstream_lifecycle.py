"""Upstream pools across reloads: pools of removed targets close, kept ones keep their connections."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Gateway, TestUpstream, basic_config, get, wait_until


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
