"""Budgets on the request path, without a gateway: whom a budget counts (key, consumer, team, route),
consumers' own numbers, the headers an answer carries, and what an answer without usage settles to."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import Usage
from fastgw.ai.budget_alerts import Alerts
from fastgw.ai.budget_headers import Fixed, limit_headers, reset_text
from fastgw.ai.budgets import Budget, Budgets, Limit, rounded
from fastgw.ai.price_config import PriceSpec, compile_prices
from fastgw.ai.record import LlmRecord
from fastgw.config.errors import ConfigError
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.cluster_slot import CLUSTER
from fastgw.counters.quota import QUOTAS
from fastgw.counters.table import CounterTable
from fastgw.exchange import Exchange
from fastgw.policy.identity import KeyIdentity
from fastgw.snapshot import RedisSettings
from tests.support.counter_tables import memory_table


@pytest.fixture(autouse=True)
def quota_book() -> Iterator[None]:
    """Day budgets count in the worker's global quota book: each test starts from an empty one."""
    saved = QUOTAS.base, QUOTAS.pending
    QUOTAS.base, QUOTAS.pending = {}, {}
    yield
    QUOTAS.base, QUOTAS.pending = saved


def table() -> CounterTable:
    return memory_table()


def request_from(consumer: KeyIdentity | None, client_ip: str = "192.0.2.1") -> Exchange:
    """A request as budgets read it: who called, from where (a real Exchange: the compiled build
    checks the type)."""
    ex = Exchange(b"POST", b"/v1/chat/completions", b"HTTP/1.1", [])
    ex.consumer = consumer
    ex.client_ip = client_ip
    return ex


def identity(
    consumer: str, team: str = "", key: str = "k1", limits: dict[str, int] | None = None
) -> KeyIdentity:
    return KeyIdentity(
        key_id=key,
        consumer_id=f"id-{consumer}",
        consumer=consumer,
        team=team,
        roles=frozenset(),
        scopes=frozenset(),
        routes=None,
        expires=0.0,
        limits=limits or {},
    )


def budgets(key: str, *limits: Limit) -> Budgets:
    return Budgets((Budget("b", "llm:b", key, limits),), table(), 100)


TOKENS_PER_DAY = Limit("tokens_per_day", "tokens", "day", 1000)


def test_a_team_budget_is_shared_by_the_teams_consumers_and_a_consumer_without_a_team_is_its_own() -> None:
    team = budgets("team", TOKENS_PER_DAY)
    estimate = 100 + 400 // 4 + 1  # max_tokens, then the body's bytes / 4
    alice = request_from(identity("alice", "red"))
    bob = request_from(identity("bob", "red"))
    carol = request_from(identity("carol"))
    assert team.reserve(alice, None, 400, {"max_tokens": 100}).refusal is None
    hold = team.reserve(bob, None, 400, {"max_tokens": 100})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - 2 * estimate)) in hold.headers
    hold = team.reserve(carol, None, 400, {"max_tokens": 100})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - estimate)) in hold.headers


def test_a_consumers_own_numbers_override_the_routes() -> None:
    per_consumer = budgets("consumer", TOKENS_PER_DAY, Limit("usd_per_day", "usd", "day", 5_000_000))
    premium = request_from(identity("p", limits={"b.tokens_per_day": 50000, "b.usd_per_day_cents": 0}))
    hold = per_consumer.reserve(premium, None, 400, {"max_tokens": 100})
    assert hold.refusal is not None and hold.refusal[1] == "insufficient_quota"  # 0 cents: switched off
    premium = request_from(identity("q", limits={"b.tokens_per_day": 50000}))
    hold = per_consumer.reserve(premium, None, 400, {"max_tokens": 100})
    assert hold.refusal is None
    assert (b"x-ratelimit-limit-tokens", b"50000") in hold.headers


