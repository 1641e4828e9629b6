"""Compiled route lookup: host -> path (exact, then longest segment prefix) -> method.

Built once per Snapshot. A lookup costs two or three dict probes for a typical path: exact paths first,
then prefixes tried from the full path down to ``/`` one segment at a time, so ``/api`` matches ``/api``
and ``/api/x`` but never ``/apix``. The method table carries its precomputed ``Allow`` value, so a 405
knows its allowed set at once (RFC 9110 15.5.6). Matching is case-sensitive; the path is already
normalised by ``codec/path.py``.

:meth:`Router.resolve` puts normalisation and lookup behind one memo keyed by the raw path (and method,
and host when several hosts are routed): a service sees few distinct paths, and a hit costs one dict
probe instead of ~0.8 us. The memo is per Snapshot, so a reload starts empty; it is bounded in entries
(cleared when full) and in bytes (long paths and long Host values are not remembered), so unique paths and
hosts cost a lookup each, nothing more: at most MEMO_MAX x (MEMO_PATH_MAX + MEMO_HOST_MAX + ~400 bytes of
tuples and dict slot), about 4 MiB per Snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from fastgw.codec.path import normalize_path
from fastgw.verdict import Denial

if TYPE_CHECKING:
    from fastgw.route import Route

NOT_FOUND: Final = Denial(404, "not-found", "no route matches this host and path", "route.not_found")
MEMO_MAX: Final = 4096  # remembered (path, method[, host]) resolutions per Snapshot
MEMO_PATH_MAX: Final = 256  # longer raw paths are resolved every time
# Longer Host values are resolved every time: a DNS name is at most 253 bytes (RFC 1035 2.3.4), plus
# ":65535". Without it a client sending 16 KiB Host headers made each memo entry 16 KiB (64 MiB in all).
MEMO_HOST_MAX: Final = 260


@dataclass(slots=True)
class MethodTable:
    by_method: dict[bytes, Route] = field(default_factory=dict)
    any_method: Route | None = None
    not_allowed: Denial | None = None

    def seal(self) -> None:
        allow = b", ".join(sorted(self.by_method))
        if b"GET" in self.by_method and b"HEAD" not in self.by_method:
            # RFC 9110 9.3.2: HEAD is served wherever GET is; the router maps it to the GET route.
            allow += b", HEAD"
        self.not_allowed = Denial(
            405,
            "method-not-allowed",
            "method not allowed on this route",
            "route.method",
            ((b"allow", allow),),
        )


@dataclass(slots=True)
class HostTable:
    exact: dict[bytes, MethodTable] = field(default_factory=dict)
    prefixes: dict[bytes, MethodTable] = field(default_factory=dict)


class Router:
    __slots__ = ("_default", "_hosts", "_memo", "_normalize", "_single", "_wildcards")

    def __init__(
        self,
        hosts: dict[bytes, HostTable],
        wildcards: list[tuple[bytes, HostTable]],
        normalize: Callable[[bytes], bytes] = normalize_path,
    ) -> None:
        self._hosts = hosts
        self._default = hosts.get(b"*")
        self._wildcards = sorted(wildcards, key=lambda item: -len(item[0]))
        # With a single catch-all host the Host header never needs parsing.
        self._single = self._default if len(hosts) == 1 and not wildcards else None
        self._normalize = normalize  # codec/path.py with the server's path settings bound
        self._memo: dict[tuple[bytes, ...], tuple[bytes, Route | Denial]] = {}

    def resolve(self, host: bytes, raw_path: bytes, method: bytes) -> tuple[bytes, Route | Denial]:
        """Normalise ``raw_path`` (no query) and look it up: ``(path, route or denial)``.

        Raises:
            CodecError: the path is malformed or refused (never remembered).
        """
        key = (raw_path, method) if self._single is not None else (raw_path, method, host)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        path = self._normalize(raw_path)
        result = (path, self.lookup(host, path, method))
        if len(raw_path) <= MEMO_PATH_MAX and len(host) <= MEMO_HOST_MAX:
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            self._memo[key] = result
        return result

    def lookup(self, host: bytes, path: bytes, method: bytes) -> Route | Denial:
        table = self._single or self._host_table(host)
        if table is None:
            return NOT_FOUND
        return _in_table(table, path, method)

    def serving(self, path: bytes, method: bytes) -> list[Route | Denial]:
        """What each host's table answers for a normalised ``path`` and ``method``: which routes really
        serve it (a listing of what a route publishes must leave out what a more specific route takes)."""
        tables = [*self._hosts.values(), *(table for _suffix, table in self._wildcards)]
        return [_in_table(table, path, method) for table in tables]

    def _host_table(self, host: bytes) -> HostTable | None:
        name = host.lower()
        name = name[: name.find(b"]") + 1] if name[:1] == b"[" else name.partition(b":")[0]
        table = self._hosts.get(name)
        if table is not None:
            return table
        for suffix, wildcard in self._wildcards:
            if name.endswith(suffix):
                return wildcard
        return self._default


def _in_table(table: HostTable, path: bytes, method: bytes) -> Route | Denial:
    """One host's answer: the exact path, else the longest prefix, then the method."""
    methods = table.exact.get(path)
    if methods is None:
        prefixes = table.prefixes
        probe = path
        while True:
            methods = prefixes.get(probe)
            if methods is not None or probe == b"/":
                break
            cut = probe.rfind(b"/")
            probe = probe[:cut] if cut > 0 else b"/"
        if methods is None:
            return NOT_FOUND
    route = methods.by_method.get(method)
    if route is not None:
        return route
    if methods.any_method is not None:
        return methods.any_method
    if method == b"HEAD":
        route = methods.by_method.get(b"GET")
        if route is not None:
            return route
    assert methods.not_allowed is not None
    return methods.not_allowed


def route_key(path: str) -> bytes:
    """The key a configured path prefix is stored under: no trailing slash except for the root."""
    key = path.encode()
    if len(key) > 1 and key.endswith(b"/"):
        key = key.rstrip(b"/") or b"/"
    return key
