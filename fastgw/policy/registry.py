"""Every policy the config compiler knows, in the order it compiles them: one line per policy.

``compile(section, ctx)`` compiles the policy's top-level section once per config (auth policies are
put in ``ctx.auth`` for routes to pick); ``compile_route(section, ctx)`` returns the policies a route
runs. Order matters only here: [auth_throttle] before the auth schemes that share it, auth before
``authorize`` (which needs the route's schemes). Run order at request time is the policies' PHASE,
not this table's. Adding a policy: its own module with one or both functions, and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.context import CompileContext
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
    policies. Either pair may be absent."""

    name: str
    section: str = ""
    compile: ConfigCompile | None = None
    route_section: str = ""
    compile_route: RouteCompile | None = None
    # A route section the policy declares itself: its spec class becomes the routes.<route_section> key
    # of the schema (config/schema.py adds it to RouteSpec) and a table of the reference, under ``doc``.
    route_spec: type | None = None
    doc: str = ""  # "" : the spec class's docstring

    def section_doc(self) -> str:
        """What the reference says of the route section: ``doc``, else the spec's docstring."""
        return self.doc or " ".join((self.route_spec.__doc__ or "").split())


POLICIES: Final[tuple[Entry, ...]] = (
    Entry("auth_throttle", "auth_throttle", throttle_config.compile),
    Entry("api_key", "api_key", api_key_config.compile),
    Entry("jwt", "jwt", jwt_config.compile),
    Entry("mtls", "mtls", mtls.compile),
    Entry("introspection", "introspection", introspection.compile),
    Entry("auth", "", None, "", auth_choice.compile_route),
    Entry("cors", "", None, "cors", cors.compile_route),
    Entry("authorize", "", None, "authorize", rbac.compile_route),
    Entry("rate_limit", "", None, "limits", rate_limit_config.compile_route),
    Entry("network", "network", network.compile, "network", network.compile_route),
    Entry("request_size", "", None, "request_size", request_size.compile_route, request_size.RequestSizeSpec),
)
