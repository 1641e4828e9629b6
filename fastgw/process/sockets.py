"""The sockets the supervisor binds before any child exists, and which child keeps which.

Every socket is bound here: the public listeners (one shared socket each, or one per worker slot with
SO_REUSEPORT), the demo upstream, the admin listener and the control socket. A listener systemd passes
(socket activation, LISTEN_FDS) is adopted instead of bound, by name or else by port. A bind failure is a
BindError whose message names the listener, the address and the OS error.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import Final

from fastgw.process import systemd
from fastgw.process.log import log
from fastgw.snapshot import AdminSettings, ListenerSettings, Snapshot


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

    def close_admin(self, admin: AdminSettings | None) -> None:
        """Close our admin listener; a unix socket's file goes with it."""
        if self.admin is None:
            return
        self.admin.close()
        self.admin = None
        if admin is not None and admin.unix:
            try:
                os.unlink(admin.unix)
            except OSError:
                pass


class BindError(Exception):
    """A listener that cannot be bound: the message names the listener, the address and the OS error."""


def _os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


def bind_tcp(what: str, host: str, port: int, backlog: int, reuse_port: bool) -> socket.socket:
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


def bind_admin(admin: AdminSettings) -> socket.socket:
    """The admin listener: TCP, or a unix socket created 0600 (a stale file left by a crash is replaced;
    a path some live process answers on is in use)."""
    if not admin.unix:
        return bind_tcp("the admin listener", admin.host, admin.port, ADMIN_BACKLOG, reuse_port=False)
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


def admin_address(admin: AdminSettings | None) -> tuple[str, int, str] | None:
    return None if admin is None else (admin.host, admin.port, admin.unix)


def bind_all(bound: Bound, snapshot: Snapshot, worker_count: int) -> None:
    """Bind every listener (or adopt systemd's sockets), the demo upstream and the control socket."""
    activated = systemd.listen_fds()
    reuse = snapshot.process.reuse_port and not activated
    for ls in snapshot.listeners:
        sock = _adopt(activated, ls)
        if sock is not None:
            bound.listeners.append([sock])
            continue
        copies = worker_count if reuse else 1
        what = f"listener {ls.name!r}"
        socks = [bind_tcp(what, ls.host, ls.port, ls.backlog, reuse)]
        bound.listeners.append(socks)
        # Every copy shares the port of the first (the one the kernel picked, for port 0).
        port = socks[0].getsockname()[1]
        socks.extend(bind_tcp(what, ls.host, port, ls.backlog, reuse) for _ in range(copies - 1))
    for sock, name in activated:
        if all(sock not in socks for socks in bound.listeners):
            log("supervisor", f"ignoring a socket-activated socket no listener uses ({name or 'unnamed'})")
            sock.close()
    if snapshot.demo_upstream is not None:
        host, port = snapshot.demo_upstream
        bound.demo = bind_tcp("the demo upstream", host, port, backlog=128, reuse_port=False)
    if snapshot.admin is not None:
        bound.admin = bind_admin(snapshot.admin)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Abstract namespace: no file to clean up; peers are checked by uid (SO_PEERCRED) on accept.
    bound.control_address = f"\0fastgw-control-{os.getpid()}-{os.urandom(6).hex()}"
    control.bind(bound.control_address)
    control.listen(64)
    bound.control = control


def _adopt(activated: list[tuple[socket.socket, str]], ls: ListenerSettings) -> socket.socket | None:
    """The socket systemd passed for listener ``ls``: the one named after it, else one on its port."""
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
