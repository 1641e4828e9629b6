"""Request size: a route's own body limit, answered ``413`` (problem+json) before the upstream sees the
body, and optionally ``411`` for bodies whose size is not declared up front.

The limit is enforced where the body arrives: the compiler narrows the route's body limit
(``CompileContext.route_body_limit``), which the connection already checks for HTTP/1 and HTTP/2 alike
(a declared Content-Length over it: refused at once, nothing forwarded; a chunked or HTTP/2 body without
a length: refused when the running total passes it). The policy itself runs only with
``require_content_length``: it refuses a body of unknown length before anything is forwarded, for
upstreams that must know the size (or that should never see a partial upload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from fastgw.config.context import CompileContext
from fastgw.config.fields import GiB, Section, doc
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase

# A limit this policy sets is one a route chooses on purpose, well under the server's streamed ceiling
# (1 TiB): above 1 GiB the route's max_body_bytes (or server.max_body_bytes) is the right key.
REQUEST_BODY_MAX: Final = (
    1 * GiB,
    "a deliberate per-route cap; larger bodies are the route's max_body_bytes",
)

LENGTH_REQUIRED: Final = Denial(
    411,
    "length-required",
    "this route needs a Content-Length: a body of unknown length is refused",
    "request_size.length_required",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSizeSpec:
    """A route's own body limit: 413 before the upstream sees the body."""

    max_body_bytes: int = doc(
        "largest request body this route accepts; larger is answered 413 before the upstream sees it"
        " (Content-Length: at once; chunked: when the running total passes it)",
        ...,
        most=REQUEST_BODY_MAX,
    )
    require_content_length: bool = doc(
        "refuse a body sent without Content-Length (chunked, or HTTP/2 without the header) with 411", False
    )


class RequireLength:
    """Refuses a request whose body has no declared length (the connection checks the limit itself)."""

    PHASE: ClassVar[Phase] = Phase.CONNECTION

    def __init__(self, name: str) -> None:
        self.name = name
        self.shadow = False

    def check(self, ex: Exchange) -> Denial | None:
        return LENGTH_REQUIRED if ex.chunked else None


def compile_route(spec: RequestSizeSpec | None, ctx: CompileContext) -> tuple[RequireLength, ...]:
    """routes.request_size: narrows the route's body limit; a policy only when a length is required."""
    if spec is None:
        return ()
    if spec.max_body_bytes < 0:
        raise ctx.error(f"{ctx.route_key}.request_size.max_body_bytes", "must not be negative")
    ctx.route_body_limit = spec.max_body_bytes
    return (RequireLength("request_size"),) if spec.require_content_length else ()


# routes.request_size in the schema and the reference (policy/registry.py declares it).
ROUTE_SECTION = Section(
    RequestSizeSpec,
    "A route's own body limit: 413 before the upstream sees the body. (a table, see routes.request_size)",
    "optional",
    (
        (
            "routes.request_size",
            RequestSizeSpec,
            "A route's own body limit: 413 before the upstream sees the body.",
        ),
    ),
)
