"""The supervisor: a tiny single-threaded parent that binds, forks, restarts, reloads and speaks sd_notify.

It reads and validates the config, binds the listeners once (or takes them from systemd's LISTEN_FDS),
opens the control socket, and forks one control process and N workers *before any thread exists* (a fork
after threads start would copy locks held by threads that do not exist in the child). It never serves a
request. Its loop is a ``selectors`` poll over three inputs: the signal wake-up socket (handlers only
enqueue, ``signal.set_wakeup_fd``), the status pipe children write ``ready`` lines to, and its socketpair
to the control process.

* A child that dies is logged and restarted: at once the first time, then with exponential backoff
  (0.1 s doubling up to ``process.restart_backoff_max``) while it keeps dying young; five quick deaths in
  a row are reported as a crash loop (log and systemd STATUS).
* SIGHUP: read + validate the file; a bad config is logged with file, key and reason and changes nothing.
  A good one is sent (bytes + hash) to the control process, which orders every worker to compile it and
  collects their acks; READY=1 follows the last ack. A worker that fails to compile is replaced, so no
  worker is ever left on another config. The validated bytes become the config children are forked with.
  Validation is `fastgw check`'s (config/validate.py), and a config that changes a setting fixed at start
  (listeners, process.workers, rate_limits.capacity, ...) is refused naming the key. Each outcome goes to
  the status file beside the pid file (status_file.py), where `fastgw reload` reads it.
* SIGUSR2 (``fastgw rollback``): the previous valid config of the same config file (config/history.py),
  same path as SIGHUP.
* SIGTERM/SIGINT: STOPPING=1, close our copies of the listening sockets, forward SIGTERM (workers close
  theirs at once and drain up to ``server.drain_timeout``), wait, exit 0. Once the last copy of a listening
  socket is closed the kernel refuses new connections (RST, ECONNREFUSED) instead of queueing them in a
  backlog nobody accepts from; only a socket systemd holds (socket activation) keeps queueing them, for
  the next start to serve.
* SIGUSR1: forwarded to every child (workers reopen their access log).

Every socket is bound here, before any child exists: the public listeners, the demo upstream and the admin
listener. A bind failure is one line naming the listener, the address and the OS error, and the
supervisor exits with status 2 before forking (so before READY=1). A child that dies before it was ever
ready during start-up (say, the control process cannot open its store) stops the start the same way,
with status 1, instead of restarting forever while systemd waits for READY=1.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import setproctitle

from fastgw.codec import control_messages as msg
from fastgw.config.history import ConfigHistory
from fastgw.config.loader import ConfigError, read_config_bytes
from fastgw.control.channel import ChannelError, FrameDecoder, encode
from fastgw.counters.table import CounterTable, region_bytes
from fastgw.metrics.shared import SharedMetrics
from fastgw.process import status_file, systemd
from fastgw.process.shm import METRICS, RATELIMIT, Heartbeats, SharedRegions
from fastgw.snapshot import AdminSettings, ListenerSettings, Snapshot

# A child that dies younger than this counts towards backoff: a healthy start (fork, compile, listen)
# takes well under a second, so a death within 10 s is a start that failed, not a crash in service.
QUICK_DEATH: Final = 10.0
# Quick deaths in a row reported as a crash loop (log and systemd STATUS=): five failed starts rule out a
# one-off (an OOM kill, a signal) while the backoff is still short.
CRASH_LOOP: Final = 5
FIRST_BACKOFF: Final = 0.1
STOP_GRACE: Final = 5.0  # beyond drain_timeout before remaining children are killed
_SIGNALS: Final = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


def log(who: str, message: str) -> None:
    sys.stderr.write(f"fastgw[{who} {os.getpid()}]: {message}\n")
    sys.stderr.flush()


@dataclass(slots=True)
class Child:
    kind: str  # "control" or "worker"
    slot: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    died_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0  # when a dead child is due to be forked again (0: alive)
    replacing: bool = False  # killed on purpose (failed reload): restart at once, not a crash

    @property
    def name(self) -> str:
        return "control" if self.kind == "control" else f"worker {self.slot}"


@dataclass(slots=True)
class Reload:
    seq: int
    reason: str
    old_id: str
    old: Snapshot
    snapshot: Snapshot
    data: bytes
    deadline: float
    requesters: list[str] = field(default_factory=list)  # admin request ids to answer
    began: float = 0.0  # time.monotonic() when the supervisor started on it (status_file.py)


@dataclass(slots=True)
class Bound:
    """The sockets children inherit."""

    listeners: list[list[socket.socket]] = field(default_factory=list)  # per listener: shared or per slot
    demo: socket.socket | None = None
    control_address: str = ""
    control: socket.socket | None = None

    admin: socket.socket | None = None  # the admin API's listener, served by the control process

    def for_slot(self, slot: int) -> list[socket.socket]:
        return [socks[slot] if len(socks) > 1 else socks[0] for socks in self.listeners]

    def close_listeners(self) -> None:
        """Close our copies of the public listeners (at stop, and in a child that does not serve them)."""
        for socks in self.listeners:
            for sock in socks:
                sock.close()

    def close_all(self) -> None:
        """Everything bound so far (a later bind failed: nothing is forked)."""
        self.close_listeners()
        for sock in (self.demo, self.admin, self.control):
            if sock is not None:
                sock.close()

    def close_others(self, slot: int) -> None:
        """In worker ``slot``: close the per-worker SO_REUSEPORT sockets of the other slots. A copy kept
        open would hold that socket in the kernel's reuse-port group after its own worker closed it, so
        connections hashed to it would wait in a backlog nobody accepts from."""
        for socks in self.listeners:
            if len(socks) > 1:
                for i, sock in enumerate(socks):
                    if i != slot:
                        sock.close()


class BindError(Exception):
    """A listener that cannot be bound: the message names the listener, the address and the OS error."""


def _os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


def _bind(what: str, host: str, port: int, backlog: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise BindError(f"cannot bind {what} to {where}: {_os_error(exc)}") from None
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


ADMIN_BACKLOG: Final = 64  # the admin API serves operators and scrapers, not traffic


def _bind_admin(admin: AdminSettings) -> socket.socket:
    """The admin listener: TCP, or a unix socket created 0600 (a stale file left by a crash is replaced;
    a path some live process answers on is in use)."""
    if not admin.unix:
        return _bind("the admin listener", admin.host, admin.port, ADMIN_BACKLOG, reuse_port=False)
    path = admin.unix
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        pass  # nobody answers: a stale file (or none)
    else:
        raise BindError(f"cannot bind the admin listener to unix:{path}: another process answers there")
    finally:
        probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is 0600 from its first moment, not after a chmod
    try:
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise BindError(f"cannot bind the admin listener to unix:{path}: a file that is not a socket")
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock.bind(path)
        sock.listen(ADMIN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind the admin listener to unix:{path}: {_os_error(exc)}") from None
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return sock


def _admin_address(admin: AdminSettings | None) -> tuple[str, int, str] | None:
    return None if admin is None else (admin.host, admin.port, admin.unix)


def set_title(title: str) -> None:
    """What ``ps`` shows for this process (its command line and /proc/PID/comm)."""
    setproctitle.setproctitle(title)


class Supervisor:
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
        self.history = ConfigHistory(snapshot.state.dir, snapshot.state.keep_configs, snapshot.source)
        self.children: dict[int, Child] = {}  # pid -> child
        self.slots: list[Child] = [Child("control", 0)] + [
            Child("worker", i) for i in range(self.worker_count)
        ]
        self.bound = Bound()
        self._addresses: list[tuple[str, int]] = []
        self._admin_next: socket.socket | None = None  # a reload's admin listener, bound by _load_for
        self.stopping = False
        self.exit_code = 0  # 1 when the start failed (a child died before it was ever ready)
        self.stop_deadline = 0.0
        self.announced_ready = False
        self.reload: Reload | None = None
        self.reload_again: dict[str, list[str]] = {}  # reason -> requesters queued while a reload ran
        self.reload_seq = 0
        self.outcomes = 0  # reload outcomes written to the status file (its generation)
        self.last_outcome: dict[str, object] | None = None
        self.started = time.time()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._status_r, self._status_w = os.pipe()
        self._status_buf = b""
        self._link: socket.socket | None = None  # our end of the socketpair to the control process
        self._link_decoder = FrameDecoder()
        self._link_out = bytearray()
        self._next_watchdog = 0.0
        self._watchdog = systemd.watchdog_interval() if snapshot.process.watchdog else None
        self.regions = SharedRegions()
        self.heartbeats = Heartbeats.create(self.regions, self.worker_count)
        self.ratelimit_capacity = snapshot.ratelimit_capacity
        self.regions.create(RATELIMIT, region_bytes(self.worker_count, self.ratelimit_capacity))
        # The supervisor's view of the table: only to release a dead worker's in-flight cells.
        self.counters = CounterTable()
        self.counters.attach(self.regions.get(RATELIMIT), 0, self.worker_count, self.ratelimit_capacity)
        metrics_bytes = SharedMetrics.region_bytes(self.worker_count)
        self.metrics = SharedMetrics(self.regions.create(METRICS, metrics_bytes), self.worker_count)
        self._next_hang_check = 0.0

    # -- set-up ----------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener (or adopt systemd's sockets), the demo upstream and the control socket."""
        activated = systemd.listen_fds()
        reuse = self.snapshot.process.reuse_port and not activated
        for ls in self.snapshot.listeners:
            sock = self._adopt(activated, ls)
            if sock is not None:
                self.bound.listeners.append([sock])
                continue
            copies = self.worker_count if reuse else 1
            what = f"listener {ls.name!r}"
            socks = [_bind(what, ls.host, ls.port, ls.backlog, reuse)]
            self.bound.listeners.append(socks)
            # Every copy shares the port of the first (the one the kernel picked, for port 0).
            port = socks[0].getsockname()[1]
            socks.extend(_bind(what, ls.host, port, ls.backlog, reuse) for _ in range(copies - 1))
        for sock, name in activated:
            if all(sock not in socks for socks in self.bound.listeners):
                log(
                    "supervisor", f"ignoring a socket-activated socket no listener uses ({name or 'unnamed'})"
                )
                sock.close()
        if self.snapshot.demo_upstream is not None:
            host, port = self.snapshot.demo_upstream
            self.bound.demo = _bind("the demo upstream", host, port, backlog=128, reuse_port=False)
        if self.snapshot.admin is not None:
            self.bound.admin = _bind_admin(self.snapshot.admin)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Abstract namespace: no file to clean up; peers are checked by uid (SO_PEERCRED) on accept.
        self.bound.control_address = f"\0fastgw-control-{os.getpid()}-{os.urandom(6).hex()}"
        control.bind(self.bound.control_address)
        control.listen(64)
        self.bound.control = control

    @staticmethod
    def _adopt(activated: list[tuple[socket.socket, str]], ls: ListenerSettings) -> socket.socket | None:
        for sock, name in activated:
            if name == ls.name:
                return sock
        for sock, _name in activated:
            try:
                host, port = sock.getsockname()[:2]
            except OSError:
                continue
            if port == ls.port and (host == ls.host or ls.host in ("0.0.0.0", "::")):
                return sock
        return None

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
        self._write_pid_file()
        self._write_status()
        self.history.record(self.data, self.snapshot)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_signal)
        os.set_blocking(self._status_r, False)
        self._selector.register(self._status_r, selectors.EVENT_READ, self._on_status)
        for child in self.slots:
            self._spawn(child)
        log(
            "supervisor",
            f"snapshot {self.snapshot.id} from {self.snapshot.source}; {self.worker_count} workers; "
            f"listening on {', '.join(f'{h}:{p}' for h, p in self.addresses())}",
        )
        try:
            while True:
                timeout = self._next_timeout()
                for key, _events in self._selector.select(timeout):
                    callback: Callable[[], None] = key.data
                    callback()
                now = time.monotonic()
                self._restart_due(now)
                self._check_reload_deadline(now)
                if now >= self._next_hang_check:
                    self._check_hung(now)
                    self._next_hang_check = now + 0.5
                if self._watchdog and now >= self._next_watchdog:
                    systemd.notify("WATCHDOG=1")
                    self._next_watchdog = now + self._watchdog
                if self.stopping:
                    if not self.children:
                        break
                    if now >= self.stop_deadline:
                        for pid in list(self.children):
                            self._kill(pid, signal.SIGKILL)
                        self.stop_deadline = now + 5
        finally:
            self._remove_pid_file()
            self._close_admin(self.snapshot.admin)
        log("supervisor", "stopped")
        return self.exit_code

    def _next_timeout(self) -> float:
        now = time.monotonic()
        due = [c.restart_at for c in self.slots if c.restart_at] + [now + 1.0]
        if self.reload is not None:
            due.append(self.reload.deadline)
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
                self.request_reload("SIGHUP")
            elif signum == signal.SIGUSR2:
                self.request_reload("rollback")
            elif signum == signal.SIGUSR1:
                log("supervisor", "SIGUSR1: children reopen their log files")
                for pid in list(self.children):
                    self._kill(pid, signal.SIGUSR1)
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
        log("supervisor", f"{child.name} started as pid {pid}")
        if child.kind == "worker":
            self.heartbeats.beat(child.slot, time.monotonic())  # the hang clock starts at the fork
        child.pid = pid
        child.started = time.monotonic()
        child.ready = False
        child.restart_at = 0.0
        self.children[pid] = child
        if child.kind == "control":
            theirs.close()
            self._attach_link(link)

    def _enter_child(self) -> None:
        """In a fresh child: default signal dispositions, and none of the supervisor's private fds."""
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        os.close(self._status_r)
        if self._link is not None:
            self._link.close()

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
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._on_death(child, status)

    def _on_death(self, child: Child, status: int) -> None:
        now = time.monotonic()
        how = (
            f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"exited with status {os.waitstatus_to_exitcode(status)}"
        )
        lived = now - child.started
        if child.kind == "control" and self._link is not None:
            self._detach_link()
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
        self._tell_control(msg.ChildDied(child=child.name, pid=child.pid))
        if child.replacing:
            child.replacing = False
            delay = 0.0
        else:
            child.quick_deaths = child.quick_deaths + 1 if lived < QUICK_DEATH else 1
            delay = 0.0 if child.quick_deaths <= 1 else FIRST_BACKOFF * 2 ** (child.quick_deaths - 2)
            delay = min(delay, self.snapshot.process.restart_backoff_max)
        child.died_at = now
        child.restart_at = now + delay
        if child.kind == "worker":
            released = self.counters.release_shard(child.slot)
            if released:
                log("supervisor", f"released {released} in-flight request slots of the dead {child.name}")
        log(
            "supervisor",
            f"{child.name} (pid {child.pid}) {how} after {lived:.1f}s; restarting in {delay:.1f}s",
        )
        if child.quick_deaths >= CRASH_LOOP:
            message = (
                f"crash loop: {child.name} died {child.quick_deaths} times in a row within {QUICK_DEATH:.0f}s"
            )
            log("supervisor", message)
            systemd.notify(f"STATUS={message}")
        if self.reload is not None and child.kind == "control":
            self._finish_reload(ok=False, detail="the control process died during the reload")

    def _restart_due(self, now: float) -> None:
        if self.stopping:
            return
        for child in self.slots:
            if child.restart_at and now >= child.restart_at:
                self._spawn(child)

    def _check_hung(self, now: float) -> None:
        """Kill a worker whose event loop stopped ticking (alive, but serving nobody); it is restarted."""
        if self.stopping:
            return
        limit = self.snapshot.process.hang_timeout
        for child in list(self.children.values()):
            if child.kind != "worker" or child.replacing:
                continue
            silent = now - self.heartbeats.last(child.slot)
            if silent > limit:
                log(
                    "supervisor",
                    f"{child.name} (pid {child.pid}) stopped ticking {silent:.1f}s ago; killing it",
                )
                child.replacing = True
                self._kill(child.pid, signal.SIGKILL)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _on_status(self) -> None:
        """``ready KIND SLOT PID SNAPSHOT`` lines from children (one write each, < PIPE_BUF)."""
        try:
            data = os.read(self._status_r, 65536)
        except BlockingIOError:
            return
        self._status_buf += data
        *lines, self._status_buf = self._status_buf.split(b"\n")
        for line in lines:
            parts = line.decode(errors="replace").split()
            if len(parts) < 4 or parts[0] != "ready":
                continue
            child = self.children.get(int(parts[3]))
            if child is None or child.ready:
                continue
            child.ready = True
            if child.died_at:
                took = (time.monotonic() - child.died_at) * 1000
                log(
                    "supervisor",
                    f"{child.name} (pid {child.pid}) serving again {took:.0f} ms after the death",
                )
                child.died_at = 0.0
            if not self.announced_ready and not self.stopping and all(c.ready for c in self.slots):
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
    def _attach_link(self, link: socket.socket) -> None:
        link.setblocking(False)
        self._link = link
        self._link_decoder = FrameDecoder()
        self._link_out = bytearray()
        self._selector.register(link, selectors.EVENT_READ, self._on_link)

    def _detach_link(self) -> None:
        if self._link is None:
            return
        self._selector.unregister(self._link)
        self._link.close()
        self._link = None

    def _tell_control(self, message: msg.ControlMessage) -> None:
        if self._link is None:
            return
        self._link_out += encode(message)
        self._flush_link()

    def _flush_link(self) -> None:
        assert self._link is not None
        try:
            while self._link_out:
                sent = self._link.send(self._link_out)
                del self._link_out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._link_out.clear()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._link_out else 0)
        self._selector.modify(self._link, events, self._on_link)

    def _on_link(self) -> None:
        if self._link is None:  # detached earlier in the same select round (the control process died)
            return
        if self._link_out:
            self._flush_link()
        try:
            data = self._link.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach_link()
            return
        try:
            messages = self._link_decoder.feed(data)
        except ChannelError as exc:
            log("supervisor", f"control channel: {exc}")
            self._detach_link()
            return
        for message in messages:
            self._on_control_message(message)

    def _on_control_message(self, message: msg.ControlMessage) -> None:
        if isinstance(message, msg.ReloadDone):
            if self.reload is not None and message.seq == self.reload.seq:
                failed = list(message.failed)
                for pid in failed:
                    child = self.children.get(pid)
                    if child is not None:
                        child.replacing = True
                        self._kill(pid, signal.SIGTERM)
                self._finish_reload(ok=True, failed=failed, detail="; ".join(message.errors))
        elif isinstance(message, msg.Replace):
            for pid in message.pids:
                child = self.children.get(pid)
                if child is not None:
                    log("supervisor", f"replacing {child.name} (pid {pid}): {message.error}")
                    child.replacing = True
                    self._kill(pid, signal.SIGTERM)
        elif isinstance(message, msg.RequestReload):
            self.request_reload(message.reason, requester=message.id)
        else:
            log("supervisor", f"control channel: unexpected {message.TAG} message")

    # -- reload ------------------------------------------------------------------------------------------
    def request_reload(self, reason: str, requester: str | None = None) -> None:
        requesters = [requester] if requester else []
        if self.stopping:
            return
        if self.reload is not None:
            self.reload_again.setdefault(reason, []).extend(requesters)
            return
        self._reload(reason, requesters)

    def _reload(self, reason: str, requesters: list[str]) -> None:
        old = self.snapshot
        began = time.monotonic()
        try:
            data, snapshot = self._load_for(reason)
        except ConfigError as exc:
            log("supervisor", f"reload failed ({reason}), keeping snapshot {old.id}: {exc}")
            self._record_outcome(reason, began, ok=False, error=str(exc), snapshot=old.id, previous=old.id)
            systemd.notify("READY=1", f"STATUS=reload failed, serving snapshot {old.id}: {exc}")
            self._tell_control(
                msg.ReloadResult(
                    ok=False, reason=reason, error=str(exc), ids=tuple(requesters), snapshot=old.id
                )
            )
            return
        systemd.notify("RELOADING=1", systemd.monotonic_usec(), f"STATUS=reloading ({reason})")
        self.reload_seq += 1
        # From here on, children are forked with the new config: a worker started during the reload
        # reports a hash the control process will see differ and re-order.
        self.snapshot, self.data = snapshot, data
        if self._admin_next is not self.bound.admin:  # the control process restarts on it (below)
            self._close_admin(old.admin)
            self.bound.admin = self._admin_next
        self.reload = Reload(
            seq=self.reload_seq,
            reason=reason,
            old_id=old.id,
            old=old,
            snapshot=snapshot,
            data=data,
            deadline=time.monotonic() + snapshot.process.reload_timeout + 2.0,
            requesters=requesters,
            began=began,
        )
        if self._link is None:
            self._finish_reload(ok=True, detail="control process down; workers converge when it is back")
            return
        self._tell_control(
            msg.Reload(
                seq=self.reload_seq,
                config=data.decode(),
                source=snapshot.source,
                hash=snapshot.id,
                workers=tuple(c.pid for c in self.children.values() if c.kind == "worker"),
                reason=reason,
            )
        )

    def _load_for(self, reason: str) -> tuple[bytes, Snapshot]:
        """The validated config a reload would put in force; ConfigError if it is invalid or changes a
        setting that needs a restart (config/validate.py names them)."""
        from fastgw.config.validate import needs_restart, validate

        if reason == "rollback":
            previous = self.history.previous(self.snapshot.id)
            if previous is None:
                raise ConfigError(self.history.directory, "", "no previous valid config to roll back to")
            data, source = previous
        elif self.config_path is None:
            raise ConfigError("<built-in quickstart>", "", "nothing to reload: no config file was given")
        else:
            data = read_config_bytes(self.config_path)
            source = self.config_path
        snapshot = validate(data, source, workers=self.worker_count)  # the path `fastgw check` takes
        refusal = needs_restart(self.snapshot, snapshot)
        if refusal is not None:
            raise refusal
        self._admin_next = self.bound.admin
        if _admin_address(snapshot.admin) != _admin_address(self.snapshot.admin):
            # Bound here, so a busy port refuses the reload instead of crash-looping the control process.
            try:
                self._admin_next = None if snapshot.admin is None else _bind_admin(snapshot.admin)
            except BindError as exc:
                raise ConfigError(source, "admin.bind", str(exc)) from None
        return data, snapshot

    def _check_reload_deadline(self, now: float) -> None:
        if self.reload is not None and now >= self.reload.deadline:
            self._finish_reload(ok=False, detail="no answer from the control process in time")

    def _finish_reload(self, *, ok: bool, failed: list[int] | None = None, detail: str = "") -> None:
        reload = self.reload
        if reload is None:
            return
        self.reload = None
        if reload.reason != "rollback":  # a rollback re-recorded would make the next rollback undo it
            self.history.record(reload.data, reload.snapshot)
        self.history.keep = reload.snapshot.state.keep_configs
        self._record_outcome(
            reload.reason,
            reload.began,
            ok=ok,
            error="" if ok else f"reload not confirmed: {detail}",
            snapshot=reload.snapshot.id,
            previous=reload.old_id,
            replaced=failed or [],
        )
        extra = f"; replacing workers {failed} that failed to compile" if failed else ""
        if detail:
            extra += f" ({detail})"
        log(
            "supervisor",
            f"reload ({reload.reason}) {'complete' if ok else 'unconfirmed'}: snapshot {reload.old_id} -> "
            f"{reload.snapshot.id}{extra}",
        )
        self._tell_control(
            msg.ReloadResult(
                ok=True,
                reason=reload.reason,
                ids=tuple(reload.requesters),
                snapshot=reload.snapshot.id,
                old=reload.old_id,
                failed=tuple(failed or ()),
                confirmed=ok,
                detail=detail,
            )
        )
        systemd.notify("READY=1", f"STATUS=serving snapshot {reload.snapshot.id}")
        old, new = reload.old, reload.snapshot
        if (old.admin, old.audit, old.state) != (new.admin, new.audit, new.state):
            # The admin listener, token and audit key live in the control process: start a fresh one.
            for child in self.children.values():
                if child.kind == "control":
                    log("supervisor", "admin or audit settings changed: restarting the control process")
                    child.replacing = True
                    self._kill(child.pid, signal.SIGTERM)
        if self.reload_again:
            # Whatever was asked for during this reload is served by one more reload of each kind.
            queued, self.reload_again = self.reload_again, {}
            for reason, requesters in queued.items():
                if self.reload is None:
                    self._reload(reason, requesters)
                else:
                    self.reload_again.setdefault(reason, []).extend(requesters)

    def _record_outcome(
        self,
        reason: str,
        began: float,
        *,
        ok: bool,
        error: str,
        snapshot: str,
        previous: str,
        replaced: list[int] | None = None,
    ) -> None:
        """Tell `fastgw reload|rollback` what became of their signal (process/status_file.py)."""
        self.outcomes += 1
        self.last_outcome = {
            "generation": self.outcomes,
            "reason": reason,
            "began": began,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ok": ok,
            "error": error,
            "snapshot": snapshot,
            "previous": previous,
            "replaced_workers": replaced or [],
        }
        self._write_status()

    def _write_status(self) -> None:
        s = self.snapshot
        status = {
            "pid": os.getpid(),
            "snapshot": s.id,
            "source": s.source,
            "reload_within": s.process.reload_timeout + 2.0,
            "stop_within": s.server.drain_timeout + STOP_GRACE + 5.0,  # drain, grace, SIGKILL and reap
            "last": self.last_outcome,
        }
        path = status_file.path_for(s.state.pid_file)
        try:
            status_file.write(path, status)
        except OSError as exc:
            log("supervisor", f"cannot write the status file {path}: {exc.strerror}")

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.snapshot.server.drain_timeout + STOP_GRACE
        systemd.notify("STOPPING=1", f"STATUS=stopping ({why})")
        log("supervisor", f"{why}: draining {len(self.children)} children")
        # Stop accepting at once: workers close their copies on SIGTERM; once ours are closed too the
        # kernel refuses new connections rather than queueing them until we exit.
        self.bound.close_listeners()
        # Workers first; the control process (the store's writer) stops once they are gone, so their
        # last quota counts and acks still reach it.
        for pid, child in list(self.children.items()):
            if child.kind == "worker":
                self._kill(pid, signal.SIGTERM)
        self._stop_control_when_alone()

    def _stop_control_when_alone(self) -> None:
        if self.stopping and all(child.kind == "control" for child in self.children.values()):
            for pid in list(self.children):
                self._kill(pid, signal.SIGTERM)

    def _close_admin(self, admin: AdminSettings | None) -> None:
        """Close our admin listener; a unix socket's file goes with it."""
        if self.bound.admin is None:
            return
        self.bound.admin.close()
        self.bound.admin = None
        if admin is not None and admin.unix:
            try:
                os.unlink(admin.unix)
            except OSError:
                pass

    def _write_pid_file(self) -> None:
        path = self.snapshot.state.pid_file
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path + ".tmp", "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log("supervisor", f"cannot write pid file {path}: {exc.strerror}")

    def _remove_pid_file(self) -> None:
        path = self.snapshot.state.pid_file
        try:
            with open(path) as fh:
                if fh.read().strip() == str(os.getpid()):
                    os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log("supervisor", f"cannot remove pid file {path}: {exc.strerror}")


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
