"""Every policy the config compiler knows, in the order it compiles them: one line per policy.

``compile(config, ctx)`` compiles the policy's top-level section once per config (auth policies are
put in ``ctx.auth`` for routes to pick); ``compile_route(route, ctx)`` returns the policies a route
runs. Order matters only here: [auth_throttle] before the auth schemes that share it, auth before
``authorize`` (which needs the route's schemes). Run order at request time is the policies' PHASE,
not this table's. Adding a policy: its own module with one or both functions, and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.context import CompileContext
from fastgw.config.schema import ConfigSpec, RouteSpec
from fastgw.policy import (
    api_key,
    auth_choice,
    cors,
    introspection,
    jwt_config,
    mtls,
    network,
    rate_limit_config,
    rbac,
    throttle,
)

ConfigCompile = Callable[[ConfigSpec, CompileContext], None]
RouteCompile = Callable[[RouteSpec, CompileContext], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    compile: ConfigCompile | None = None  # the top-level section, once per config
    compile_route: RouteCompile | None = None  # the route's policies, once per route


POLICIES: Final[tuple[Entry, ...]] = (
    Entry("auth_throttle", throttle.compile),
    Entry("api_key", api_key.compile),
    Entry("jwt", jwt_config.compile),
    Entry("mtls", mtls.compile),
    Entry("introspection", introspection.compile),
    Entry("auth", None, auth_choice.compile_route),
    Entry("cors", None, cors.compile_route),
    Entry("authorize", None, rbac.compile_route),
    Entry("rate_limit", None, rate_limit_config.compile_route),
    Entry("network", network.compile, network.compile_route),
)
