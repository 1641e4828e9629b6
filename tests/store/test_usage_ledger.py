"""The usage ledger in the store, on SQLite and PostgreSQL: deltas add up (an upsert that adds, never a
replace), queries filter by day and dimension and group by any of them, and sums match a model kept in
Python (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.store.base import UsageDelta, UsageQuery
from fastgw.store.usage_sql import select
from tests.support.stores import StoreMaker

FIXTURE_PER_EXAMPLE = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def delta(
    day: str = "2025-06-10",
    consumer: str = "acme",
    model: str = "gpt-4o",
    requests: int = 1,
    prompt: int = 10,
    completion: int = 5,
    cost: int = 500,
    unpriced: int = 0,
    errors: int = 0,
) -> UsageDelta:
    return UsageDelta(
        day,
        consumer,
        "k_1",
        "blue",
        model,
        "oa",
        "llm",
        requests,
        prompt,
        completion,
        1,
        2,
        cost,
        unpriced,
        errors,
    )


def test_deltas_add_up_in_one_row(make_store: StoreMaker) -> None:
    store = make_store()
    store.add_usage([delta(), delta(requests=2, prompt=20, cost=250)], now=1.0)
    store.add_usage([delta(errors=1, unpriced=1)], now=2.0)
    [total] = store.usage(UsageQuery())
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (4, 40, 15)
    assert (total.cached_tokens, total.reasoning_tokens, total.unpriced, total.errors) == (3, 6, 1, 1)
    assert total.priced_cost_usd == 1.25e-6  # 1250 nano-USD, exactly
    assert total.group == ()


def test_filters_and_group_by(make_store: StoreMaker) -> None:
    store = make_store()
    store.add_usage(
        [
            delta("2025-06-09", "acme", "gpt-4o", cost=1000),
            delta("2025-06-10", "acme", "o3", cost=3000),
            delta("2025-06-10", "zeta", "gpt-4o", cost=2000),
            delta("2025-06-11", "", "gpt-4o", cost=0),
        ],
        now=1.0,
    )
    by_model = store.usage(UsageQuery(group_by=("model",)))
    assert [(t.group, t.requests) for t in by_model] == [((("model", "gpt-4o"),), 3), ((("model", "o3"),), 1)]
    one_day = store.usage(UsageQuery(since="2025-06-10", until="2025-06-10", group_by=("consumer",)))
    assert [(dict(t.group)["consumer"], t.priced_cost_usd) for t in one_day] == [
        ("acme", 3e-6),
        ("zeta", 2e-6),
    ]
    assert store.usage(UsageQuery(consumer="", group_by=("day",)))[0].group == (("day", "2025-06-11"),)
    assert store.usage(UsageQuery(model="nope")) == []
    by_two = store.usage(UsageQuery(consumer="acme", group_by=("day", "model")))
    assert [dict(t.group) for t in by_two] == [
        {"day": "2025-06-10", "model": "o3"},
        {"day": "2025-06-09", "model": "gpt-4o"},
    ]


def test_group_names_never_become_sql_unchecked() -> None:
    with pytest.raises(ValueError, match="cannot group by 'model; DROP TABLE llm_usage'"):
        select(UsageQuery(group_by=("model; DROP TABLE llm_usage",)), "?")


@FIXTURE_PER_EXAMPLE
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10**6), st.integers(0, 10**6)),
            max_size=5,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_sums_equal_a_python_model(make_store: StoreMaker, batches: list[list[tuple[str, int, int]]]) -> None:
    store = make_store()  # the same database for every example: start from what it holds
    expected: dict[str, list[int]] = {
        dict(t.group)["consumer"]: [t.requests, t.prompt_tokens, t.completion_tokens]
        for t in store.usage(UsageQuery(group_by=("consumer",)))
    }
    for i, batch in enumerate(batches):
        store.add_usage([delta(consumer=c, prompt=p, completion=n) for c, p, n in batch], now=float(i))
        for c, p, n in batch:
            sums = expected.setdefault(c, [0, 0, 0])
            sums[0] += 1
            sums[1] += p
            sums[2] += n
    got = {
        dict(t.group)["consumer"]: [t.requests, t.prompt_tokens, t.completion_tokens]
        for t in store.usage(UsageQuery(group_by=("consumer",)))
    }
    assert got == expected
    store.close()


def test_a_batch_is_added_once_however_often_it_is_written(make_store: StoreMaker) -> None:
    """The spool's replay guarantee (control/ledger.py): a batch number at or below the writer's highest
    applied is skipped, in the same transaction as the upsert; other writers are counted apart."""
    store = make_store()
    assert store.add_usage([delta()], 1e9, ("run-a", 1))
    assert not store.add_usage([delta()], 1e9, ("run-a", 1))  # replayed after a commit: nothing added
    assert store.add_usage([delta(requests=2)], 1e9, ("run-a", 2))
    assert not store.add_usage([delta(requests=5)], 1e9, ("run-a", 1))  # an older one: already in
    assert store.add_usage([delta(requests=4)], 1e9, ("run-b", 1))  # another run's numbers are its own
    assert store.add_usage([delta(requests=8)], 1e9)  # no number: always added
    [total] = store.usage(UsageQuery())
    assert total.requests == 15
    assert store.delete_rows_before("ledger_batches", "updated", 2e9) == 2  # retention trims them
    assert store.add_usage([], 1e9, ("run-a", 3))
