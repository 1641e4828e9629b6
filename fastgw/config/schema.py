"""Frozen specs mirroring the TOML file, key for key. Every key has a default and a ``doc`` line.

``loader.py`` builds these from a parsed TOML document generically from the type hints below, so adding a
key means adding one field here (and regenerating docs/configuration.md: ``tests/config/test_docs.py``
checks that every key is documented). Specs are plain data; validation that needs more than a type
(addresses, references, CIDRs) happens in ``compiler.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from typing import TYPE_CHECKING, Any, Literal

# Re-exported: the maxima and shared specs (config/fields.py) and the sections policies own.
from fastgw.config.fields import (
    BACKLOG_MAX,
    BODY_MAX,
    BUFFER_MAX,
    CACHE_MAX,
    CAPACITY_MAX,
    CONCURRENCY_MAX,
    CONNECTIONS_MAX,
    CONTINUATION_MAX,
    COUNT_MAX,
    FLUSH_MAX,
    FRACTION_MAX,
    H2_STREAM_IDS_MAX,
    H2_WINDOW_MAX,
    HEAD_MAX,
    HEADER_COUNT_MAX,
    INTROSPECTION_CALLS_MAX,
    KEEP_CONFIGS_MAX,
    LOG_PENDING_MAX,
    PER_SECOND_MAX,
    PIPELINED_MAX,
    PORTS_MAX,
    PREFLIGHT_AGE_MAX,
    PROBES_MAX,
    QUEUE_MAX,
    QUOTA_FLUSH_MAX,
    RATE_BYTES_MAX,
    REQUESTS_MAX,
    SECONDS_MAX,
    STREAMS_MAX,
    WAIT_MAX,
    WINDOW_MAX,
    WORKERS_MAX,
    GiB,
    HeaderOpsSpec,
    MiB,
    SecretSpec,
    doc,
)
from fastgw.policy.api_key_config import ApiKeySpec
from fastgw.policy.cors import (
    CorsSpec,
)
from fastgw.policy.introspection import (
    IntrospectionSpec,
)
from fastgw.policy.jwt_config import (
    JweSpec,
    JwtIssuerSpec,
    JwtSpec,
    RouteJwtSpec,
)
from fastgw.policy.mtls import (
    CertConsumerSpec,
    MtlsSpec,
)
from fastgw.policy.network import (
    NetworkSpec,
)
from fastgw.policy.rate_limit_config import (
    RateLimitSpec,
)
from fastgw.policy.rbac import (
    AuthorizeSpec,
    RequirementSpec,
)
from fastgw.policy.registry import POLICIES
from fastgw.policy.throttle_config import AuthThrottleSpec

# Re-exported names (callers import them from here, as before the sections moved).
__all__ = [
    "BACKLOG_MAX",
    "BODY_MAX",
    "BUFFER_MAX",
    "CACHE_MAX",
    "CAPACITY_MAX",
    "CONCURRENCY_MAX",
    "CONNECTIONS_MAX",
    "CONTINUATION_MAX",
    "COUNT_MAX",
    "FLUSH_MAX",
    "FRACTION_MAX",
    "H2_STREAM_IDS_MAX",
    "H2_WINDOW_MAX",
    "HEADER_COUNT_MAX",
    "HEAD_MAX",
    "INTROSPECTION_CALLS_MAX",
    "KEEP_CONFIGS_MAX",
    "LOG_PENDING_MAX",
    "PER_SECOND_MAX",
    "PIPELINED_MAX",
    "PORTS_MAX",
    "PREFLIGHT_AGE_MAX",
    "PROBES_MAX",
    "QUEUE_MAX",
    "QUOTA_FLUSH_MAX",
    "RATE_BYTES_MAX",
    "REQUESTS_MAX",
    "SECONDS_MAX",
    "STREAMS_MAX",
    "WAIT_MAX",
    "WINDOW_MAX",
    "WORKERS_MAX",
    "ApiKeySpec",
    "AuthThrottleSpec",
    "AuthorizeSpec",
    "CertConsumerSpec",
    "CorsSpec",
    "GiB",
    "HeaderOpsSpec",
    "IntrospectionSpec",
    "JweSpec",
    "JwtIssuerSpec",
    "JwtSpec",
    "MiB",
    "MtlsSpec",
    "NetworkSpec",
    "RateLimitSpec",
    "RequirementSpec",
    "RouteJwtSpec",
    "SecretSpec",
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
    drain_timeout: float = doc("seconds in-flight requests get to finish on shutdown", 10.0, most=SECONDS_MAX)
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
class CertificateSpec:
    cert: str = doc("PEM certificate chain file (relative paths are relative to the config file)", ...)
    key: str = doc("PEM private key file; should not be readable by group or others", ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSpec:
    certificates: tuple[CertificateSpec, ...] = doc(
        "{ cert, key } pairs; chosen by SNI, the first is the default", ...
    )
    profile: Literal["intermediate", "modern"] = doc(
        "Mozilla profile: TLS 1.2+1.3 AEAD, or TLS 1.3 only", "intermediate"
    )
    client_auth: Literal["none", "optional", "required"] = doc("ask clients for a certificate (mTLS)", "none")
    client_ca: str | None = doc("PEM bundle of CAs that client certificates must chain to", None)
    crl: str | None = doc("PEM certificate revocation list checked for client certificates", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSpec:
    bind: str = doc("address:port to listen on, e.g. 127.0.0.1:8080 or [::1]:8080", ...)
    name: str = doc("listener name used in logs", "public")
    proxy_protocol: bool = doc("require a PROXY protocol v1/v2 header on every connection", False)
    backlog: int = doc("listen(2) backlog", 2048, most=BACKLOG_MAX)
    tls: TlsSpec | None = doc("terminate TLS on this listener (a table, see listeners.tls)", None)


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
class UpstreamTlsSpec:
    verify: bool = doc("verify the upstream's certificate and host name (false: fastgw check warns)", True)
    ca: str | None = doc("PEM bundle of CAs to trust instead of the system store", None)
    sni: str | None = doc("server name to send and verify (default: the target's host)", None)
    cert: str | None = doc("client certificate (PEM) to present to the upstream", None)
    key: str | None = doc("key of the client certificate", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckSpec:
    path: str = doc("path probed with GET on every target", "/")
    interval: float = doc("seconds between probes of a target", 5.0, most=SECONDS_MAX)
    timeout: float = doc("seconds a probe may take (connect + response head)", 2.0, most=SECONDS_MAX)
    healthy_threshold: int = doc("consecutive successes that bring a target back", 2, most=PROBES_MAX)
    unhealthy_threshold: int = doc("consecutive failures that take a target out", 3, most=PROBES_MAX)
    expect_status: str = doc("status range that counts as healthy, e.g. '200-299'", "200-399")
    host: str | None = doc("Host header of probes (default: the target's host)", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSpec:
    targets: tuple[str, ...] = doc("host:port of each backend", ...)
    balance: Literal["round_robin", "least_conn"] = doc("how a target is chosen", "round_robin")
    max_connections: int = doc(
        "connections per target per worker, connects in flight included", 256, most=PORTS_MAX
    )
    max_idle: int = doc("idle keep-alive connections kept per target per worker", 64, most=PORTS_MAX)
    idle_timeout: float = doc("seconds an idle upstream connection is kept", 30.0, most=SECONDS_MAX)
    connect_timeout: float = doc("seconds to establish a connection (else 504)", 3.0, most=SECONDS_MAX)
    first_byte_timeout: float | None = doc(
        "seconds from the end of the request body to the first response byte (else 504); default:"
        " read_timeout. The clock starts only once the client's whole body was sent on: a slow upload is"
        " the client's stall (server.body_timeout), never the upstream's",
        None,
        most=SECONDS_MAX,
    )
    read_timeout: float = doc(
        "seconds without a response byte once the response has begun (else 504, or a reset if bytes"
        " already reached the client); also the first-byte wait unless first_byte_timeout is set",
        30.0,
        most=SECONDS_MAX,
    )
    queue_timeout: float = doc(
        "seconds a request waits for a free connection at the limit (else 503)", 5.0, most=SECONDS_MAX
    )
    max_failures: int = doc("consecutive failures that eject a target (passive health)", 3, most=COUNT_MAX)
    eject_seconds: float = doc("seconds an ejected target is skipped", 10.0, most=SECONDS_MAX)
    retry: bool = doc("retry idempotent requests once when a reused connection was closed", True)
    dns_ttl: float = doc(
        "seconds a target host name's addresses are used before it is resolved again", 30.0, most=SECONDS_MAX
    )
    retry_budget: float = doc(
        "retries allowed per worker as a fraction of requests (10 s windows)", 0.2, most=FRACTION_MAX
    )
    retry_min: int = doc(
        "retries always allowed per worker per 10 s window, whatever the budget", 10, most=COUNT_MAX
    )
    health_check: HealthCheckSpec | None = doc(
        "active health checks (a table, see upstreams.NAME.health_check)", None
    )
    tls: UpstreamTlsSpec | None = doc("connect with TLS (a table, see upstreams.NAME.tls)", None)


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
        "body limit for this route (default: server.max_body_bytes)", None, most=BODY_MAX
    )
    request_headers: HeaderOpsSpec = doc("headers set/removed before forwarding", HeaderOpsSpec())
    response_headers: HeaderOpsSpec = doc("headers set/removed on responses", HeaderOpsSpec())
    network: NetworkSpec | None = doc("route-level IP rules, applied after the global ones", None)
    authorize: AuthorizeSpec | None = doc("who may call this route (a table, see routes.authorize)", None)
    cors: CorsSpec | None = doc("CORS for browser callers (a table, see routes.cors)", None)
    limits: tuple[RateLimitSpec, ...] = doc("rate limits (tables, see routes.limits); all must pass", ())
    jwt: RouteJwtSpec | None = doc(
        "which [jwt.issuers] and audiences an auth = 'jwt' route accepts (a table, see routes.jwt);"
        " unset: every issuer, if only one is configured",
        None,
    )


def _policy_field(name: str, spec: type, text: str) -> tuple[str, Any, Any]:
    """A route key for a policy's own section: optional, documented by the policy."""
    return name, spec | None, doc(f"{text} (a table, see routes.{name})", None)


