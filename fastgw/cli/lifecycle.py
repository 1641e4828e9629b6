"""The commands that start and steer a gateway: ``run``, ``reload``, ``stop`` and ``rollback``.

``reload``, ``rollback`` and ``stop`` signal the supervisor named by the pid file, then wait for its
answer in the status file beside it (process/status_file.py): exit 0 when the gateway applied the reload
or stopped, 1 with the gateway's reason on one line when it refused, or did not answer or stop in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from fastgw.cli.config_files import load_config
from fastgw.config.loader import ConfigError
from fastgw.config.validate import locate


def run(args: argparse.Namespace) -> int:
    from fastgw.process.supervisor import Supervisor, supervise

    workers = args.workers or None  # 0: the config decides
    if args.workers is not None and args.workers < 0:
        print("fastgw: --workers must not be negative", file=sys.stderr)
        return 2
    data, snapshot = load_config(args.config, workers)
    try:
        supervisor = Supervisor(snapshot, data, args.config, workers=workers, ready_file=args.ready_file)
    except OSError as exc:  # validation sized it against this machine: the environment refused
        print(f"fastgw: cannot allocate shared memory: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return supervise(supervisor)  # a bind failure: one line naming the listener, exit 2
    except KeyboardInterrupt:
        return 0


def reload(args: argparse.Namespace) -> int:
    return _signal(args, signal.SIGHUP, "reload")


def stop(args: argparse.Namespace) -> int:
    return _signal(args, signal.SIGTERM, "stop")


def rollback(args: argparse.Namespace) -> int:
    return _rollback_list(args) if args.list else _signal(args, signal.SIGUSR2, "rollback")


def _pid_file(args: argparse.Namespace) -> str:
    if args.pid_file is not None:
        return str(args.pid_file)
    if args.config is None:
        raise ConfigError("fastgw", "", "name the gateway's CONFIG or its --pid-file")
    return locate(args.config).pid_file


def _signal(args: argparse.Namespace, sig: signal.Signals, what: str) -> int:
    """Signal the supervisor named by the pid file, then wait for what it made of it (status file)."""
    from fastgw.process import status_file

    path = _pid_file(args)
    try:
        with open(path) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        print(
            f"fastgw: cannot read pid file {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr
        )
        return 2
    status_path = status_file.path_for(path)
    status = status_file.read(status_path)
    if status is not None and status.get("pid") != pid:
        status = None  # left by an earlier run
    sent = time.monotonic()
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        print(f"fastgw: no process {pid} (stale pid file {path})", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"fastgw: not allowed to signal process {pid}", file=sys.stderr)
        return 2
    if sig == signal.SIGTERM:
        within = args.timeout or float((status or {}).get("stop_within") or DEFAULT_WAIT)
        return _wait_stopped(pid, sent + within, within)
    within = args.timeout or float((status or {}).get("reload_within") or DEFAULT_WAIT) + WAIT_MARGIN
    deadline = sent + within
    while True:
        status = status_file.read(status_path)
        last = (status or {}).get("last") if (status or {}).get("pid") == pid else None
        if isinstance(last, dict) and float(last.get("began") or 0) >= sent:
            break
        if not _alive(pid):
            print(f"fastgw: {what} not done: the gateway (pid {pid}) exited", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(
                f"fastgw: {what} not confirmed: no answer from the gateway (pid {pid}) within {within:g}s "
                f"in {status_path}",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL)
    if not last.get("ok"):
        print(f"fastgw: {what} refused: {last.get('error')}", file=sys.stderr)
        return 1
    replaced = last.get("replaced_workers") or []
    extra = f"; replaced workers {replaced} that failed to compile it" if replaced else ""
    print(
        f"fastgw: {what} done: snapshot {last.get('previous')} -> {last.get('snapshot')} (pid {pid}){extra}"
    )
    return 0


DEFAULT_WAIT = 30.0  # seconds, when the gateway has not said (no status file: an older version)
WAIT_MARGIN = 3.0  # beyond the gateway's own reload deadline: the status write and our polling
POLL = 0.05


def _alive(pid: int) -> bool:
    """The process still runs (a zombie does not: it has exited, its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie counts as running there)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _wait_stopped(pid: int, deadline: float, within: float) -> int:
    while _alive(pid):
        if time.monotonic() >= deadline:
            print(
                f"fastgw: stop failed: the gateway (pid {pid}) still runs after {within:g}s", file=sys.stderr
            )
            return 1
        time.sleep(POLL)
    print(f"fastgw: stopped (pid {pid})")
    return 0


def _rollback_list(args: argparse.Namespace) -> int:
    """``fastgw rollback --list CONFIG``: the kept configs of this file and where a rollback goes."""
    from fastgw.config.history import ConfigHistory
    from fastgw.process import status_file

    if args.config is None:
        raise ConfigError("fastgw", "", "rollback --list needs the CONFIG whose history to show")
    state = locate(args.config)
    status = status_file.read(status_file.path_for(args.pid_file or state.pid_file))
    running = None
    if status is not None and _alive(int(status.get("pid") or 0)):
        running = str(status.get("snapshot"))
    print("\n".join(ConfigHistory(state.dir, state.keep_configs, args.config).describe(running)))
    return 0
