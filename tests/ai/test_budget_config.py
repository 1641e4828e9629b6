"""An llm route's budgets as compiled: limits in their units (USD as micro-USD), 0 kept as a limit that
refuses everything, and bad values (negative, NaN, no limit, duplicate names) as errors that name the
file, the key and the reason."""

from __future__ import annotations

import pytest

from fastgw.ai.budgets import Budgets
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError

BASE = """
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
targets = [{ provider = "oa", model = "gpt-4o" }]
[[routes]]
name = "llm"
path = "/v1"
auth = "none"
kind = "llm"
"""


def budgets_of(budgets: str) -> Budgets | None:
    snapshot = compile_config((BASE + budgets).encode(), "conf/x.toml")
    (route,) = [r for r in snapshot.routes if r.name == "llm"]
    found: Budgets | None = route.handler.budgets  # type: ignore[union-attr]
    return found


def error_for(budgets: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_config((BASE + budgets).encode(), "conf/x.toml")
    return str(info.value)


def test_limits_are_compiled_in_their_units() -> None:
    budgets = budgets_of(
        """
[[routes.handler.budgets]]
name = "team"
key = "team"
tokens_per_minute = 100000
usd_per_day = 12.5
usd_per_month = 0
"""
    )
    assert budgets is not None
    (budget,) = budgets.budgets
    assert budget.budget_id == "llm:team" and budget.key == "team"
    assert [(limit.field, limit.kind, limit.period, limit.cap) for limit in budget.limits] == [
        ("tokens_per_minute", "tokens", "minute", 100000),
        ("usd_per_day", "usd", "day", 12_500_000),
        ("usd_per_month", "usd", "month", 0),  # 0 is a limit (refuse everything), not "unset"
    ]
    assert budgets.output_tokens == 1024
    assert budgets_of("") is None


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        (
            '[[routes.handler.budgets]]\nname = "b"\ntokens_per_day = -1',
            "budgets[0].tokens_per_day: must be 0 or more (0 refuses every request), got -1",
        ),
        ('[[routes.handler.budgets]]\nname = "b"\nusd_per_day = -0.5', "usd_per_day: must be 0 or more"),
        (
            '[[routes.handler.budgets]]\nname = "b"\nusd_per_month = nan',
            "usd_per_month: expected a finite number, got nan",
        ),
        ('[[routes.handler.budgets]]\nname = "b"', "budgets[0]: budget 'b' sets no limit"),
        (
            '[[routes.handler.budgets]]\nname = "b"\ntokens_per_day = 1\n'
            '[[routes.handler.budgets]]\nname = "b"\ntokens_per_day = 2',
            "budgets[1].name: duplicate budget name 'b'",
        ),
        (
            '[[routes.handler.budgets]]\nname = "a.b"\ntokens_per_day = 1',
            "budgets[0].name: 'a.b' is not a token",
        ),
        ("[routes.handler]\nbudget_output_tokens = 0", "budget_output_tokens: must be 1 or more"),
    ],
)
def test_bad_budgets_name_the_file_the_key_and_the_reason(budgets: str, expected: str) -> None:
    message = error_for(budgets)
    assert "conf/x.toml" in message and expected in message


PROMPT_ROUTE = """
[[routes]]
name = "prompts"
path = "/prompts"
auth = "none"
kind = "prompt_api"
[[routes.handler.budgets]]
name = "spend"
shared = {shared}
key = "{key}"
usd_per_day = 5.0
[[prompt_api]]
name = "echo"
path = "/prompts/echo"
model = "m"
template = "{{{{ text }}}}"
input_schema = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}
"""
LLM_SPEND = """
[[routes.handler.budgets]]
name = "spend"
shared = true
key = "consumer"
usd_per_day = 5.0
"""


def test_a_shared_budget_is_one_allowance_across_llm_and_prompt_api_routes() -> None:
    snapshot = compile_config(
        (BASE + LLM_SPEND + PROMPT_ROUTE.format(shared="true", key="consumer")).encode(), "conf/x.toml"
    )
    by_name = {r.name: r.handler.budgets for r in snapshot.routes}  # type: ignore[union-attr]
    (on_llm,) = by_name["llm"].budgets
    (on_prompts,) = by_name["prompts"].budgets
    # One id, hence the same cells of the shared table; the route's price table prices both.
    assert on_llm.budget_id == on_prompts.budget_id == "spend"
    assert by_name["prompts"].prices is by_name["llm"].prices is not None
    alone = compile_config(
        (BASE + LLM_SPEND + PROMPT_ROUTE.format(shared="false", key="consumer")).encode(), "conf/x.toml"
    )
    prompts = next(r for r in alone.routes if r.name == "prompts")
    (unshared,) = prompts.handler.budgets.budgets  # type: ignore[union-attr]
    assert unshared.budget_id == "prompts:spend"  # not shared: counted apart


def test_a_shared_budget_stated_differently_is_an_error_naming_both_places() -> None:
    with pytest.raises(ConfigError) as info:
        compile_config((BASE + LLM_SPEND + PROMPT_ROUTE.format(shared="true", key="team")).encode(), "x.toml")
    expected = (
        "x.toml: routes[1].handler.budgets[0].shared: budget 'spend' is shared with"
        " routes[0].handler.budgets[0], which sets another key, other limits or other budget_alerts: a"
        " shared budget is one allowance, give it the same key, limits and route budget_alerts everywhere"
    )
    assert str(info.value) == expected
    # Alerts on one route only: a threshold crossed through the other would never be raised.
    alerts = "[routes.handler.budget_alerts]\nthresholds = [80]\n"
    with pytest.raises(ConfigError) as info:
        compile_config(
            (BASE + alerts + LLM_SPEND + PROMPT_ROUTE.format(shared="true", key="consumer")).encode(),
            "x.toml",
        )
    assert str(info.value) == expected
