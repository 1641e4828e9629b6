"""Reload coordination in the supervisor: SIGHUP, ``fastgw rollback`` (SIGUSR2) and the admin API's
reload all come here.

* The file is read and validated (`fastgw check`'s path, config/validate.py); a bad config, or one that
  changes a setting fixed at start (listeners, process.workers, rate_limits.capacity, ...), is logged
  with file, key and reason and changes nothing.
* A good one is sent (bytes + hash) to the control process, which orders every worker to compile it and
  collects their acks; READY=1 follows the last ack. A worker that fails to compile is replaced, so no
  worker is ever left on another config. The validated bytes become the config children are forked with.
* A rollback takes the previous valid config of the same config file (config/history.py), same path.
* One reload at a time: what is asked for during one is served by one more reload of each kind after it.
* Each outcome goes to the status file beside the pid file (status_file.py), where `fastgw reload` reads
  it. A reload first rewrites that file: when the disk is full it is refused, the running config stays,
  and the refusal is written over the old file in place, so that the command still gets its answer.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Final, Protocol

from fastgw.codec import control_messages as msg
from fastgw.config.history import ConfigHistory
from fastgw.config.loader import ConfigError, read_config_bytes
from fastgw.process import status_file, systemd
from fastgw.process.children import STOP_GRACE, Children
from fastgw.process.log import log, log_warnings
from fastgw.process.sockets import BindError, Bound, admin_address, bind_admin
from fastgw.snapshot import Snapshot

# Beyond process.reload_timeout (the control process's wait for the workers' acks): its answer's way back.
ANSWER_MARGIN: Final = 2.0
# A full disk (or quota): a reload is refused on these, its refusal written in place (status_file.py).
# Other errors writing the status file (a removed directory) are logged, and the reload goes on.
NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


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


class ReloadHost(Protocol):
    """What a reload needs from the supervisor (process/supervisor.py): the config in force, which a
    reload replaces, the children, and the channel to the control process."""

    snapshot: Snapshot
    data: bytes
    config_path: str | None
    worker_count: int
    stopping: bool
    bound: Bound
    children: Children

    def tell_control(self, message: msg.ControlMessage) -> None: ...

    def control_connected(self) -> bool: ...


class Reloads:
    """The reload in progress, those queued behind it, and the outcomes reported in the status file."""

    def __init__(self, host: ReloadHost, history: ConfigHistory) -> None:
        self.host = host
        self.history = history
        self.current: Reload | None = None
        self.again: dict[str, list[str]] = {}  # reason -> requesters queued while a reload ran
        self.seq = 0
        self.outcomes = 0  # reload outcomes written to the status file (its generation)
        self.last_outcome: dict[str, object] | None = None
        self._admin_next: socket.socket | None = None  # a reload's admin listener, bound by _load_for

    def request(self, reason: str, requester: str | None = None) -> None:
        requesters = [requester] if requester else []
        if self.host.stopping:
            return
        if self.current is not None:
            self.again.setdefault(reason, []).extend(requesters)
            return
        self._start(reason, requesters)

    def _start(self, reason: str, requesters: list[str]) -> None:
        old = self.host.snapshot
        began = time.monotonic()
        # First, the state directory: on a full disk neither the reload's answer nor its history nor its
        # audit record could be written, so it is refused, and its answer still written (in place).
        unwritable = self.write_status()
        if unwritable is not None and unwritable.errno in NO_SPACE:
            error = (
                f"cannot write {unwritable.filename}: {unwritable.strerror}: free space on its disk, then "
                "retry (a reload must record its outcome there)"
            )
            self._refuse(reason, requesters, began, error, state_unwritable=True)
            return
        try:
            data, snapshot = self._load_for(reason)
        except ConfigError as exc:
            self._refuse(reason, requesters, began, str(exc))
            return
        log_warnings("supervisor", snapshot.warnings)
        systemd.notify("RELOADING=1", systemd.monotonic_usec(), f"STATUS=reloading ({reason})")
        self.seq += 1
        # From here on, children are forked with the new config: a worker started during the reload
        # reports a hash the control process will see differ and re-order.
        self.host.snapshot, self.host.data = snapshot, data
        if self._admin_next is not self.host.bound.admin:  # the control process restarts on it (below)
            self.host.bound.close_admin(old.admin)
            self.host.bound.admin = self._admin_next
        self.current = Reload(
            seq=self.seq,
            reason=reason,
            old_id=old.id,
            old=old,
            snapshot=snapshot,
            data=data,
            deadline=time.monotonic() + snapshot.process.reload_timeout + ANSWER_MARGIN,
            requesters=requesters,
            began=began,
        )
        if not self.host.control_connected():
            self.finish(ok=True, detail="control process down; workers converge when it is back")
            return
        self.host.tell_control(
            msg.Reload(
                seq=self.seq,
                config=data.decode(),
                source=snapshot.source,
                hash=snapshot.id,
                workers=self.host.children.worker_pids(),
                reason=reason,
            )
        )

    def _refuse(
        self, reason: str, requesters: list[str], began: float, error: str, *, state_unwritable: bool = False
    ) -> None:
        """The running config stays: the refusal logged, in the status file, to systemd and the control
        process (the audit log, the admin request waiting for it)."""
        old = self.host.snapshot
        log("supervisor", f"reload failed ({reason}), keeping snapshot {old.id}: {error}")
        self._record_outcome(reason, began, ok=False, error=error, snapshot=old.id, previous=old.id)
        systemd.notify("READY=1", f"STATUS=reload failed, serving snapshot {old.id}: {error}")
        self.host.tell_control(
            msg.ReloadResult(
                ok=False,
                reason=reason,
                error=error,
                ids=tuple(requesters),
                snapshot=old.id,
                state_unwritable=state_unwritable,
            )
        )

    def _load_for(self, reason: str) -> tuple[bytes, Snapshot]:
        """The validated config a reload would put in force; ConfigError if it is invalid or changes a
        setting that needs a restart (config/validate.py names them)."""
        from fastgw.config.validate import needs_restart, validate

        if reason == "rollback":
            previous = self.history.previous(self.host.snapshot.id)
            if previous is None:
                raise ConfigError(self.history.directory, "", "no previous valid config to roll back to")
            data, source = previous
        elif self.host.config_path is None:
            raise ConfigError("<built-in quickstart>", "", "nothing to reload: no config file was given")
        else:
            data = read_config_bytes(self.host.config_path)
            source = self.host.config_path
        snapshot = validate(data, source, workers=self.host.worker_count)  # the path `fastgw check` takes
        refusal = needs_restart(self.host.snapshot, snapshot)
        if refusal is not None:
            raise refusal
        self._admin_next = self.host.bound.admin
        if admin_address(snapshot.admin) != admin_address(self.host.snapshot.admin):
            # Bound here, so a busy port refuses the reload instead of crash-looping the control process.
            try:
                self._admin_next = None if snapshot.admin is None else bind_admin(snapshot.admin)
            except BindError as exc:
                raise ConfigError(source, "admin.bind", str(exc)) from None
        return data, snapshot

    def check_deadline(self, now: float) -> None:
        if self.current is not None and now >= self.current.deadline:
            self.finish(ok=False, detail="no answer from the control process in time")

    def finish(self, *, ok: bool, failed: list[int] | None = None, detail: str = "") -> None:
        reload = self.current
        if reload is None:
            return
        self.current = None
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
        self.host.tell_control(
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
            for pid in self.host.children.control_pids():
                log("supervisor", "admin or audit settings changed: restarting the control process")
                self.host.children.replace(pid)
        if self.again:
            # Whatever was asked for during this reload is served by one more reload of each kind.
            queued, self.again = self.again, {}
            for reason, requesters in queued.items():
                if self.current is None:
                    self._start(reason, requesters)
                else:
                    self.again.setdefault(reason, []).extend(requesters)

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
        self.write_status()

    def write_status(self) -> OSError | None:
        """Write the status file, or where it cannot be replaced (a full disk) write it in place
        (status_file.overwrite), so that the answer still reaches the command. Returns the error that kept
        it from being replaced, None when it was; logs when the answer could not be written at all."""
        s = self.host.snapshot
        status = {
            "pid": os.getpid(),
            "snapshot": s.id,
            "source": s.source,
            "reload_within": s.process.reload_timeout + ANSWER_MARGIN,
            "stop_within": s.server.drain_timeout + STOP_GRACE + 5.0,  # drain, grace, SIGKILL and reap
            "last": self.last_outcome,
        }
        path = status_file.path_for(s.state.pid_file)
        try:
            status_file.write(path, status)
        except OSError as exc:
            try:
                status_file.overwrite(path, status)
            except OSError:
                log(
                    "supervisor",
                    f"cannot write the status file {path}: {exc.strerror}: commands get no answer",
                )
            return exc
        return None