if TYPE_CHECKING:
    RouteSpec = _RouteCore
else:
    # The [[routes]] table: its own keys and one table per policy that declares a route section, so a
    # new policy is its module and its registry line (policy/registry.py), not an edit here.
    RouteSpec = make_dataclass(
        "RouteSpec",
        [
            _policy_field(entry.route_section, spec, entry.section_doc())
            for entry in POLICIES
            if (spec := entry.route_spec) is not None
        ],
        bases=(_RouteCore,),
        frozen=True,
        slots=True,
        kw_only=True,
    )
    RouteSpec.__module__ = __name__  # for pickling and reprs, as a class written here would have


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
class ConfigSpec:
    listeners: tuple[ListenerSpec, ...] = doc("[[listeners]] tables: where clients connect", ...)
    routes: tuple[RouteSpec, ...] = doc("[[routes]] tables, matched host -> path -> method", ...)
    upstreams: dict[str, UpstreamSpec] = doc("[upstreams.NAME] tables", {})
    server: ServerSpec = doc("[server] limits and timeouts", ServerSpec())
    http2: Http2Spec = doc("[http2] HTTP/2 settings and abuse limits", Http2Spec())
    access_log: AccessLogSpec = doc("[access_log] settings", AccessLogSpec())
    network: NetworkSpec = doc("[network] global IP rules", NetworkSpec())
    demo_upstream: DemoUpstreamSpec | None = doc("[demo_upstream]: serve a demo backend in-process", None)
    process: ProcessSpec = doc("[process] supervisor and workers", ProcessSpec())
    state: StateSpec = doc("[state] where fastgw keeps its state", StateSpec())
    admin: AdminSpec | None = doc("[admin] API on its own listener (off unless configured)", None)
    audit: AuditSpec = doc("[audit] the tamper-evident log of admin actions and reloads", AuditSpec())
    keys: KeysSpec | None = doc("[keys] how API keys are stored (needed by auth = 'api_key')", None)
    api_key: ApiKeySpec = doc("[api_key] the API key policy of routes with auth = 'api_key'", ApiKeySpec())
    rate_limits: RateLimitsSpec = doc("[rate_limits] the shared counter table", RateLimitsSpec())
    auth_throttle: AuthThrottleSpec = doc(
        "[auth_throttle] repeated authentication failures, per worker", AuthThrottleSpec()
    )
    introspection: IntrospectionSpec | None = doc(
        "[introspection] OAuth2 token introspection (needed by auth = 'introspection')", None
    )
    mtls: MtlsSpec | None = doc("[mtls] client certificates as consumers (needed by auth = 'mtls')", None)
    jwt: JwtSpec | None = doc("[jwt] bearer token issuers (needed by auth = 'jwt')", None)
    security_headers: SecurityHeadersSpec = doc(
        "[security_headers] added to every proxied response", SecurityHeadersSpec()
    )
    identity_headers: IdentityHeadersSpec = doc(
        "[identity_headers] who the caller is, told to the upstream; client copies are always removed",
        IdentityHeadersSpec(),
    )
