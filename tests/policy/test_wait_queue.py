"""Throttling's queue (policy/wait_queue.py) as rate_limit.check uses it: a new request whose limit key
has waiters goes behind them even when the limit has room at that moment."""

from __future__ import annotations

import mmap

import pytest

from fastgw.exchange import Exchange
from fastgw.policy.chain import Pending
from fastgw.policy.rate_limit import LimitSpec, RateLimit
from fastgw.policy.wait_queue import WAITING
from tests.support.counter_tables import memory_table


def request(ip: str) -> Exchange:
    ex = Exchange(b"GET", b"/", b"1.1", [])
    ex.client_ip = ip
    return ex


@pytest.mark.asyncio
async def test_a_new_request_goes_behind_the_waiters_of_its_key_not_ahead() -> None:
    """Under sustained overload new arrivals took each slot as it freed (waiters are re-checked on the
    100 ms tick), and the waiters waited out max_wait for their 429."""
    table = memory_table(shards=1, cells=64)
    limit = LimitSpec("smooth", b"route:smooth", 1, 60.0, "route", b"", False, queue=10, max_wait=5.0)
    policy = RateLimit("rate_limit", (limit,), table)
    try:
        assert policy.check(request("192.0.2.1")) is None  # the window's one request
        waiter = policy.check(request("192.0.2.2"))
        assert isinstance(waiter, Pending)
        # Room again (as the window moving on frees it), before the tick re-checks the waiter.
        table.attach(mmap.mmap(-1, len(table.region)), 0, 1, 64)
        newcomer = policy.check(request("192.0.2.3"))
        assert isinstance(newcomer, Pending), "a new request took the room ahead of the one waiting"
        assert policy.check(request("192.0.2.4"), may_wait=False) is None  # a re-check is not held back
        other = LimitSpec("per-ip", b"route:per-ip", 1, 60.0, "ip", b"", False, queue=10, max_wait=5.0)
        by_ip = RateLimit("rate_limit", (other,), memory_table(shards=1, cells=64))
        assert by_ip.check(request("192.0.2.5")) is None
        assert isinstance(by_ip.check(request("192.0.2.5")), Pending)
        assert by_ip.check(request("192.0.2.6")) is None  # another key's waiters hold nobody else back
    finally:
        for queue in list(WAITING.queues):
            WAITING.discard(queue)