def test_a_consumer_whose_numbers_change_gets_its_new_cap_and_keeps_its_count() -> None:
    """Callers are remembered per identity object; a changed consumer is a new one (fastgw/policy/
    identity.py): its new cap applies at once, counted in the same place as before."""
    per_consumer = budgets("consumer", TOKENS_PER_DAY)
    estimate = 100 + 400 // 4 + 1
    before = request_from(identity("p"))
    assert per_consumer.reserve(before, None, 400, {"max_tokens": 100}).refusal is None
    assert per_consumer.reserve(before, None, 400, {"max_tokens": 100}).refusal is None
    upgraded = request_from(identity("p", limits={"b.tokens_per_day": 3 * estimate}))
    hold = per_consumer.reserve(upgraded, None, 400, {"max_tokens": 100})
    assert hold.refusal is None
    assert (b"x-ratelimit-limit-tokens", b"%d" % (3 * estimate)) in hold.headers
    assert (b"x-ratelimit-remaining-tokens", b"0") in hold.headers  # the two before count too
    downgraded = request_from(identity("p", limits={"b.tokens_per_day": 0}))
    assert per_consumer.reserve(downgraded, None, 400, {"max_tokens": 100}).refusal is not None
    hold = per_consumer.reserve(before, None, 400, {"max_tokens": 100})  # the route's 1000 for this one
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - 4 * estimate)) in hold.headers


def test_an_api_key_budget_counts_each_key_and_anonymous_callers_by_address() -> None:
    per_key = budgets("api_key", Limit("requests_per_minute", "requests", "minute", 1))
    assert per_key.reserve(request_from(identity("a", key="k1")), None, 10, None).refusal is None
    assert per_key.reserve(request_from(identity("a", key="k2")), None, 10, None).refusal is None
    refused = per_key.reserve(request_from(identity("a", key="k1")), None, 10, None)
    assert refused.refusal is not None and refused.refusal[1] == "rate_limit_exceeded"
    assert refused.retry > 0 and refused.first is None  # nothing stays counted for a refusal
    assert per_key.reserve(request_from(None, "192.0.2.7"), None, 10, None).refusal is None
    assert per_key.reserve(request_from(None, "192.0.2.8"), None, 10, None).refusal is None


def test_an_answer_that_never_started_gives_its_reservation_back_and_one_cut_short_keeps_it() -> None:
    route = budgets("route", TOKENS_PER_DAY)
    caller = request_from(None)
    hold = route.reserve(caller, None, 400, {})
    hold.settle(LlmRecord("m", "chat"), answered=False)  # every provider call failed: nothing used
    hold = route.reserve(caller, None, 400, {})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - 201)) in hold.headers
    hold.settle(LlmRecord("m", "chat"), answered=True)  # a stream cut short, no usage: the estimate stays
    record = LlmRecord("m", "chat", usage=Usage(30, 20, reported=True))
    hold = route.reserve(caller, None, 400, {})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - 402)) in hold.headers
    hold.settle(record, answered=True)
    hold = route.reserve(caller, None, 400, {})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (1000 - 201 - 50 - 201)) in hold.headers


def test_reset_times_are_written_as_openai_writes_them() -> None:
    assert [reset_text(s) for s in (0.25, 1.0, 8.2, 360.0, 3723.0)] == [
        b"250ms",
        b"1s",
        b"9s",
        b"6m0s",
        b"1h2m3s",
    ]


RESETS = st.floats(min_value=0.0, max_value=90_000.0, allow_nan=False)
LEFTS = st.floats(min_value=-10.0, max_value=1e12, allow_nan=False)


def two_limits() -> tuple[Fixed, Fixed]:
    return Fixed("requests_per_minute", False, 60, "minute"), Fixed("tokens_per_day", True, 10**6, "day")


