"""What a handler kind gives the config compiler: the spec of its ``handler`` table and a compile, and
optionally a top-level section of its own (issue 22: ``[llm]`` providers and models for kind = "llm").

A kind compiles against the config's own ``CompileContext`` (config/context.py), the one policies get:
errors with key paths, relative paths, secrets, clocks, and the route being compiled (``route_name``,
``route_max_body_bytes``). Its section, if any, is compiled once per config before any route, and the
result waits in ``ctx.sections[section_key]`` for the kind's routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastgw.config.context import CompileContext
from fastgw.config.fields import Section
from fastgw.exchange import Exchange
from fastgw.handler_api import Handler

__all__ = ["CompileContext", "CompileError", "HandlerKind"]  # CompileContext: kinds import it from here


class CompileError(Exception):
    """A handler table that cannot be compiled; the compiler reports it as a ConfigError."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HandlerKind:
    """One registered kind: ``spec`` is a frozen dataclass of ``doc()`` fields (config/fields.py) read
    from the route's ``handler`` table; ``compile`` turns it into the route's Handler or raises
    CompileError naming the field.

    ``section`` (with its top-level key ``section_key``) adds a table to ConfigSpec and the reference;
    ``compile_section`` (optional: else routes get the spec) turns it into what the kind's routes share
    (providers, models), raising ConfigError via ``ctx.error`` with the key path. It runs once per
    config, whether or not a route uses the kind, so a broken section is refused without any route."""

    summary: str  # one line for the configuration reference
    spec: type[Any]
    compile: Callable[[Any, CompileContext], Handler[Exchange]]
    section_key: str = ""
    section: Section | None = None
    compile_section: Callable[[Any, CompileContext], Any] | None = None
    # The error shape the kind's clients parse, for the gateway's own refusals on its routes (a policy's
    # 401 or 429 before the handler runs): (exchange, status, problem, detail) -> (content type, body).
    error_body: Callable[[Any, int, str, str], tuple[bytes, bytes]] | None = None
