"""A fixture that puts a policy of the test's own into a compiled route: compile a minimal config (or
the test's), then add the policies to the route's chain (or replace it), as the compiler would have."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from fastgw.config.compiler import compile_config
from fastgw.config.context import CompileContext
from fastgw.snapshot import Route
from tests.support.configs import MINIMAL


def with_policies(route: Route, policies: tuple[Any, ...], replace: bool = False) -> Route:
    """``route`` with ``policies`` in its chain (sorted by phase, stable) and its hooks rebuilt."""
    chain = tuple(sorted((*(() if replace else route.chain), *policies), key=lambda p: p.PHASE))
    return dataclasses.replace(
        route,
        chain=chain,
        response_hooks=tuple(reversed([p for p in chain if hasattr(p, "on_response")])),
        complete_hooks=tuple(
            p for p in chain if hasattr(p, "on_complete") and getattr(p, "needs_complete", True)
        ),
    )


@pytest.fixture
def inject_policy() -> Callable[..., Route]:
    """``inject_policy(*policies, config=MINIMAL, replace=False, context=None)``: the first route of the
    compiled config with the policies added to (or replacing) its chain."""

    def make(
        *policies: Any, config: str = MINIMAL, replace: bool = False, context: CompileContext | None = None
    ) -> Route:
        snapshot = compile_config(config.encode(), "<test>", context)
        return with_policies(snapshot.routes[0], policies, replace)

    return make
