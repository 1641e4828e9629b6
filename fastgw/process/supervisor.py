"""The supervisor: a tiny single-threaded parent that binds, forks, restarts, reloads and speaks sd_notify.

It reads and validates the config, binds the listeners once (or takes them from systemd's LISTEN_FDS:
sockets.py), opens the control socket, and forks one control process and N workers *before any thread
exists* (a fork after threads start would copy locks held by threads that do not exist in the child). It
never serves a request. Its loop is a ``selectors`` poll over three inputs: the signal wake-up socket
(handlers only enqueue, ``signal.set_wakeup_fd``), the status pipe children write ``ready`` lines to, and
its socketpair to the control process.

* A child that dies is logged and restarted, with backoff while it keeps dying young; a worker that stops
  ticking is killed (children.py).
* SIGHUP: reload the config file; SIGUSR2 (``fastgw rollback``): the previous valid config of the same
  file (reloads.py: validation, the control process's acks, the status file `fastgw reload` reads).
* SIGTERM/SIGINT: STOPPING=1, close our copies of the listening sockets, forward SIGTERM (workers close
  theirs at once and drain up to ``server.drain_timeout``), wait, exit 0. Once the last copy of a listening
  socket is closed the kernel refuses new connections (RST, ECONNREFUSED) instead of queueing them in a
  backlog nobody accepts from; only a socket systemd holds (socket activation) keeps queueing them, for
  the next start to serve.
* SIGUSR1: forwarded to every child (workers reopen their access log).

A bind failure is one line naming the listener, the address and the OS error, and the supervisor exits
with status 2 before forking (so before READY=1). A child that dies before it was ever ready during
start-up (say, the control process cannot open its store) stops the start the same way, with status 1,
instead of restarting forever while systemd waits for READY=1.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Final

import setproctitle

from fastgw.child_signals import hold_stop_signals
from fastgw.codec import control_messages as msg
from fastgw.config.history import ConfigHistory
from fastgw.counters.table import CounterTable, region_bytes
from fastgw.metrics.shared import SharedMetrics
from fastgw.process import pid_file, systemd
from fastgw.process.children import STOP_GRACE, Child, Children, describe_exit, kill
from fastgw.process.log import log, log_warnings
from fastgw.process.reloads import Reloads
from fastgw.process.shm import METRICS, RATELIMIT, Heartbeats, SharedRegions
from fastgw.process.sockets import BindError, Bound, bind_all
from fastgw.process.supervisor_link import SupervisorLink
from fastgw.snapshot import Snapshot

_SIGNALS: Final = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


def set_title(title: str) -> None:
    """What ``ps`` shows for this process (its command line and /proc/PID/comm)."""
    setproctitle.setproctitle(title)


class Supervisor:
    """The parent process: owns the bound sockets, the shared memory regions, the children and the loop
    that reacts to signals, ready lines and the control process."""

    def __init__(
        self,
        snapshot: Snapshot,
        data: bytes,
        config_path: str | None,
        *,
        workers: int | None = None,
        ready_file: str | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.data = data
        self.config_path = config_path
        count = workers if workers is not None else snapshot.process.workers
        self.worker_count = count or os.cpu_count() or 1
        self.ready_file = ready_file
        self.bound = Bound()
        self._addresses: list[tuple[str, int]] = []
        self.stopping = False
        self.exit_code = 0  # 1 when the start failed (a child died before it was ever ready)
        self.stop_deadline = 0.0
        self.announced_ready = False
        history = ConfigHistory(snapshot.state.dir, snapshot.state.keep_configs, snapshot.source)
        self.reloads = Reloads(self, history)
        self.started = time.time()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._status_r, self._status_w = os.pipe()
        self._link = SupervisorLink(self._selector, self._on_control_message)
        self._next_watchdog = 0.0
        self._watchdog = systemd.watchdog_interval() if snapshot.process.watchdog else None
        self.regions = SharedRegions()
        self.heartbeats = Heartbeats.create(self.regions, self.worker_count)
        self.ratelimit_capacity = snapshot.ratelimit_capacity
        self.regions.create(RATELIMIT, region_bytes(self.worker_count, self.ratelimit_capacity))
        counters = CounterTable()  # the supervisor's view: only to release a dead worker's in-flight cells
        counters.attach(self.regions.get(RATELIMIT), 0, self.worker_count, self.ratelimit_capacity)
        self.children = Children(self.worker_count, self.heartbeats, counters)
        metrics_bytes = SharedMetrics.region_bytes(self.worker_count)
        self.metrics = SharedMetrics(self.regions.create(METRICS, metrics_bytes), self.worker_count)
        self._next_hang_check = 0.0

    # -- set-up ----------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener (or adopt systemd's sockets), the demo upstream and the control socket."""
        bind_all(self.bound, self.snapshot, self.worker_count)

    def addresses(self) -> list[tuple[str, int]]:
        """The bound public addresses (kept from the bind: the sockets are closed when we stop)."""
        if not self._addresses:
            for socks in self.bound.listeners:
                name = socks[0].getsockname()
                self._addresses.append((name[0], name[1]))
        return self._addresses

    # -- main loop ---------------------------------------------------------------------------------------
    def run(self) -> int:
        set_title("fastgw: supervisor")
        self._install_signals()
        pid_file.write(self.snapshot.state.pid_file)
        self.reloads.write_status()
        self.reloads.history.record(self.data, self.snapshot)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_signal)
        os.set_blocking(self._status_r, False)
        self._selector.register(self._status_r, selectors.EVENT_READ, self._on_status)
        for child in self.children.slots:
            self._spawn(child)
        log(
            "supervisor",
            f"snapshot {self.snapshot.id} from {self.snapshot.source}; {self.worker_count} workers; "
            f"listening on {', '.join(f'{h}:{p}' for h, p in self.addresses())}",
        )
        log_warnings("supervisor", self.snapshot.warnings)
        try:
            while True:
                timeout = self._next_timeout()
                for key, _events in self._selector.select(timeout):
                    callback: Callable[[], None] = key.data
                    callback()
                now = time.monotonic()
                self._restart_due(now)
                self.reloads.check_deadline(now)
                if now >= self._next_hang_check:
                    self._check_hung(now)
                    self._next_hang_check = now + 0.5
                if self._watchdog and now >= self._next_watchdog:
                    systemd.notify("WATCHDOG=1")
                    self._next_watchdog = now + self._watchdog
                if self.stopping:
                    if not self.children.by_pid:
                        break
                    if now >= self.stop_deadline:
                        self.children.signal_all(signal.SIGKILL)
                        self.stop_deadline = now + 5
        finally:
            pid_file.remove(self.snapshot.state.pid_file)
            self.bound.close_admin(self.snapshot.admin)
        log("supervisor", "stopped")
        return self.exit_code

    def _next_timeout(self) -> float:
        now = time.monotonic()
        due = [*self.children.next_restart(), now + 1.0]
        if self.reloads.current is not None:
            due.append(self.reloads.current.deadline)
        if self._watchdog:
            due.append(self._next_watchdog)
        if self.stopping:
            due.append(self.stop_deadline)
        return max(0.0, min(due) - now)

    def _install_signals(self) -> None:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in _SIGNALS:
            signal.signal(sig, lambda signum, frame: None)  # the wake-up fd carries the number

    def _on_signal(self) -> None:
        try:
            data = self._wake_r.recv(512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self.reloads.request("SIGHUP")
            elif signum == signal.SIGUSR2:
                self.reloads.request("rollback")
            elif signum == signal.SIGUSR1:
                log("supervisor", "SIGUSR1: children reopen their log files")
                self.children.signal_all(signal.SIGUSR1)
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.stop(signal.Signals(signum).name)

    # -- children ----------------------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        if child.kind == "control":
            link, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child (covered by the e2e tests via subprocesses)
            code = 70
            try:
                self._enter_child()
                set_title(f"fastgw: {child.name}")
                if child.kind == "control":
                    link.close()
                    code = self._run_control(theirs)
                else:
                    code = self._run_worker(child.slot)
            except BaseException:  # whatever happens, the child must not return into the supervisor
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.children.started(child, pid, time.monotonic())
        if child.kind == "control":
            theirs.close()
            self._link.attach(link)

    def _enter_child(self) -> None:
        """In a fresh child: default signal dispositions (stop signals held), none of the supervisor's fds."""
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        hold_stop_signals()  # a stop during the child's start waits for its loop (child_signals.py)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        os.close(self._status_r)
        if self._link.sock is not None:
            self._link.sock.close()

    def _run_worker(self, slot: int) -> int:
        from fastgw.process.worker import run_worker

        assert self.bound.control is not None
        self.bound.control.close()
        self.bound.close_others(slot)
        if self.bound.admin is not None:
            self.bound.admin.close()
        return run_worker(
            self.snapshot,
            self.data,
            sockets=self.bound.for_slot(slot),
            demo=self.bound.demo,
            slot=slot,
            heartbeats=self.heartbeats,
            counters=(self.regions.get(RATELIMIT), self.worker_count, self.ratelimit_capacity),
            metrics=self.metrics,
            control_address=self.bound.control_address,
            status_fd=self._status_w,
        )

    def _run_control(self, link: socket.socket) -> int:
        from fastgw.control.process import run_control

        self.bound.close_listeners()
        if self.bound.demo is not None:
            self.bound.demo.close()
        assert self.bound.control is not None
        return run_control(
            self.snapshot,
            self.data,
            listen=self.bound.control,
            admin=self.bound.admin,
            supervisor=link,
            status_fd=self._status_w,
            started=self.started,
            metrics=self.metrics,
        )

    def _reap(self) -> None:
        for child, status in self.children.reap():
            self._on_death(child, status)

    def _on_death(self, child: Child, status: int) -> None:
        """A death while stopping is expected; one before the first READY=1 fails the start; any other is
        restarted (children.py) and told to the control process."""
        now = time.monotonic()
        how = describe_exit(status)
        if child.kind == "control":
            self._link.detach()
        if self.stopping:
            log("supervisor", f"{child.name} (pid {child.pid}) {how}")
            self._stop_control_when_alone()
            return
        if not self.announced_ready and not child.ready and not child.replacing:
            # It failed before serving once: restarting it would loop on the same cause while systemd
            # waits for a READY=1 that never comes. Fail the start instead; its own line said why.
            message = f"start-up failed: {child.name} (pid {child.pid}) {how} before it was ready"
            log("supervisor", f"{message}; stopping")
            systemd.notify(f"STATUS={message}")
            self.exit_code = 1
            self.stop("start-up failure")
            return
        self.tell_control(msg.ChildDied(child=child.name, pid=child.pid))
        self.children.schedule_restart(child, how, now, self.snapshot.process.restart_backoff_max)
        if self.reloads.current is not None and child.kind == "control":
            self.reloads.finish(ok=False, detail="the control process died during the reload")

    def _restart_due(self, now: float) -> None:
        if self.stopping:
            return
        for child in self.children.due(now):
            self._spawn(child)

    def _check_hung(self, now: float) -> None:
        if not self.stopping:
            self.children.kill_hung(now, self.snapshot.process.hang_timeout)

    def _on_status(self) -> None:
        """``ready`` lines from children (children.py reads them)."""
        try:
            data = os.read(self._status_r, 65536)
        except BlockingIOError:
            return
        self.children.read_ready(data, time.monotonic())
        if not self.announced_ready and not self.stopping and self.children.all_ready():
            self._announce_ready()

    def _announce_ready(self) -> None:
        self.announced_ready = True
        if self.ready_file:
            tmp = self.ready_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(",".join(f"{h}:{p}" for h, p in self.addresses()))
            os.replace(tmp, self.ready_file)
        status = f"STATUS=serving snapshot {self.snapshot.id} with {self.worker_count} workers"
        systemd.notify("READY=1", status)
        log("supervisor", f"ready: {self.worker_count} workers and the control process")

    # -- the link to the control process -----------------------------------------------------------------
    def control_connected(self) -> bool:
        return self._link.connected

    def tell_control(self, message: msg.ControlMessage) -> None:
        self._link.send(message)

    def _on_control_message(self, message: msg.ControlMessage) -> None:
        if isinstance(message, msg.ReloadDone):
            if self.reloads.current is not None and message.seq == self.reloads.current.seq:
                failed = list(message.failed)
                for pid in failed:
                    self.children.replace(pid)
                self.reloads.finish(ok=True, failed=failed, detail="; ".join(message.errors))
        elif isinstance(message, msg.Replace):
            for pid in message.pids:
                self.children.replace(pid, message.error)
        elif isinstance(message, msg.RequestReload):
            self.reloads.request(message.reason, requester=message.id)
        else:
            log("supervisor", f"control channel: unexpected {message.TAG} message")

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.snapshot.server.drain_timeout + STOP_GRACE
        systemd.notify("STOPPING=1", f"STATUS=stopping ({why})")
        log("supervisor", f"{why}: draining {len(self.children.by_pid)} children")
        # Stop accepting at once: workers close their copies on SIGTERM; once ours are closed too the
        # kernel refuses new connections rather than queueing them until we exit.
        self.bound.close_listeners()
        # Workers first; the control process (the store's writer) stops once they are gone, so their
        # last quota counts and acks still reach it.
        for pid in self.children.worker_pids():
            kill(pid, signal.SIGTERM)
        self._stop_control_when_alone()

    def _stop_control_when_alone(self) -> None:
        if self.stopping and not self.children.worker_pids():
            self.children.signal_all(signal.SIGTERM)


def supervise(supervisor: Supervisor) -> int:
    """Bind, fork and supervise until stopped. A listener that cannot be bound is one line on stderr and
    exit status 2, before any child exists (so before READY=1)."""
    try:
        supervisor.bind()
    except BindError as exc:
        supervisor.bound.close_all()
        systemd.notify(f"STATUS={exc}")
        sys.stderr.write(f"fastgw: {exc}\n")
        sys.stderr.flush()
        return 2
    return supervisor.run()
