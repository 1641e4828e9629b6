"""Reaching PostgreSQL: naming a database without its password, one-line driver errors, and waiting
at start for a server that may still be starting. Shared by the store (store/postgres.py) and its change
listener (store/pg_listen.py)."""

from __future__ import annotations

import time
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from fastgw.store.base import StoreError

CONNECT_RETRY_SECONDS: Final = 0.25  # between tries while PostgreSQL is starting (at most connect_timeout)


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


def connect_once(dsn: str, timeout: float) -> None:
    """Wait until PostgreSQL accepts a connection, trying again while it refuses (it may be starting).

    Raises:
        StoreError: still unreachable after ``timeout`` seconds, with the driver's reason in one line."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            psycopg.connect(dsn, connect_timeout=max(1, int(left + 0.999))).close()
            return
        except psycopg.Error as exc:
            if time.monotonic() + CONNECT_RETRY_SECONDS >= deadline:
                raise StoreError(f"cannot connect to {describe(dsn)}: {first_line(exc)}") from None
        time.sleep(CONNECT_RETRY_SECONDS)
