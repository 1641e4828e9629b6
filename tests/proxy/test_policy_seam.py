"""The policy seam end to end, in-process: Pending parks only its own request, on_response adds headers,
on_complete runs exactly once per exchange that passed check (also when the client aborts)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
import pytest_asyncio

from fastgw.config.compiler import compile_config
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.process.worker import Worker
from tests.support.upstreams import TestUpstream


class SlowIdentity:
    """A test policy shaped like a cold-cache authenticator: known users pass at once, others need I/O."""

    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION
    name = "slow_identity"
    shadow = False

    def __init__(self) -> None:
        self.completed: list[int] = []
        self.release = asyncio.Event()

    def check(self, ex: Exchange) -> Denial | Pending | None:
        user = ex.header(b"x-user")
        if user == b"cached":
            return None

        async def lookup() -> Denial | None:
            if user == b"wait":
                await self.release.wait()
            await asyncio.sleep(0.01)
            if user == b"broken":
                raise LookupError("a defect in the policy's I/O")
            return (
                None
                if user in (b"good", b"wait")
                else Denial(401, "unauthorized", "who are you", "test.unknown")
            )

        return Pending(lookup())

    def on_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        headers.append((b"x-policy", b"seen"))

    def on_complete(self, ex: Exchange) -> None:
        self.completed.append(ex.status)


@pytest_asyncio.fixture
async def served(upstream: TestUpstream) -> AsyncIterator[tuple[int, SlowIdentity]]:
    text = f"""
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[upstreams.u]
targets = ["127.0.0.1:{upstream.port}"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""
    snapshot = compile_config(text.encode(), "seam.toml")
    policy = SlowIdentity()
    route = snapshot.routes[0]
    patched = dataclasses.replace(route, chain=(policy,), response_hooks=(policy,), complete_hooks=(policy,))
    table = snapshot.router._default  # the catch-all host table of this one-route config
    assert table is not None
    table.prefixes[b"/"].any_method = patched
    worker = Worker(snapshot)
    await worker.start()
    yield worker.bound[0][1], policy
    await worker.shutdown()
    await worker.wait_stopped()


async def fetch(port: int, user: str, *, hold: bool = False) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET / HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.asyncio
async def test_pending_passes_then_forwards(served: tuple[int, SlowIdentity]) -> None:
    port, policy = served
    status, data = await fetch(port, "good")
    assert status == 200
    assert b"x-policy: seen" in data
    assert policy.completed == [200]


@pytest.mark.asyncio
async def test_pending_denial_is_problem_json(served: tuple[int, SlowIdentity]) -> None:
    port, policy = served
    status, data = await fetch(port, "mallory")
    assert status == 401
    assert b"application/problem+json" in data
    assert policy.completed == []  # a denied exchange never passed check: nothing to complete


@pytest.mark.asyncio
async def test_a_policy_that_raises_while_parked_is_answered_500_and_the_worker_serves_on(
    served: tuple[int, SlowIdentity], capfd: pytest.CaptureFixture[str]
) -> None:
    """Before, the exception ended the resuming Task: no answer, no access-log record, until the
    client gave up."""
    port, policy = served
    status, data = await fetch(port, "broken")
    assert status == 500 and b"application/problem+json" in data
    assert b"LookupError" not in data and b"defect" not in data  # the client learns nothing internal
    assert "a policy of route r failed on request" in capfd.readouterr().err
    assert (await fetch(port, "good"))[0] == 200
    assert policy.completed == [200]  # the failed one never passed check: nothing to complete


@pytest.mark.asyncio
async def test_parked_request_does_not_block_others(served: tuple[int, SlowIdentity]) -> None:
    port, policy = served
    parked = asyncio.ensure_future(fetch(port, "wait"))
    await asyncio.sleep(0.05)
    assert not parked.done()
    for _ in range(5):
        status, _ = await fetch(port, "cached")
        assert status == 200
    assert not parked.done()
    policy.release.set()
    status, _ = await parked
    assert status == 200
    assert sorted(policy.completed) == [200] * 6


@pytest.mark.asyncio
async def test_on_complete_runs_once_when_client_aborts(
    served: tuple[int, SlowIdentity], upstream: TestUpstream
) -> None:
    port, policy = served
    upstream.delay = 0.3
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-User: cached\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    for _ in range(100):
        if policy.completed:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.4)  # the late upstream answer must not complete it a second time
    assert policy.completed == [499]
