"""Memory use of a process, as the kernel reports it."""

from __future__ import annotations

from pathlib import Path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def crypto_mapped(pid: int) -> list[str]:
    """The files of ``cryptography``'s OpenSSL bindings mapped into ``pid``: ~10 MiB of a worker's RSS
    (with pyjwt), loaded only by a [jwt] table's policies (provider keys at rest are sealed and opened by
    the control process)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if "/cryptography/" in line})
