"""Throttling: a request over a rate limit waits in a bounded, fair queue instead of being refused.

A limit with ``queue = N`` treats its rate as a soft threshold. A request it would refuse parks (the
policy seam's Pending: the only Task on this path, and only for throttled requests) in the worker's queue
for that limit, and is admitted as soon as the limit has room again; the worker's 100 ms tick (and, for
concurrency limits, every completion) re-checks waiters and expires those past ``max_wait`` with a 429.
Beyond the hard limit, a full queue, the request is refused at once.

Fairness: waiters are grouped by owner (the consumer, else the client address) and served round-robin, so
a consumer with fifty waiting requests delays a quiet consumer's one request by at most one turn; and one
owner may hold at most half the queue, so a noisy consumer cannot fill it and leave others only
refusals. A new request whose limit key has waiters goes behind them even when the limit has room at
that moment: otherwise, under sustained overload, new arrivals took each slot as it freed and the
waiters (re-checked on the tick) waited out max_wait for their 429. Queues are per worker: across n
workers up to n x N requests wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial

# Re-checks one waiter: None (admitted, counted) or the Denial it would get now.
Recheck = Callable[[Exchange], "Denial | None"]


class Waiter:
    __slots__ = ("deadline", "ex", "future", "key", "owner")

    def __init__(
        self,
        ex: Exchange,
        owner: bytes,
        future: asyncio.Future[Denial | None],
        deadline: float,
        key: str | bytes,
    ) -> None:
        self.ex = ex
        self.owner = owner
        self.future = future
        self.deadline = deadline
        self.key = key  # what the limit counts it by


class WaitQueue:
    """The waiters of one limit in this worker, grouped by owner."""

    __slots__ = ("_by_key", "_by_owner", "_turns", "expired", "length", "max_length", "max_wait", "recheck")

    def __init__(self, max_length: int, max_wait: float, recheck: Recheck, expired: Denial) -> None:
        self.max_length = max_length
        self.max_wait = max_wait
        self.recheck = recheck
        self.expired = expired  # the answer of a request that waited max_wait in vain
        self.length = 0
        self._by_owner: dict[bytes, deque[Waiter]] = {}
        self._turns: deque[bytes] = deque()  # owners with waiters, in round-robin order
        self._by_key: dict[str | bytes, int] = {}  # the limit's key -> its waiters

    def waiting_for(self, key: str | bytes) -> bool:
        """Whether requests counted by ``key`` wait: a new one goes behind them (rate_limit.check), never
        takes the room the tick would have given them."""
        return key in self._by_key

    def admit(self, ex: Exchange, now: float, key: str | bytes = b"") -> asyncio.Future[Denial | None] | None:
        """Park ``ex`` (counted by ``key``); None when the queue (or this owner's half of it) is full."""
        consumer: Any = ex.consumer
        owner = consumer.consumer_id.encode() if consumer is not None else ex.client_ip.encode()
        mine = self._by_owner.get(owner)
        if self.length >= self.max_length or (mine is not None and len(mine) >= max(1, self.max_length // 2)):
            return None
        future: asyncio.Future[Denial | None] = asyncio.get_running_loop().create_future()
        if mine is None:
            mine = self._by_owner[owner] = deque()
            self._turns.append(owner)
        mine.append(Waiter(ex, owner, future, now + self.max_wait, key))
        self._by_key[key] = self._by_key.get(key, 0) + 1
        self.length += 1
        WAITING.add(self)
        return future

    def service(self, now: float) -> None:
        """Admit waiters round-robin while the limit has room; expire those past their deadline."""
        expired = self.expired
        turns = self._turns
        stalled = 0  # owners in a row whose head waiter could not be admitted
        while turns and stalled < len(turns):
            owner = turns[0]
            waiters = self._by_owner[owner]
            head = waiters[0]
            if head.future.done() or head.ex.status:
                outcome: Denial | None = expired  # cancelled, or the client left: just end its wait
            elif now >= head.deadline:
                outcome = self._expire(head)
            else:
                outcome = self.recheck(head.ex)
                if outcome is not None:
                    stalled += 1
                    turns.rotate(-1)
                    continue
            waiters.popleft()
            self._left(head)
            if not head.future.done():
                head.future.set_result(outcome)
            turns.popleft()
            if waiters:
                turns.append(owner)  # next turn goes to the next owner
            else:
                del self._by_owner[owner]
            stalled = 0
        # Waiters that could not be admitted may still be past their deadline (behind an admissible one).
        for owner in list(turns):
            waiters = self._by_owner[owner]
            while waiters and now >= waiters[0].deadline:
                head = waiters.popleft()
                self._left(head)
                if not head.future.done():
                    head.future.set_result(self._expire(head))
            if not waiters:
                del self._by_owner[owner]
                turns.remove(owner)
        if not self.length:
            WAITING.discard(self)

    def _left(self, waiter: Waiter) -> None:
        self.length -= 1
        left = self._by_key[waiter.key] - 1
        if left:
            self._by_key[waiter.key] = left
        else:
            del self._by_key[waiter.key]

    def _expire(self, waiter: Waiter) -> Denial | None:
        """The answer of a waiter past its deadline: admitted if there is room at this last look, else the
        429 for a wait in vain, with the limit's headers as they stand now (Retry-After: when a request
        would be admitted, not a guess)."""
        outcome = self.recheck(waiter.ex)
        if outcome is None:
            return None
        e = self.expired
        return Denial(e.status, e.problem, e.detail, e.reason, outcome.headers)


class Waiting:
    """Every queue of this worker that has waiters; the worker tick services them."""

    def __init__(self) -> None:
        self.queues: set[WaitQueue] = set()

    def add(self, queue: WaitQueue) -> None:
        self.queues.add(queue)

    def discard(self, queue: WaitQueue) -> None:
        self.queues.discard(queue)

    def tick(self, now: float) -> None:
        for queue in list(self.queues):
            queue.service(now)


WAITING: Final = Waiting()
