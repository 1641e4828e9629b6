"""Failed-authentication throttling on an injected clock and failure table: a block is aged by moving the
clock, never by sleeping, and a compile context's own table keeps its counts apart from the worker's."""

from __future__ import annotations

import time

from fastgw.config.context import CompileContext
from fastgw.exchange import Exchange
from fastgw.policy import throttle_config
from fastgw.policy.chain import Denial
from fastgw.policy.throttle import FAILURES, FailureState, ThrottleSettings, throttled
from tests.support.clock import FakeClock

WRONG = Denial(401, "unauthorized", "the API key is not valid", "api_key.invalid")


def wrong_key(ex: Exchange) -> Denial:
    return WRONG


def right_key(ex: Exchange) -> None:
    return None


def request(ip: str = "192.0.2.7") -> Exchange:
    ex = Exchange(b"GET", b"/", b"1.1", [])
    ex.client_ip = ip
    return ex


def limits(failures: FailureState, clock: FakeClock) -> ThrottleSettings:
    """Blocked at the third failure in a minute, for five minutes."""
    return ThrottleSettings(60.0, 5, 1.0, 3, 300.0, failures=failures, clock=clock)


def test_a_block_lasts_block_seconds_on_the_injected_clock() -> None:
    clock = FakeClock(1_000_000.0)
    failures = FailureState()
    settings = ThrottleSettings(
        window=60.0,
        slow_after=5,
        delay=1.0,
        block_after=3,
        block_seconds=300.0,
        failures=failures,
        clock=clock,
    )
    assert [throttled(request(), wrong_key, settings, ()) for _ in range(3)] == [WRONG] * 3
    refused = throttled(request(), right_key, settings, ())  # blocked before the key is even looked at
    assert isinstance(refused, Denial) and refused.status == 429
    assert refused.headers == ((b"retry-after", b"300"),)
    assert throttled(request("192.0.2.8"), right_key, settings, ()) is None, "another client is not blocked"
    clock.advance(299.5)
    refused = throttled(request(), right_key, settings, ())
    assert isinstance(refused, Denial) and refused.headers == ((b"retry-after", b"1"),)
    clock.advance(0.5)
    assert throttled(request(), right_key, settings, ()) is None
    assert not failures.blocked and "192.0.2.7" not in FAILURES.blocked, "the worker's table saw nothing"


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = FakeClock(1_000_000.0)
    settings = ThrottleSettings(
        window=60.0,
        slow_after=5,
        delay=1.0,
        block_after=3,
        block_seconds=300.0,
        failures=FailureState(),
        clock=clock,
    )
    for _ in range(2):
        throttled(request(), wrong_key, settings, ())
    clock.advance(60.0)
    throttled(request(), wrong_key, settings, ())  # the first of a new window, not the third
    assert throttled(request(), right_key, settings, ()) is None


def test_a_context_with_its_own_table_gives_the_throttle_its_clock() -> None:
    clock = FakeClock(5.0)
    failures = FailureState()
    ctx = CompileContext("t.toml", failures=failures, clock=clock)
    throttle_config.compile(throttle_config.AuthThrottleSpec(), ctx)
    assert ctx.throttle.failures is failures and ctx.throttle.clock is clock


def test_the_worker_table_keeps_wall_time_whatever_the_context_clock() -> None:
    """Its entries outlive a compile: a test's fake time in them would block real clients later."""
    ctx = CompileContext("t.toml", clock=FakeClock(5.0))
    throttle_config.compile(throttle_config.AuthThrottleSpec(), ctx)
    assert ctx.throttle.failures is FAILURES and ctx.throttle.clock is time.time
