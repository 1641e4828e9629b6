"""Load and timing helpers for the rate-limit tests: configs, a client that hammers, and the window
bounds an access log allows."""

from __future__ import annotations

import asyncio
import calendar
import math
import threading
import time
from collections import Counter

from tests.support.clients import get
from tests.support.gateways import basic_config


def log_time(record: dict[str, object]) -> float:
    """Unix time of an access-log record (its "time" field, millisecond precision)."""
    stamp = str(record["time"])
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000


# The access log's time is truncated to the millisecond, so ``admitted_at`` may put a decision up to 1 ms
# early: one taken in the first millisecond of a window can be counted in the window before.
ATTRIBUTION = 0.001


def hammer(port: int, clients: int, seconds: float) -> Counter[int]:
    """``clients`` keep-alive connections sending GETs as fast as answers come, for ``seconds``."""
    statuses: Counter[int] = Counter()

    async def client(deadline: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                writer.write(b"GET /limited HTTP/1.1\r\nHost: t\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                statuses[status] += 1
        finally:
            writer.close()

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client(deadline) for _ in range(clients)))

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    thread.join(seconds + 30)
    return statuses


def limited_config(upstream_port: int, limit: str, *, server: str = "", extra: str = "") -> str:
    """A gateway whose /limited route has one limit (an inline TOML table), open to many connections;
    ``server`` adds [server] keys, ``extra`` more tables."""
    return basic_config(
        upstream_port,
        server="max_connections_per_ip = 100000\n" + server,
        extra=f"""
        [[routes]]
        name = "limited"
        path = "/limited"
        upstream = "backend"
        auth = "none"
        limits = [{limit}]
        {extra}
        """,
    )


def admitted_at(record: dict[str, object]) -> float:
    """When the request's head arrived, i.e. when its limits decided: the record's time is its completion,
    which can fall into the next window (a request admitted just before a window's end, or one that
    waited for a new upstream connection while the test starts)."""
    return log_time(record) - float(record["total_ms"]) / 1000  # type: ignore[arg-type]


def sliding_window_bounds(
    records: list[dict[str, object]], limit: int, per: float, participants: int
) -> list[tuple[int, int, int, int]]:
    """For each full window of a sliding-window run (the first and last are partial), the admissions
    counted in it and the bounds the mechanism allows: ``(window, admitted, low, high)``.

    High (DESIGN.md "Counters"): ``limit + participants - 1``: between one decision's read and its write,
    at most the other participants' decisions can land. Plus any admission in the window's last
    millisecond, which may belong to the next window (ATTRIBUTION).

    Low: a participant refuses only when the estimate, ``current + previous x weight`` (never above the
    true counts), leaves no room for one: at the window's last refusal, ``current > limit - 1 - previous
    x gap / per`` (gap: from that refusal to the window's end), and ``current`` only grows after it. The
    room the previous window's weight frees after the last refusal may go unused: a busy machine that
    takes no decision in a window's last milliseconds admits fewer (the 97 < 98 seen once). So: ``limit
    - 1 - ceil(previous x gap / per)``, minus admissions in the last millisecond before the window, which
    may belong to it. (A decision counted up to 1 ms early only lengthens the gap: the bound stays safe.)
    """
    admitted: Counter[int] = Counter()
    last_refusal: dict[int, float] = {}
    early: Counter[int] = Counter()  # admissions counted in the window before but maybe in this one
    late: Counter[int] = Counter()  # admissions counted in this window but maybe in the next
    for r in records:
        at = admitted_at(r)
        window = int(at // per)
        if r["status"] != 200:
            last_refusal[window] = max(last_refusal.get(window, 0.0), at)
            continue
        admitted[window] += 1
        if (window + 1) * per - at <= ATTRIBUTION:
            early[window + 1] += 1
            late[window] += 1
    windows = sorted(admitted)[1:-1]
    out = []
    for w in windows:
        gap = (w + 1) * per - last_refusal.get(w, w * per)  # no refusal: the whole window
        low = limit - 1 - math.ceil((admitted[w - 1] + early[w - 1]) * gap / per) - early[w]
        high = limit + participants - 1 + late[w]
        out.append((w, admitted[w], low, high))
    return out


def obey(port: int, path: str, rounds: int) -> list[tuple[str, int, int]]:
    """A client that obeys the limit's answers, ``rounds`` times, alternating two ways of obeying:
    sending until refused and then waiting what Retry-After says, or, once an admission says ``r=0``,
    waiting its ``t`` before the next request. Returns (what it obeyed, seconds waited, retry status)."""
    out: list[tuple[str, int, int]] = []
    last = b""  # the RateLimit item of the last admission
    for round_ in range(rounds):
        by_retry_after = round_ % 2 == 0
        for _ in range(200):
            if not by_retry_after and b";r=0;" in last:
                wait, obeyed = int(last.rpartition(b";t=")[2]), "r=0;t"
                break
            answer = get(port, path)
            if answer.status == 429:
                assert by_retry_after, f"refused although the last admission said {last!r}"
                wait, obeyed = int(answer.header(b"retry-after") or b"-1"), "Retry-After"
                break
            assert answer.status == 200, answer.status
            last = answer.header(b"ratelimit") or b""
        else:
            raise AssertionError(f"{path}: never refused")
        time.sleep(wait)
        retry = get(port, path)
        last = retry.header(b"ratelimit") or b""
        out.append((obeyed, wait, retry.status))
    return out
