"""Failed-authentication throttling: guessing keys or tokens gets slower, then is refused for a while.

Per worker, per client address and (for API keys) per presented key prefix: failures are counted in a
fixed window; past ``slow_after`` each further failure is answered only after ``delay`` seconds (a
``Pending`` sleep: nothing blocks, the connection just waits), and at ``block_after`` the address or prefix
is refused with 429 and ``Retry-After`` for ``block_seconds``, before any verification is spent on it.
A missing credential is not a failure (browsers and probes send none); a wrong one is. Counts live in the
worker and survive reloads; with N workers a client can fail up to N times the threshold at most.

The success path costs one attribute load and one truthiness test while nothing is blocked.

Memory: both tables are keyed by client input (addresses, key prefixes), so they are kept in time order
(a key whose window restarts moves to the end) and expired entries are dropped from the front as failures
arrive: the tables hold the clients that failed within the last ``window`` (blocked: ``block_seconds``),
not every client ever seen. MAX_TRACKED caps them besides; past it the oldest entry is evicted (never the
whole table: clearing it would unblock every blocked client at once).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending

# Addresses and prefixes tracked per worker, each table: an entry costs ~250 bytes (a key of <= 45 bytes,
# a tuple, a dict slot), so at most ~25 MiB under a spray of distinct failing clients within one window.
MAX_TRACKED: Final = 100_000
PRUNE_STEP: Final = 4  # expired entries dropped per failure: more than one, so pruning outpaces inserts


class FailureState:
    __slots__ = ("blocked", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, tuple[float, int]] = {}  # key -> (window start, failures)
        self.blocked: dict[str, float] = {}  # key -> blocked until (unix time)

    def refusal(self, keys: tuple[str, ...], now: float) -> Denial | None:
        blocked = self.blocked
        for key in keys:
            until = blocked.get(key)
            if until is not None:
                if now < until:
                    retry = b"%d" % max(1, math.ceil(until - now))  # a retry then is past the block
                    return Denial(
                        429,
                        "too-many-requests",
                        "too many failed authentication attempts; retry later",
                        "auth_throttle.blocked",
                        ((b"retry-after", retry),),
                    )
                del blocked[key]
        return None

    def recent(self, key: str, now: float, window: float) -> int:
        """Failures counted under ``key`` in its current window (0 once the window has passed)."""
        start, n = self.counts.get(key, (now, 0))
        return n if now - start < window else 0

    def failed(self, keys: tuple[str, ...], now: float, settings: ThrottleSettings) -> float:
        """Count a failure; return how long its answer should be delayed (0: at once)."""
        counts = self.counts
        self.prune(now, settings.window)
        delay = 0.0
        for key in keys:
            start, n = counts.get(key, (now, 0))
            if now - start >= settings.window:
                start, n = now, 0
                del counts[key]  # a new window: to the end, so the table stays in window-start order
            n += 1
            if n == 1 and len(counts) >= MAX_TRACKED:
                del counts[next(iter(counts))]
            counts[key] = (start, n)
            if n >= settings.block_after:
                blocked = self.blocked
                blocked.pop(key, None)
                if len(blocked) >= MAX_TRACKED:
                    del blocked[next(iter(blocked))]
                blocked[key] = now + settings.block_seconds
                del counts[key]
            elif n > settings.slow_after:
                delay = settings.delay
        return delay

    def prune(self, now: float, window: float) -> None:
        """Drop up to PRUNE_STEP expired entries from the front of each table (the oldest: both are kept
        in time order). Policies may differ in ``window``; an entry of a longer one may then go early,
        which only forgets some failures, never blocks anyone."""
        counts = self.counts
        for _ in range(PRUNE_STEP):
            first = next(iter(counts), None)
            if first is None or now - counts[first][0] < window:
                break
            del counts[first]
        blocked = self.blocked
        for _ in range(PRUNE_STEP):
            first = next(iter(blocked), None)
            if first is None or blocked[first] > now:
                break
            del blocked[first]


# The worker's failure counts. Process-global on purpose: they must outlive reloads (a client blocked
# before a reload stays blocked after it), and each worker counts its own clients (no cross-worker state).
# A compile may put another table in the settings (CompileContext.failures): a test counts apart.
FAILURES: Final = FailureState()


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    window: float
    slow_after: int
    delay: float
    block_after: int
    block_seconds: float
    # Where failures are counted and what time it is: the worker's table and the wall clock, unless the
    # compile context brought its own (config/context.py), so a test ages a block without sleeping.
    failures: FailureState = FAILURES
    clock: Callable[[], float] = time.time


def answer_later(denial: Denial, seconds: float) -> Pending:
    async def wait() -> Denial:
        await asyncio.sleep(seconds)
        return denial

    return Pending(wait())


def throttled(
    ex: Exchange,
    check: Callable[[Exchange], Denial | Pending | None],
    settings: ThrottleSettings | None,
    uncounted: tuple[Denial, ...],
    extra: Callable[[Exchange], tuple[str, ...]] | None = None,
) -> Denial | Pending | None:
    """A credential policy's check with failed-authentication throttling around it.

    A blocked client is refused before any credential work (one truthiness test otherwise). A wrong
    credential counts towards throttling (``extra(ex)``: more keys to count it under, e.g. a key prefix); a
    missing or duplicate one (``uncounted``), a Pending, or a policy without throttling returns its outcome
    as it is.
    """
    if settings is not None and settings.failures.blocked:
        refusal = settings.failures.refusal((ex.client_ip,), settings.clock())
        if refusal is not None:
            return refusal
    outcome = check(ex)
    if outcome is None or settings is None or not isinstance(outcome, Denial) or outcome in uncounted:
        return outcome
    return after_failure(ex, outcome, settings, extra(ex) if extra is not None else ())


def after_failure(
    ex: Exchange, outcome: Denial, settings: ThrottleSettings, extra: tuple[str, ...] = ()
) -> Denial | Pending:
    """Count a failed credential; answer it late once slowed, or refuse a key prefix already blocked."""
    now = settings.clock()
    failures = settings.failures
    if extra and failures.blocked:
        refusal = failures.refusal(extra, now)
        if refusal is not None:
            return refusal
    delay = failures.failed((ex.client_ip, *extra), now, settings)
    return answer_later(outcome, delay) if delay else outcome
