"""Pipelined requests carrying an Upgrade the gateway declines (h2c, unknown protocols: served as plain
HTTP/1.1). llhttp stops at each such head; the reader goes on with the rest of the read. It did so by
calling itself on a copy of the rest: one read of N such requests nested N calls deep, each holding its
copy, so a 256 KiB read of ~60-byte requests held ~4,000 copies averaging 128 KiB at once: 1.3 MB from
one client took a worker to 570 MB (measured), a few clients to the OOM killer.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import TestUpstream

MiB = 1024 * 1024
REQUEST = b"GET /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"
COUNT = 8_000  # ~500 KB: full 256 KiB reads of back-to-back declined upgrades (one showed the bug)
# The reader's own growth is a read or two (256 KiB each) and the pipelined queue it pauses at; the
# rest is allocator slack. Before the fix the peak grew by ~530 MiB.
PEAK_GROWTH_LIMIT = 64 * MiB


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_pipelined_declined_upgrades_are_served_in_bounded_memory(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    pid = gw.worker_pid(0)
    before = peak_rss(pid)
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        sock.sendall(REQUEST * COUNT)
        received = bytearray()
        while received.count(b"HTTP/1.1 200 ") < COUNT:
            data = sock.recv(1 << 20)
            if not data:
                break
            received += data
    finally:
        sock.close()
    assert received.count(b"HTTP/1.1 200 ") == COUNT  # each served, in order, as plain HTTP/1.1
    grown = peak_rss(pid) - before
    assert grown < PEAK_GROWTH_LIMIT, f"worker peak RSS grew {grown / MiB:.0f} MiB"
    assert gw.worker_pid(0) == pid
