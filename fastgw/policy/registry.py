"""Every policy the config compiler knows, in the order it compiles them: one line per policy.

``compile(section, ctx)`` compiles the policy's top-level section once per config (auth policies are
put in ``ctx.auth`` for routes to pick); ``compile_route(section, ctx)`` returns the policies a route
runs. Order matters only here: [auth_throttle] before the auth schemes that share it, auth before
``authorize`` (which needs the route's schemes). Run order at request time is the policies' PHASE,
not this table's. Adding a policy: its own module with one or both functions (and the Section of each
table it reads, for the schema and the reference), and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.context import CompileContext
from fastgw.config.fields import Section
from fastgw.policy import (
    api_key_config,
    auth_choice,
    cors,
    introspection,
    jwt_config,
    mtls,
    network,
    rate_limit_config,
    rbac,
    request_size,
    throttle_config,
)

ConfigCompile = Callable[[Any, CompileContext], None]
RouteCompile = Callable[[Any, CompileContext], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Entry:
    """One policy: the config key of its top-level section and the function compiling it, the route
    key of its per-route section ("" = the whole route table) and the function giving the route's
    policies. Either pair may be absent.

    ``schema`` and ``route_schema`` are the tables the policy declares itself (config/fields.py
    Section): config/schema.py adds them to ConfigSpec as ``section`` and to RouteSpec as
    ``route_section``, and the reference shows their tables, so the schema names no policy."""

    name: str
    section: str = ""
    compile: ConfigCompile | None = None
    route_section: str = ""
    compile_route: RouteCompile | None = None
    schema: Section | None = None
    route_schema: Section | None = None


POLICIES: Final[tuple[Entry, ...]] = (
    Entry("auth_throttle", "auth_throttle", throttle_config.compile, schema=throttle_config.SECTION),
    Entry("api_key", "api_key", api_key_config.compile, schema=api_key_config.SECTION),
    Entry(
        "jwt",
        "jwt",
        jwt_config.compile,
        "jwt",  # read by the auth policy (auth_choice), which compiles the route's schemes
        schema=jwt_config.SECTION,
        route_schema=jwt_config.ROUTE_SECTION,
    ),
    Entry("mtls", "mtls", mtls.compile, schema=mtls.SECTION),
    Entry("introspection", "introspection", introspection.compile, schema=introspection.SECTION),
    Entry("auth", "", None, "", auth_choice.compile_route),
    Entry("cors", "", None, "cors", cors.compile_route, route_schema=cors.ROUTE_SECTION),
    Entry("authorize", "", None, "authorize", rbac.compile_route, route_schema=rbac.ROUTE_SECTION),
    Entry(
        "rate_limit",
        "",
        None,
        "limits",
        rate_limit_config.compile_route,
        route_schema=rate_limit_config.ROUTE_SECTION,
    ),
    Entry(
        "network",
        "network",
        network.compile,
        "network",
        network.compile_route,
        schema=network.SECTION,
        route_schema=network.ROUTE_SECTION,
    ),
    Entry(
        "request_size",
        "",
        None,
        "request_size",
        request_size.compile_route,
        route_schema=request_size.ROUTE_SECTION,
    ),
)
