"""The configuration reference in docs/configuration.md, generated from the schema so it cannot drift.

``python -m fastgw.config.reference`` prints the Markdown that sits between the ``config-reference``
markers in docs/configuration.md (``--write`` puts it there); ``tests/config/test_docs.py`` fails when the
two differ.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Union, get_args, get_origin

from fastgw.config import schema
from fastgw.handlers.registry import KINDS
from fastgw.policy.registry import POLICIES

TABLES: list[tuple[str, type, str]] = [
    ("[[listeners]]", schema.ListenerSpec, "Where clients connect. At least one."),
    (
        "listeners.tls",
        schema.TlsSpec,
        "TLS termination. Certificates reload with the config; `client_auth` changes take a restart.",
    ),
    ("listeners.tls.certificates", schema.CertificateSpec, "One certificate and its key."),
    ("[server]", schema.ServerSpec, "Limits and timeouts of the HTTP/1 server."),
    (
        "[http2]",
        schema.Http2Spec,
        "HTTP/2 (ALPN h2 on TLS listeners, h2c with prior knowledge on cleartext ones) and its abuse limits.",
    ),
    ("[access_log]", schema.AccessLogSpec, "One JSON line per request."),
    ("[upstreams.NAME]", schema.UpstreamSpec, "A group of backends, its pool and its health rules."),
    ("upstreams.NAME.tls", schema.UpstreamTlsSpec, "TLS to the backends. Part of the pool key."),
    (
        "upstreams.NAME.health_check",
        schema.HealthCheckSpec,
        "Active health checks, run once per node by the control process; results reach every worker.",
    ),
    ("[[routes]]", schema.RouteSpec, "Matched host -> longest path prefix -> method."),
    (
        "routes.request_headers / routes.response_headers",
        schema.HeaderOpsSpec,
        "Header rules of a route (inline tables).",
    ),
    ("[demo_upstream]", schema.DemoUpstreamSpec, "A built-in demo backend (the quickstart uses it)."),
    ("[process]", schema.ProcessSpec, "The supervisor and its worker processes."),
    ("[state]", schema.StateSpec, "Where the store, the audit log and the config history live."),
    (
        "[store]",
        schema.StoreSpec,
        "Where consumers, API keys and provider keys live: SQLite in the state directory (one node), or one"
        " PostgreSQL database shared by every node of a cluster (docs/cluster.md).",
    ),
    ("[cluster]", schema.ClusterSpec, "This node among several sharing one store (docs/cluster.md)."),
    ("[retention]", schema.RetentionSpec, "How long records are kept (docs/privacy.md)."),
    ("[admin]", schema.AdminSpec, "The admin API, in the control process, on its own listener."),
    ("[audit]", schema.AuditSpec, "The tamper-evident audit log."),
    ("[rate_limits]", schema.RateLimitsSpec, "The shared-memory counter table."),
    (
        "rate_limits.redis",
        schema.RedisSpec,
        "Cluster mode: sliding-window limits shared by every gateway through Redis.",
    ),
    (
        "[security_headers]",
        schema.SecurityHeadersSpec,
        "Added to every proxied response (a route's own response_headers.set wins).",
    ),
    (
        "[identity_headers]",
        schema.IdentityHeadersSpec,
        "Headers that tell the upstream who called (authenticated routes); client copies are removed.",
    ),
    ("[keys]", schema.KeysSpec, "How API keys are stored: peppered HMAC-SHA-256 digests, never the key."),
]
# The tables the policies declare in the registry (policy/registry.py), after the schema's own.
TABLES += [
    table
    for entry in POLICIES
    for section in (entry.schema, entry.route_schema)
    if section is not None
    for table in section.tables
]
TABLES.append(
    (
        "secret references (admin.token, audit.key, keys.pepper, jwt.issuers.NAME.secret)",
        schema.SecretSpec,
        "Name exactly one source; a secret is never written inline.",
    )
)


def _type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, __import__("types").UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type(a) for a in inner)
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in get_args(tp))
    if origin is tuple:
        return f"array of {_type(get_args(tp)[0])}"
    if origin is dict:
        return "table"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "**required**"
    factory: Any = f.default_factory
    value = f.default if f.default is not dataclasses.MISSING else factory()
    if value is None:
        return "unset"
    if dataclasses.is_dataclass(value):
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (tuple, list)):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, dict):
        return "`{}`"
    return f"`{value}`"


def kind_tables() -> list[tuple[str, type, str]]:
    """The handler kinds' tables: each kind's ``handler`` table and its top-level section's tables, from
    the registry as it is now (a test may register a kind)."""
    kinds: list[tuple[str, type, str]] = []
    for name, kind in sorted(KINDS.items()):
        kinds.append((f'routes.handler (kind = "{name}")', kind.spec, kind.summary))
        kinds += kind.section.tables if kind.section is not None else ()
    return kinds


def render() -> str:
    out: list[str] = []
    for title, cls, blurb in [*TABLES, *kind_tables()]:
        hints = typing.get_type_hints(cls)
        out.append(f"#### `{title}`\n\n{blurb}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for f in dataclasses.fields(cls):
            meaning = f.metadata["doc"]
            if "max" in f.metadata:
                meaning += f"; at most {f.metadata['max']} ({f.metadata['max_reason']})"
            out.append(f"| `{f.name}` | {_type(hints[f.name])} | {_default(f)} | {meaning} |")
        out.append("")
    return "\n".join(out)


REFERENCE_FILE = "docs/configuration.md"  # relative to the repository root, where the command runs


def write_reference(path: str = REFERENCE_FILE) -> bool:
    """Replace the reference between the markers of ``path``; True when the file changed."""
    start = "<!-- config-reference:start (generated by python -m fastgw.config.reference) -->"
    end = "<!-- config-reference:end -->"
    with open(path) as fh:
        text = fh.read()
    new = text[: text.index(start) + len(start)] + "\n" + render() + "\n" + text[text.index(end) :]
    if new != text:
        with open(path, "w") as fh:
            fh.write(new)
    return new != text


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        print(f"{REFERENCE_FILE} updated" if write_reference() else f"{REFERENCE_FILE} already up to date")
    else:
        print(render())