@given(st.lists(st.tuples(LEFTS, RESETS, LEFTS, RESETS), min_size=1, max_size=12))
def test_the_headers_of_a_caller_kept_from_answer_to_answer_are_those_written_afresh(
    answers: list[tuple[float, float, float, float]],
) -> None:
    """A caller's Fixed keeps the reset fields of the last whole second between answers: whatever the
    order of resets (sub-second, the same second, another), its headers equal a fresh Fixed's."""
    kept = two_limits()
    for requests_left, requests_reset, tokens_left, tokens_reset in answers:
        fresh = two_limits()
        for shown in ((True, True), (False, True), (True, False)):
            a, b = (kept[i] if shown[i] else None for i in (0, 1))
            c, d = (fresh[i] if shown[i] else None for i in (0, 1))
            assert limit_headers(a, requests_left, requests_reset, b, tokens_left, tokens_reset) == (
                limit_headers(c, requests_left, requests_reset, d, tokens_left, tokens_reset)
            )


def test_a_model_without_a_price_is_estimated_at_0_and_what_a_priced_target_served_still_counts() -> None:
    """The first target's price is the estimate's: without one, no USD entry was made, so a priced
    fallback (or a weighted sibling) that served was never counted either; a spent budget never refused."""
    spend = budgets("route", Limit("usd_per_day", "usd", "day", 1_000_000))
    caller = request_from(None)
    for _ in range(2):  # $0.60 each, served by a priced target
        hold = spend.reserve(caller, None, 400, {})
        assert hold.refusal is None and hold.first is not None and hold.first.amount == 0
        served = LlmRecord("m", "chat", usage=Usage(10, 10, reported=True))
        served.cost_usd = 0.6
        hold.settle(served, answered=True)
    refused = spend.reserve(caller, None, 400, {})
    assert refused.refusal is not None and refused.refusal[1] == "insufficient_quota"  # $1.20 of $1
    unpriced = budgets("route", Limit("usd_per_day", "usd", "day", 1_000_000))
    hold = unpriced.reserve(caller, None, 400, {})
    hold.settle(LlmRecord("m", "chat", usage=Usage(10, 10, reported=True)), answered=True)  # no price
    assert unpriced.reserve(caller, None, 400, {}).refusal is None  # nothing counted
    off = budgets("route", Limit("usd_per_day", "usd", "day", 0))
    hold = off.reserve(request_from(None), None, 400, {})
    assert hold.refusal is not None and hold.refusal[1] == "insufficient_quota"


def test_the_answer_estimate_is_the_larger_cap_times_n() -> None:
    """A client naming a small max_completion_tokens beside a large max_tokens reserved the small one
    while its provider got the large one; n answers were estimated as one."""
    route = budgets("route", Limit("tokens_per_day", "tokens", "day", 10**9))
    hold = route.reserve(
        request_from(None), None, 400, {"max_completion_tokens": 16, "max_tokens": 500, "n": 3}
    )
    assert hold.tokens == 400 // 4 + 1 + 3 * 500
    assert route.reserve(request_from(None), None, 400, {"max_tokens": 50, "n": True}).tokens == 101 + 50


def test_an_answer_cut_short_keeps_its_estimate_whatever_usage_came_before_the_cut() -> None:
    """Anthropic's first stream event reports the prompt and 1 output token; a stream cut after 7,000
    tokens settled at prompt + 1, its estimate given back: a way round any token or spend budget."""
    route = budgets("route", Limit("tokens_per_day", "tokens", "day", 10_000))
    caller = request_from(None)
    hold = route.reserve(caller, None, 400, {"max_tokens": 300})
    cut = LlmRecord("m", "chat", usage=Usage(101, 1, reported=True))
    cut.error = "client_gone"
    hold.settle(cut, answered=True)
    after = route.reserve(caller, None, 400, {"max_tokens": 300})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (10_000 - 2 * 401)) in after.headers  # kept whole
    more = LlmRecord("m", "chat", usage=Usage(101, 900, reported=True))  # reported past the estimate
    more.error = "first_token_timeout"
    after.settle(more, answered=True)
    last = route.reserve(caller, None, 400, {"max_tokens": 1})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (10_000 - 401 - 1001 - 102)) in last.headers


