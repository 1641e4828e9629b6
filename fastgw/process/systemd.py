"""systemd integration with the standard library only: sd_notify and socket activation (LISTEN_FDS).

``notify`` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace);
without the variable it does nothing, so the same code runs under systemd, under a test that plays
systemd, and from a shell. ``listen_fds`` takes the sockets systemd passes from fd 3 when ``LISTEN_PID`` is
this process, and forgets the variables so children do not take them again. ``listen_backlog`` reads the
backlog an inherited socket already listens with, so serving it keeps the socket unit's ``Backlog=``.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Final

SD_LISTEN_FDS_START = 3
# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked.
# For a listening socket the kernel reports its accept-queue limit (sk_max_ack_backlog) in tcpi_sacked.
_TCPI_SACKED: Final = 8 + 5 * 4
_TCP_LISTEN: Final = 10  # tcpi_state of a listening socket (TCP_LISTEN in the kernel's tcp_states.h)


def notify(*fields: str) -> bool:
    """Send ``READY=1``-style fields; False when not under systemd or when the send fails."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def monotonic_usec() -> str:
    """The MONOTONIC_USEC field that Type=notify-reload expects with RELOADING=1."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when the watchdog is off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.05)
    except ValueError:
        return None


def listen_fds() -> list[tuple[socket.socket, str]]:
    """Sockets passed by systemd socket activation, with their LISTEN_FDNAMES names (or "")."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        count = 0
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    out = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        out.append((sock, names[i] if i < len(names) else ""))
    return out


def listen_backlog(sock: socket.socket) -> int | None:
    """The backlog a listening TCP socket already has, or None where the kernel does not say.

    An event loop's ``create_server(sock=...)`` calls listen() again, and a second listen() replaces the
    backlog: passing this number keeps what systemd's ``Backlog=`` (or our own bind) set.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SACKED + 4)
    except (OSError, AttributeError):  # not TCP, or no TCP_INFO on this platform
        return None
    if len(info) < _TCPI_SACKED + 4 or info[0] != _TCP_LISTEN:
        return None
    backlog: int = struct.unpack_from("=I", info, _TCPI_SACKED)[0]
    return backlog or None
