"""An llm exchange's part of its access-log line: ``LlmRecord.log_json`` (written out, for the tick) says
exactly what ``log_fields`` (the dict) says, in the same order, numbers rounded as the dict rounds them."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import Usage
from fastgw.ai.guardrails.report import GuardrailsReport
from fastgw.ai.record import LlmRecord

NAMES = st.one_of(st.sampled_from(["gpt-4o-mini", "chat", "fake", ""]), st.text(max_size=20))
TIMES = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@st.composite
def records(draw: st.DrawFn) -> LlmRecord:
    reported = draw(st.booleans())
    usage = Usage(
        draw(st.integers(0, 10**7)),
        draw(st.integers(0, 10**7)),
        draw(st.integers(0, 10**6)),
        draw(st.integers(0, 10**6)),
        reported,
    )
    return LlmRecord(
        draw(NAMES),
        draw(NAMES),
        stream=draw(st.booleans()),
        provider=draw(NAMES),
        provider_model=draw(NAMES),
        attempts=draw(st.integers(0, 5)),
        key=draw(NAMES),
        usage=usage,
        ttft_ms=draw(st.one_of(st.just(-1.0), TIMES)),
        duration_ms=draw(TIMES),
        error=draw(st.sampled_from(["", "timeout", "rate_limited"])),
        usage_exceeds_answer=draw(st.booleans()),
        cache_hit=draw(st.booleans()),
        tokens_saved=draw(st.integers(0, 10**6)),
        cost_usd=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4, allow_nan=False))),
    )


def same(written: dict[str, Any], fields: dict[str, Any]) -> None:
    assert list(written) == list(fields)  # the same keys, in the same order
    for name, value in fields.items():
        if isinstance(value, float):
            # Both round to the same place; they may differ by one unit of it where the float sits on a
            # half (half up against round-half-even of the float's exact value).
            unit = {"tokens_per_s": 0.1, "ttft_ms": 0.001, "cost_usd": 1e-9}[name]
            assert written[name] == pytest.approx(value, abs=unit * 1.01, rel=1e-12)
        elif value is None:  # a number orjson cannot write (an infinity): null both ways
            assert written[name] is None
        else:
            assert written[name] == value


@given(records())
def test_the_written_out_json_says_what_the_fields_say(record: LlmRecord) -> None:
    same(orjson.loads(record.log_json()), orjson.loads(orjson.dumps(record.log_fields())))


def test_usual_numbers_are_written_as_the_dict_writes_them() -> None:
    record = LlmRecord(
        "m", "chat", provider="p", provider_model="pm", attempts=1, usage=Usage(14, 27, 0, 0, True)
    )
    record.ttft_ms, record.duration_ms, record.cost_usd = 0.8126, 12.5, 0.0000681
    text = record.log_json()
    assert b'"tokens_per_s":2160.0' in text and b'"ttft_ms":0.813' in text
    assert b'"cost_usd":0.0000681' in text and orjson.loads(text)["cost_usd"] == 6.81e-05
    assert orjson.loads(text) == orjson.loads(orjson.dumps(record.log_fields()))


def test_guardrails_and_numbers_that_are_not_finite_take_the_dicts_way() -> None:
    record = LlmRecord("m", "chat", usage=Usage(1, 2, 0, 0, True), ttft_ms=math.inf)
    assert record.log_json() == orjson.dumps(record.log_fields())
    guarded = LlmRecord("m", "chat", guardrails=GuardrailsReport(fired={"email": "log"}))
    assert orjson.loads(guarded.log_json())["guardrails"] == {"fired": {"email": "log"}}
