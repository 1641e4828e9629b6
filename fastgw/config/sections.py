"""Compile the config sections that are not policies: server, listeners' TLS, HTTP/2, upstreams and
their health checks, process, state, admin, audit, keys, the shared Redis, response header defaults.

Functions of a ``CompileContext`` (errors with key paths, relative paths, secrets); each returns the
Snapshot piece it builds and never mutates its spec.
"""

from __future__ import annotations

import os
import re
from typing import Final, Literal

from fastgw.codec.http1_backends import resolve_backend
from fastgw.config.context import MANAGED, TOKEN, CompileContext
from fastgw.config.schema import (
    AdminSpec,
    AuditSpec,
    HealthCheckSpec,
    Http2Spec,
    IdentityHeadersSpec,
    KeysSpec,
    ProcessSpec,
    RedisSpec,
    SecurityHeadersSpec,
    ServerSpec,
    StateSpec,
    StoreSpec,
    TlsSpec,
    UpstreamSpec,
)
from fastgw.config.store_spec import NODE_NAME_MAX
from fastgw.policy.network import networks
from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import (
    AdminSettings,
    AuditSettings,
    HealthCheckSettings,
    Http2Settings,
    KeySettings,
    ProcessSettings,
    RedisSettings,
    ServerSettings,
    StateSettings,
    StoreSettings,
    Target,
    UpstreamSettings,
)
from fastgw.tls.client import build_client_tls
from fastgw.tls.server import ListenerTls, TlsConfigError, build_listener_tls

# Connections are recycled to rebalance workers; beyond a day the spread would take longer than anyone waits.
MAX_CONNECTION_AGE: Final = 86400.0
HOSTNAME: Final = re.compile(r"(\*|\*\.[A-Za-z0-9.-]+|[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])")


def parse_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``. Raises ValueError with a reason."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


def server(ctx: CompileContext, s: ServerSpec) -> ServerSettings:
    for name in (
        "max_header_bytes",
        "max_header_count",
        "max_target_bytes",
        "header_timeout",
        "body_timeout",
        "idle_timeout",
        "send_timeout",
        "max_connections",
        "max_connections_per_ip",
        "max_pipelined",
        "drain_timeout",
    ):
        ctx.positive(f"server.{name}", getattr(s, name))
    if s.max_body_bytes < 0 or s.body_min_rate < 0:
        raise ctx.error("server", "max_body_bytes and body_min_rate must not be negative")
    backend: Literal["httptools", "h11"] = "h11" if resolve_backend(s.http1) == "h11" else "httptools"
    settings = ServerSettings(
        http1=backend,
        max_header_bytes=s.max_header_bytes,
        max_header_count=s.max_header_count,
        max_target_bytes=s.max_target_bytes,
        max_body_bytes=s.max_body_bytes,
        header_timeout=s.header_timeout,
        body_timeout=s.body_timeout,
        body_min_rate=s.body_min_rate,
        idle_timeout=s.idle_timeout,
        send_timeout=s.send_timeout,
        max_connections=s.max_connections,
        max_connections_per_ip=s.max_connections_per_ip,
        max_pipelined=s.max_pipelined,
        batch_writes=s.batch_writes,
        merge_slashes=s.merge_slashes,
        allow_encoded_slash=s.allow_encoded_slash,
        allow_path_params=s.allow_path_params,
        trusted_proxies=networks(ctx, "server.trusted_proxies", s.trusted_proxies),
        server_name=s.server_name.encode(),
        drain_timeout=s.drain_timeout,
    )
    if not TOKEN.fullmatch(s.server_name):
        raise ctx.error("server.server_name", "must be a token (letters, digits, -._~)")
    return settings


