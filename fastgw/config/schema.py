"""Frozen specs mirroring the TOML file, key for key. Every key has a default and a ``doc`` line.

``loader.py`` builds these from a parsed TOML document generically from the type hints below, so adding a
key means adding one field here (and regenerating docs/configuration.md: ``tests/config/test_docs.py``
checks that every key is documented). Specs are plain data; validation that needs more than a type
(addresses, references, CIDRs) happens in ``compiler.py``.

The schema names no policy: each policy declares the tables it reads as a ``Section`` (config/fields.py)
in its registry entry (policy/registry.py), and ConfigSpec and RouteSpec below are built with them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastgw.config.fields import (
    BODY_MAX,
    BUFFER_MAX,
    CAPACITY_MAX,
    CONNECTIONS_MAX,
    CONTINUATION_MAX,
    FLUSH_MAX,
    H2_STREAM_IDS_MAX,
    H2_WINDOW_MAX,
    HEAD_MAX,
    HEADER_COUNT_MAX,
    KEEP_CONFIGS_MAX,
    LOG_PENDING_MAX,
    PER_SECOND_MAX,
    PIPELINED_MAX,
    QUOTA_FLUSH_MAX,
    RATE_BYTES_MAX,
    SECONDS_MAX,
    STREAMS_MAX,
    WORKERS_MAX,
    GiB,
    HeaderOpsSpec,
    MiB,
    SecretSpec,
    doc,
)
from fastgw.config.listener_spec import CertificateSpec, ListenerSpec, TlsSpec
from fastgw.config.retention_spec import RetentionSpec
from fastgw.config.store_spec import ClusterSpec, StoreSpec
from fastgw.config.upstream_spec import HealthCheckSpec, UpstreamSpec, UpstreamTlsSpec
from fastgw.handlers.registry import KINDS
from fastgw.policy.registry import POLICIES

# Re-exported: what callers import from here (the rest of config/fields.py is imported from there).
__all__ = [
    "CAPACITY_MAX",
    "WORKERS_MAX",
    "CertificateSpec",
    "ClusterSpec",
    "GiB",
    "HeaderOpsSpec",
    "HealthCheckSpec",
    "ListenerSpec",
    "MiB",
    "RetentionSpec",
    "SecretSpec",
    "StoreSpec",
    "TlsSpec",
    "UpstreamSpec",
    "UpstreamTlsSpec",
    "doc",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    http1: Literal["auto", "httptools", "h11"] = doc("HTTP/1 parser backend; auto picks httptools", "auto")
    max_header_bytes: int = doc("largest request header section in bytes (else 431)", 16384, most=HEAD_MAX)
    max_header_count: int = doc("most request header lines (else 431)", 100, most=HEADER_COUNT_MAX)
    max_target_bytes: int = doc("longest request target in bytes (else 414)", 8192, most=HEAD_MAX)
    max_body_bytes: int = doc(
        "largest request body in bytes, unless a route sets its own (else 413)", 10 * MiB, most=BODY_MAX
    )
    header_timeout: float = doc(
        "seconds to receive a complete request head (else 408 and close)", 10.0, most=SECONDS_MAX
    )
    body_timeout: float = doc(
        "seconds without any body byte before a body read times out (408)", 30.0, most=SECONDS_MAX
    )
    body_min_rate: int = doc(
        "minimum average body rate in bytes/s, enforced after body_timeout", 1024, most=RATE_BYTES_MAX
    )
    idle_timeout: float = doc(
        "seconds a keep-alive connection may sit idle between requests", 60.0, most=SECONDS_MAX
    )
    send_timeout: float = doc(
        "seconds a client may stop reading a response before it is dropped", 30.0, most=SECONDS_MAX
    )
    max_connections: int = doc(
        "client connections per worker; beyond it new ones get 503 and are closed",
        10000,
        most=CONNECTIONS_MAX,
    )
    max_connections_per_ip: int = doc(
        "client connections per client address per worker", 1024, most=CONNECTIONS_MAX
    )
    max_pipelined: int = doc(
        "pipelined requests queued per connection before reading pauses", 16, most=PIPELINED_MAX
    )
    batch_writes: bool = doc(
        "hold upstream requests and HTTP/1 responses ready in one event-loop iteration and write them"
        " together at its end: fewer wake-ups of the peers' CPUs under load (HTTP/2 responses are always"
        " written once per iteration)",
        True,
    )
    merge_slashes: bool = doc("merge repeated '/' in paths before routing", True)
    allow_encoded_slash: bool = doc("accept %2F and %5C in paths (kept encoded) instead of 400", False)
    allow_path_params: bool = doc(
        "accept ';' path parameters (Tomcat/Spring read /a;x as /a) instead of 400", False
    )
    trusted_proxies: tuple[str, ...] = doc("CIDRs whose X-Forwarded-For is believed", ())
    server_name: str = doc("pseudonym this gateway adds to Via", "fastgw")
    drain_timeout: float = doc(
        "seconds in-flight requests get to finish on shutdown (then one still without a response is"
        " answered 503 `shutting-down`)",
        10.0,
        most=SECONDS_MAX,
    )
    snapshot_header: str = doc(
        "request header telling the upstream which config snapshot routed it ('' = none)", "fastgw-snapshot"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Http2Spec:
    enabled: bool = doc(
        "serve HTTP/2: ALPN 'h2' on TLS listeners, prior-knowledge h2c on cleartext ones", True
    )
    max_concurrent_streams: int = doc(
        "streams a client may have open at once (SETTINGS)", 100, most=STREAMS_MAX
    )
    initial_window_size: int = doc(
        "bytes of request body a stream may send before the upstream has taken them (flow control)",
        65535,
        most=H2_WINDOW_MAX,
    )
    max_header_list_size: int = doc(
        "decoded request header bytes per stream (SETTINGS; 0 = server.max_header_bytes)", 0, most=HEAD_MAX
    )
    max_requests_per_connection: int = doc(
        "streams one connection may open; then GOAWAY and the client reconnects",
        10000,
        most=H2_STREAM_IDS_MAX,
    )
    max_resets_per_second: int = doc(
        "RST_STREAM frames a client may send per second (rapid reset, CVE-2023-44487)",
        200,
        most=PER_SECOND_MAX,
    )
    max_control_frames_per_second: int = doc(
        "SETTINGS, PING, PRIORITY and WINDOW_UPDATE frames a client may send per second",
        1000,
        most=PER_SECOND_MAX,
    )
    max_empty_frames_per_second: int = doc(
        "frames without payload or END_STREAM (empty DATA, empty CONTINUATION) a client may send per second",
        100,
        most=PER_SECOND_MAX,
    )
    max_continuation_frames: int = doc(
        "CONTINUATION frames one header block may span", 32, most=CONTINUATION_MAX
    )
    max_outbound_buffer: int = doc(
        "bytes queued to a client that is not reading before its connection is dropped",
        1024 * 1024,
        most=BUFFER_MAX,
    )
    stream_buffer: int = doc(
        "response bytes buffered per stream while the client's window is closed before the upstream "
        "read pauses",
        65536,
        most=BUFFER_MAX,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLogSpec:
    target: str = doc("where JSON lines go: 'stdout', 'off' or a file path", "stdout")
    include_query: bool = doc("log the query string (values of redact_query names are masked)", False)
    redact_query: tuple[str, ...] = doc(
        "query parameters whose values are logged as REDACTED (case-insensitive, percent-decoded)",
        (
            "access_token",
            "api_key",
            "apikey",
            "key",
            "token",
            "password",
            "secret",
            "signature",
            "sig",
            "code",
            "client_secret",
            "x-amz-signature",
            "x-amz-credential",
        ),
    )
    max_pending: int = doc(
        "records buffered before new ones are dropped (and counted)", 65536, most=LOG_PENDING_MAX
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityHeadersSpec:
    consumer: str = doc("header carrying the consumer's name upstream ('' = none)", "x-consumer")
    consumer_id: str = doc("header carrying the consumer's id", "x-consumer-id")
    team: str = doc("header carrying the consumer's team", "x-consumer-team")
    roles: str = doc("header carrying the roles, comma-separated", "x-consumer-roles")
    scopes: str = doc("header carrying the scopes, space-separated", "x-consumer-scopes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityHeadersSpec:
    hsts: str = doc("Strict-Transport-Security on TLS listeners ('' = none)", "max-age=31536000")
    content_type_options: str = doc("X-Content-Type-Options ('' = none)", "nosniff")
    referrer_policy: str = doc("Referrer-Policy ('' = none)", "strict-origin-when-cross-origin")
    frame_options: str = doc("X-Frame-Options, e.g. 'DENY' ('' = none)", "")
    remove: tuple[str, ...] = doc("response headers removed from every upstream response", ())


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSpec:
    url: str = doc(
        "redis:// or rediss:// URL of the store the nodes share (a password in it: use url_secret)", ""
    )
    url_secret: SecretSpec | None = doc("the URL as a secret reference, when it carries a password", None)
    flush_interval: float = doc(
        "seconds between flushes of this worker's counts (<= 0.05 recommended)", 0.05, most=FLUSH_MAX
    )
    timeout: float = doc("seconds a flush may take before the store counts as down", 0.25, most=FLUSH_MAX)
    failure: Literal["open", "closed"] = doc(
        "store down: 'open' keeps node-local limits, 'closed' refuses limited requests with 503", "open"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitsSpec:
    capacity: int = doc(
        "counter cells per worker in shared memory (32 bytes each; needs a restart)", 65536, most=CAPACITY_MAX
    )
    quota_flush: float = doc(
        "seconds between a worker's sends of quota counts to the store (a crash loses at most this)",
        1.0,
        most=QUOTA_FLUSH_MAX,
    )
    redis: RedisSpec | None = doc(
        "[rate_limits.redis]: share sliding-window limits across gateways (cluster mode)", None
    )


# The authentication schemes a route may name (alone, or several in a list).
AuthScheme = Literal["none", "api_key", "jwt", "mtls", "introspection"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _RouteCore:
    """The keys every route has; RouteSpec below adds the sections policies declare in the registry."""

    name: str = doc("unique route name, used in logs and metrics", ...)
    path: str = doc("path prefix (segment-wise) or exact path, starting with '/'", ...)
    upstream: str = doc("name of an [upstreams.NAME] table (required for kind = 'proxy')", "")
    kind: str = doc(
        "what serves the route: 'proxy' forwards to the upstream; a handler kind (see routes.handler)"
        " answers itself, after the same policies",
        "proxy",
    )
    handler: dict[str, Any] = doc("the handler kind's settings (a table, see routes.handler)", {})
    auth: AuthScheme | tuple[AuthScheme, ...] = doc(
        "authentication, required on every route: 'none' (public), 'api_key', 'jwt', 'mtls', 'introspection',"
        " or a list of these (not 'none') to accept any one of them: each credential the request presents"
        " is given to the scheme its shape names (an fgw_ key, a three-part JWT, an opaque bearer token, a"
        " client certificate) and verified once; a presented credential that fails is never skipped",
        ...,
    )
    auth_multiple: Literal["refuse", "all"] = doc(
        "a list auth route given credentials of two schemes at once: 'refuse' (400) or 'all' (every one is"
        " verified and must pass; the consumer comes from the scheme listed first)",
        "refuse",
    )
    host: str = doc("Host to match: a name, '*.suffix' or '*' for any", "*")
    match: Literal["prefix", "exact"] = doc("how path is matched", "prefix")
    methods: tuple[str, ...] = doc("allowed methods; empty allows all", ())
    strip_prefix: bool = doc("remove the matched prefix before forwarding", False)
    preserve_host: bool = doc("forward the client's Host instead of the target's host:port", False)
    max_body_bytes: int | None = doc(
        "body limit for this route (default: server.max_body_bytes; on a prompt_api route at most 1 MiB,"
        " PROMPT_BODY_DEFAULT: a form's JSON, whose every byte the input schema's validation costs)",
        None,
        most=BODY_MAX,
    )
    request_headers: HeaderOpsSpec = doc("headers set/removed before forwarding", HeaderOpsSpec())
    response_headers: HeaderOpsSpec = doc("headers set/removed on responses", HeaderOpsSpec())


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoUpstreamSpec:
    bind: str = doc("address:port of the built-in demo upstream", "127.0.0.1:8081")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpec:
    workers: int = doc(
        "worker processes; 0 = one per CPU (`fastgw run --workers N` overrides)", 0, most=WORKERS_MAX
    )
    reuse_port: bool = doc("one SO_REUSEPORT socket per worker instead of one shared socket", False)
    max_connection_age: float = doc(
        "seconds a client connection is kept (each one 0-10% less, so they do not all end at once):"
        " then its next response says Connection: close (HTTP/2: GOAWAY) and the client reconnects, so"
        " long-lived connections spread over the workers again after a worker restart; 0 = forever",
        300.0,
        most=(86400, "a day: longer is the same as forever for rebalancing"),
    )
    restart_backoff_max: float = doc(
        "longest wait in seconds before restarting a crashing child", 30.0, most=SECONDS_MAX
    )
    reload_timeout: float = doc(
        "seconds workers get to compile and acknowledge a reload", 10.0, most=SECONDS_MAX
    )
    hang_timeout: float = doc(
        "seconds a worker's event loop may stop ticking before it is killed", 30.0, most=SECONDS_MAX
    )
    watchdog: bool = doc("send systemd WATCHDOG=1 pings when WatchdogSec= is set", True)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSpec:
    dir: str = doc(
        "state directory (store, audit log, config history); default $STATE_DIRECTORY, "
        "else ~/.local/state/fastgw",
        "",
    )
    keep_configs: int = doc("valid configs kept for `fastgw rollback`", 10, most=KEEP_CONFIGS_MAX)
    pid_file: str = doc("pid file of the supervisor (default: DIR/fastgw.pid)", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSpec:
    bind: str = doc("admin listener: address:port (loopback advised) or unix:/path", "127.0.0.1:9901")
    token: SecretSpec = doc("the admin bearer token (a secret reference: file, env or credential)", ...)
    open_metrics: bool = doc("serve /metrics without the token (for a scraper on a trusted network)", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSpec:
    file: str = doc("append-only audit log (default: STATE_DIR/audit.log)", "")
    key: SecretSpec | None = doc(
        "HMAC key of the audit chain (a secret reference); default: STATE_DIR/audit.key, generated", None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysSpec:
    pepper: SecretSpec = doc("HMAC-SHA-256 pepper of stored API key digests (a secret reference)", ...)
    pepper_id: str = doc("id stored with every new key; change it together with the pepper", "p1")
    old_peppers: dict[str, SecretSpec] = doc(
        "retired peppers by id, still accepted for the keys created under them", {}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _ConfigCore:
    """The top-level keys that are no policy's; ConfigSpec below adds the sections the registries declare."""

    listeners: tuple[ListenerSpec, ...] = doc("[[listeners]] tables: where clients connect", ...)
    routes: tuple[RouteSpec, ...] = doc("[[routes]] tables, matched host -> path -> method", ...)
    upstreams: dict[str, UpstreamSpec] = doc("[upstreams.NAME] tables", {})
    server: ServerSpec = doc("[server] limits and timeouts", ServerSpec())
    http2: Http2Spec = doc("[http2] HTTP/2 settings and abuse limits", Http2Spec())
    access_log: AccessLogSpec = doc("[access_log] settings", AccessLogSpec())
    demo_upstream: DemoUpstreamSpec | None = doc("[demo_upstream]: serve a demo backend in-process", None)
    process: ProcessSpec = doc("[process] supervisor and workers", ProcessSpec())
    state: StateSpec = doc("[state] where fastgw keeps its state", StateSpec())
    store: StoreSpec = doc("[store] where consumers, keys and provider keys live", StoreSpec())
    cluster: ClusterSpec = doc("[cluster] this node among several sharing one store", ClusterSpec())
    retention: RetentionSpec = doc("[retention] how long records are kept", RetentionSpec())
    admin: AdminSpec | None = doc("[admin] API on its own listener (off unless configured)", None)
    audit: AuditSpec = doc("[audit] the tamper-evident log of admin actions and reloads", AuditSpec())
    keys: KeysSpec | None = doc("[keys] how API keys are stored (needed by auth = 'api_key')", None)
    rate_limits: RateLimitsSpec = doc("[rate_limits] the shared counter table", RateLimitsSpec())
    security_headers: SecurityHeadersSpec = doc(
        "[security_headers] added to every proxied response", SecurityHeadersSpec()
    )
    identity_headers: IdentityHeadersSpec = doc(
        "[identity_headers] who the caller is, told to the upstream; client copies are always removed",
        IdentityHeadersSpec(),
    )


