"""The store's PostgreSQL connections: kept open between calls, checked before each, remade when broken;
while the database is unreachable calls fail at once and a background thread reconnects.

Why not psycopg_pool (used before): the control process makes store calls one at a time on its event
loop, so a call that waits holds everything else there (the admin API, reloads, metrics pulls, workers'
acknowledgements). With the database down, each call waited the pool's full timeout for a connection,
and four workers' unwritten quota reports (one call each every 2 s) came faster than they failed: the
admin API did not answer for the whole outage. And the pool's own reconnects back off doubling from 1 s
without a cap, so after a long outage the store could come back about the outage's length late. Here the
call that finds the database unreachable (refused at once, or silent for ``CONNECT_SECONDS``) is the only
one that waits: until a thread's reconnect, tried every ``RETRY_SECONDS``, succeeds, every call fails at
once, and the store works again within ``RETRY_SECONDS`` of the database's return. A database that is
up but holds a lock the store needs (an outside session's) is bounded the same way: a statement waits at
most ``LOCK_WAIT_MS`` for it, and calls fail at once for ``LOCKED_SECONDS`` after one did.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from fastgw.store.base import StoreError
from fastgw.store.pg_connect import first_line, with_addresses

# Between reconnects while the database is unreachable: how late the store notices that it is back.
RETRY_SECONDS: Final = 1.0
# libpq's connect_timeout (whole seconds, at least 2): how long a connect may wait for a host that does
# not answer at all, per address its name resolves to (and per host a multi-host DSN lists). A stopped
# server on a reachable host refuses at once.
CONNECT_SECONDS: Final = 2
# Idle connections kept: calls come one at a time, so one; a second (a call from another thread while
# the first is out) is closed after its call rather than kept unchecked.
KEEP_IDLE: Final = 1
# A connection is closed on return once this old: a backend's caches (catalog, plans) only grow with
# what it served. psycopg_pool recycled after an hour too.
MAX_LIFETIME_SECONDS: Final = 3600.0
# libpq keepalives (idle 5 s, then 3 probes 2 s apart) and tcp_user_timeout (bytes unacknowledged for
# 5 s), so a call on a connection whose peer vanished without a word (a network partition) fails in
# seconds instead of the kernel's hours; a busy server still acknowledges. Settings the DSN gives win.
KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "5000",
}
# The longest a statement waits for a lock another session holds (set on each connection; a lock_timeout
# in the DSN's options or in PGOPTIONS wins). The store's writes lock one row for milliseconds; a wait
# this long is a session outside fastgw holding a lock (a migration, an operator's open transaction), and
# each waiting call holds the control process's event loop (store calls run on it).
LOCK_WAIT_MS: Final = 1000
# After a call ran out of LOCK_WAIT_MS, calls fail at once for this long: the workers' quota reports and
# ledger batches (kept and sent again) would otherwise each hold the loop LOCK_WAIT_MS in turn, leaving
# the admin API almost no time. One call in this many seconds finds out whether the lock is gone.
LOCKED_SECONDS: Final = 4.0
# A server that answers and refuses the login (a wrong password, a role without LOGIN or gone, a database
# dropped, pg_hba.conf) writes a FATAL line to its log per try, and is fixed by an operator, not by time:
# its tries space out, doubling from RETRY_SECONDS up to this, until one is accepted.
REFUSED_RETRY_MAX_SECONDS: Final = 30.0
# What a server says (FATAL too) while it cannot take a connection for now: not a refusal.
PASSING_STATES: Final = (
    "starting up",
    "shutting down",
    "in recovery",
    "not accepting connections",  # "not yet accepting" too
    "too many clients",
    "connection slots are reserved",
)
LOCK_WAIT_ERROR: Final = psycopg.errors.LockNotAvailable  # SQLSTATE 55P03: lock_timeout ran out


class ConnectionKeeper:
    """Hands out autocommit connections to one database; ``StoreError`` when it cannot be reached."""

    def __init__(self, dsn: str, where: str) -> None:
        given = conninfo_to_dict(dsn)
        self._dsn = make_conninfo(dsn, **{k: v for k, v in KEEPALIVES.items() if k not in given})
        # Set by a statement after each connect, not as a libpq startup option: connection poolers
        # (PgBouncer, Neon's) refuse unknown startup options, and a DSN's options would replace the
        # environment's PGOPTIONS. One the operator set either way wins.
        options = f"{given.get('options') or ''} {os.environ.get('PGOPTIONS', '')}"
        self._lock_wait = "" if "lock_timeout" in options else f"SET lock_timeout = {LOCK_WAIT_MS}"
        self._where = where  # the database, named without its password
        self._idle: list[tuple[psycopg.Connection[Any], float]] = []  # (connection, monotonic birth)
        self._lock = threading.Lock()  # guards _idle and _down: the reconnecting thread touches both
        self._down = ""  # why the database is unreachable ("" while it is not): calls fail at once
        self._locked_until = 0.0  # monotonic: a call ran out of LOCK_WAIT_MS; calls fail at once till then
        self._closed = threading.Event()  # stops the reconnecting thread
        self._thread: threading.Thread | None = None

    @property
    def reconnecting(self) -> bool:
        """A thread is reconnecting (the database was found unreachable and is not back yet)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A working connection for the block, kept for the next call unless the block broke it.

        Raises:
            StoreError: the database is unreachable (at once while a reconnect is pending), or the store
            was closed."""
        conn, born = self._take()
        try:
            yield conn
        except Exception as exc:
            # Raw from a single statement, or already a StoreError from inside a transaction block
            # (store/postgres.py converts there): its cause says.
            if isinstance(exc, LOCK_WAIT_ERROR) or isinstance(exc.__cause__, LOCK_WAIT_ERROR):
                with self._lock:
                    self._locked_until = time.monotonic() + LOCKED_SECONDS
            raise
        finally:
            self._give_back(conn, born)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def _take(self) -> tuple[psycopg.Connection[Any], float]:
        while True:
            with self._lock:
                if self._closed.is_set():
                    raise StoreError(f"{self._where}: the store is closed")
                if self._down:
                    down = f"{self._where}: unreachable ({self._down}); reconnecting in the background"
                    raise StoreError(down)
                if time.monotonic() < self._locked_until:
                    locked = (
                        f"{self._where}: a call waited over {LOCK_WAIT_MS} ms for a lock another session"
                        f" holds; calls fail at once for {LOCKED_SECONDS:g} s after it"
                    )
                    raise StoreError(locked)
                kept = self._idle.pop() if self._idle else None
            if kept is None:
                return self._connect(), time.monotonic()
            try:
                kept[0].execute("")  # broken while idle (a restart, a timeout)? then it is replaced
                return kept
            except psycopg.Error:
                kept[0].close()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return self._open()
        except psycopg.Error as exc:
            reason = first_line(exc)
        with self._lock:
            first = not self._down
            self._down = reason
        if first and not self._closed.is_set():
            self._thread = threading.Thread(
                target=self._reconnect, name="fastgw-store-reconnect", daemon=True
            )
            self._thread.start()
        raise StoreError(f"{self._where}: cannot connect ({reason})")

    def _open(self) -> psycopg.Connection[Any]:
        dsn = with_addresses(self._dsn, CONNECT_SECONDS)  # libpq's own lookup has no bound
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_SECONDS)
        if self._lock_wait:
            try:
                conn.execute(self._lock_wait)
            except BaseException:
                conn.close()
                raise
        return conn

    def _reconnect(self) -> None:
        """The background thread of an outage: a connection every RETRY_SECONDS until one is made, which
        the next call takes (a server that refuses the login: see REFUSED_RETRY_MAX_SECONDS)."""
        wait = RETRY_SECONDS
        while not self._closed.wait(wait):
            try:
                conn = self._open()
            except Exception as exc:  # whatever failed, the thread must go on trying
                reason = first_line(exc)
                with self._lock:
                    self._down = reason
                refused = refused_by_server(reason)
                wait = min(wait * 2, REFUSED_RETRY_MAX_SECONDS) if refused else RETRY_SECONDS
                continue
            with self._lock:
                if not self._closed.is_set():
                    self._idle.append((conn, time.monotonic()))
                    self._down = ""
                    return
            conn.close()  # closed meanwhile
            return

    def _give_back(self, conn: psycopg.Connection[Any], born: float) -> None:
        # Anything but an idle session (broken, or left inside a transaction by an error) is closed: the
        # next call must not inherit it.
        if (
            conn.closed
            or conn.broken
            or conn.info.transaction_status != TransactionStatus.IDLE
            or time.monotonic() - born > MAX_LIFETIME_SECONDS
        ):
            conn.close()
            return
        with self._lock:
            if len(self._idle) < KEEP_IDLE and not self._closed.is_set():
                self._idle.append((conn, born))
                return
        conn.close()


def refused_by_server(reason: str) -> bool:
    """The server answered and refused the login (libpq writes its severity, FATAL) rather than the
    network failing (refused, unreachable, silent) or the server not taking connections for now
    (starting, stopping, recovering, full: those are tried every second). A server whose messages are
    translated (lc_messages) may word them otherwise: its refusals are then tried every second, as
    before."""
    return "FATAL:" in reason and not any(passing in reason for passing in PASSING_STATES)
