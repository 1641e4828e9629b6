"""LISTEN for other nodes' writes: one dedicated async connection per control process, on the channel
every write of the PostgreSQL store NOTIFYs (store/postgres.py ``_changed``) with its change number.

A notification only says "change N is committed"; what changed is read from the change log, so a lost
notification costs nothing but time: each (re)connection reports ``None`` ("catch up on whatever you
missed") before the first number, and the caller also polls the log (control/cluster_sync.py). TCP
keepalives make a silently dead connection fail within seconds instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import psycopg
from psycopg.conninfo import make_conninfo

from fastgw.store.pg_connect import describe, first_line
from fastgw.store.pg_migrations import CHANGE_CHANNEL

RECONNECT_FIRST: Final = 0.2  # seconds before the first reconnection; doubled per failure
RECONNECT_MAX: Final = 5.0  # the longest wait between tries: a recovered database is seen within it
CONNECT_TIMEOUT: Final = 5  # seconds (libpq takes whole seconds)
# libpq keepalives: idle 5 s, then 3 probes 2 s apart: a dead peer is noticed in about 11 s.
KEEPALIVES: Final = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


class ChangeListener:
    """Calls ``on_change(N)`` for each change number announced, and ``on_change(None)`` each time the
    listening connection is (re)established. ``log`` gets one line per lost or recovered connection."""

    def __init__(self, dsn: str, on_change: Callable[[int | None], None], log: Callable[[str], None]) -> None:
        self._dsn = make_conninfo(dsn, **KEEPALIVES)
        self._where = describe(dsn)
        self._on_change = on_change
        self._log = log
        self.connected = False

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        delay = RECONNECT_FIRST
        failing = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
            except psycopg.Error as exc:
                if not failing:
                    self._log(f"change feed: cannot connect to {self._where}: {first_line(exc)}; retrying")
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    if failing:
                        self._log(f"change feed: listening on {self._where} again")
                    failing, delay, self.connected = False, RECONNECT_FIRST, True
                    self._on_change(None)
                    async for notice in conn.notifies():
                        self._on_change(int(notice.payload) if notice.payload.isdigit() else None)
            except psycopg.Error as exc:
                self._log(f"change feed: lost {self._where}: {first_line(exc)}; reconnecting")
                failing = True
            finally:
                self.connected = False
            await asyncio.sleep(delay)