def test_calls_sent_and_never_answered_before_the_one_that_ended_the_request_keep_an_estimate_each() -> None:
    """Target A timed out after the request left (twice: a retry), then fallback B answered: only B's
    usage was counted, though A's provider may bill both calls (a budget a slow provider let through)."""
    route = budgets("route", Limit("tokens_per_day", "tokens", "day", 10_000))
    caller = request_from(None)
    hold = route.reserve(caller, None, 400, {"max_tokens": 99})  # estimate 101 + 99 = 200
    served = LlmRecord("m", "chat", usage=Usage(30, 20, reported=True))
    served.unanswered = 2  # as ai/attempts.py counts them
    hold.settle(served, answered=True)
    after = route.reserve(caller, None, 400, {"max_tokens": 99})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (10_000 - 50 - 2 * 200 - 200)) in after.headers
    failed = LlmRecord("m", "chat")  # then the fallback refused too (a 5xx): no usage, nothing billed
    failed.unanswered, failed.error = 1, "provider_unavailable"
    after.settle(failed, answered=False)  # the reservation stays, for the one unanswered call
    last = route.reserve(caller, None, 400, {"max_tokens": 99})
    assert (b"x-ratelimit-remaining-tokens", b"%d" % (10_000 - 450 - 200 - 200)) in last.headers


def test_the_shared_store_down_with_failure_closed_answers_503_and_counts_nothing() -> None:
    route = budgets("route", TOKENS_PER_DAY)
    down = ClusterCounts(
        RedisSettings(url="redis://127.0.0.1:1", flush_interval=0.05, timeout=0.1, failure="closed")
    )
    down.up = False
    saved, CLUSTER.current = CLUSTER.current, down
    try:
        hold = route.reserve(request_from(None), None, 400, {})
    finally:
        CLUSTER.current = saved
    assert hold.refusal is not None and hold.status == 503 and hold.refusal[1] == "unavailable"
    assert hold.first is None and not down.pending


@pytest.mark.parametrize("reserved_in", ["node", "cluster"])
def test_a_reservation_is_settled_where_it_was_counted_across_a_reload_that_changes_the_store(
    reserved_in: str,
) -> None:
    """A reload may add or remove [rate_limits.redis] while an answer streams: its correction goes where
    its estimate was counted (the node's quota book, or the cluster's batch for Redis), never to the
    other: a day's count under a cluster window index, or a quota code sent to Redis, counts nothing."""
    route = budgets("route", TOKENS_PER_DAY)
    shared = ClusterCounts(
        RedisSettings(url="redis://127.0.0.1:1", flush_interval=0.05, timeout=0.1, failure="open")
    )
    shared.up = False  # down and failure "open": reserve counts on the node's table and in the batch
    before, after = (None, shared) if reserved_in == "node" else (shared, None)
    saved = CLUSTER.current
    try:
        CLUSTER.current = before
        hold = route.reserve(request_from(None), None, 400, {})
        assert hold.first is not None and hold.refusal is None
        reserved = hold.tokens
        CLUSTER.current = after  # the reload
        hold.settle(LlmRecord("m", "chat", usage=Usage(30, 20, reported=True)), True)
    finally:
        CLUSTER.current = saved
    if reserved_in == "node":
        assert sum(cell[0] for cell in QUOTAS.pending.values()) == 50  # the estimate, then corrected
        assert not shared.pending
    else:
        assert list(shared.pending.values()) == [50]
        assert not QUOTAS.pending or sum(cell[0] for cell in QUOTAS.pending.values()) == 0
    assert reserved != 50


