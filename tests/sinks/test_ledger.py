"""The usage ledger's worker half: exchanges summed per (day, consumer, key, team, model, provider, route),
unknown costs counted apart (never as 0), errors counted, a failed hand-off kept for the next, and the
LedgerReport message that carries the sums to the control process."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from fastgw.ai.adapter import Usage
from fastgw.ai.record import LlmRecord
from fastgw.codec.control_messages import LedgerReport, decode, encode
from fastgw.config.compiler import compile_config
from fastgw.control.usage_report import UsageQueryError, parse_query, row
from fastgw.exchange import Exchange
from fastgw.sinks.ledger import LedgerSink
from fastgw.sinks.ledger_book import COST_NANOUSD_MAX, TOKENS_MAX, LedgerBook
from fastgw.store.base import UsageTotal
from tests.support.configs import MINIMAL

JUNE_10 = 1749513600.0  # 2025-06-10T00:00:00Z
ROUTE = dataclasses.replace(compile_config(MINIMAL.encode(), "<test>").routes[0], name="llm")


def exchange(
    consumer: str | None = "acme",
    model: str = "gpt-4o",
    usage: Usage | None = None,
    cost: float | None = 0.5,
    error: str = "",
    status: int = 200,
    ended: float = JUNE_10 + 60,
    endpoint: str = "chat",
) -> Any:
    record = LlmRecord(model=model, endpoint=endpoint, provider="oa", provider_model=model)
    record.usage = usage if usage is not None else Usage(10, 4, 2, 1, True)
    record.cost_usd = cost
    record.error = error
    identity = None if consumer is None else SimpleNamespace(consumer=consumer, team="blue", key_id="k_1")
    ex = Exchange(b"POST", b"/v1/chat/completions", b"HTTP/1.1", [])  # real: the compiled book checks
    ex.llm, ex.consumer, ex.route, ex.status, ex.ended = record, identity, ROUTE, status, ended
    return ex


def test_exchanges_sum_per_row() -> None:
    book = LedgerBook()
    sink = LedgerSink(book)
    plain = Exchange(b"GET", b"/", b"HTTP/1.1", [])  # no llm record: not counted
    sink.take([exchange(), exchange(), plain, exchange(consumer=None, cost=0.25)])
    rows = sorted(book.take())
    assert rows == [
        ("2025-06-10", "", "", "", "gpt-4o", "oa", "llm", 1, 10, 4, 2, 1, 250_000_000, 0, 0),
        ("2025-06-10", "acme", "k_1", "blue", "gpt-4o", "oa", "llm", 2, 20, 8, 4, 2, 10**9, 0, 0),
    ]
    assert book.take() == []  # taken once: never sent twice


def test_unknown_cost_and_errors_are_counted_apart() -> None:
    book = LedgerBook()
    LedgerSink(book).take(
        [
            exchange(cost=None),  # tokens without a price: unpriced
            exchange(cost=None, usage=Usage(), error="server_error", status=502),  # failed, no tokens
            exchange(cost=None, usage=Usage(), endpoint="count_tokens"),  # free, never unpriced
            exchange(cost=None, usage=Usage()),  # an answer without usage: its cost is unknown
        ]
    )
    [entry] = book.take()
    requests, prompt, _c, _ca, _r, cost, unpriced, errors = entry[7:]
    assert (requests, prompt, cost, unpriced, errors) == (4, 10, 0, 2, 1)


def test_absurd_counts_and_costs_are_clamped_so_the_report_and_the_store_take_them() -> None:
    """A provider reporting 10**20 tokens made a report orjson cannot write (past 2**64) or a row the
    store's 64-bit sums refuse, and every later batch waited behind it (control/ledger.py)."""
    book = LedgerBook()
    huge = Usage(10**20, 10**20, 10**20, 10**20, True)
    LedgerSink(book).take([exchange(usage=huge, cost=1e30), exchange(usage=huge, cost=float("nan"))])
    [entry] = book.take()
    assert entry[8:13] == (2 * TOKENS_MAX,) * 4 + (COST_NANOUSD_MAX,)
    message = LedgerReport(writer="a1b2", seq=1, entries=(entry,))  # type: ignore[arg-type]
    assert decode(encode(message)) == message


def test_days_are_utc_days_of_the_exchange_end() -> None:
    book = LedgerBook()
    LedgerSink(book).take([exchange(ended=JUNE_10 - 1), exchange(ended=JUNE_10)])
    assert sorted(r[0] for r in book.take()) == ["2025-06-09", "2025-06-10"]


def test_ledger_report_round_trips_on_the_control_channel() -> None:
    book = LedgerBook()
    LedgerSink(book).take([exchange(cost=0.125), exchange(consumer="b\u00e9", cost=None)])
    message = LedgerReport(writer="a1b2", seq=7, entries=tuple(sorted(book.take())))  # type: ignore[arg-type]
    assert decode(encode(message)) == message


def test_report_rows_show_unknown_cost_as_null() -> None:
    known = UsageTotal((("model", "m"),), 2, 10, 5, 0, 0, 0.5, 0, 0)
    partly = UsageTotal((), 3, 10, 5, 0, 0, 0.5, 1, 0)
    assert row(known) == {
        "model": "m",
        "requests": 2,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.5,
        "priced_cost_usd": 0.5,
        "unpriced_requests": 0,
        "errors": 0,
    }
    assert row(partly)["cost_usd"] is None and row(partly)["priced_cost_usd"] == 0.5


def test_query_parameters() -> None:
    june_15 = JUNE_10 + 5 * 86400
    month = parse_query({"period": "month", "group_by": "consumer,model"}, now=june_15)
    assert (month.since, month.until, month.group_by) == ("2025-06-01", "2025-06-15", ("consumer", "model"))
    assert parse_query({"period": "day"}, now=june_15).since == "2025-06-15"
    assert parse_query({"team": "blue"}).team == "blue"
    for bad, message in (
        ({"since": "June"}, "since: 'June' is not a day"),
        ({"period": "year"}, "period: 'year' is not one of day, month"),
        ({"group_by": "colour"}, "group_by: 'colour' is not one of"),
        ({"period": "day", "since": "2025-01-01"}, "either period or since/until"),
    ):
        with pytest.raises(UsageQueryError, match=message):
            parse_query(bad)
