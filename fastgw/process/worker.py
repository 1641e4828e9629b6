"""One worker: a uvloop event loop that owns its client connections and upstream pools for life.

Forked by the supervisor with the listening sockets already bound. Reloads arrive as config bytes over the
control channel (``process/control_link.py``): the worker compiles them, swaps its Snapshot and acks;
requests in flight finish on the Snapshot they started with. SIGTERM/SIGINT stop accepting and drain
in-flight requests up to ``server.drain_timeout``; SIGUSR1 reopens the access log file; SIGHUP is the
supervisor's and is ignored here. This is the only data-plane module that imports the config compiler,
and only to reload.

Every 100 ms tick runs, in this order: the deadline sweep over the connections (proxy/deadlines.py); the
tick's subscribers (``on_tick``) in the order they subscribed: the waiting queue of throttled requests
and the pools' waiters (subscribed here), then the control link's quota flush (subscribed when the link is
made); and last the record flush, so what the tick itself completed (a 504, a waiter's 503) is counted in
the same tick.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from fastgw.ai.alert_spool import AlertSpool
from fastgw.ai.budget_alerts import Alerts, attach_spool, drain_alerts, route_alerts, start_spool
from fastgw.child_signals import handle_stop_signals
from fastgw.counters.cluster_slot import CLUSTER
from fastgw.log_line import log_line
from fastgw.metrics.shared import MetricsShard, SharedMetrics
from fastgw.metrics.worker import WorkerMetrics
from fastgw.policy.jwks import STALE
from fastgw.policy.multi_auth import MultiAuth
from fastgw.policy.wait_queue import WAITING
from fastgw.process.control_link import ControlLink
from fastgw.process.runtime import tune_allocator, tune_gc
from fastgw.process.shm import Heartbeats
from fastgw.process.systemd import listen_backlog
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.deadlines import TICK_SECONDS, sweep
from fastgw.proxy.dispatch import complete_cut
from fastgw.proxy.front import accept
from fastgw.sinks.fanout import open_sinks
from fastgw.snapshot import ListenerSettings, Snapshot
from fastgw.tls.server import ListenerTls
from fastgw.verdict import Denial

RETIRE_SCAN_SECONDS: Final = 1.0  # a scan of 10,000 connections costs ~1 ms; once a second is plenty
# How long a stopping worker waits for the handler Tasks its closing of the connections cancelled: each
# ends at its next await, within a loop iteration or two; a handler that swallows its cancellation does
# not hold the stop past this.
CUT_TASKS_SECONDS: Final = 1.0
# How long a stopping worker gives its queued budget alerts to reach their webhooks, after its counts
# and ledger left: within the supervisor's grace past drain_timeout (STOP_GRACE, 5 s) with room to exit
# (every alert is in the audit log; those left are counted in a line).
ALERTS_STOP_SECONDS: Final = 3.0
# The answer to an exchange still without a response when drain_timeout passes: a 503 the client (and
# its SDK, on an llm route, in its error shape) may retry on another worker or node, not a bare reset.
# Written before the abort that follows: a client whose request is complete reads it first.
STOPPED_UNANSWERED: Final = Denial(
    503, "shutting-down", "the gateway stopped before answering: retry the request", "worker.shutdown"
)


def alerts_by_route(snapshot: Snapshot) -> dict[str, Alerts]:
    """The budget alerts of the snapshot's llm routes, by route name."""
    found = {}
    for route in snapshot.routes:
        alerts = route_alerts(route.handler)
        if alerts is not None:
            found[route.name] = alerts
    return found


def jwt_policies(snapshot: Snapshot) -> list[Any]:
    """The snapshot's JwtAuth policies, each once: on its routes' chains or inside a list auth's
    dispatcher (a route with auth = ["api_key", "jwt"]), whose JWKS refreshes a reload must stop too.
    Empty where this process never loaded policy/jwt_auth.py: only a [jwt] table's compile imports it
    (pyjwt and cryptography, ~11 MiB of a worker's RSS)."""
    jwt_auth = sys.modules.get("fastgw.policy.jwt_auth")
    if jwt_auth is None:
        return []
    jwt_policy: Any = jwt_auth.JwtAuth
    found: dict[int, Any] = {}
    for route in snapshot.routes:
        for p in route.chain:
            for q in p.policies.values() if isinstance(p, MultiAuth) else (p,):
                if isinstance(q, jwt_policy):
                    found[id(q)] = q
    return list(found.values())