def test_the_estimates_cost_is_the_price_tables_on_either_side_of_a_price_change() -> None:
    """The estimate is priced from per-token rates kept per target and day: the same micro-USD as the
    price table's cost of the same tokens, and the new rate from the day a new price takes effect."""
    spend = budgets("route", Limit("usd_per_day", "usd", "day", 10**9))
    entries = (
        PriceSpec(provider="p", model="m", input=3.0, output=15.0, effective=datetime.date(2026, 1, 1)),
        PriceSpec(provider="p", model="m", input=1.25, output=7.5, effective=datetime.date(2026, 6, 1)),
    )
    spend.prices = compile_prices(entries, {"p": "openai"}, lambda key, reason: ConfigError("x", key, reason))
    last_day = datetime.datetime(2026, 5, 31, 23, 59, tzinfo=datetime.UTC).timestamp()
    estimates = []
    for now in (last_day, last_day + 120, last_day):
        expected = spend.cost("p", "m", Usage(1234, 567, reported=True), now)
        estimates.append(spend.estimate_cost("p", "m", 1234, 567, now))
        assert estimates[-1] == expected
    assert estimates == [12207, 5795, 12207]  # 1234 x 3 + 567 x 15, then 1234 x 1.25 + 567 x 7.5
    assert spend.estimate_cost("p", "unpriced", 10, 10, last_day) == -1


@given(
    st.one_of(
        st.floats(-1e15, 1e15, allow_nan=False),
        st.integers(-(10**12), 10**12).map(lambda whole: whole + 0.5),  # halves: to the even neighbour
    )
)
def test_spend_is_rounded_to_micro_usd_as_round_does(number: float) -> None:
    assert rounded(number) == round(number)


@pytest.mark.parametrize("period", ["minute", "day"])
def test_an_alert_flag_gives_its_cell_back_once_its_minute_is_long_past_and_a_days_never(
    capsys: pytest.CaptureFixture[str], period: str
) -> None:
    """A threshold alert marks its period in a flag cell of the node's table (once per period). A
    minute's flag is recorded with its length, so the table can give the cell to a new key two minutes
    on; a day's is kept (its code says nothing of its length)."""
    t = memory_table(1, 1)  # one cell: the flag's, or the new key's
    limit = Limit(f"tokens_per_{period}", "tokens", period, 1000)
    route = Budgets((Budget("b", "llm:b", "route", (limit,)),), t, 100)
    route.alerts = Alerts("llm", (50,), (), b"s" * 32, t)
    window = 28_000_000 if period == "minute" else -41_588  # a minute index, or a day's quota code
    route.alert(0, window, "route", 50, 600.0, 1000, False)
    assert "budget alert" in capsys.readouterr().err
    t.count(99, t.locate(99), 28_000_003, 0.0, 10.0, 1, 60.0)  # a new minute key, three minutes on
    assert (t.table_full == 0) == (period == "minute"), "the flag's cell given away (or kept) wrongly"


def test_a_last_call_that_failed_after_it_was_sent_may_be_billed() -> None:
    """A call with no answer within total_timeout (sent: the provider may be generating, and bill)
    gave its whole reservation back: requests with a huge max_tokens past the deadline cost nothing."""
    from fastgw.ai.relay import provider_may_bill

    timed_out = LlmRecord("m", "chat")
    timed_out.at_provider, timed_out.error = True, "total_timeout"  # as ai/attempts.py leaves it
    assert provider_may_bill(timed_out, False, 504)
    refused = LlmRecord("m", "chat")
    refused.at_provider, refused.error = False, "provider_unavailable"  # a 5xx status, or no connection
    assert not provider_may_bill(refused, False, 502)
    cut = LlmRecord("m", "chat")
    cut.at_provider, cut.error = True, "client_gone"
    assert provider_may_bill(cut, False, 499)