def security(
    ctx: CompileContext, spec: SecurityHeadersSpec
) -> tuple[tuple[tuple[bytes, bytes], ...], frozenset[bytes], bytes]:
    """[security_headers]: (header pairs added to responses, names removed, the HSTS line)."""
    pairs = []
    for field_name, header in (
        ("content_type_options", b"x-content-type-options"),
        ("referrer_policy", b"referrer-policy"),
        ("frame_options", b"x-frame-options"),
    ):
        value = getattr(spec, field_name)
        if any(c in value for c in "\r\n\x00"):
            raise ctx.error(f"security_headers.{field_name}", "contains CR, LF or NUL")
        if value:
            pairs.append((header, value.encode("latin-1")))
    if any(c in spec.hsts for c in "\r\n\x00"):
        raise ctx.error("security_headers.hsts", "contains CR, LF or NUL")
    for i, name in enumerate(spec.remove):
        if not TOKEN.fullmatch(name):
            raise ctx.error(f"security_headers.remove[{i}]", f"{name!r} is not a header name")
        if name.lower() in MANAGED:
            reason = f"{name!r} is managed by the gateway and cannot be removed"
            raise ctx.error(f"security_headers.remove[{i}]", reason)
    remove = frozenset(n.lower().encode() for n in spec.remove)
    hsts = b"strict-transport-security: " + spec.hsts.encode() + b"\r\n" if spec.hsts else b""
    return tuple(pairs), remove, hsts


def keys(ctx: CompileContext, spec: KeysSpec) -> KeySettings:
    if not TOKEN.fullmatch(spec.pepper_id):
        raise ctx.error("keys.pepper_id", "must be a short token (letters, digits, -._~)")
    peppers = {spec.pepper_id: resolve_secret(ctx.secret("keys.pepper", spec.pepper))}
    for pepper_id, ref in spec.old_peppers.items():
        if pepper_id == spec.pepper_id:
            raise ctx.error(f"keys.old_peppers.{pepper_id}", "is the current pepper_id")
        peppers[pepper_id] = resolve_secret(ctx.secret(f"keys.old_peppers.{pepper_id}", ref))
    if len(peppers[spec.pepper_id]) < 16:
        raise ctx.error("keys.pepper", "must be at least 16 bytes (32 random bytes advised)")
    return KeySettings(pepper_id=spec.pepper_id, peppers=peppers)


def identity_header_names(ctx: CompileContext, spec: IdentityHeadersSpec) -> tuple[tuple[bytes, str], ...]:
    out = []
    for attribute in ("consumer", "consumer_id", "team", "roles", "scopes"):
        name = getattr(spec, attribute)
        if not name:
            continue
        if not TOKEN.fullmatch(name) or name.lower() in MANAGED:
            raise ctx.error(f"identity_headers.{attribute}", f"{name!r} is not a usable header name")
        out.append((name.lower().encode(), attribute))
    return tuple(out)


def process(ctx: CompileContext, spec: ProcessSpec) -> ProcessSettings:
    if spec.workers < 0:
        raise ctx.error("process.workers", "must not be negative (0 = one per CPU)")
    ctx.positive("process.restart_backoff_max", spec.restart_backoff_max)
    ctx.positive("process.reload_timeout", spec.reload_timeout)
    ctx.positive("process.hang_timeout", spec.hang_timeout)
    if not 0 <= spec.max_connection_age <= MAX_CONNECTION_AGE:
        raise ctx.error(
            "process.max_connection_age",
            f"must be 0 (forever) to {MAX_CONNECTION_AGE:g} seconds, got {spec.max_connection_age}",
        )
    return ProcessSettings(
        workers=spec.workers,
        reuse_port=spec.reuse_port,
        max_connection_age=spec.max_connection_age,
        restart_backoff_max=spec.restart_backoff_max,
        reload_timeout=spec.reload_timeout,
        hang_timeout=spec.hang_timeout,
        watchdog=spec.watchdog,
    )


def state(ctx: CompileContext, spec: StateSpec) -> StateSettings:
    directory = spec.dir
    if directory:
        directory = ctx.path(directory)
    elif os.environ.get("STATE_DIRECTORY"):
        directory = os.environ["STATE_DIRECTORY"].split(":")[0]
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        directory = os.path.join(base, "fastgw")
    if spec.keep_configs < 1:
        raise ctx.error("state.keep_configs", "must be at least 1")
    pid_file = ctx.path(spec.pid_file) if spec.pid_file else os.path.join(directory, "fastgw.pid")
    return StateSettings(dir=directory, keep_configs=spec.keep_configs, pid_file=pid_file)


