"""What a handler kind gives the config compiler: the spec of its ``handler`` table and a compile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastgw.exchange import Exchange
from fastgw.handler_api import Handler


class CompileError(Exception):
    """A handler table that cannot be compiled; the compiler reports it as a ConfigError."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What a kind's compile may know of its route."""

    route: str  # the route's name
    max_body_bytes: int  # the route's body bound: what a handler can be given at most


@dataclass(frozen=True, slots=True)
class HandlerKind:
    """One registered kind: ``spec`` is a frozen dataclass of ``doc()`` fields (config/schema.py) read
    from the route's ``handler`` table; ``compile`` turns it into the route's Handler or raises
    CompileError naming the field."""

    summary: str  # one line for the configuration reference
    spec: type[Any]
    compile: Callable[[Any, CompileContext], Handler[Exchange]]
