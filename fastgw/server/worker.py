"""One worker: a uvloop event loop that owns its listeners, client connections and upstream pools.

Single-process for now (the supervisor with N forked workers comes with the operations work). Signals,
as ops expect: SIGHUP reloads the config file (an invalid file is reported and changes nothing),
SIGTERM/SIGINT stop accepting and drain in-flight requests up to ``server.drain_timeout``, SIGUSR1
reopens the access log file. This is the only data-plane module that imports the config compiler, and
only to reload.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastgw.access_log import AccessLog, Record
from fastgw.proxy_headers import IdSource
from fastgw.server.deadlines import TICK_SECONDS, sweep
from fastgw.server.listener import ClientConnection
from fastgw.server.runtime import tune_allocator, tune_gc
from fastgw.snapshot import ListenerSettings, Snapshot, SnapshotHolder
from fastgw.tls.server import ListenerTls
from fastgw.upstream.pool import PoolManager


def _log(message: str) -> None:
    sys.stderr.write(f"fastgw[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


class Worker:
    """Per-process state shared by every connection of this worker."""

    def __init__(self, snapshot: Snapshot, config_path: str | None = None) -> None:
        self.holder = SnapshotHolder(snapshot)
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.pools = PoolManager(self.loop)
        self.access_log = AccessLog(snapshot.access_log)
        self.ids = IdSource()
        self.via = b"1.1 " + snapshot.server.server_name
        self.connections: set[ClientConnection] = set()
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.Server] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self.draining = False
        self.bound: list[tuple[str, int]] = []
        self.now = time.monotonic()  # refreshed by every tick: for deadlines where 100 ms grain is enough

    # -- connection accounting -----------------------------------------------------------------------
    def admit(self, conn: ClientConnection, max_total: int, max_per_ip: int) -> bool:
        ip = conn.peer_ip
        count = self._per_ip.get(ip, 0)
        if len(self.connections) >= max_total or count >= max_per_ip:
            return False
        self._per_ip[ip] = count + 1
        self.connections.add(conn)
        return True

    def release(self, conn: ClientConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            ip = conn.peer_ip
            count = self._per_ip.get(ip, 1) - 1
            if count:
                self._per_ip[ip] = count
            else:
                self._per_ip.pop(ip, None)

    # -- logging -------------------------------------------------------------------------------------
    def log_record(self, record: Record) -> None:
        if self.access_log.enabled:
            self.access_log.record(record)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        snapshot = self.holder.current
        if snapshot.demo_upstream is not None:
            from fastgw.server.demo_upstream import start_demo_upstream

            self._servers.append(await start_demo_upstream(*snapshot.demo_upstream))
        for i, listener in enumerate(snapshot.listeners):
            sock = sockets[i] if sockets else None
            server = await self._listen(listener, sock)
            self._servers.append(server)
            for s in server.sockets:
                name = s.getsockname()
                self.bound.append((name[0], name[1]))
        self._schedule_tick()

    async def _listen(self, listener: ListenerSettings, sock: socket.socket | None) -> asyncio.Server:
        def make_connection() -> ClientConnection:
            return ClientConnection(self, listener)

        factory: Callable[[], asyncio.Protocol] = make_connection
        if listener.tls is not None:
            from fastgw.server.tls_accept import TlsAcceptor
            from fastgw.tls.server import front_context

            name = listener.name
            context = front_context(listener.tls, lambda: self._listener_tls(name))
            timeout = self.holder.current.server.header_timeout

            def factory() -> asyncio.Protocol:
                return TlsAcceptor(context, make_connection, timeout, _log)

        if sock is not None:
            return await self.loop.create_server(factory, sock=sock, backlog=listener.backlog)
        return await self.loop.create_server(
            factory, listener.host, listener.port, backlog=listener.backlog, reuse_address=True
        )

    def _listener_tls(self, name: str) -> ListenerTls | None:
        for listener in self.holder.current.listeners:
            if listener.name == name:
                return listener.tls
        return None

    def _schedule_tick(self) -> None:
        self._tick_handle = self.loop.call_later(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        self.now = now = time.monotonic()
        try:
            sweep(self, now)
        finally:
            if not self._stopped.is_set():
                self._schedule_tick()

    def reload(self) -> bool:
        """Recompile the config file and swap the Snapshot; on any error keep the running one."""
        from fastgw.config.compiler import load_snapshot
        from fastgw.config.loader import ConfigError

        if self.config_path is None:
            _log("reload ignored: running on the built-in quickstart")
            return False
        try:
            snapshot = load_snapshot(self.config_path)
        except ConfigError as exc:
            _log(f"reload failed, keeping snapshot {self.holder.current.id}: {exc}")
            return False
        old = self.holder.swap(snapshot)
        _log(f"reloaded {self.config_path}: snapshot {old.id} -> {snapshot.id}")
        return True

    def install_signal_handlers(self) -> None:
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.loop.add_signal_handler(signal.SIGUSR1, self.access_log.reopen)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, lambda: self.spawn(self.shutdown()))

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight exchanges finish (up to drain_timeout), then stop."""
        if self.draining:
            return
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.drain()
        deadline = time.monotonic() + self.holder.current.server.drain_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.pools.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.access_log.close()


async def serve(snapshot: Snapshot, config_path: str | None, *, ready: str | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    tune_allocator()
    worker = Worker(snapshot, config_path)
    await worker.start()
    worker.install_signal_handlers()
    tune_gc()
    schemes = [("https" if ls.tls else "http") for ls in snapshot.listeners]
    addresses = ", ".join(f"{s}://{h}:{p}" for s, (h, p) in zip(schemes, worker.bound, strict=False))
    _log(
        f"snapshot {snapshot.id} from {snapshot.source}; listening on {addresses} "
        f"(http1={snapshot.server.http1})"
    )
    if ready:
        with open(ready, "w") as fh:
            fh.write(",".join(f"{h}:{p}" for h, p in worker.bound))
    await worker.wait_stopped()
    _log("stopped")