def store(ctx: CompileContext, spec: StoreSpec, node: str = "") -> StoreSettings:
    ctx.positive("store.connect_timeout", spec.connect_timeout)
    if len(node) > NODE_NAME_MAX or not node.isprintable() or "|" in node:
        raise ctx.error("cluster.node", f"must be printable, without '|', at most {NODE_NAME_MAX} characters")
    if spec.backend == "sqlite":
        if spec.dsn is not None:
            raise ctx.error("store.dsn", 'is for backend = "postgres" (SQLite lives in the state directory)')
        return StoreSettings(node=node)
    if spec.dsn is None:
        raise ctx.error("store.dsn", 'backend = "postgres" needs a dsn (a secret reference)')
    return StoreSettings(
        backend="postgres",
        dsn=ctx.secret("store.dsn", spec.dsn),
        connect_timeout=spec.connect_timeout,
        node=node,
    )


def admin(ctx: CompileContext, spec: AdminSpec | None) -> AdminSettings | None:
    if spec is None:
        return None
    unix = ""
    host, port = "", 0
    if spec.bind.startswith("unix:"):
        unix = ctx.path(spec.bind[5:])
        if not spec.bind[5:]:
            raise ctx.error("admin.bind", "unix: needs a socket path")
    else:
        try:
            host, port = parse_address(spec.bind)
        except ValueError as exc:
            raise ctx.error("admin.bind", str(exc)) from None
    return AdminSettings(
        host=host,
        port=port,
        unix=unix,
        token=ctx.secret("admin.token", spec.token),
        open_metrics=spec.open_metrics,
    )


def audit(ctx: CompileContext, spec: AuditSpec, state: StateSettings) -> AuditSettings:
    file = ctx.path(spec.file) if spec.file else os.path.join(state.dir, "audit.log")
    key = ctx.secret("audit.key", spec.key) if spec.key is not None else None
    return AuditSettings(file=file, key=key)


def redis(ctx: CompileContext, spec: RedisSpec) -> RedisSettings:
    key = "rate_limits.redis"
    if bool(spec.url) == (spec.url_secret is not None):
        raise ctx.error(key, "give exactly one of url or url_secret")
    url = spec.url
    if spec.url_secret is not None:
        url = resolve_secret(ctx.secret(f"{key}.url_secret", spec.url_secret)).decode().strip()
    elif "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise ctx.error(f"{key}.url", "carries a password: give it as url_secret (secrets are never inline)")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ctx.error(f"{key}.url", "must be a redis://, rediss:// or unix:// URL")
    ctx.positive(f"{key}.flush_interval", spec.flush_interval)
    ctx.positive(f"{key}.timeout", spec.timeout)
    return RedisSettings(
        url=url, flush_interval=spec.flush_interval, timeout=spec.timeout, failure=spec.failure
    )


def http2(ctx: CompileContext, spec: Http2Spec, server: ServerSettings) -> Http2Settings:
    for name in (
        "max_concurrent_streams",
        "initial_window_size",
        "max_requests_per_connection",
        "max_resets_per_second",
        "max_control_frames_per_second",
        "max_empty_frames_per_second",
        "max_continuation_frames",
        "max_outbound_buffer",
        "stream_buffer",
    ):
        ctx.positive(f"http2.{name}", getattr(spec, name))
    if spec.initial_window_size > 2**31 - 1:
        raise ctx.error("http2.initial_window_size", "must be at most 2147483647 (RFC 9113 6.9.2)")
    if spec.max_header_list_size < 0:
        raise ctx.error("http2.max_header_list_size", "must be 0 (server.max_header_bytes) or more")
    return Http2Settings(
        enabled=spec.enabled,
        max_concurrent_streams=spec.max_concurrent_streams,
        initial_window_size=spec.initial_window_size,
        max_header_list_size=spec.max_header_list_size or server.max_header_bytes,
        max_requests_per_connection=spec.max_requests_per_connection,
        max_resets_per_second=spec.max_resets_per_second,
        max_control_frames_per_second=spec.max_control_frames_per_second,
        max_empty_frames_per_second=spec.max_empty_frames_per_second,
        max_continuation_frames=spec.max_continuation_frames,
        max_outbound_buffer=spec.max_outbound_buffer,
        stream_buffer=spec.stream_buffer,
    )


def listener_tls(ctx: CompileContext, key: str, spec: TlsSpec, http2: bool) -> ListenerTls:
    def private(path: str) -> bool:
        try:
            return os.stat(path).st_mode & 0o077 == 0
        except OSError:
            return True

    try:
        return build_listener_tls(
            [(ctx.path(c.cert), ctx.path(c.key)) for c in spec.certificates],
            spec.profile,
            spec.client_auth,
            ctx.path(spec.client_ca) if spec.client_ca else None,
            ctx.path(spec.crl) if spec.crl else None,
            private,
            alpn=("h2", "http/1.1") if http2 else ("http/1.1",),
        )
    except TlsConfigError as exc:
        raise ctx.error(f"{key}.{exc.key}", str(exc)) from None


