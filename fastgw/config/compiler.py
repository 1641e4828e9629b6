"""Specs -> Snapshot: a small driver over the config sections and the policy registry.

The compiler runs in the control plane only. It never mutates a spec and never exits; every problem is a
``ConfigError`` with the key path. Output is immutable: a route table, per-route policy tuples sorted by
phase, header lines pre-encoded as bytes. It names no policy: ``policy/registry.py`` lists them, each
compiling its own section against a ``CompileContext`` (config/context.py); the sections that are not
policies (server, listeners, upstreams, ...) are in config/sections.py.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any, Final

from fastgw.codec.path import normalize_path
from fastgw.config import sections
from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.loader import _did_you_mean, parse_config, read_config_bytes
from fastgw.config.retention_spec import compile_retention
from fastgw.config.route_kind import NO_UPSTREAM, compile_kind_sections, compile_route_kind
from fastgw.config.schema import ConfigSpec, RouteSpec, StateSpec, StoreSpec
from fastgw.config.sections import HOSTNAME, parse_address
from fastgw.policy.registry import POLICIES
from fastgw.proxy_headers.hop_by_hop import header_lines
from fastgw.proxy_headers.request_head import request_drop_sets
from fastgw.proxy_headers.response_head import response_drop_set, response_field_table
from fastgw.router import HostTable, MethodTable, Router, route_key
from fastgw.snapshot import (
    AccessLogSettings,
    ListenerSettings,
    Route,
    ServerSettings,
    Snapshot,
    StateSettings,
    StoreSettings,
    UpstreamSettings,
)

# A prompt_api route's body limit when it sets none: the body is a form's JSON, validated against the
# input schema on the worker's loop byte by byte (a valid 10 MiB array took seconds), and a prompt it fills
# is far smaller than a megabyte; a route that needs more says max_body_bytes.
PROMPT_BODY_DEFAULT: Final = 1024 * 1024


class _Headers:
    """What every route's header handling shares: identity headers, the snapshot header, security
    headers on responses."""

    def __init__(
        self,
        identity: tuple[tuple[bytes, str], ...],
        snapshot_header: bytes,
        snapshot_id: bytes,
        security: tuple[tuple[bytes, bytes], ...],
        security_remove: frozenset[bytes],
        hsts: bytes,
    ) -> None:
        self.identity = identity
        self.snapshot_header = snapshot_header
        self.snapshot_id = snapshot_id
        self.security = security
        self.security_remove = security_remove
        self.hsts = hsts


def _route(
    ctx: CompileContext,
    i: int,
    spec: RouteSpec,
    upstreams: dict[str, UpstreamSettings],
    server: ServerSettings,
    headers: _Headers,
) -> Route:
    ctx.begin_route(i, spec.name)
    key = ctx.route_key
    if spec.kind == "proxy" and spec.upstream not in upstreams:
        hint = _did_you_mean(spec.upstream, upstreams)
        raise ctx.error(f"{key}.upstream", f"no upstream named {spec.upstream!r}{hint}")
    if not spec.path.startswith("/"):
        raise ctx.error(f"{key}.path", "must start with '/'")
    if not HOSTNAME.fullmatch(spec.host):
        raise ctx.error(f"{key}.host", f"{spec.host!r} is not a host name, '*.suffix' or '*'")
    for j, method in enumerate(spec.methods):
        if not TOKEN.fullmatch(method) or method != method.upper():
            raise ctx.error(f"{key}.methods[{j}]", f"{method!r} is not an upper-case method name")
        if method == "CONNECT":
            raise ctx.error(f"{key}.methods[{j}]", "CONNECT is not supported")
    if spec.strip_prefix and spec.match == "exact":
        raise ctx.error(f"{key}.strip_prefix", 'only applies to match = "prefix"')
    max_body = server.max_body_bytes if spec.max_body_bytes is None else spec.max_body_bytes
    if spec.kind == "prompt_api" and spec.max_body_bytes is None:
        max_body = min(max_body, PROMPT_BODY_DEFAULT)
    if max_body < 0:
        raise ctx.error(f"{key}.max_body_bytes", "must not be negative")
    policies: list[Any] = list(ctx.global_policies)
    for entry in POLICIES:
        if entry.compile_route is not None:
            section = getattr(spec, entry.route_section) if entry.route_section else spec
            policies.extend(entry.compile_route(section, ctx))
    chain = tuple(sorted(policies, key=lambda p: p.PHASE))
    if 0 <= ctx.route_body_limit < max_body:
        max_body = ctx.route_body_limit  # a policy narrowed it (see CompileContext.route_body_limit)
    kind = compile_route_kind(ctx.file, key, spec, chain, max_body, ctx)
    drop_req, add_req = ctx.header_ops(f"{key}.request_headers", spec.request_headers)
    drop_req |= ctx.route_drop_request  # credentials never reach the upstream
    drop_req |= {name for name, _ in headers.identity}  # never believed from a client
    if headers.snapshot_header:
        drop_req |= {headers.snapshot_header}
        add_req = (*add_req, (headers.snapshot_header, headers.snapshot_id))
    drop_resp, add_resp = ctx.header_ops(f"{key}.response_headers", spec.response_headers)
    own = {name for name, _ in add_resp}
    extra = tuple((name, value) for name, value in headers.security if name not in own)
    drop_resp |= {name for name, _ in extra} | headers.security_remove
    add_resp = (*add_resp, *extra)
    strip = route_key(spec.path) if spec.strip_prefix and spec.path != "/" else b""
    drop_untrusted, drop_trusted = request_drop_sets(drop_req)
    drop_response = response_drop_set(drop_resp)
    return Route(
        name=spec.name,
        name_bytes=spec.name.encode(),
        upstream=upstreams[spec.upstream] if kind.handler is None else NO_UPSTREAM,
        strip_prefix=strip,
        preserve_host=spec.preserve_host,
        max_body_bytes=max_body,
        chain=chain,
        response_hooks=tuple(reversed([p for p in chain if hasattr(p, "on_response")])),
        # A policy may say it has nothing to do on completion (a RateLimit without concurrency limits).
        complete_hooks=tuple(
            p for p in chain if hasattr(p, "on_complete") and getattr(p, "needs_complete", True)
        ),
        drop_request=drop_untrusted,
        drop_request_trusted=drop_trusted,
        add_request=header_lines(add_req),
        identity_headers=headers.identity if ctx.route_schemes != ("none",) else (),
        drop_response=drop_response,
        hsts=headers.hsts,
        add_response=add_resp,
        add_response_lines=header_lines(add_resp),
        response_fields=response_field_table(drop_response),
        kind=spec.kind,
        handler=kind.handler,
        body_checks=kind.body_checks,
        response_filters=kind.response_filters,
        error_body=kind.error_body,
    )


def _router(
    ctx: CompileContext, specs: Sequence[RouteSpec], routes: Sequence[Route], server: ServerSettings
) -> Router:
    hosts: dict[bytes, HostTable] = {}
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, (spec, route) in enumerate(zip(specs, routes, strict=True)):
        host = spec.host.lower().encode()
        table = hosts.setdefault(host, HostTable())
        index = table.exact if spec.match == "exact" else table.prefixes
        path = spec.path.encode() if spec.match == "exact" else route_key(spec.path)
        methods = index.setdefault(path, MethodTable())
        methods_of_route = spec.methods
        if spec.methods:  # a policy may need methods the route leaves out (CORS: preflights)
            needed = [
                m for p in route.chain for m in getattr(p, "ROUTE_METHODS", ()) if m not in spec.methods
            ]
            methods_of_route = (*spec.methods, *dict.fromkeys(needed))
        for method in methods_of_route or ("*",):
            clash = (spec.host, spec.match, path.decode(), method)
            if clash in seen:
                raise ctx.error(f"routes[{i}]", f"same host, path and method as routes[{seen[clash]}]")
            seen[clash] = i
            if method == "*":
                methods.any_method = route
            else:
                methods.by_method[method.encode()] = route
    for table in hosts.values():
        for methods in (*table.exact.values(), *table.prefixes.values()):
            methods.seal()
    wildcards = [(h[1:], t) for h, t in hosts.items() if h.startswith(b"*.")]
    plain = {h: t for h, t in hosts.items() if not h.startswith(b"*.")}
    normalize = functools.partial(
        normalize_path,
        merge_slashes=server.merge_slashes,
        allow_encoded_slash=server.allow_encoded_slash,
        allow_params=server.allow_path_params,
    )
    return Router(plain, wildcards, normalize)


def compile_spec(spec: ConfigSpec, data: bytes, file: str, context: CompileContext | None = None) -> Snapshot:
    """Compile a parsed config. Raises ConfigError; nothing is changed when it does. ``context`` (for
    tests) brings its own counters, identities and clocks; by default the process's own are used."""
    ctx = CompileContext(file) if context is None else context
    s = spec.server
    snapshot_id = hashlib.blake2b(data, digest_size=6).hexdigest()
    if s.snapshot_header and not TOKEN.fullmatch(s.snapshot_header):
        raise ctx.error("server.snapshot_header", f"{s.snapshot_header!r} is not a valid header name")
    server = sections.server(ctx, s)
    http2 = sections.http2(ctx, spec.http2, server)
    if not spec.listeners:
        raise ctx.error("listeners", "at least one [[listeners]] table is required")
    listeners = []
    names: set[str] = set()
    for i, ls in enumerate(spec.listeners):
        try:
            host, port = parse_address(ls.bind)
        except ValueError as exc:
            raise ctx.error(f"listeners[{i}].bind", str(exc)) from None
        if ls.name in names:
            raise ctx.error(f"listeners[{i}].name", f"duplicate listener name {ls.name!r}")
        names.add(ls.name)
        tls = None
        if ls.tls is not None:
            tls = sections.listener_tls(ctx, f"listeners[{i}].tls", ls.tls, http2.enabled)
            ctx.warnings.extend(f"listeners[{i}].tls.{warning}" for warning in tls.warnings)
        listeners.append(
            ListenerSettings(
                name=ls.name,
                host=host,
                port=port,
                proxy_protocol=ls.proxy_protocol,
                backlog=ls.backlog,
                tls=tls,
            )
        )

    upstreams = ctx.upstreams = {name: sections.upstream(ctx, name, u) for name, u in spec.upstreams.items()}
    ctx.keys = sections.keys(ctx, spec.keys) if spec.keys is not None else None
    ctx.positive("rate_limits.capacity", spec.rate_limits.capacity)
    ctx.positive("rate_limits.quota_flush", spec.rate_limits.quota_flush)
    identity_headers = sections.identity_header_names(ctx, spec.identity_headers)
    ctx.listener_client_auth = any(
        ls.tls is not None and ls.tls.client_auth != "none" for ls in spec.listeners
    )
    state = sections.state(ctx, spec.state)
    ctx.state_dir = state.dir
    for entry in POLICIES:
        if entry.compile is not None:
            entry.compile(getattr(spec, entry.section), ctx)
    compile_kind_sections(spec, ctx)
    security, security_remove, hsts = sections.security(ctx, spec.security_headers)
    snapshot_header = s.snapshot_header.lower().encode()
    headers = _Headers(
        identity_headers, snapshot_header, snapshot_id.encode(), security, security_remove, hsts
    )
    if not spec.routes:
        raise ctx.error("routes", "at least one [[routes]] table is required")
    route_names: dict[str, int] = {}
    routes = []
    for i, r in enumerate(spec.routes):
        if r.name in route_names:
            raise ctx.error(
                f"routes[{i}].name", f"duplicate route name {r.name!r} (also routes[{route_names[r.name]}])"
            )
        route_names[r.name] = i
        routes.append(_route(ctx, i, r, upstreams, server, headers))
    router = _router(ctx, spec.routes, routes, server)

    demo = None
    if spec.demo_upstream is not None:
        try:
            demo = parse_address(spec.demo_upstream.bind)
        except ValueError as exc:
            raise ctx.error("demo_upstream.bind", str(exc)) from None
    al = spec.access_log
    ctx.positive("access_log.max_pending", al.max_pending)
    return Snapshot(
        id=snapshot_id,
        id_bytes=snapshot_id.encode(),
        source=file,
        server=server,
        listeners=tuple(listeners),
        router=router,
        routes=tuple(routes),
        upstreams=upstreams,
        access_log=AccessLogSettings(
            target=al.target,
            include_query=al.include_query,
            redact_query=frozenset(name.lower().encode() for name in al.redact_query),
            max_pending=al.max_pending,
        ),
        demo_upstream=demo,
        keys=ctx.keys,
        http2=http2,
        ratelimit_redis=sections.redis(ctx, spec.rate_limits.redis)
        if spec.rate_limits.redis is not None
        else None,
        process=sections.process(ctx, spec.process),
        ratelimit_capacity=spec.rate_limits.capacity,
        quota_flush=spec.rate_limits.quota_flush,
        state=state,
        store=sections.store(ctx, spec.store, spec.cluster.node),
        retention=compile_retention(ctx, spec.retention),
        admin=sections.admin(ctx, spec.admin),
        audit=sections.audit(ctx, spec.audit, state),
        security_headers=security,
        hsts=spec.security_headers.hsts.encode(),
        warnings=tuple(ctx.warnings),
        sections=dict(ctx.sections),
    )


def compile_config(data: bytes, file: str, context: CompileContext | None = None) -> Snapshot:
    """Parse and compile config bytes. Raises ConfigError."""
    return compile_spec(parse_config(data, file), data, file, context)


def compile_state(spec: StateSpec, file: str) -> StateSettings:
    """Only the [state] settings (where the pid file and the config history are): no secrets needed."""
    return sections.state(CompileContext(file), spec)


def compile_store(spec: StoreSpec, file: str) -> StoreSettings:
    """Only the [store] settings (``fastgw store migrate``): the DSN stays a reference until opened."""
    return sections.store(CompileContext(file), spec)


def load_snapshot(path: str) -> Snapshot:
    """Read, parse and compile a config file. Raises ConfigError."""
    return compile_config(read_config_bytes(path), path)
