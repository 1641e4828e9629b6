"""The pieces every config section is written with: ``doc`` (a documented field, with its maximum),
the stated maxima, and the small specs many sections share (secret references, header edits).

Below config/schema.py and every policy module that owns a section, so both can use it without a cycle.
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
class SecretSpec:
    """Where a secret comes from; secrets are never written inline in TOML."""

    file: str | None = doc("read the secret from this file (trailing newline removed)", None)
    env: str | None = doc("read the secret from this environment variable", None)
    credential: str | None = doc("read $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=)", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderOpsSpec:
    set: dict[str, str] = doc("headers to set (replacing any copy), name -> value", {})
    remove: tuple[str, ...] = doc("header names to remove", ())


# A table a registry entry (policy/registry.py, handlers/registry.py) adds to the schema: one key of
# [[routes]] or of the top level. config/schema.py builds RouteSpec and ConfigSpec from these, and the
# reference (config/reference.py) shows ``tables``, so a new policy or handler kind is its own module
# and its registry line, never an edit of the schema. (title, spec, blurb) is one reference table.
ReferenceTable = tuple[str, type, str]


@dataclass(frozen=True, slots=True)
class Section:
    """One schema key declared by the module that compiles it.

    ``spec`` is the table's frozen dataclass; ``doc`` the key's line in its parent table; ``presence``
    its default: "optional" (unset: None), "always" (absent: the spec's defaults), "array" (an array of
    tables, default empty); ``tables`` what the reference shows for it, sub-tables included.
    """

    spec: type
    doc: str
    presence: Literal["optional", "always", "array"] = "optional"
    tables: tuple[ReferenceTable, ...] = ()

    def field(self, key: str) -> tuple[str, Any, Any]:
        """The (name, type, field) triple ``dataclasses.make_dataclass`` takes for this key."""
        if self.presence == "always":
            return key, self.spec, doc(self.doc, self.spec())
        if self.presence == "array":
            return key, tuple[self.spec, ...], doc(self.doc, ())  # type: ignore[name-defined]
        return key, self.spec | None, doc(self.doc, None)
