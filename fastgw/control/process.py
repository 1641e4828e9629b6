"""The control process: reload relay, metrics aggregation, audit log, admin API. Never serves traffic.

Forked by the supervisor. It accepts one connection per worker on the control socket (same uid only,
checked with SO_PEERCRED), relays the supervisor's reload orders to every worker and reports their acks,
pulls metrics gauges from the workers (every few seconds, and on each scrape) and reads their counters from
shared memory (metrics/shared.py: they survive a worker's death and this process's), writes the audit log
(its only writer) with the store as its anchor, and hosts the admin API on its own listener.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from fastgw.audit import AuditLog, audit_key
from fastgw.child_signals import handle_stop_signals
from fastgw.codec.control_messages import (
    Ack,
    AuditNote,
    ChildDied,
    ControlMessage,
    Health,
    Hello,
    LedgerAck,
    LedgerReport,
    MetricsExport,
    MetricsPull,
    QuotaAck,
    QuotaReport,
    Reload,
    ReloadDone,
    ReloadResult,
    Replace,
    RequestReload,
)
from fastgw.config.loader import ConfigError
from fastgw.control.api import WorkerView
from fastgw.control.auditing import AuditedChanges, Auditing
from fastgw.control.channel import ChannelProtocol, PeerCheckedChannel
from fastgw.control.cluster_sync import ClusterSync
from fastgw.control.consumers import KeyService
from fastgw.control.health import HealthProber
from fastgw.control.ledger import LedgerWriter
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.control.retention import Retention
from fastgw.control.worker_tables import WorkerTables
from fastgw.control.write_outage import WriteOutage
from fastgw.metrics.exposition import Export, GatewayCollector, make_registry, render
from fastgw.metrics.shared import SharedMetrics
from fastgw.secrets_at_rest import MasterKeys
from fastgw.snapshot import Snapshot
from fastgw.store import open_store, store_dsn, this_node
from fastgw.store.base import QuotaAdmission, QuotaCount, StoreError

PULL_SECONDS: Final = 5.0
PULL_TIMEOUT: Final = 2.0
QUOTA_KEEP_SECONDS: Final = 70 * 86400  # quota rows untouched this long (two months and more) are dropped


def log(message: str) -> None:
    sys.stderr.write(f"fastgw[control {os.getpid()}]: {message}\n")
    sys.stderr.flush()


@dataclass(slots=True)
class WorkerPeer:
    channel: ChannelProtocol
    slot: int
    pid: int
    snapshot: str
    connected: float
    export: Export | None = None


@dataclass(slots=True)
class PendingReload:
    seq: int
    hash: str
    waiting: set[int]
    failed: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ControlProcess:
    def __init__(
        self, snapshot: Snapshot, data: bytes, started: float, metrics: SharedMetrics | None = None
    ) -> None:
        self.snapshot = snapshot
        self.data = data
        self.loaded_at = time.time()
        self.started = started
        self.loop = asyncio.get_running_loop()
        self.workers: dict[int, WorkerPeer] = {}  # pid -> peer
        self.reload: PendingReload | None = None
        self.supervisor: ChannelProtocol | None = None
        self.collector = GatewayCollector(metrics)
        self.collector.snapshot = snapshot.id
        self.registry = make_registry(self.collector)
        self.store = open_store(snapshot.state.dir, snapshot.store)  # applies pending migrations
        key, node = audit_key(snapshot.audit, snapshot.state), this_node(snapshot.state.dir, snapshot.store)
        self.audit = AuditLog(snapshot.audit.file, key, self.store, node)
        if self.audit.problem:
            log(f"audit log {self.audit.path} failed verification: {self.audit.problem}")
        self.auditing = Auditing(self.audit, log)
        self._pull_seq = 0
        self._pulls: dict[int, asyncio.Future[Export]] = {}
        self._quota_outage = WriteOutage()  # logged once when it begins, once when it ends
        self._requests: dict[str, asyncio.Future[ReloadResult]] = {}
        self._request_seq = 0
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.admin: Any = None
        self.health = HealthProber(self._on_health_change)
        self.keys = KeyService(
            self.store,
            lambda: self.snapshot.keys,
            self.auditing.change,
            self.broadcast,
            lambda: [r.name for r in self.snapshot.routes],
        )
        self.provider_keys = ProviderKeyService(
            self.store, self.master_keys, self.auditing.change, self.broadcast, log
        )
        feed = self.store.change_feed()  # a store other nodes write too: follow their changes
        self.tables = WorkerTables(self.store, self.keys, self.provider_keys, started, log)
        self.ledger = LedgerWriter(self.store, log, snapshot.state.dir)  # usage sums, into the store
        syncing = (self.store, self.keys, self.provider_keys, self.broadcast, log)
        self.cluster = None if feed is None else ClusterSync(feed, *syncing)

    # -- workers -----------------------------------------------------------------------------------------
    def accept_worker(self) -> ChannelProtocol:
        return PeerCheckedChannel(self._on_worker_message, self._on_worker_lost)

    def _on_worker_message(self, channel: ChannelProtocol, message: ControlMessage) -> None:
        if isinstance(message, Hello):
            peer = WorkerPeer(
                channel=channel,
                slot=message.slot,
                pid=message.pid,
                snapshot=message.snapshot,
                connected=time.time(),
            )
            channel.peer = peer
            self.workers[peer.pid] = peer
            for first in self.tables.on_connect(peer.slot):  # identities, provider keys, quota bases
                channel.send(first)
            for upstream, target in self.health.down():
                channel.send(Health(upstream=upstream, target=target, healthy=False))
            if peer.snapshot != self.snapshot.id:
                # Forked before a reload, or a reload happened while we were away: bring it in line.
                self._order(peer, self.reload.seq if self.reload else 0)
            return
        peer = channel.peer
        if not isinstance(peer, WorkerPeer):
            return
        if isinstance(message, Ack):
            self._on_ack(peer, message)
        elif isinstance(message, QuotaReport):
            if self._on_quota(message):
                channel.send(QuotaAck(seq=message.seq))  # in the store: the worker may send its next
        elif isinstance(message, LedgerReport):
            self.ledger.write(message.entries, (message.writer, message.seq))
            channel.send(LedgerAck(seq=message.seq))  # written or spooled: the worker may forget it
        elif isinstance(message, AuditNote):  # a budget threshold crossed (sinks/audit_notes.py)
            self.auditing.event(message.event, **{**message.fields, "worker": peer.slot})
        elif isinstance(message, MetricsExport):
            peer.export = message.data
            future = self._pulls.get(message.seq)
            if future is not None and not future.done():
                future.set_result(peer.export)
        else:
            log(f"worker {peer.slot} (pid {peer.pid}) sent an unexpected {message.TAG} message")

    def _on_quota(self, message: QuotaReport) -> bool:
        """A worker's quota admissions since its last send: into the store, in one transaction (one
        written before, by a predecessor killed before it acknowledged, is skipped). False when the store
        cannot be written: unacknowledged, the report is sent again (process/control_link.py)."""
        entries = [QuotaAdmission(*entry) for entry in message.entries]
        try:
            self.store.add_quota_counts(self.started, entries, time.time(), (message.writer, message.seq))
        except Exception as exc:  # a full disk, a locked file: loud, and the node keeps limiting
            if self._quota_outage.failed(message.writer, time.monotonic()):
                log(f"QUOTA WRITE FAILED ({len(entries)} keys; the workers send them until written): {exc}")
            return False
        if self._quota_outage.written(message.writer, time.monotonic()):
            log("quota writes resumed: every report that failed meanwhile is now in the store")
        return True

    def _on_worker_lost(self, channel: ChannelProtocol) -> None:
        peer = channel.peer
        if not isinstance(peer, WorkerPeer):
            return
        if self.workers.get(peer.pid) is peer:
            del self.workers[peer.pid]  # its counters stay in its shard; its gauges leave with it

    def _order(self, peer: WorkerPeer, seq: int) -> None:
        peer.channel.send(
            Reload(seq=seq, config=self.data.decode(), source=self.snapshot.source, hash=self.snapshot.id)
        )

    def _on_ack(self, peer: WorkerPeer, message: Ack) -> None:
        if message.ok:
            peer.snapshot = message.snapshot
        reload = self.reload
        if reload is None or message.seq != reload.seq:
            if not message.ok:
                # A late joiner could not compile the config in force: it must not keep serving another.
                self._tell_supervisor(Replace(pids=(peer.pid,), error=message.error))
            return
        reload.waiting.discard(peer.pid)
        if not message.ok:
            reload.failed.add(peer.pid)
            reload.errors.append(f"worker {peer.slot} (pid {peer.pid}): {message.error}")
        if not reload.waiting:
            reload.done.set()

    # -- the supervisor ----------------------------------------------------------------------------------
    def _on_supervisor_message(self, channel: ChannelProtocol, message: ControlMessage) -> None:
        if isinstance(message, Reload):
            self._spawn(self._relay_reload(message))
        elif isinstance(message, ReloadResult):
            self._on_reload_result(message)
        elif isinstance(message, ChildDied):
            self.collector.restarts.add(message.child)
        else:
            log(f"the supervisor sent an unexpected {message.TAG} message")

    def _on_supervisor_lost(self, channel: ChannelProtocol) -> None:
        log("lost the supervisor; stopping")
        self._stopped.set()

    def _tell_supervisor(self, message: ControlMessage) -> None:
        if self.supervisor is not None:
            self.supervisor.send(message)

    async def _relay_reload(self, message: Reload) -> None:
        from fastgw.config.compiler import compile_config

        data = message.config.encode()
        try:
            snapshot = compile_config(data, message.source)
        except ConfigError as exc:  # the supervisor validated it; this would be an environment problem
            log(f"cannot compile the reloaded config: {exc}")
            return
        self.snapshot, self.data, self.loaded_at = snapshot, data, time.time()
        self.collector.snapshot = snapshot.id
        self.health.configure(snapshot)
        self.broadcast(self.provider_keys.full_table())  # the master keys may have changed
        seq = message.seq
        waiting = set(message.workers)
        reload = self.reload = PendingReload(seq=seq, hash=snapshot.id, waiting=set(waiting))
        for pid in waiting:
            peer = self.workers.get(pid)
            if peer is not None:
                self._order(peer, seq)
            # not connected yet: ordered on its hello
        if reload.waiting:
            try:
                async with asyncio.timeout(snapshot.process.reload_timeout):  # not wait_for: it can
                    await reload.done.wait()  # drop a cancellation on 3.11 (counters/cluster.py stop)
            except TimeoutError:
                for pid in reload.waiting:
                    reload.errors.append(f"pid {pid}: no ack within {snapshot.process.reload_timeout:g}s")
                reload.failed |= reload.waiting
        if self.reload is reload:
            self.reload = None
        self._tell_supervisor(
            ReloadDone(seq=seq, failed=tuple(sorted(reload.failed)), errors=tuple(reload.errors))
        )

    def _on_reload_result(self, message: ReloadResult) -> None:
        ok = message.ok
        reason = message.reason
        result = (
            ("ok" if ok else "failed") if reason != "rollback" else ("rollback" if ok else "rollback_failed")
        )
        self.collector.reloads.add(result)
        fields: dict[str, Any] = {"reason": reason, "ok": ok, "snapshot": message.snapshot}
        if ok:
            fields["previous"] = message.old
            if message.failed:
                fields["replaced_workers"] = list(message.failed)
        else:
            fields["error"] = message.error
        self.auditing.event("rollback" if reason == "rollback" else "reload", **fields)
        for request_id in message.ids:
            future = self._requests.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message)

    async def request_reload(self, reason: str, timeout: float) -> ReloadResult:
        """Ask the supervisor to reload (or roll back) and wait for the result."""
        self._request_seq += 1
        request_id = f"{os.getpid()}-{self._request_seq}"
        future: asyncio.Future[ReloadResult] = self.loop.create_future()
        self._requests[request_id] = future
        self._tell_supervisor(RequestReload(reason=reason, id=request_id))
        try:
            async with asyncio.timeout(timeout):  # not wait_for (counters/cluster.py stop); cancels it
                return await future
        finally:
            self._requests.pop(request_id, None)

    # -- what the admin API asks (control/api.py ControlAPI) ----------------------------------------------
    def worker_views(self) -> list[WorkerView]:
        return [
            WorkerView(p.slot, p.pid, p.snapshot, p.connected, int((p.export or {}).get("connections", 0)))
            for p in sorted(self.workers.values(), key=lambda p: p.slot)
        ]

    def master_keys(self) -> MasterKeys | None:
        """[llm]'s master keys in the snapshot in force (None without [llm] or its master_key)."""
        from fastgw.ai.config import LlmConfig

        llm = self.snapshot.sections.get("llm")
        return llm.master_keys if isinstance(llm, LlmConfig) else None

    def reloading(self) -> bool:
        return self.reload is not None

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return render(self.registry, accept)

    def quota_counts(self) -> list[QuotaCount]:
        return self.store.quota_counts()

    def audit_or_raise(self, event: str, **fields: Any) -> None:
        """ControlAPI's; a record written without its anchor is answered by EVENT.aborted (a change's way)."""
        changes = AuditedChanges(self.store, self.auditing.change, log)
        with changes.answering():
            changes.record(event, **fields)

    def broadcast(self, message: ControlMessage) -> None:
        self.tables.record(message)
        for peer in self.workers.values():
            peer.channel.send(message)

    def _on_health_change(self, upstream: str, target: str, healthy: bool, why: str) -> None:
        log(f"upstream {upstream} target {target} is {'healthy' if healthy else 'DOWN'}: {why}")
        self.broadcast(Health(upstream=upstream, target=target, healthy=healthy))

    # -- metrics -----------------------------------------------------------------------------------------
    async def pull_metrics(self) -> None:
        """Ask every worker for its counters; whoever does not answer in time keeps its last export."""
        self._pull_seq += 1
        seq = self._pull_seq
        futures = []
        for peer in list(self.workers.values()):
            future: asyncio.Future[Export] = self.loop.create_future()
            self._pulls[seq * 1000 + peer.slot] = future
            if peer.channel.send(MetricsPull(seq=seq * 1000 + peer.slot)):
                futures.append(future)
        if futures:
            await asyncio.wait(futures, timeout=PULL_TIMEOUT)
        for key in [k for k in self._pulls if k // 1000 == seq]:
            del self._pulls[key]
        self.collector.exports = [p.export for p in self.workers.values() if p.export is not None]
        self.collector.health = {key: int(h.healthy) for key, h in self.health.state.items()}
        self.collector.gauges = {
            "fastgw_workers_connected": len(self.workers),
            "fastgw_uptime_seconds": time.time() - self.started,
            "fastgw_snapshot_loaded_timestamp_seconds": self.loaded_at,
            **(self.cluster.gauges() if self.cluster is not None else {}),
            **self.ledger.gauges(),
        }

    async def _pull_forever(self) -> None:
        while True:
            await asyncio.sleep(PULL_SECONDS)
            await self.pull_metrics()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(
        self, listen: socket.socket, link: socket.socket, status_fd: int, admin: socket.socket | None
    ) -> None:
        listen.setblocking(False)
        server = await self.loop.create_unix_server(self.accept_worker, sock=listen)
        link.setblocking(False)
        _, self.supervisor = await self.loop.create_unix_connection(
            lambda: ChannelProtocol(self._on_supervisor_message, self._on_supervisor_lost), sock=link
        )
        if self.snapshot.admin is not None:
            from fastgw.control.admin_api import AdminServer

            assert admin is not None, "the supervisor binds the admin listener whenever [admin] is set"
            self.admin = AdminServer(self, self.snapshot.admin)
            await self.admin.start(admin)
        handle_stop_signals(self.loop, self._stopped.set)
        self.loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._spawn(self._pull_forever())
        if self.cluster is not None:
            self._spawn(self.cluster.follow(store_dsn(self.snapshot.store)))
        self.store.forget_quotas(time.time() - QUOTA_KEEP_SECONDS)
        self._spawn(Retention(self.store, lambda: self.snapshot, self.auditing.event, log).daily())
        self.health.configure(self.snapshot)
        self.auditing.event("start", snapshot=self.snapshot.id, source=self.snapshot.source)
        os.write(status_fd, f"ready control 0 {os.getpid()} {self.snapshot.id}\n".encode())
        os.close(status_fd)
        await self._stopped.wait()
        self.ledger.finish()  # what the spool holds, into the store before this process ends
        self.health.stop()
        server.close()
        if self.admin is not None:
            await self.admin.stop()
        self.store.close()


def run_control(
    snapshot: Snapshot,
    data: bytes,
    *,
    listen: socket.socket,
    admin: socket.socket | None,
    supervisor: socket.socket,
    status_fd: int,
    started: float,
    metrics: SharedMetrics | None = None,
) -> int:
    """The body of the forked control process; returns its exit status."""
    import uvloop

    async def main() -> int:
        try:
            control = ControlProcess(snapshot, data, started, metrics)
        except (ConfigError, OSError, StoreError) as exc:  # one line; the supervisor stops a start
            log(f"cannot start: {exc}")
            return 1
        try:
            await control.run(listen, supervisor, status_fd, admin)
        except ConfigError as exc:  # a secret read at run (the admin token) gone since the config loaded
            log(f"cannot start: {exc}")
            return 1
        return 0

    return uvloop.run(main())