def _registry_sections() -> list[tuple[str, Any, Any]]:
    """The top-level keys the registries declare: policies' (policy/registry.py) and handler kinds'
    (handlers/registry.py). A key declared twice, or one the schema has, is a programming error."""
    sections = [entry.schema.field(entry.section) for entry in POLICIES if entry.schema is not None]
    sections += [kind.section.field(kind.section_key) for kind in KINDS.values() if kind.section]
    names = [name for name, _, _ in sections] + [f.name for f in fields(_ConfigCore)]
    if len(names) != len(set(names)):
        raise ValueError(f"a top-level config key is declared twice: {sorted(names)}")
    return sections


def build_config_spec() -> type:
    """The top-level table: its own keys and one key per section a registry entry declares, so a new
    policy is its module and its registry line, not an edit here. Called once below; a test that
    registers its own entry calls it again (and puts the result in place of ``ConfigSpec``)."""
    cls = make_dataclass(
        "ConfigSpec", _registry_sections(), bases=(_ConfigCore,), frozen=True, slots=True, kw_only=True
    )
    cls.__module__ = __name__  # for pickling and reprs, as a class written here would have
    return cls


if TYPE_CHECKING:
    RouteSpec = _RouteCore
    ConfigSpec = _ConfigCore
else:
    # The [[routes]] table: its own keys and one table per policy that declares a route section.
    RouteSpec = make_dataclass(
        "RouteSpec",
        [
            entry.route_schema.field(entry.route_section)
            for entry in POLICIES
            if entry.route_schema is not None
        ],
        bases=(_RouteCore,),
        frozen=True,
        slots=True,
        kw_only=True,
    )
    RouteSpec.__module__ = __name__
    ConfigSpec = build_config_spec()

# Every table the registries declare is named here too, as when the schema listed them: callers keep
# ``schema.JwtSpec``, and the checks over the schema's specs (maxima, the reference) see them all.
globals().update(
    {
        spec.__name__: spec
        for section in (
            *(s for entry in POLICIES for s in (entry.schema, entry.route_schema)),
            *(kind.section for kind in KINDS.values()),
        )
        if section is not None
        for _, spec, _ in section.tables
    }
)