def upstream(ctx: CompileContext, name: str, spec: UpstreamSpec) -> UpstreamSettings:
    key = f"upstreams.{name}"
    tls = None
    if spec.tls is not None:
        t = spec.tls
        try:
            tls = build_client_tls(
                t.verify,
                ctx.path(t.ca) if t.ca else None,
                t.sni,
                ctx.path(t.cert) if t.cert else None,
                ctx.path(t.key) if t.key else None,
            )
        except TlsConfigError as exc:
            raise ctx.error(f"{key}.tls.{exc.key}", str(exc)) from None
        if not t.verify:
            ctx.warnings.append(f"{key}.tls.verify = false: the upstream's identity is not checked")
    if not spec.targets:
        raise ctx.error(f"{key}.targets", "needs at least one host:port")
    targets = []
    for i, value in enumerate(spec.targets):
        try:
            host, port = parse_address(value)
        except ValueError as exc:
            raise ctx.error(f"{key}.targets[{i}]", str(exc)) from None
        targets.append(Target(host=host, port=port))
    for field_name in (
        "max_connections",
        "connect_timeout",
        "read_timeout",
        "queue_timeout",
        "idle_timeout",
        "max_failures",
        "eject_seconds",
        "dns_ttl",
    ):
        ctx.positive(f"{key}.{field_name}", getattr(spec, field_name))
    if spec.first_byte_timeout is not None:
        ctx.positive(f"{key}.first_byte_timeout", spec.first_byte_timeout)
    if spec.max_idle < 0:
        raise ctx.error(f"{key}.max_idle", "must not be negative")
    if not 0 <= spec.retry_budget <= 1:
        raise ctx.error(f"{key}.retry_budget", "must be between 0 and 1")
    if spec.retry_min < 0:
        raise ctx.error(f"{key}.retry_min", "must not be negative")
    health = health_check(ctx, f"{key}.health_check", spec.health_check) if spec.health_check else None
    return UpstreamSettings(
        name=name,
        targets=tuple(targets),
        balance=spec.balance,
        max_connections=spec.max_connections,
        max_idle=spec.max_idle,
        idle_timeout=spec.idle_timeout,
        connect_timeout=spec.connect_timeout,
        read_timeout=spec.read_timeout,
        first_byte_timeout=(
            spec.read_timeout if spec.first_byte_timeout is None else spec.first_byte_timeout
        ),
        queue_timeout=spec.queue_timeout,
        max_failures=spec.max_failures,
        eject_seconds=spec.eject_seconds,
        retry=spec.retry,
        dns_ttl=spec.dns_ttl,
        retry_budget=spec.retry_budget,
        retry_min=spec.retry_min,
        health=health,
        tls=tls,
    )


def health_check(ctx: CompileContext, key: str, spec: HealthCheckSpec) -> HealthCheckSettings:
    if not spec.path.startswith("/") or any(c in spec.path for c in " \r\n\x00"):
        raise ctx.error(f"{key}.path", "must start with '/' and contain no spaces or control characters")
    for name in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold"):
        ctx.positive(f"{key}.{name}", getattr(spec, name))
    low, sep, high = spec.expect_status.partition("-")
    try:
        status_min, status_max = int(low), int(high if sep else low)
    except ValueError:
        raise ctx.error(f"{key}.expect_status", "must be a status or a range like '200-399'") from None
    if not 100 <= status_min <= status_max <= 599:
        raise ctx.error(f"{key}.expect_status", "must be within 100-599, low to high")
    if spec.host is not None and not HOSTNAME.fullmatch(spec.host):
        raise ctx.error(f"{key}.host", f"{spec.host!r} is not a host name")
    return HealthCheckSettings(
        path=spec.path,
        interval=spec.interval,
        timeout=spec.timeout,
        healthy_threshold=spec.healthy_threshold,
        unhealthy_threshold=spec.unhealthy_threshold,
        status_min=status_min,
        status_max=status_max,
        host=spec.host,
    )
