"""The one validation path: ``fastgw check``, ``fastgw run`` and every reload (SIGHUP, ``fastgw
rollback``, the admin API) call :func:`validate`, so a config that ``check`` passes is one that ``run``
accepts; the two cannot drift.

Beyond the loader (types, unknown keys, each number's stated maximum) and the compiler (references,
addresses, policies), it resolves every secret reference, including the admin token and the audit key that
only the control process reads (the values are dropped at once, never printed), and checks what depends on
the machine: the shared memory the supervisor allocates at start for the worker count. A reload also asks
:func:`needs_restart`, which names the first setting that is fixed while the supervisor runs.
"""

from __future__ import annotations

import os
from typing import Final

from fastgw.config.compiler import compile_config, compile_state
from fastgw.config.loader import ConfigError, parse_table, read_config_bytes
from fastgw.config.schema import WORKERS_MAX, StateSpec
from fastgw.counters.table import CELL_INTS
from fastgw.secret_refs import check_control_secrets
from fastgw.snapshot import ListenerSettings, Snapshot, StateSettings

# Shared memory sized at start may take at most this fraction of the machine's memory: beyond it the
# kernel refuses the mapping ("Cannot allocate memory") or the node swaps under load.
SHM_FRACTION: Final = 0.5
CELL_BYTES: Final = CELL_INTS * 8


def worker_count(snapshot: Snapshot, override: int | None = None) -> int:
    """The worker processes a supervisor starts: ``--workers``, else process.workers, 0 = one per CPU."""
    count = override if override is not None else snapshot.process.workers
    return count or os.cpu_count() or 1


def validate(data: bytes, source: str, *, workers: int | None = None) -> Snapshot:
    """Compile config bytes and check everything ``fastgw run`` would otherwise find out later.
    Raises ConfigError (one line: file, key, reason)."""
    if workers is not None and not 0 <= workers <= WORKERS_MAX[0]:
        raise ConfigError(
            "--workers", "", f"{workers} is not between 0 and {WORKERS_MAX[0]} ({WORKERS_MAX[1]})"
        )
    snapshot = compile_config(data, source)  # resolves the secrets policies compile with
    check_control_secrets(snapshot)  # and the ones only the control process reads
    count = worker_count(snapshot, workers)
    shm = count * snapshot.ratelimit_capacity * CELL_BYTES
    memory = _physical_memory()
    if memory and shm > memory * SHM_FRACTION:
        raise ConfigError(
            source,
            "rate_limits.capacity",
            f"{count} workers x {snapshot.ratelimit_capacity} cells x {CELL_BYTES} bytes = {shm >> 20} MiB "
            f"of shared memory, more than {SHM_FRACTION:.0%} of this machine's {memory >> 20} MiB",
        )
    return snapshot


def load(path: str, *, workers: int | None = None) -> tuple[bytes, Snapshot]:
    """Read and :func:`validate` a config file. Raises ConfigError (also for an unreadable file)."""
    data = read_config_bytes(path)
    return data, validate(data, path, workers=workers)


def locate(path: str) -> StateSettings:
    """Only where a config keeps its state (pid file, history): for commands that talk to a running
    gateway. They must work without the secrets the gateway reads (systemd credentials, for one) and with
    a config the gateway will refuse: the refusal, with its reason, is the gateway's to give."""
    return compile_state(parse_table(read_config_bytes(path), path, "state", StateSpec), path)


def _listener_key(ls: ListenerSettings) -> tuple[str, str, int, bool, int, bool]:
    return (ls.name, ls.host, ls.port, ls.proxy_protocol, ls.backlog, ls.tls is not None)


def _client_auth(ls: ListenerSettings) -> tuple[str, str | None, str | None] | None:
    return None if ls.tls is None else (ls.tls.client_auth, ls.tls.client_ca, ls.tls.crl)


def needs_restart(running: Snapshot, new: Snapshot) -> ConfigError | None:
    """The first setting ``new`` changes that a running gateway cannot apply, as the reload's refusal.

    These are fixed when the supervisor starts: the sockets it binds, the shared memory it sizes, the
    processes it forks, the files it writes, the log each worker opens. Everything else (routes,
    upstreams, policies, timeouts, TLS certificates, the admin and audit settings, which restart the
    control process) is applied by a reload."""
    restart = "changing it needs a restart"
    fixed: list[tuple[str, object, object, str]] = [
        (
            "listeners",
            [_listener_key(ls) for ls in running.listeners],
            [_listener_key(ls) for ls in new.listeners],
            "the sockets are bound once",
        ),
        (
            "listeners.tls.client_auth",
            [_client_auth(ls) for ls in running.listeners],
            [_client_auth(ls) for ls in new.listeners],
            "client certificate checks are set up when the listener starts; certificates do reload",
        ),
        ("demo_upstream", running.demo_upstream, new.demo_upstream, "its socket is bound once"),
        ("process.workers", running.process.workers, new.process.workers, "the workers are forked at start"),
        (
            "process.reuse_port",
            running.process.reuse_port,
            new.process.reuse_port,
            "the sockets are bound once",
        ),
        ("process.watchdog", running.process.watchdog, new.process.watchdog, "read once at start"),
        (
            "rate_limits.capacity",
            running.ratelimit_capacity,
            new.ratelimit_capacity,
            "it sizes the shared memory allocated at start",
        ),
        ("state.dir", running.state.dir, new.state.dir, "the store and the history live there"),
        ("store", running.store, new.store, "the control process opens the store once, at start"),
        ("state.pid_file", running.state.pid_file, new.state.pid_file, "it is written at start"),
        ("access_log", running.access_log, new.access_log, "each worker opens its log at start"),
    ]
    for key, old, wanted, why in fixed:
        if old != wanted:
            return ConfigError(new.source, key, f"{restart} ({why})")
    return None


def _physical_memory() -> int:
    """Bytes of memory this machine has (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0
