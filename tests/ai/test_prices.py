"""Prices: the shipped table, [[llm.prices]] over it, effective days, the cost of each token kind, unknown
prices as None (never 0), bad entries as precise config errors, and `fastgw prices check`."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.__main__ import main
from fastgw.ai.adapter import Usage
from fastgw.ai.config import LlmConfig
from fastgw.ai.price_config import shipped_prices
from fastgw.ai.prices import PriceTable, record_cost
from fastgw.ai.record import LlmRecord
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError

DAY = datetime.date(2025, 9, 1)


def config(prices: str = "", target_model: str = "gpt-4o") -> str:
    return f"""
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.openai]
targets = ["127.0.0.1:9000"]
[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "openai"
base_path = "/v1"
[[llm.models]]
name = "m"
targets = [{{ provider = "oa", model = "{target_model}" }}]
[[routes]]
name = "llm"
path = "/v1"
auth = "none"
kind = "llm"
{prices}
"""


def table(prices: str = "") -> PriceTable:
    llm: LlmConfig = compile_config(config(prices).encode(), "conf/x.toml").sections["llm"]
    assert llm.prices is not None
    return llm.prices


def error_for(prices: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_config(config(prices).encode(), "conf/x.toml")
    return str(info.value)


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(prompt, completion, cached, reasoning, True)


def test_shipped_table_has_a_version_and_the_major_providers() -> None:
    version, entries = shipped_prices()
    assert datetime.date.fromisoformat(version)
    providers = {provider for provider, _ in entries}
    assert {"openai", "anthropic", "gemini"} <= providers


def test_shipped_price_of_gpt_4o_by_the_provider_kind() -> None:
    # gpt-4o: 2.50 in, 1.25 cached, 10.00 out per million.
    cost = table().cost_usd("oa", "gpt-4o", usage(1_000_000, 1_000_000, cached=400_000), DAY)
    assert cost == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 10.0)


def test_dated_model_name_falls_back_to_the_undated_entry() -> None:
    assert table().cost_usd("oa", "gpt-4o-2024-08-06", usage(1_000_000, 0), DAY) == pytest.approx(2.5)


def test_unknown_model_or_missing_usage_is_none_never_zero() -> None:
    prices = table()
    assert prices.cost_usd("oa", "no-such-model", usage(10, 10), DAY) is None
    assert prices.cost_usd("oa", "gpt-4o", Usage(), DAY) is None  # the provider reported no usage
    assert prices.cost_usd("oa", "gpt-4o", usage(0, 0), DAY) == 0.0  # known price, no tokens


def test_newest_entry_not_after_the_day_applies() -> None:
    # o3 is shipped twice: 10/40 from 2025-04-16, 2/8 from 2025-06-10.
    prices = table()
    one = usage(1_000_000, 1_000_000)
    assert prices.cost_usd("oa", "o3", one, datetime.date(2025, 6, 9)) == pytest.approx(50.0)
    assert prices.cost_usd("oa", "o3", one, datetime.date(2025, 6, 10)) == pytest.approx(10.0)
    assert prices.cost_usd("oa", "o3", one, datetime.date(2025, 4, 15)) is None  # before any entry


def test_config_overrides_the_shipped_table_by_provider_name_or_kind() -> None:
    by_name = '[[llm.prices]]\nprovider = "oa"\nmodel = "gpt-4o"\ninput = 1.0\noutput = 2.0\n'
    by_kind = by_name.replace('"oa"', '"openai"').replace("1.0", "3.0")
    one = usage(1_000_000, 1_000_000)
    assert table(by_name).cost_usd("oa", "gpt-4o", one, DAY) == pytest.approx(3.0)
    assert table(by_kind).cost_usd("oa", "gpt-4o", one, DAY) == pytest.approx(5.0)
    assert table(by_kind + by_name).cost_usd("oa", "gpt-4o", one, DAY) == pytest.approx(3.0)


def test_config_entry_from_a_later_day_leaves_earlier_days_to_the_shipped_price() -> None:
    later = (
        '[[llm.prices]]\nprovider = "oa"\nmodel = "gpt-4o"\ninput = 1.0\noutput = 1.0\n'
        "effective = 2030-01-01\n"
    )
    one = usage(1_000_000, 0)
    assert table(later).cost_usd("oa", "gpt-4o", one, DAY) == pytest.approx(2.5)
    assert table(later).cost_usd("oa", "gpt-4o", one, datetime.date(2030, 1, 1)) == pytest.approx(1.0)


def test_reasoning_and_embedding_prices() -> None:
    text = (
        '[[llm.prices]]\nprovider = "oa"\nmodel = "r"\ninput = 1.0\noutput = 2.0\nreasoning = 4.0\n'
        "effective = '2025-01-01'\n"
        '[[llm.prices]]\nprovider = "oa"\nmodel = "e"\nembedding = 0.5\n'
    )
    prices = table(text)
    cost = prices.cost_usd("oa", "r", usage(1_000_000, 1_000_000, reasoning=250_000), DAY)
    assert cost == pytest.approx(1.0 + 0.75 * 2.0 + 0.25 * 4.0)
    assert prices.cost_usd("oa", "e", usage(2_000_000, 0), DAY) == pytest.approx(1.0)
    # Without a reasoning price, reasoning tokens cost as output; without a cached price, as input.
    assert table().cost_usd("oa", "gpt-4.1-mini", usage(0, 1_000_000, reasoning=500_000), DAY) == 1.6


@given(
    prompt=st.integers(0, 10**7),
    completion=st.integers(0, 10**7),
    cached=st.integers(0, 10**7),
    reasoning=st.integers(0, 10**7),
)
def test_cost_is_bounded_by_the_dearest_and_cheapest_rates(
    prompt: int, completion: int, cached: int, reasoning: int
) -> None:
    cost = table().cost_usd("oa", "gpt-4o", usage(prompt, completion, cached, reasoning), DAY)
    assert cost is not None
    # Completion tokens (reasoning included) at 10.00; prompt tokens between 1.25 (cached) and 2.50.
    assert (1.25 * prompt + 10.0 * completion) / 1e6 - 1e-9 <= cost
    assert cost <= (2.5 * prompt + 10.0 * completion) / 1e6 + 1e-9


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            'provider = "oa"\nmodel = "x"\ninput = -1.0\noutput = 1.0',
            "llm.prices[0].input: a price is not negative",
        ),
        ('provider = "nope"\nmodel = "x"\ninput = 1.0\noutput = 1.0', "llm.prices[0].provider:"),
        ('provider = "oa"\nmodel = "x"\ninput = 1.0', "llm.prices[0]: needs input and output"),
        ('provider = "oa"\nmodel = "x"\nembedding = 1.0\ninput = 1.0', "llm.prices[0].embedding:"),
        (
            'provider = "oa"\nmodel = "x"\ninput = 1\noutput = 1\neffective = "June"',
            "llm.prices[0].effective:",
        ),
        (
            'provider = "oa"\nmodel = "x"\ninput = 1\noutput = 1\neffective = 2025-01-01T00:00:00',
            "without a time",
        ),
    ],
)
def test_bad_entries_are_config_errors_naming_file_and_key(entry: str, reason: str) -> None:
    message = error_for(f"[[llm.prices]]\n{entry}\n")
    assert message.startswith("conf/x.toml: ")
    assert reason in message


def test_two_prices_for_one_day_are_an_error() -> None:
    entry = '[[llm.prices]]\nprovider = "oa"\nmodel = "x"\ninput = 1.0\noutput = 1.0\n'
    assert "llm.prices[1].effective: 'x' of 'oa' has two prices from 1970-01-01" in error_for(entry * 2)


def test_prices_check_lists_served_models_without_a_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(config(target_model="our-own-model"))
    assert main(["prices", "check", "--config", str(path)]) == 1
    assert "model 'm' -> provider 'oa', model 'our-own-model'" in capsys.readouterr().out
    path.write_text(config())
    assert main(["prices", "check", "--config", str(path)]) == 0
    path.write_text(config('[[llm.prices]]\nprovider = "oa"\nmodel = "x"\ninput = -1.0\noutput = 1.0\n'))
    assert main(["prices", "check", "--config", str(path)]) == 2
    assert "llm.prices[0].input: a price is not negative, got -1.0" in capsys.readouterr().err


def test_quickstart_prices_its_demo_models() -> None:
    assert main(["prices", "check"]) == 0


def test_record_logs_its_cost_or_unknown() -> None:
    record = LlmRecord(model="m", endpoint="chat", provider="oa", provider_model="gpt-4o")
    record.usage = usage(1_000_000, 0)
    record.cost_usd = record_cost(table(), record)
    assert record.log_fields()["cost_usd"] == pytest.approx(2.5)
    record.provider_model = "unpriced"
    record.cost_usd = record_cost(table(), record)
    fields = record.log_fields()
    assert fields["cost"] == "unknown" and "cost_usd" not in fields
