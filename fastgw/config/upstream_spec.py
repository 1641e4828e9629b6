"""The [upstreams.NAME] tables: a group of backends, its connection pool, TLS and health rules.

Part of the schema (config/schema.py re-exports them); apart so the schema stays readable. Compiled by
config/sections.py ``upstream``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastgw.config.fields import COUNT_MAX, FRACTION_MAX, PORTS_MAX, PROBES_MAX, SECONDS_MAX, doc


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
