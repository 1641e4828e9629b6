"""Reaching PostgreSQL: naming a database without its password, one-line driver errors, a host name
looked up within a bound, and waiting at start for a server that may still be starting. Shared by the
store (store/postgres.py, store/pg_keeper.py) and its change listener (store/pg_listen.py)."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fastgw.codec.ip_literal import is_ip_literal
from fastgw.store.base import StoreError

CONNECT_RETRY_SECONDS: Final = 0.25  # between tries while PostgreSQL is starting (at most connect_timeout)
# Name lookups run here, two at a time: a lookup that never returns (a silent DNS server) holds one of
# these threads until the resolver gives up, never the caller, which waits at most its own bound (and
# withdraws a lookup still queued when it gives up, so an outage queues nothing).
_LOOKUPS: Final = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastgw-pg-lookup")
# (host, port) -> the addresses its last lookup found: used when a lookup fails or runs past its bound
# (a DNS outage, or a first nameserver that is silent: glibc asks the next one only after 5 s).
_FOUND: dict[tuple[str, str], list[str]] = {}


def describe(dsn: str) -> str:
    """Where a DSN points, without its password: "PostgreSQL at HOST:PORT/DB"."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "PostgreSQL (the dsn does not parse as a connection string)"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    return f"PostgreSQL at {host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def first_line(exc: BaseException) -> str:
    """A driver error in one line (libpq adds hints on further lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def with_addresses(dsn: str, timeout: float) -> str:
    """``dsn`` with its host name looked up here, within ``timeout`` seconds, its addresses given to libpq
    as ``hostaddr`` (one attempt per address, in the order the resolver gave, as libpq's own lookup
    tries them; the name stays for TLS). libpq's connect_timeout does not bound the lookup, which a
    silent DNS server holds for 10 s or more, and the store's calls run on the control process's loop.
    A lookup that fails or runs past ``timeout`` falls back on the addresses the last one found. A DSN
    with several hosts, a hostaddr, a socket directory or an address literal is returned as it is; one
    naming its host only through PGHOST or a service file too (libpq looks it up).

    Raises:
        psycopg.OperationalError: the lookup failed or ran past ``timeout``, and none succeeded before."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return dsn  # the connect says what is wrong with it
    host = str(info.get("host") or "")
    port = str(info.get("port") or "")  # none: libpq's (PGPORT, a service file's, 5432), left to it
    if not host or info.get("hostaddr") or "," in host + port or host.startswith("/") or is_ip_literal(host):
        return dsn
    lookup = _LOOKUPS.submit(socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    try:
        addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in lookup.result(timeout)))
        _FOUND[(host, port)] = addresses
    except (LookupTimeout, OSError) as exc:
        lookup.cancel()  # still queued behind stuck lookups: withdrawn
        known = _FOUND.get((host, port))
        if known is None:
            why = f"took more than {timeout:g} s" if isinstance(exc, LookupTimeout) else f"failed: {exc}"
            raise psycopg.OperationalError(f"looking up {host} {why}") from None
        addresses = known
    count = len(addresses)
    info.update(host=",".join([host] * count), hostaddr=",".join(addresses))
    if port:
        info["port"] = ",".join([port] * count)
    return make_conninfo("", **info)


def connect_once(dsn: str, timeout: float) -> None:
    """Wait until PostgreSQL accepts a connection, trying again while it refuses (it may be starting).

    Raises:
        StoreError: still unreachable after ``timeout`` seconds, with the driver's reason in one line."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            bound = max(1, int(left + 0.999))
            psycopg.connect(with_addresses(dsn, bound), connect_timeout=bound).close()
            return
        except psycopg.Error as exc:
            if time.monotonic() + CONNECT_RETRY_SECONDS >= deadline:
                raise StoreError(f"cannot connect to {describe(dsn)}: {first_line(exc)}") from None
        time.sleep(CONNECT_RETRY_SECONDS)
