"""``kind = "static"``: a fixed response from config, for health checks and maintenance pages.

The route's policies run first as on any route (an API-key-protected status page is one route), and
the answer carries the route's response headers and request id. A HEAD request gets the head alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, Upstreams
from fastgw.handlers.kind import CompileContext, CompileError, HandlerKind

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Set by the gateway from the body and the connection: a configured value would contradict it.
_OWNED: Final = frozenset({"content-length", "transfer-encoding", "connection", "content-type"})


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticSpec:
    status: int = field(default=200, metadata={"doc": "the response status (200-599)"})
    body: str = field(default="", metadata={"doc": "the response body, sent as UTF-8"})
    content_type: str = field(
        default="text/plain; charset=utf-8", metadata={"doc": "the body's Content-Type (omitted if no body)"}
    )
    headers: dict[str, str] = field(
        default_factory=dict,
        metadata={"doc": "more response headers, e.g. { cache-control = 'no-store', retry-after = '120' }"},
    )


class StaticHandler:
    """Answers every request with the same pre-encoded response."""

    __slots__ = ("body", "fields", "status")

    def __init__(self, status: int, fields: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
        self.status = status
        self.fields = fields
        self.body = body

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        out.start(self.status, self.fields)
        if self.body:
            await out.write(self.body)
        await out.end()


def compile_static(spec: StaticSpec, ctx: CompileContext) -> StaticHandler:
    if not 200 <= spec.status <= 599:
        raise CompileError("status", f"{spec.status} is not a final status (200-599)")
    body = spec.body.encode()
    if body and spec.status in (204, 304):
        raise CompileError("body", f"a {spec.status} response has no body")
    fields: list[tuple[bytes, bytes]] = []
    if body:
        fields.append((b"content-type", spec.content_type.encode()))
    for name, value in spec.headers.items():
        if not _TOKEN.fullmatch(name) or name.lower() in _OWNED:
            raise CompileError(f"headers.{name}", "not a header name this route may set")
        if any(c in value for c in "\r\n\0"):
            raise CompileError(f"headers.{name}", "a header value is one line")
        fields.append((name.lower().encode(), value.encode()))
    if spec.status not in (204, 304):
        fields.append((b"content-length", b"%d" % len(body)))
    return StaticHandler(spec.status, tuple(fields), body)


KIND: Final = HandlerKind("A fixed response (health checks, maintenance pages).", StaticSpec, compile_static)
