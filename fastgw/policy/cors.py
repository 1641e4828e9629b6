"""CORS (Fetch standard): preflights answered by the gateway, before authentication; actual responses
get the allow headers when the request's Origin is allowed.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never reaches
authentication or the upstream: an allowed origin, method and header set get ``204`` with the
``Access-Control-Allow-*`` headers, anything else a 403 problem naming what was refused. Origins are
compared exactly (scheme, host, port); ``"*"`` allows any origin but cannot be combined with credentials
(a config error, as browsers would refuse it anyway). ``Vary: Origin`` is always sent when the answer
depends on the Origin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.fields import PREFLIGHT_AGE_MAX, Section, doc
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsSpec:
    allow_origins: tuple[str, ...] = doc("origins allowed, exactly as browsers send them, or '*'", ...)
    allow_methods: tuple[str, ...] = doc("methods a preflight may ask for", ("GET", "HEAD", "POST"))
    allow_headers: tuple[str, ...] = doc(
        "request headers a preflight may ask for (CORS-safelisted ones always pass)",
        ("authorization", "x-api-key", "content-type"),
    )
    expose_headers: tuple[str, ...] = doc("response headers scripts may read", ())
    allow_credentials: bool = doc("allow cookies and credentials (not with '*')", False)
    max_age: int = doc("seconds browsers may cache a preflight answer", 600, most=PREFLIGHT_AGE_MAX)


SAFELISTED_HEADERS: Final = frozenset({b"accept", b"accept-language", b"content-language", b"content-type"})


class Cors:
    PHASE: ClassVar[Phase] = Phase.PREFLIGHT
    # Methods the route must receive even where its ``methods`` leave them out (the compiler's router
    # adds them): a preflight must reach this policy to be answered.
    ROUTE_METHODS: ClassVar[tuple[str, ...]] = ("OPTIONS",)

    def __init__(
        self,
        name: str,
        origins: frozenset[bytes],
        methods: frozenset[bytes],
        headers: frozenset[bytes],
        expose: bytes,
        credentials: bool,
        max_age: int,
    ) -> None:
        self.name = name
        self.shadow = False  # a preflight answer cannot be "shadowed": browsers act on it
        self.any_origin = b"*" in origins
        self.origins = origins
        self.methods = methods
        self.headers = headers
        self.expose = expose
        self.credentials = credentials
        self.allow_methods = b", ".join(sorted(methods))
        self.max_age = b"%d" % max_age

    def _allowed(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    def check(self, ex: Exchange) -> Denial | None:
        if ex.method != b"OPTIONS":
            return None
        origin = request_method = b""
        requested = b""
        for name, value in ex.headers:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                request_method = value
            elif name == b"access-control-request-headers":
                requested = requested + b"," + value if requested else value
        if not origin or not request_method:
            return None  # a plain OPTIONS request: not a preflight, goes to the upstream
        vary = (b"vary", b"Origin")
        if not self._allowed(origin):
            return Denial(403, "forbidden", "CORS: this origin is not allowed", "cors.origin", (vary,))
        if request_method not in self.methods:
            return Denial(403, "forbidden", "CORS: this method is not allowed", "cors.method", (vary,))
        asked = [h.strip().lower() for h in requested.split(b",") if h.strip()]
        refused = [h for h in asked if h not in self.headers and h not in SAFELISTED_HEADERS]
        if refused:
            detail = f"CORS: header(s) not allowed: {b', '.join(refused).decode('latin-1')}"
            return Denial(403, "forbidden", detail, "cors.headers", (vary,))
        out = [
            (b"access-control-allow-origin", b"*" if self.any_origin and not self.credentials else origin),
            (b"access-control-allow-methods", self.allow_methods),
            (b"access-control-max-age", self.max_age),
            vary,
        ]
        if asked:
            out.append((b"access-control-allow-headers", b", ".join(asked)))
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return Denial(204, "preflight", "", "cors.preflight", tuple(out))

    def on_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        origin = b""
        for name, value in ex.headers:
            if name == b"origin":
                origin = value
                break
        headers.append((b"vary", b"Origin"))
        if not origin or not self._allowed(origin):
            return
        allow = b"*" if self.any_origin and not self.credentials else origin
        headers.append((b"access-control-allow-origin", allow))
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        if self.expose:
            headers.append((b"access-control-expose-headers", self.expose))


def compile_route(spec: CorsSpec | None, ctx: CompileContext) -> tuple[Cors, ...]:
    """routes.cors: origins are checked as scheme://host[:port]; '*' never with credentials."""
    if spec is None:
        return ()
    key = f"{ctx.route_key}.cors"
    if not spec.allow_origins:
        raise ctx.error(f"{key}.allow_origins", "needs at least one origin (or '*')")
    for i, origin in enumerate(spec.allow_origins):
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
            raise ctx.error(f"{key}.allow_origins[{i}]", f"{origin!r} is not scheme://host[:port] or '*'")
    if "*" in spec.allow_origins and spec.allow_credentials:
        raise ctx.error(f"{key}.allow_credentials", "cannot be true with allow_origins = ['*']")
    for field_name in ("allow_methods", "allow_headers", "expose_headers"):
        for i, value in enumerate(getattr(spec, field_name)):
            if not TOKEN.fullmatch(value):
                raise ctx.error(f"{key}.{field_name}[{i}]", f"{value!r} is not a token")
    if spec.max_age < 0:
        raise ctx.error(f"{key}.max_age", "must not be negative")
    return (
        Cors(
            "cors",
            frozenset(o.encode() for o in spec.allow_origins),
            frozenset(m.upper().encode() for m in spec.allow_methods),
            frozenset(h.lower().encode() for h in spec.allow_headers),
            b", ".join(h.encode() for h in spec.expose_headers),
            spec.allow_credentials,
            spec.max_age,
        ),
    )


# routes.cors in the schema and the reference (policy/registry.py declares it).
ROUTE_SECTION = Section(
    CorsSpec,
    "CORS for browser callers (a table, see routes.cors)",
    "optional",
    (("routes.cors", CorsSpec, "CORS: preflights answered before authentication."),),
)
