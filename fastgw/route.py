"""A compiled route and the upstream it forwards to: what one request needs from the config.

Built by ``config/compiler.py``, held by the Snapshot (``snapshot.py``) and the router, pointed at by every
Exchange (``exchange.py``). Its policies are typed by the generic protocols of ``verdict.py``, so this
module imports neither the Exchange nor the policy layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fastgw.handler_api import Handler, ResponseFilterFactory
    from fastgw.tls.client import ClientTls
    from fastgw.verdict import BodyCheck, CompleteHook, Policy, ResponseHook


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckSettings:
    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    status_min: int
    status_max: int
    host: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    """One upstream group; its pools and health state live in the worker, keyed by target."""

    name: str
    targets: tuple[Target, ...]
    balance: Literal["round_robin", "least_conn"]
    max_connections: int
    max_idle: int
    idle_timeout: float
    connect_timeout: float
    read_timeout: float  # between response bytes (upstream idle)
    first_byte_timeout: float  # from the end of the request body to the first response byte
    queue_timeout: float
    max_failures: int
    eject_seconds: float
    retry: bool
    dns_ttl: float = 30.0
    retry_budget: float = 0.2
    retry_min: int = 10
    health: HealthCheckSettings | None = None
    tls: ClientTls | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A compiled route: everything the data plane needs, pre-encoded."""

    name: str
    name_bytes: bytes
    upstream: UpstreamSettings
    strip_prefix: bytes  # b"" when the route does not strip
    preserve_host: bool
    max_body_bytes: int
    chain: tuple[Policy[Any], ...]
    response_hooks: tuple[ResponseHook[Any], ...]
    complete_hooks: tuple[CompleteHook[Any], ...]
    # Lower-case header names never copied through: hop-by-hop and gateway-owned names plus the route's own
    # removals and the names it sets (proxy_headers: request_head.request_drop_sets and
    # response_head.response_drop_set).
    drop_request: frozenset[bytes]  # for an untrusted peer
    drop_request_trusted: frozenset[bytes]  # for a trusted proxy (its X-Forwarded-Proto/-Host are kept)
    add_request: bytes  # pre-joined "name: value\r\n" lines
    identity_headers: tuple[tuple[bytes, str], ...] = ()  # (header, Identity attribute) sent upstream
    hsts: bytes = b""  # the Strict-Transport-Security line, sent on TLS listeners only
    drop_response: frozenset[bytes]
    add_response: tuple[tuple[bytes, bytes], ...]
    add_response_lines: bytes = b""  # add_response pre-joined as "name: value\r\n" lines
    # The response field names the response builder acts on (drop_response, Date, Content-Length,
    # Transfer-Encoding, Connection) by first byte: proxy_headers.response_head.response_field_table.
    response_fields: tuple[tuple[tuple[int, bytes, bytes, int], ...], ...] = ((),) * 256
    # Route kinds (handler_api.py): "proxy" forwards to ``upstream``; any other kind is served by ``handler``.
    kind: str = "proxy"
    handler: Handler[Any] | None = None
    body_checks: tuple[BodyCheck[Any], ...] = ()  # Phase.BODY policies, in chain order
    response_filters: tuple[ResponseFilterFactory[Any], ...] = ()  # wrap a handler's response writer
    # The error shape the route's clients parse, for the gateway's own refusals on it (401, 429, 413...):
    # (exchange, status, problem slug, detail) -> (content type, body); None: problem+json.
    error_body: Callable[[Any, int, str, str], tuple[bytes, bytes]] | None = None