def test_a_raised_cap_has_its_thresholds_alerted_again_within_the_period(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The once-per-period flag named the limit, key and threshold only: a consumer whose day cap was
    raised after its 100 % alert never heard of the new cap's 80 % or 100 % that day."""
    t = table()
    route = Budgets((Budget("b", "llm:b", "route", (TOKENS_PER_DAY,)),), t, 100)
    route.alerts = Alerts("llm", (100,), (), b"s" * 32, t)
    route.alert(0, -41_588, "route", 100, 1000.0, 1000, True)
    route.alert(0, -41_588, "route", 100, 1000.0, 1000, True)  # the same cap: once
    assert capsys.readouterr().err.count("budget alert") == 1
    route.alert(0, -41_588, "route", 100, 5000.0, 5000, False)  # the cap raised to 5,000 that day
    assert capsys.readouterr().err.count("budget alert") == 1


def test_an_unpriced_target_that_served_adds_nothing_and_unanswered_calls_before_it_count() -> None:
    """A priced first target reserves its estimate; an unpriced fallback that served left that estimate
    counted (the docs: an unpriced target adds nothing), and with calls to the priced one sent and never
    answered before it, still one estimate whatever their number."""
    from types import SimpleNamespace

    spend = budgets("route", Limit("usd_per_day", "usd", "day", 10**12))
    spend.prices = compile_prices((), {"openai": "openai"}, lambda key, reason: ValueError(reason))  # type: ignore[arg-type, return-value]
    target = SimpleNamespace(
        provider=SimpleNamespace(name="openai"), target=SimpleNamespace(model="gpt-4o-mini")
    )
    model = SimpleNamespace(targets=(target,))
    caller = request_from(None)

    def used_after(unanswered: int) -> tuple[int, float]:
        hold = spend.reserve(caller, model, 4000, {"max_tokens": 1000})
        assert hold.first is not None and hold.first.amount > 0
        served = LlmRecord("m", "chat", usage=Usage(10, 10, reported=True))  # cost_usd None: unpriced
        served.unanswered = unanswered
        before = hold.first.used
        hold.settle(served, answered=True)
        after = spend.reserve(caller, model, 4000, {"max_tokens": 1000})
        assert after.first is not None
        after.settle(LlmRecord("m", "chat"), answered=False)  # given back: only the settle above counts
        return hold.first.amount, after.first.used - before

    estimate, added = used_after(0)
    assert added == 0
    estimate, added = used_after(2)
    assert added == 2 * estimate


def test_a_refusals_alert_does_not_take_the_place_of_the_limits_own_100_percent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A request refused for its size while 10 % was used raised the 100 % alert, flagged for the day:
    when the limit really reached 100 % later, no alert came. A refusal's alert is flagged apart."""
    t = table()
    route = Budgets((Budget("b", "llm:b", "route", (TOKENS_PER_DAY,)),), t, 100)
    route.alerts = Alerts("llm", (100,), (), b"s" * 32, t)
    route.alert(0, -41_588, "route", 100, 100.0, 1000, True)  # refused: 100 of 1,000 used
    route.alert(0, -41_588, "route", 100, 100.0, 1000, True)  # refused again: once a day
    route.alert(0, -41_588, "route", 100, 1000.0, 1000, False)  # the limit reached
    assert capsys.readouterr().err.count("budget alert") == 2


def test_estimates_kept_for_unanswered_calls_raise_the_thresholds_they_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    t = table()
    route = Budgets((Budget("b", "llm:b", "route", (TOKENS_PER_DAY,)),), t, 100)
    route.alerts = Alerts("llm", (50,), (), b"s" * 32, t)
    hold = route.reserve(request_from(None), None, 400, {"max_tokens": 199})  # estimate 300
    failed = LlmRecord("m", "chat")  # no usage: the fallback refused; two calls before it unanswered
    failed.unanswered, failed.error = 2, "provider_unavailable"
    hold.settle(failed, answered=False)  # 600 of 1,000 kept
    assert '"threshold":50' in capsys.readouterr().err
