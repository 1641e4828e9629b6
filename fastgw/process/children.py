"""The supervisor's child processes: one control process and N workers in fixed slots, each forked again
when it dies.

* A child that dies is restarted at once the first time, then with exponential backoff (0.1 s doubling up
  to ``process.restart_backoff_max``) while it keeps dying young; five quick deaths in a row are reported
  as a crash loop (log and systemd STATUS).
* A worker whose event loop stops ticking (its heartbeat in shared memory goes stale) is killed, and so
  restarted.
* A worker's in-flight rate-limit cells are released when it dies (nobody else would release them).

The supervisor forks and decides what a death means (a failed start, a reload to finish); this module
keeps the books: who runs under which pid, who said ready, who is due back when.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Final

from fastgw.counters.table import CounterTable
from fastgw.process import systemd
from fastgw.process.log import log
from fastgw.process.shm import Heartbeats

# A child that dies younger than this counts towards backoff: a healthy start (fork, compile, listen)
# takes well under a second, so a death within 10 s is a start that failed, not a crash in service.
QUICK_DEATH: Final = 10.0
# Quick deaths in a row reported as a crash loop (log and systemd STATUS=): five failed starts rule out a
# one-off (an OOM kill, a signal) while the backoff is still short.
CRASH_LOOP: Final = 5
FIRST_BACKOFF: Final = 0.1
STOP_GRACE: Final = 5.0  # beyond drain_timeout before remaining children are killed


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


def kill(pid: int, sig: int) -> None:
    """Signal a child that may have exited already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe_exit(status: int) -> str:
    """How a child ended, from its wait status, for the log."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Children:
    """Every slot's child (``slots``: the control process, then worker 0..N-1) and the living ones by pid
    (``by_pid``)."""

    def __init__(self, worker_count: int, heartbeats: Heartbeats, counters: CounterTable) -> None:
        self.slots: list[Child] = [Child("control", 0)] + [Child("worker", i) for i in range(worker_count)]
        self.by_pid: dict[int, Child] = {}
        self.heartbeats = heartbeats
        self.counters = counters  # the supervisor's view: only to release a dead worker's in-flight cells
        self._status_buf = b""

    def started(self, child: Child, pid: int, now: float) -> None:
        """Record a fork: ``child`` runs as ``pid`` from ``now``."""
        log("supervisor", f"{child.name} started as pid {pid}")
        if child.kind == "worker":
            self.heartbeats.beat(child.slot, now)  # the hang clock starts at the fork
        child.pid = pid
        child.started = now
        child.ready = False
        child.restart_at = 0.0
        self.by_pid[pid] = child

    def reap(self) -> list[tuple[Child, int]]:
        """The children that exited since the last call, with their wait status."""
        dead: list[tuple[Child, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return dead
            if pid == 0:
                return dead
            child = self.by_pid.pop(pid, None)
            if child is not None:
                dead.append((child, status))

    def schedule_restart(self, child: Child, how: str, now: float, backoff_max: float) -> None:
        """A dead child's next fork: at once after a death on purpose or the first quick one, then with
        backoff; a crash loop is reported."""
        lived = now - child.started
        if child.replacing:
            child.replacing = False
            delay = 0.0
        else:
            child.quick_deaths = child.quick_deaths + 1 if lived < QUICK_DEATH else 1
            delay = 0.0 if child.quick_deaths <= 1 else FIRST_BACKOFF * 2 ** (child.quick_deaths - 2)
            delay = min(delay, backoff_max)
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

    def due(self, now: float) -> list[Child]:
        """The dead children whose restart time has come."""
        return [child for child in self.slots if child.restart_at and now >= child.restart_at]

    def next_restart(self) -> list[float]:
        return [c.restart_at for c in self.slots if c.restart_at]

    def kill_hung(self, now: float, limit: float) -> None:
        """Kill a worker whose event loop stopped ticking (alive, but serving nobody); it is restarted."""
        for child in list(self.by_pid.values()):
            if child.kind != "worker" or child.replacing:
                continue
            silent = now - self.heartbeats.last(child.slot)
            if silent > limit:
                log(
                    "supervisor",
                    f"{child.name} (pid {child.pid}) stopped ticking {silent:.1f}s ago; killing it",
                )
                child.replacing = True
                kill(child.pid, signal.SIGKILL)

    def replace(self, pid: int, why: str = "") -> None:
        """Stop child ``pid`` on purpose (SIGTERM); it is forked again at once when it has exited."""
        child = self.by_pid.get(pid)
        if child is not None:
            if why:
                log("supervisor", f"replacing {child.name} (pid {pid}): {why}")
            child.replacing = True
            kill(pid, signal.SIGTERM)

    def signal_all(self, sig: int) -> None:
        for pid in list(self.by_pid):
            kill(pid, sig)

    def worker_pids(self) -> tuple[int, ...]:
        return tuple(c.pid for c in self.by_pid.values() if c.kind == "worker")

    def control_pids(self) -> list[int]:
        return [c.pid for c in self.by_pid.values() if c.kind == "control"]

    def read_ready(self, data: bytes, now: float) -> None:
        """``ready KIND SLOT PID SNAPSHOT`` lines from children (one write each, < PIPE_BUF)."""
        self._status_buf += data
        *lines, self._status_buf = self._status_buf.split(b"\n")
        for line in lines:
            parts = line.decode(errors="replace").split()
            if len(parts) < 4 or parts[0] != "ready":
                continue
            child = self.by_pid.get(int(parts[3]))
            if child is None or child.ready:
                continue
            child.ready = True
            if child.died_at:
                took = (now - child.died_at) * 1000
                log(
                    "supervisor",
                    f"{child.name} (pid {child.pid}) serving again {took:.0f} ms after the death",
                )
                child.died_at = 0.0

    def all_ready(self) -> bool:
        return all(c.ready for c in self.slots)