class Worker(WorkerContext):
    """One worker process: its loop's listeners, tick, signals and config swaps, around the context its
    connections see (proxy/context.py)."""

    def __init__(self, snapshot: Snapshot, slot: int = 0, shard: MetricsShard | None = None) -> None:
        super().__init__(snapshot, asyncio.get_running_loop())
        self.slot = slot
        self.metrics = WorkerMetrics(shard)  # with a shard: continues from the slot's earlier workers
        self.sinks = open_sinks(snapshot, self.metrics, self.pools)  # metrics first, then the access log
        self._next_retire_scan = 0.0
        self._servers: list[asyncio.Server] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self.bound: list[tuple[str, int]] = []
        self.heartbeat: Callable[[float], None] | None = None  # tells the supervisor this loop still ticks
        self.control: ControlLink | None = None  # the channel to the control process
        self.alert_spool: AlertSpool | None = None  # budget alerts kept on disk until delivered
        self._tick_subscribers: list[Callable[[float], None]] = []
        self.on_tick(WAITING.tick)  # throttled requests: admit those the limit has room for, expire the rest
        self.on_tick(self.pools.tick)  # pool waiters past their deadline

    def export_metrics(self) -> dict[str, Any]:
        self.flush_records()
        export = self.metrics.export(connections=len(self.connections), pools=self.pools)
        cluster = CLUSTER.current
        if cluster is not None:
            export["ratelimit_redis_up"] = int(cluster.up)
        if STALE:
            export["jwks_stale"] = dict(STALE)  # issuer -> fetch time of keys served stale
        return export

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(
        self, sockets: list[socket.socket] | None = None, demo: socket.socket | None = None
    ) -> None:
        snapshot = self.holder.current
        if snapshot.demo_upstream is not None:
            from fastgw.process.demo_upstream import start_demo_upstream

            self._servers.append(await start_demo_upstream(*snapshot.demo_upstream, sock=demo))
        for i, listener in enumerate(snapshot.listeners):
            sock = sockets[i] if sockets else None
            server = await self._listen(listener, sock)
            self._servers.append(server)
            # typeshed says a tuple, uvloop returns a list: read untyped, or the compiled build refuses it
            listening: Any = getattr(server, "sockets")  # noqa: B009
            for s in listening:
                name = s.getsockname()
                self.bound.append((name[0], name[1]))
        self._schedule_tick()

    async def _listen(self, listener: ListenerSettings, sock: socket.socket | None) -> asyncio.Server:
        def make_connection() -> asyncio.Protocol:
            return accept(self, listener)  # HTTP/1, or the front protocol that detects what is spoken

        factory: Callable[[], asyncio.Protocol] = make_connection
        if listener.tls is not None:
            from fastgw.proxy.tls_accept import TlsAcceptor
            from fastgw.tls.server import front_context

            name = listener.name
            context = front_context(listener.tls, lambda: self._listener_tls(name))

            def factory() -> asyncio.Protocol:
                # The handshake is part of the head's time: header_timeout of the Snapshot serving now.
                timeout = self.holder.current.server.header_timeout
                return TlsAcceptor(context, make_connection, timeout, log_line)

        if sock is not None:
            # create_server listens again: with the socket's own backlog, so systemd's Backlog= stands
            backlog = listen_backlog(sock) or listener.backlog
            return await self.loop.create_server(factory, sock=sock, backlog=backlog)
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

    def retire_old_connections(self, now: float) -> None:
        """End connections past their age gracefully, so their clients reconnect and the accept spreads
        them over the workers again (after a worker restart every keep-alive client sits on the
        survivors). HTTP/1: the next response carries Connection: close, so no request is cut off and
        an idle connection is left to the idle timeout; HTTP/2: GOAWAY, streams in flight finish."""
        due = [conn for conn, at in self.retire_at.items() if at <= now]
        for conn in due:
            del self.retire_at[conn]
            conn.retire()

    def on_tick(self, subscriber: Callable[[float], None]) -> None:
        """Call ``subscriber(now)`` on every tick (monotonic ``now``), after those subscribed before it."""
        self._tick_subscribers.append(subscriber)

    def _tick(self) -> None:
        self.now = now = time.monotonic()
        try:  # whatever raises below is logged by the loop; the next tick is scheduled all the same
            if self.heartbeat is not None:
                self.heartbeat(now)
            if now >= self._next_retire_scan and self.retire_at:
                self._next_retire_scan = now + RETIRE_SCAN_SECONDS
                self.retire_old_connections(now)
            sweep(self, now)
            for subscriber in self._tick_subscribers:
                subscriber(now)
            self.flush_records()
        finally:
            if not self._stopped.is_set():
                self._schedule_tick()

    def apply_config(self, data: bytes, source: str) -> Snapshot:
        """Compile config bytes and swap the Snapshot. Raises ConfigError and then changes nothing."""
        from fastgw.config.compiler import compile_config

        snapshot = compile_config(data, source)
        old = self.holder.swap(snapshot)
        for jwt_auth in jwt_policies(old):
            jwt_auth.stop()  # the new snapshot's issuers start their own refreshes (from the saved keys)
        successors = alerts_by_route(snapshot)
        attach_spool(successors.values(), self.alert_spool)
        for name, alerts in alerts_by_route(old).items():
            alerts.hand_over(successors.get(name))  # queued budget alerts go to the new webhooks
        self.via = b"1.1 " + snapshot.server.server_name  # cached per worker: server_name reloads too
        self.pools.retain(snapshot)
        if snapshot.ratelimit_redis != old.ratelimit_redis:
            self.spawn(CLUSTER.configure(snapshot.ratelimit_redis))
        if snapshot.http2 != old.http2:
            # Settings were announced when each HTTP/2 connection opened: let clients reconnect to get
            # the new ones (their streams in flight finish first).
            for conn in list(self.connections):
                if conn.multiplexed:
                    conn.drain()
        log_line(f"worker {self.slot}: snapshot {old.id} -> {snapshot.id}")
        return snapshot

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the supervisor
        self.loop.add_signal_handler(signal.SIGUSR1, self.sinks.reopen)
        handle_stop_signals(self.loop, lambda: self.spawn(self.shutdown()))

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
        self.aborting = True
        for conn in list(self.connections):
            try:
                conn.refuse_unanswered(STOPPED_UNANSWERED)
            except Exception as exc:  # a bug must not stop the stop: the abort below cuts it anyway
                log_line(f"worker {self.slot}: answering at stop failed ({type(exc).__name__}: {exc})")
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self._end_cut_exchanges()
        if self.control is not None:
            await self.control.linked()  # a control process replaced moments ago gets them too
            self.control.send_quotas()  # the last admissions reach the store before we exit
            self.flush_records()  # the last exchanges reach the ledger book, and it the control process
            self.control.send_ledger()
            self.control.send_audit_notes()
            await self.control.drained()
            if self.control.send_quotas():  # admissions that waited behind a report in flight
                await self.control.drained()
            # No control process took them (none runs: PostgreSQL down at its start, or restarting):
            # on disk for the next one, rather than gone with this process.
            self.control.keep_unreported(self.holder.current.state.dir)
        # Last: the counts and the ledger above must leave before the supervisor's grace runs out.
        alerts = list(alerts_by_route(self.holder.current).values())
        left = await drain_alerts(alerts, ALERTS_STOP_SECONDS) if alerts else 0
        if left:
            kept = "kept for the next start" if self.alert_spool is not None else "audited"
            log_line(f"worker {self.slot}: {left} budget alert deliveries not made at stop ({kept})")
        self.pools.close()
        await CLUSTER.configure(None)
        self._stopped.set()

    async def _end_cut_exchanges(self) -> None:
        """Let the exchanges the aborts cut complete before the last records and ledger are sent: each
        aborted connection is lost in a later loop iteration (its exchange logged, its handler Task
        cancelled), and a cancelled LLM stream records its usage as its Task ends, an iteration after.
        Bounded: a Task ends at its next await (CUT_TASKS_SECONDS guards against one that does not)."""
        await asyncio.sleep(0)  # the aborted transports' connection_lost callbacks
        me = asyncio.current_task()
        link = self.control.task if self.control is not None else None
        cut = [task for task in self._tasks if task is not me and task is not link]
        if cut:
            await asyncio.wait(cut, timeout=CUT_TASKS_SECONDS)
        for task in list(self.cut):  # a handler that did not end in time: its record as it stands
            complete_cut(self, task)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.flush_records()
        self.sinks.close()


