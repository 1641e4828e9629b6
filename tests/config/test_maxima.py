"""Every number in the schema states its maximum and the reason; the loader refuses a larger value with
that reason, and refuses non-finite numbers (TOML has inf and nan)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from fastgw.config import schema
from fastgw.config.loader import ConfigError, parse_config
from tests.support.configs import MINIMAL

BASE = MINIMAL


def _numeric(tp: typing.Any) -> bool:
    return tp in (int, float) or (
        typing.get_origin(tp) is not None and set(typing.get_args(tp)) & {int, float}
    )


def test_every_number_states_a_maximum_with_its_reason() -> None:
    specs = [o for n, o in vars(schema).items() if n.endswith("Spec") and dataclasses.is_dataclass(o)]
    for cls in specs:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not _numeric(hints[f.name]):
                continue
            where = f"{cls.__name__}.{f.name}"
            assert "max" in f.metadata, f"{where} has no stated maximum (doc(..., most=...))"
            assert len(f.metadata["max_reason"]) > 10, where
            if isinstance(f.default, (int, float)):
                assert f.default <= f.metadata["max"], where


def test_a_number_above_its_maximum_is_one_line_with_the_reason() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"{BASE}[rate_limits]\ncapacity = {10**12}\n".encode(), "gw.toml")
    assert str(err.value) == (
        "gw.toml: rate_limits.capacity: 1000000000000 is more than the maximum 16777216 "
        f"({schema.CAPACITY_MAX[1]})"
    )
    # at the maximum is fine
    parse_config(f"{BASE}[server]\nheader_timeout = 86400\n".encode(), "gw.toml")
    for text, reason in (
        ("nan", "expected a finite number, got nan"),
        ("-inf", "expected a finite number, got -inf"),
        ("1" + "0" * 400, "1" + "0" * 400 + " is too large a number"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(f"{BASE}[server]\nheader_timeout = {text}\n".encode(), "gw.toml")
        assert str(err.value) == f"gw.toml: server.header_timeout: {reason}"


def test_each_number_of_a_list_is_held_to_the_maximum() -> None:
    """A list of numbers (``[llm] fallback_on``: statuses) names the item over the maximum."""
    with pytest.raises(ConfigError) as err:
        parse_config(f"{BASE}[llm]\nfallback_on = [429, 700]\n".encode(), "gw.toml")
    assert (
        str(err.value)
        == "gw.toml: llm.fallback_on[1]: 700 is more than the maximum 599 (HTTP statuses end at 599)"
    )
    parse_config(f"{BASE}[llm]\nfallback_on = [429, 599]\n".encode(), "gw.toml")
