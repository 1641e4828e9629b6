"""Frozen specs mirroring the TOML file, key for key. Every key has a default and a ``doc`` line.

``loader.py`` builds these from a parsed TOML document generically from the type hints below, so adding a
key means adding one field here (and regenerating docs/configuration.md: ``tests/config/test_docs.py``
checks that every key is documented). Specs are plain data; validation that needs more than a type
(addresses, references, CIDRs) happens in ``compiler.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

MiB = 1024 * 1024
GiB = 1024 * MiB

# The largest value of each numeric key, with the reason for it. The loader refuses a larger value with
# this reason (one line naming file and key), so `fastgw check` catches what would make `fastgw run` hang
# or fail later; the configuration reference shows each one. (value, reason)
SECONDS_MAX: Final = (86400, "a day: a longer deadline is no deadline at all")
HEAD_MAX: Final = (1 * MiB, "a request head is buffered whole in memory, per connection")
HEADER_COUNT_MAX: Final = (10000, "every header line is parsed and kept, per request")
BODY_MAX: Final = (1024 * GiB, "1 TiB: bodies are streamed, a larger ceiling is a typo")
RATE_BYTES_MAX: Final = (1 * GiB, "faster than any client link: a higher minimum refuses every upload")
CONNECTIONS_MAX: Final = (1 << 20, "the kernel's ceiling on open files per process (fs.nr_open)")
PIPELINED_MAX: Final = (1024, "queued requests are held in memory, per connection")
STREAMS_MAX: Final = (10000, "every open stream holds buffers in memory, per connection")
H2_WINDOW_MAX: Final = (2**31 - 1, "the largest flow-control window (RFC 9113 6.9.2)")
H2_STREAM_IDS_MAX: Final = (2**30, "client stream ids are odd 31-bit numbers: 2^30 of them")
PER_SECOND_MAX: Final = (1_000_000, "no legitimate client comes near it: higher is no limit at all")
CONTINUATION_MAX: Final = (1024, "the frames of one header block are held until it ends")
BUFFER_MAX: Final = (1 * GiB, "bytes held in memory for one client")
BACKLOG_MAX: Final = (65535, "the kernel caps listen(2) at net.core.somaxconn, at most 65535 on most systems")
LOG_PENDING_MAX: Final = (1 << 20, "records wait in memory (about 200 bytes each, 200 MiB at most)")
PORTS_MAX: Final = (65535, "each connection to a target address takes one local port")
COUNT_MAX: Final = (1_000_000, "a count never reached in practice: higher is no limit at all")
FRACTION_MAX: Final = (1, "a fraction of requests")
PROBES_MAX: Final = (1000, "consecutive probes: more takes hours to change a target's state")
PREFLIGHT_AGE_MAX: Final = (86400, "browsers cache a preflight for 24 hours at most (Firefox; Chromium 2 h)")
REQUESTS_MAX: Final = (1_000_000_000, "a billion per window: a larger limit limits nothing")
WINDOW_MAX: Final = (31 * 86400, "31 days: longer periods are quotas (quota = 'month')")
CONCURRENCY_MAX: Final = (1_000_000, "requests in flight at once: connection limits stop far earlier")
QUEUE_MAX: Final = (10000, "waiting requests are held in memory, per worker")
WAIT_MAX: Final = (3600, "an hour: clients and proxies give up long before")
FLUSH_MAX: Final = (60, "counts are shared only at flushes: beyond a minute the limit is per node")
CAPACITY_MAX: Final = (
    1 << 24,
    "cells are 32 bytes per worker in shared memory allocated at start: 512 MiB per worker at most",
)
QUOTA_FLUSH_MAX: Final = (3600, "a crash of the node loses at most one interval of quota counts")
WORKERS_MAX: Final = (1024, "one per CPU is the useful most; each adds a process and a counter shard")
KEEP_CONFIGS_MAX: Final = (1000, "each kept config is a file in the state directory")
CACHE_MAX: Final = (10_000_000, "entries held in memory, per worker")
INTROSPECTION_CALLS_MAX: Final = (
    4096,
    "each call in flight holds a connection (a file descriptor) to the authorization server, per worker",
)


def doc(text: str, default: Any = None, *, most: tuple[float, str] | None = None, **kw: Any) -> Any:
    """A dataclass field with its documentation; ``default=...`` marks the key as required; ``most`` is
    a numeric key's (maximum, reason), checked by the loader and shown in the reference."""
    meta: dict[str, Any] = {"doc": text}
    if most is not None:
        meta["max"], meta["max_reason"] = most
    if default is ...:
        return field(metadata=meta, **kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta, **kw)


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
class NetworkSpec:
    allow: tuple[str, ...] = doc("CIDRs admitted; empty admits every address not denied", ())
    deny: tuple[str, ...] = doc("CIDRs refused with 403; deny wins over allow", ())
    mode: Literal["enforce", "shadow"] = doc("shadow logs would-denials and lets requests pass", "enforce")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderOpsSpec:
    set: dict[str, str] = doc("headers to set (replacing any copy), name -> value", {})
    remove: tuple[str, ...] = doc("header names to remove", ())


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
class RequirementSpec:
    scopes: tuple[str, ...] = doc("scopes the caller must all have", ())
    roles: tuple[str, ...] = doc("roles of which the caller needs at least one (empty: any)", ())
    teams: tuple[str, ...] = doc("teams of which the caller must be in one (empty: any)", ())


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizeSpec:
    scopes: tuple[str, ...] = doc("scopes the caller must all have", ())
    roles: tuple[str, ...] = doc("roles of which the caller needs at least one (empty: any)", ())
    teams: tuple[str, ...] = doc("teams of which the caller must be in one (empty: any)", ())
    methods: dict[str, RequirementSpec] = doc(
        "per-method requirements replacing the route's, e.g. { POST = { scopes = ['orders:write'] } }", {}
    )
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: refusals are logged and counted, requests pass", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityHeadersSpec:
    consumer: str = doc("header carrying the consumer's name upstream ('' = none)", "x-consumer")
    consumer_id: str = doc("header carrying the consumer's id", "x-consumer-id")
    team: str = doc("header carrying the consumer's team", "x-consumer-team")
    roles: str = doc("header carrying the roles, comma-separated", "x-consumer-roles")
    scopes: str = doc("header carrying the scopes, space-separated", "x-consumer-scopes")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityHeadersSpec:
    hsts: str = doc("Strict-Transport-Security on TLS listeners ('' = none)", "max-age=31536000")
    content_type_options: str = doc("X-Content-Type-Options ('' = none)", "nosniff")
    referrer_policy: str = doc("Referrer-Policy ('' = none)", "strict-origin-when-cross-origin")
    frame_options: str = doc("X-Frame-Options, e.g. 'DENY' ('' = none)", "")
    remove: tuple[str, ...] = doc("response headers removed from every upstream response", ())


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSpec:
    name: str = doc("the limit's name (in headers, logs and metrics; its counts survive reloads)", ...)
    rate: int = doc("requests admitted per window (0 with concurrency)", 0, most=REQUESTS_MAX)
    per: float = doc("the window in seconds (sliding)", 1.0, most=WINDOW_MAX)
    concurrency: int = doc(
        "instead of a rate: requests in flight at once for the key", 0, most=CONCURRENCY_MAX
    )
    algorithm: Literal["sliding", "gcra"] = doc("sliding window, or GCRA (rate + burst)", "sliding")
    burst: int = doc("GCRA: requests admitted at once on top of the rate", 0, most=REQUESTS_MAX)
    key: Literal["ip", "route", "consumer", "api_key", "header"] = doc(
        "what is counted: client address, the whole route, the consumer (its address when anonymous), "
        "the API key (the consumer for tokens and certificates), or a header's value",
        "ip",
    )
    header: str | None = doc("the header whose value is the key (key = 'header')", None)
    mode: Literal["enforce", "shadow"] = doc("shadow: count would-be rejections, reject nothing", "enforce")
    quota: Literal["", "day", "month"] = doc(
        "a quota: 'rate' requests per UTC calendar day or month, kept in the store across restarts", ""
    )
    queue: int = doc(
        "throttle instead of refusing: requests over the limit wait in a fair queue of this many per "
        "worker (0 = refuse at once)",
        0,
        most=QUEUE_MAX,
    )
    max_wait: float = doc("seconds a queued request may wait before its 429", 1.0, most=WAIT_MAX)


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
class RouteSpec:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteJwtSpec:
    issuers: tuple[str, ...] = doc("names of [jwt.issuers.NAME] tables whose tokens this route accepts", ...)
    audiences: tuple[str, ...] = doc(
        "the token's 'aud' must also contain one of these (empty: the issuer's audiences suffice)", ()
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoUpstreamSpec:
    bind: str = doc("address:port of the built-in demo upstream", "127.0.0.1:8081")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSpec:
    """Where a secret comes from; secrets are never written inline in TOML."""

    file: str | None = doc("read the secret from this file (trailing newline removed)", None)
    env: str | None = doc("read the secret from this environment variable", None)
    credential: str | None = doc("read $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=)", None)


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
class ApiKeySpec:
    headers: tuple[str, ...] = doc(
        "headers that may carry the key; Authorization takes 'Bearer KEY'", ("authorization", "x-api-key")
    )
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtIssuerSpec:
    issuer: str = doc("the exact 'iss' value of this issuer's tokens", ...)
    audiences: tuple[str, ...] = doc(
        "'aud' must contain one of these (required unless empty list given)", ...
    )
    algorithms: tuple[str, ...] = doc(
        "allowed 'alg' values; HS* need secret, RS*/PS*/ES*/EdDSA need public keys; never 'none'", ...
    )
    secret: SecretSpec | None = doc("shared HMAC secret (a secret reference, >= 32 bytes)", None)
    public_keys: tuple[str, ...] = doc("PEM public key files (used for tokens without a matching kid)", ())
    jwks_file: str | None = doc("a JWKS file (JSON Web Key Set): keys chosen by 'kid'", None)
    jwks_url: str | None = doc("a JWKS URL, fetched by each worker and refreshed in the background", None)
    discovery_url: str | None = doc("an OIDC discovery document whose jwks_uri names the JWKS", None)
    jwks_refresh: float = doc("seconds between background JWKS refreshes", 300.0, most=SECONDS_MAX)
    jwks_min_interval: float = doc(
        "least seconds between fetches (an unknown kid triggers one)", 10.0, most=SECONDS_MAX
    )
    jwks_timeout: float = doc("seconds a JWKS or discovery fetch may take", 3.0, most=SECONDS_MAX)
    jwks_max_stale: float = doc(
        "seconds the last good JWKS (kept across reloads and worker restarts in the state directory)"
        " is still used while the identity provider cannot be reached; older keys verify nothing",
        86400.0,
        most=(7 * 86400, "a week: an identity provider down longer needs an operator, not old keys"),
    )
    discovery_refresh: float = doc(
        "seconds between re-reads of the OIDC discovery document (also re-read after a failed JWKS fetch)",
        3600.0,
        most=SECONDS_MAX,
    )
    allow_insecure_http: bool = doc(
        "accept plain http:// JWKS and discovery URLs (and a discovered jwks_uri); loopback is always"
        " accepted, with a warning",
        False,
    )
    ca: str | None = doc("PEM bundle to verify the JWKS and discovery URLs with (default: system)", None)
    leeway: float = doc("seconds of clock skew tolerated on exp, nbf and iat", 30.0, most=SECONDS_MAX)
    consumer_claim: str = doc("claim naming the caller", "sub")
    scopes_claim: str = doc("claim with the scopes ('' = 'scope' (space-separated) or 'scp')", "")
    roles_claim: str = doc("claim with the roles (a list; '' = none)", "roles")
    team_claim: str = doc("claim with the team ('' = none)", "")
    require_cert_binding: bool = doc(
        "tokens must carry cnf.x5t#S256 matching the client certificate (RFC 8705)", False
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JweSpec:
    key: SecretSpec = doc(
        "decryption key: a PEM RSA private key (RSA-OAEP-256) or 32 raw bytes (dir), as a secret reference",
        ...,
    )
    algorithm: Literal["RSA-OAEP-256", "dir"] = doc(
        "key management algorithm (content: A256GCM)", "RSA-OAEP-256"
    )
    required: bool = doc("refuse tokens that are not encrypted", False)


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtSpec:
    issuers: dict[str, JwtIssuerSpec] = doc("[jwt.issuers.NAME] tables, one per token issuer", ...)
    max_token_bytes: int = doc("longest bearer token accepted (else 401)", 8192, most=HEAD_MAX)
    cache_size: int = doc("verified (and refused) tokens remembered per worker", 10000, most=CACHE_MAX)
    jwe: JweSpec | None = doc("decrypt nested JWE tokens before verifying them (a table, see jwt.jwe)", None)
    negative_ttl: float = doc("seconds a refused token is answered from the cache", 30.0, most=SECONDS_MAX)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CertConsumerSpec:
    consumer: str = doc("the consumer this certificate authenticates as", ...)
    sha256: str | None = doc("certificate SHA-256 fingerprint (hex, colons allowed)", None)
    san: str | None = doc("a subject alternative name (DNS, IP or email) of the certificate", None)
    subject: str | None = doc("the subject DN as an RFC 4514 string, e.g. 'CN=billing,O=Corp'", None)
    team: str = doc("the consumer's team", "")
    roles: tuple[str, ...] = doc("the consumer's roles", ())
    scopes: tuple[str, ...] = doc("the consumer's scopes", ())


@dataclass(frozen=True, slots=True, kw_only=True)
class MtlsSpec:
    consumers: tuple[CertConsumerSpec, ...] = doc("[[mtls.consumers]]: certificate -> consumer mappings", ...)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionSpec:
    url: str = doc(
        "the RFC 7662 introspection endpoint: https://, or http:// on a loopback address (with a warning)"
        " or with allow_insecure_http",
        ...,
    )
    allow_insecure_http: bool = doc(
        "accept a plain http:// url that is not a loopback address: tokens and the client secret then"
        " travel in clear",
        False,
    )
    client_id: str = doc("the gateway's client id at the authorization server", ...)
    client_secret: SecretSpec = doc("its client secret (a secret reference)", ...)
    timeout: float = doc(
        "seconds an introspection call may take (else 503, fail closed)", 2.0, most=SECONDS_MAX
    )
    cache_ttl: float = doc(
        "seconds an active answer is reused (never past the token's exp)", 60.0, most=SECONDS_MAX
    )
    negative_ttl: float = doc("seconds an inactive answer is reused", 10.0, most=SECONDS_MAX)
    cache_size: int = doc("tokens remembered per worker", 10000, most=CACHE_MAX)
    max_token_bytes: int = doc(
        "longest bearer token sent to the endpoint (else 401, no call)", 8192, most=HEAD_MAX
    )
    max_concurrent: int = doc(
        "introspection calls in flight at once, per worker; more wait for a slot within timeout (else 503)",
        64,
        most=INTROSPECTION_CALLS_MAX,
    )
    ca: str | None = doc("PEM bundle to verify the endpoint with instead of the system store", None)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthThrottleSpec:
    enabled: bool = doc("slow down, then refuse, clients that keep failing authentication", True)
    window: float = doc("seconds over which failures are counted", 60.0, most=SECONDS_MAX)
    slow_after: int = doc(
        "failures in the window after which each failure is answered late", 10, most=COUNT_MAX
    )
    delay: float = doc("seconds a failure answer is held back once slowed", 1.0, most=WAIT_MAX)
    block_after: int = doc(
        "failures in the window after which the client is refused (429)", 50, most=COUNT_MAX
    )
    block_seconds: float = doc(
        "seconds a blocked client address or key prefix stays refused", 300.0, most=SECONDS_MAX
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
