"""The store's PostgreSQL connections: kept open between calls, checked before each, remade when broken,
and failing at once for a moment after the database was found unreachable.

Why not psycopg_pool (used before): the control process makes store calls one at a time on its event
loop, so a call that waits holds everything else there (the admin API, reloads, metrics pulls, workers'
acknowledgements). With the database down, each call waited the pool's full timeout for a connection,
and four workers' unwritten quota reports (one call each every 2 s) came faster than they failed: the
admin API did not answer for the whole outage. And the pool's own reconnects back off doubling from 1 s
without a cap, so after a long outage the store could come back about the outage's length late. Here a
call that cannot connect marks the database unreachable for ``RETRY_SECONDS``: calls meanwhile fail at
once, and the first one after tries to connect itself. So a call fails within ``CONNECT_SECONDS`` (at
once when the server refuses), and the store works again within ``RETRY_SECONDS`` of the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from fastgw.store.base import StoreError
from fastgw.store.pg_connect import first_line

# After a failed connection, calls fail at once for this long: short, since it is also how late the store
# notices that the database is back; long enough that a burst of calls costs one connection attempt.
RETRY_SECONDS: Final = 1.0
# libpq's connect_timeout (whole seconds, at least 2): how long a call may wait for a host that does not
# answer at all. A stopped server on a reachable host refuses at once.
CONNECT_SECONDS: Final = 2
# Connections kept idle: one serves the calls (they come one at a time), a second a call made while the
# first is held (inside a cursor's block); more would be closed on return.
KEEP_IDLE: Final = 2
# libpq keepalives: idle 5 s, then 3 probes 2 s apart, so a call on a connection whose peer vanished
# without a word (a network partition) fails in about 11 s instead of waiting for the kernel's hours.
KEEPALIVES: Final = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


class ConnectionKeeper:
    """Hands out autocommit connections to one database; ``StoreError`` when it cannot be reached."""

    def __init__(self, dsn: str, where: str) -> None:
        self._dsn = make_conninfo(dsn, **KEEPALIVES)
        self._where = where  # the database, named without its password
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()  # the CLI and tests may call from more than one thread
        self._retry_at = 0.0  # monotonic: until then the database counts as unreachable
        self._reason = ""  # why the last connection attempt failed, for the errors meanwhile

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A working connection for the block, kept for the next call unless the block broke it.

        Raises:
            StoreError: the database is unreachable (at once while it was found so a moment ago)."""
        conn = self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> psycopg.Connection[Any]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            try:
                conn.execute("")  # broken while idle (a restart, a timeout)? then it is replaced
                return conn
            except psycopg.Error:
                conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        if time.monotonic() < self._retry_at:
            raise StoreError(f"{self._where}: unreachable a moment ago ({self._reason}); retry later")
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_SECONDS)
        except psycopg.Error as exc:
            self._reason = first_line(exc)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise StoreError(f"{self._where}: cannot connect ({self._reason})") from None
        self._retry_at = 0.0
        return conn

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        # Anything but an idle session (broken, or left inside a transaction by an error) is closed: the
        # next call must not inherit it.
        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < KEEP_IDLE:
                self._idle.append(conn)
                return
        conn.close()