def run_worker(
    snapshot: Snapshot,
    data: bytes,
    *,
    sockets: list[socket.socket],
    demo: socket.socket | None,
    slot: int,
    heartbeats: Heartbeats,
    counters: tuple[mmap.mmap, int, int],
    metrics: SharedMetrics | None = None,
    control_address: str,
    status_fd: int,
) -> int:
    """The body of a forked worker process; returns its exit status."""
    import uvloop

    from fastgw.counters.table import COUNTERS

    region, shards, capacity = counters
    COUNTERS.attach(region, slot, shards, capacity)
    shard = metrics.worker(slot) if metrics is not None else None
    return uvloop.run(
        _worker_main(snapshot, sockets, demo, slot, heartbeats, shard, control_address, status_fd)
    )


async def _worker_main(
    snapshot: Snapshot,
    sockets: list[socket.socket],
    demo: socket.socket | None,
    slot: int,
    heartbeats: Heartbeats,
    shard: MetricsShard | None,
    control_address: str,
    status_fd: int,
) -> int:
    from fastgw.process.memory_probe import install as install_memory_probe

    tune_allocator()
    worker = Worker(snapshot, slot, shard)
    worker.heartbeat = lambda now: heartbeats.beat(slot, now)
    # The control link first, and its tables (API keys, provider keys, quota bases) before the first
    # request: a worker that took requests before them refused valid keys with 401 after every restart.
    worker.control = ControlLink(worker, control_address)
    worker.control.start()
    await worker.control.first_tables(worker.heartbeat)
    await worker.start(sockets, demo)
    # Budget alerts a worker no longer running left undelivered go out again from here (ai/alert_spool.py).
    worker.alert_spool = start_spool(alerts_by_route(snapshot), snapshot.state.dir, os.getpid())
    await CLUSTER.configure(snapshot.ratelimit_redis)  # None: nothing to share, nothing started
    worker.install_signal_handlers()
    tune_gc()
    install_memory_probe(f"worker {slot}")  # FASTGW_TRACEMALLOC=1 only: a diagnostic, see the module
    os.write(status_fd, f"ready worker {slot} {os.getpid()} {snapshot.id}\n".encode())
    os.close(status_fd)
    await worker.wait_stopped()
    return 0
