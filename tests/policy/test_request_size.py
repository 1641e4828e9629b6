"""routes.request_size at compile time: it narrows the route's body limit, never widens it, and states
its maximum."""

from __future__ import annotations

import pytest

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.policy.request_size import REQUEST_BODY_MAX, RequireLength
from tests.support.configs import MINIMAL


def compile_with(table: str, route_limit: str = "") -> tuple[int, tuple[object, ...]]:
    snapshot = compile_config((MINIMAL + route_limit + "\n[routes.request_size]\n" + table).encode(), "<t>")
    route = snapshot.routes[0]
    return route.max_body_bytes, route.chain


def test_the_policy_narrows_the_route_limit_and_adds_no_check_unless_a_length_is_required() -> None:
    assert compile_with("max_body_bytes = 1000") == (1000, ())
    limit, chain = compile_with("max_body_bytes = 1000\nrequire_content_length = true")
    assert limit == 1000 and len(chain) == 1 and isinstance(chain[0], RequireLength)


def test_it_never_widens_the_route_own_limit() -> None:
    assert compile_with("max_body_bytes = 5000", route_limit="max_body_bytes = 100")[0] == 100


def test_a_limit_over_the_stated_maximum_is_refused_with_its_reason() -> None:
    with pytest.raises(ConfigError, match=r"at most|deliberate"):
        compile_with(f"max_body_bytes = {REQUEST_BODY_MAX[0] + 1}")
