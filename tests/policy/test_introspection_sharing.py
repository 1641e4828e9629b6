"""Requests that share one introspection call (policy/introspection.py): when the request that made the
call is cut (its client left: its Task cancelled mid-call), the others get the 503 of a failed call at
once; they used to wait on a future nothing would ever settle."""

from __future__ import annotations

import asyncio

import pytest

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending
from fastgw.policy.introspection import UNAVAILABLE, IntrospectionAuth, IntrospectionEndpoint
from fastgw.policy.rbac import Principal


class Hanging(IntrospectionAuth):
    """An introspection server that never answers."""

    async def _introspect(self, token: bytes) -> Principal | Denial:
        await asyncio.Event().wait()
        raise AssertionError("never")


def request(ip: str) -> Exchange:
    ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", b"Bearer the-token")])
    ex.client_ip = ip
    return ex


@pytest.mark.asyncio
async def test_the_sharers_of_a_call_whose_request_was_cut_get_a_503_not_a_wait_without_end() -> None:
    endpoint = IntrospectionEndpoint(None, b"Basic x", 1.0)  # type: ignore[arg-type]
    policy = Hanging("introspection", endpoint, 60.0, 5.0, 100, False)
    first, second = policy.check(request("192.0.2.1")), policy.check(request("192.0.2.2"))
    assert isinstance(first, Pending) and isinstance(second, Pending)
    caller = asyncio.ensure_future(first.awaitable)
    sharer = asyncio.ensure_future(second.awaitable)
    await asyncio.sleep(0.01)
    caller.cancel()  # the first client went away
    async with asyncio.timeout(2):
        assert await sharer == UNAVAILABLE
    with pytest.raises(asyncio.CancelledError):
        await caller
