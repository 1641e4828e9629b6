"""Frozen runtime types compiled from config, and the one reference a worker swaps on reload.

Everything derivable from config is computed once by ``config/compiler.py`` into these types: the router,
per-route policy tuples, pre-encoded header bytes, pool parameters. A reload builds a new Snapshot next to
the old one and swaps :attr:`SnapshotHolder.current`; requests in flight keep the Snapshot (and Route)
they started with. Nothing here imports asyncio or the config package.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

# Real imports: compiled, Snapshot's field types must exist when this module's classes are created.
from fastgw.route import HealthCheckSettings, Route, Target, UpstreamSettings
from fastgw.router import Router

if TYPE_CHECKING:
    from fastgw.tls.server import ListenerTls

__all__ = [
    "AccessLogSettings",
    "AdminSettings",
    "AuditSettings",
    "HealthCheckSettings",
    "Http2Settings",
    "IPNetwork",
    "KeySettings",
    "ListenerSettings",
    "ProcessSettings",
    "RedisSettings",
    "Route",
    "SecretRef",
    "ServerSettings",
    "Snapshot",
    "SnapshotHolder",
    "StateSettings",
    "StoreSettings",
    "Target",
    "UpstreamSettings",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    http1: Literal["httptools", "h11"]
    max_header_bytes: int
    max_header_count: int
    max_target_bytes: int
    max_body_bytes: int
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    idle_timeout: float
    send_timeout: float
    max_connections: int
    max_connections_per_ip: int
    max_pipelined: int
    batch_writes: bool
    merge_slashes: bool
    allow_encoded_slash: bool
    allow_path_params: bool
    trusted_proxies: tuple[IPNetwork, ...]
    server_name: bytes  # the pseudonym in Via
    drain_timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    """[rate_limits.redis], compiled (the URL resolved from its secret when given as one)."""

    url: str = field(repr=False)  # may carry a password: never printed
    flush_interval: float
    timeout: float
    failure: Literal["open", "closed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Http2Settings:
    """[http2], compiled; see config/schema.py for what each limit means."""

    enabled: bool = True
    max_concurrent_streams: int = 100
    initial_window_size: int = 65535
    max_header_list_size: int = 16384
    max_requests_per_connection: int = 10000
    max_resets_per_second: int = 200
    max_control_frames_per_second: int = 1000
    max_empty_frames_per_second: int = 100
    max_continuation_frames: int = 32
    max_outbound_buffer: int = 1024 * 1024
    stream_buffer: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSettings:
    name: str
    host: str
    port: int
    proxy_protocol: bool
    backlog: int
    tls: ListenerTls | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLogSettings:
    target: str  # "stdout", "off" or a file path
    include_query: bool
    redact_query: frozenset[bytes]  # lower-case parameter names
    max_pending: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """Where a secret lives (resolved by ``fastgw.secret_refs`` in the process that needs it)."""

    kind: Literal["file", "env", "credential"]
    name: str
    key: str  # the config key path, for error messages
    file: str  # the config file, for error messages


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSettings:
    workers: int  # 0 = one per CPU
    reuse_port: bool
    max_connection_age: float  # seconds; 0 = forever
    restart_backoff_max: float
    reload_timeout: float
    hang_timeout: float
    watchdog: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSettings:
    dir: str
    keep_configs: int
    pid_file: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """[store]: which backend; for PostgreSQL, where the DSN (a secret: it holds the password) is."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    dsn: SecretRef | None = None
    connect_timeout: float = 10.0
    node: str = ""  # [cluster] node; "": the host name and state directory (fastgw/store this_node)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    host: str
    port: int
    unix: str  # a unix socket path instead of host:port
    token: SecretRef
    open_metrics: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSettings:
    file: str
    key: SecretRef | None  # None: a key generated in the state directory


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySettings:
    pepper_id: str
    peppers: dict[str, bytes] = field(repr=False)  # id -> pepper (the current one included)

    @property
    def pepper(self) -> bytes:
        return self.peppers[self.pepper_id]


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    id: str
    source: str
    server: ServerSettings
    listeners: tuple[ListenerSettings, ...]
    router: Router
    routes: tuple[Route, ...]
    upstreams: dict[str, UpstreamSettings]
    access_log: AccessLogSettings
    demo_upstream: tuple[str, int] | None
    id_bytes: bytes  # the id, pre-encoded for the access log
    process: ProcessSettings
    state: StateSettings
    admin: AdminSettings | None
    audit: AuditSettings
    keys: KeySettings | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    retention: dict[str, int] = field(default_factory=dict)  # [retention] days per kind of record
    http2: Http2Settings = field(default_factory=Http2Settings)
    ratelimit_redis: RedisSettings | None = None
    ratelimit_capacity: int = 65536  # cells per worker shard of the shared counter table
    quota_flush: float = 1.0  # seconds between a worker's sends of quota counts to the control process
    # What a gateway-made answer outside any route (404, 400 before routing) carries: [security_headers].
    security_headers: tuple[tuple[bytes, bytes], ...] = ()
    hsts: bytes = b""  # the Strict-Transport-Security value, sent on TLS listeners only
    warnings: tuple[str, ...] = field(default=())
    # Handler kinds' top-level sections as compiled (handlers/kind.py, CompileContext.sections): section key
    # -> what its compile_section returned. The control process reads [llm]'s master keys here.
    sections: dict[str, Any] = field(default_factory=dict)


class SnapshotHolder:
    """The single mutable reference to the Snapshot in force; swapped whole, never edited."""

    __slots__ = ("current",)

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def swap(self, snapshot: Snapshot) -> Snapshot:
        old, self.current = self.current, snapshot
        return old
