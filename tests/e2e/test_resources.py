"""Resource bounds: idle RSS, memory per idle keep-alive connection, and surviving EMFILE."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.clients import ResponseReader, connect, get, request
from tests.support.gateways import Gateway, basic_config
from tests.support.memory import crypto_mapped, rss_mib
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

QUICKSTART = Path(__file__).resolve().parents[2] / "fastgw" / "data" / "quickstart.toml"


def test_idle_rss_under_40_mib(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    assert get(gw.port, "/").status == 200
    rss = rss_mib(gw.worker_pid())
    print(f"\nidle RSS after one request: {rss:.1f} MiB")
    assert rss <= 40
    assert not crypto_mapped(gw.worker_pid())


def test_idle_rss_with_the_ai_gateway_under_45_mib(gateway_factory: Callable[..., Gateway]) -> None:
    """Issue 22's bar: the quick start (llm routes, their handler, formats and adapters loaded), after
    one chat completion through them."""
    text = QUICKSTART.read_text().replace("127.0.0.1:8080", "127.0.0.1:{port}")
    gw = gateway_factory(text.replace("127.0.0.1:8081", f"127.0.0.1:{free_port()}"))
    body = b'{"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}'
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    assert request(gw.port, head.encode() + body).status == 200
    rss = rss_mib(gw.worker_pid())
    print(f"\nidle RSS with the AI gateway, after one chat completion: {rss:.1f} MiB")
    assert rss < 45
    assert not crypto_mapped(gw.worker_pid())


@pytest.mark.slow
def test_ten_thousand_idle_keep_alive_connections(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10_000 + 500
    if hard < want:
        raise AssertionError(f"RLIMIT_NOFILE hard limit {hard} is below {want}; raise it to run this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    gw = gateway_factory(
        basic_config(upstream.port, server="max_connections = 20000\nmax_connections_per_ip = 20000")
    )
    assert get(gw.port, "/").status == 200
    before = rss_mib(gw.worker_pid())
    sockets: list[socket.socket] = []
    try:
        for _ in range(10_000):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            sockets.append(s)
        for s in sockets[:100]:  # a sample of them also completes a request and stays idle-alive
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert ResponseReader(s).read().status == 200
        # Wait until the gateway has accepted them all (not just the kernel backlog), then read RSS.
        wait_until(
            lambda: len(os.listdir(f"/proc/{gw.worker_pid()}/fd")) >= 10_000, 20, "10,000 accepted sockets"
        )
        after = rss_mib(gw.worker_pid())
        added = after - before
        print(f"\n10,000 idle connections: RSS {before:.1f} -> {after:.1f} MiB (+{added:.1f})")
        assert added <= 150
        assert get(gw.port, "/").status == 200
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_survives_emfile_and_resumes_accepting(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    gw = gateway_factory(basic_config(upstream.port), preexec=low_fd_limit)
    held = []
    for _ in range(80):  # well past the gateway's 48 descriptors
        try:
            s = connect(gw.port, timeout=2)
            held.append(s)
        except OSError:
            break
    for s in held:
        s.close()
    # Once descriptors are free again, the gateway serves new connections.
    status = wait_until(lambda: _try_get(gw.port), 10, "the gateway to accept again")
    assert status == 200
    assert gw.proc.poll() is None


def _try_get(port: int) -> int:
    try:
        return get(port, "/").status
    except (OSError, AssertionError):
        return 0
