"""A route's kind, compiled: ``proxy`` (forward to its upstream) or a registered handler kind.

Kept apart from ``compiler.py`` so that the compiler calls one function for it: the handler kinds come
from ``fastgw/handlers/registry.py`` by name, each with its own spec and compile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.context import CompileContext
from fastgw.config.loader import ConfigError, _did_you_mean, convert_table
from fastgw.config.schema import RouteSpec
from fastgw.exchange import Exchange
from fastgw.handler_api import Handler, ResponseFilterFactory
from fastgw.handlers.kind import CompileError
from fastgw.handlers.registry import KINDS
from fastgw.policy.chain import BodyCheck, Phase, Policy
from fastgw.snapshot import UpstreamSettings

# The upstream of a handler route that names none: never connected to (the handler answers), it only
# keeps Route.upstream one type for the proxy fast path.
NO_UPSTREAM: Final = UpstreamSettings(
    name="",
    targets=(),
    balance="round_robin",
    max_connections=0,
    max_idle=0,
    idle_timeout=0.0,
    connect_timeout=0.0,
    read_timeout=0.0,
    first_byte_timeout=0.0,
    queue_timeout=0.0,
    max_failures=0,
    eject_seconds=0.0,
    retry=False,
)


@dataclass(frozen=True, slots=True)
class RouteKind:
    handler: Handler[Exchange] | None
    body_checks: tuple[BodyCheck, ...]
    response_filters: tuple[ResponseFilterFactory[Exchange], ...]
    error_body: Callable[[Any, int, str, str], tuple[bytes, bytes]] | None = None


def compile_kind_sections(spec: Any, ctx: CompileContext) -> None:
    """Compile each handler kind's top-level section (handlers/kind.py), once per config and before any
    route: the result (the spec itself if the kind has no compile_section) waits in ``ctx.sections`` for
    the kind's route compiles."""
    for kind in KINDS.values():
        if kind.section is not None:
            section = getattr(spec, kind.section_key)
            compiled = kind.compile_section
            ctx.sections[kind.section_key] = section if compiled is None else compiled(section, ctx)


def compile_route_kind(
    file: str,
    key: str,
    spec: RouteSpec,
    chain: Sequence[Policy],
    max_body: int,
    ctx: CompileContext | None = None,
) -> RouteKind:
    """The handler of a handler route (None for ``proxy``) and the chain's BODY checks and response
    filters. ``ctx`` is the config's compile context (a fresh one if None: a test of this function
    alone); the kind's compile gets it with the route's name and body bound on it. Raises ConfigError
    naming the key."""
    body_checks: tuple[BodyCheck, ...] = tuple(
        p  # type: ignore[misc]  # a Phase.BODY policy has check_body (policy/chain.py)
        for p in chain
        if p.PHASE == Phase.BODY
    )
    filters: tuple[ResponseFilterFactory[Exchange], ...] = tuple(
        p  # type: ignore[misc]
        for p in chain
        if hasattr(p, "response_filter")
    )
    if spec.kind == "proxy":
        if spec.handler:
            raise ConfigError(file, f"{key}.handler", "only applies to a handler kind (kind is 'proxy')")
        if filters:
            raise ConfigError(file, key, "response filters need a handler kind")
        return RouteKind(None, body_checks, ())  # the body is buffered whole, checked, then forwarded
    kind = KINDS.get(spec.kind)
    if kind is None:
        hint = _did_you_mean(spec.kind, ["proxy", *KINDS])
        raise ConfigError(file, f"{key}.kind", f"unknown route kind {spec.kind!r}{hint}")
    if spec.upstream:
        raise ConfigError(file, f"{key}.upstream", f"a {spec.kind!r} route answers itself: no upstream")
    settings = convert_table(kind.spec, spec.handler, file, f"{key}.handler")
    if ctx is None:
        ctx = CompileContext(file)
    ctx.route_key, ctx.route_name, ctx.route_max_body_bytes = key, spec.name, max_body
    ctx.route_path = spec.path
    try:
        handler = kind.compile(settings, ctx)
    except CompileError as err:
        raise ConfigError(file, f"{key}.handler.{err.field}", err.reason) from None
    return RouteKind(handler, body_checks, filters, kind.error_body)
