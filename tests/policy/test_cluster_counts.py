"""ClusterCounts against a real redis-server: outages noticed and recovered from without any traffic, the
store's URL never logged with its password, and a window's onset limited to this worker's share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest

from fastgw.counters.cluster import PROBE_MAX, ClusterCounts, _name
from fastgw.snapshot import RedisSettings
from tests.support.redis_server import RedisServer

INTERVAL = 0.05
TIMEOUT = 0.25


def settings(url: str, failure: str = "closed") -> RedisSettings:
    return RedisSettings(url=url, flush_interval=INTERVAL, timeout=TIMEOUT, failure=failure)  # type: ignore[arg-type]


async def until(predicate: object, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` is true (fails after ``timeout``)."""
    began = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - began


@pytest.mark.asyncio
async def test_an_idle_worker_notices_an_outage_and_the_return_by_itself(tmp_path: Path) -> None:
    # No key was ever counted: nothing but the flush loop itself (a probe while down) talks to Redis.
    server = RedisServer(tmp_path)
    counts = ClusterCounts(settings(server.url))
    counts.start()
    try:
        await until(lambda: counts.participants == 1 and counts.errors == 0, 2, "a first flush")
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(5)
        server.proc = None
        noticed = await until(lambda: not counts.up, 2, "the outage to be noticed")
        await asyncio.sleep(2.0)
        server.start()  # same port; returns once it answers PING
        back = await until(lambda: counts.up, 5, "the store to be seen again")
        print(f"idle worker: outage noticed after {noticed:.2f}s, return after {back:.2f}s")
        assert noticed <= INTERVAL + TIMEOUT + 0.5  # the next flush, plus scheduling slack
        assert back <= PROBE_MAX + TIMEOUT + 0.5
        assert counts.count(7, int(time.time()), 0.5, 1.0) == 0.0  # deciding again
    finally:
        await counts.stop()
        server.stop()


@pytest.mark.asyncio
async def test_the_log_names_the_store_without_its_password(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    counts = ClusterCounts(settings(f"redis://fastgw:hunter2-secret@127.0.0.1:{port}/0", "open"))
    counts.start()
    try:
        await until(lambda: not counts.up, 2, "the outage to be noticed")
    finally:
        await counts.stop()
    err = capfd.readouterr().err
    assert f"rate-limit store redis://127.0.0.1:{port} unavailable" in err, err
    assert "hunter2" not in err and "fastgw:" not in err.replace("fastgw: ", "")


def test_an_unread_window_admits_this_workers_share_only() -> None:
    # P participants, nothing read yet: own admissions count P times, so a worker stops at limit / P.
    counts = ClusterCounts(settings("redis://127.0.0.1:1/0"))
    counts.participants = 4
    window, limit, admitted = 1000, 200, 0
    while (estimate := counts.count(9, window, 0.0, 1.0)) is not None and estimate + 1 <= limit:
        counts.add(9, window)
        admitted += 1
    assert admitted == limit // 4
    # A floor above P (this node's workers) wins: 8 workers here, whatever the set said.
    assert counts.count(9, window, 0.0, 1.0, 8) == 8 * admitted
    # Settled (a read taken after everyone flushed): the read plus what is unsent, no share any more.
    counts.unsettled.clear()
    counts.remote[(9, window)] = 120
    assert counts.count(9, window, 0.0, 1.0) == 120 + admitted


class SlowProxy:
    """A TCP proxy in front of redis-server whose answers come ``delay`` seconds late: a store that
    applies every command and answers after the flush's timeout."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, late: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if late and self.delay:
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.asyncio
async def test_a_store_too_slow_to_answer_counts_each_admission_once(tmp_path: Path) -> None:
    """Redis answering after the flush's timeout had applied the batch; the worker kept it and sent it
    again with every probe, each applied again: 5 admissions counted 5 x (probes + 1) times, a total
    that refused clients for up to two windows. A batch sent and unanswered is now not sent again; one
    kept while the store is away is sent once, when a PING says it answers again."""
    import redis

    server = RedisServer(tmp_path)
    proxy = SlowProxy(server.port)
    port = await proxy.start()
    counts = ClusterCounts(settings(f"redis://127.0.0.1:{port}/0"))
    window = int(time.time() // 60)
    counts.count(11, window, 0.0, 60.0)  # watched, with a minute's length: never forgotten here
    direct = redis.Redis.from_url(server.url)
    counts.start()
    try:
        counts.add(11, window, 10)
        await until(lambda: counts.remote.get((11, window)) == 10, 2, "the first batch")
        proxy.delay = TIMEOUT + 0.1
        counts.add(11, window, 5)
        await until(lambda: not counts.up, 2, "the slow store to be noticed")
        await until(lambda: counts.errors >= 4, 5, "several probes while it stays slow")
        counts.add(11, window, 3)  # admitted while it is away: kept, sent once it answers
        proxy.delay = 0.0
        await until(lambda: counts.up, 5, "the store to answer again")
        await until(lambda: not counts.pending and not counts.inflight, 2, "the kept batch sent")
        assert int(direct.get(_name((11, window))) or 0) == 10 + 5 + 3
    finally:
        await counts.stop()
        await proxy.stop()
        direct.close()
        server.stop()


def test_a_month_window_is_forgotten_two_months_on_and_not_before() -> None:
    """Month windows (indexed by the calendar month) were kept by (index + 2) x 32 days, a time years
    ahead: never forgotten, every month key was read again on every flush for good."""
    from datetime import UTC, datetime

    from fastgw.counters.allowance import MONTH_LENGTH

    counts = ClusterCounts(settings("redis://127.0.0.1:1/0"))
    month = (2026 - 1970) * 12 + 11  # December 2026

    def kept(when: datetime) -> bool:
        counts.watched[(5, month)] = MONTH_LENGTH
        counts._forget_old(when.timestamp())
        return (5, month) in counts.watched

    utc = UTC
    assert kept(datetime(2026, 12, 31, 23, 59, tzinfo=utc))  # its last minute
    assert kept(datetime(2027, 1, 28, tzinfo=utc))  # the month after: still the previous one
    assert not kept(datetime(2027, 2, 3, tzinfo=utc))  # two months on


@pytest.mark.asyncio
async def test_a_stop_sends_the_admissions_counted_since_the_last_flush(tmp_path: Path) -> None:
    """A worker stopping (or a reload changing [rate_limits.redis]) lost from the cluster's counts what it
    admitted since its last flush, up to one interval of traffic; the stop now sends it, and leaves the
    participants set, in one round trip."""
    import redis

    server = RedisServer(tmp_path)
    slow = RedisSettings(url=server.url, flush_interval=30.0, timeout=TIMEOUT, failure="closed")
    counts = ClusterCounts(slow)
    counts.start()
    direct = redis.Redis.from_url(server.url)
    try:
        window = int(time.time() // 60)
        assert counts.count(7, window, 0.5, 60.0) == 0.0  # watched, as a rate limit's check makes it
        counts.add(7, window, 5)  # admitted; the first flush is 30 s away
        # A reload's stop and the shutdown's may overlap: the counts are sent once.
        await asyncio.gather(counts.stop(), counts.stop())
        assert direct.get(_name((7, window))) == b"5"
        assert 0 < (direct.ttl(_name((7, window))) or 0) <= 121
        assert direct.zcard(b"fgw:rl:participants") == 0
    finally:
        direct.close()
        server.stop()


@pytest.mark.asyncio
async def test_a_flush_reads_only_the_keys_asked_about_and_a_key_asked_again_takes_its_share(
    tmp_path: Path,
) -> None:
    """Each flush read every key seen in the last two windows: a per-address limit seeing 100,000
    addresses a minute made every flush (20 a second) an MGET of 200,000 keys, until one came too slow
    and marked the store down. Now a flush reads the keys asked about since the one before; a key asked
    about again after that decides from a stale total, so it takes this worker's share only until read."""
    import redis

    server = RedisServer(tmp_path)
    # A timeout for a loaded CI machine: the first flush reads 10,000 keys at once.
    roomy = RedisSettings(url=server.url, flush_interval=INTERVAL, timeout=2.0, failure="closed")
    counts = ClusterCounts(roomy)
    counts.start()
    direct = redis.Redis.from_url(server.url)
    try:
        await until(lambda: counts.participants == 1 and counts.errors == 0, 2, "a first flush")
        window = int(time.time() // 60)
        for key_hash in range(1, 5_001):  # seen once each
            counts.count(key_hash, window, 0.0, 60.0)
        reads: list[int] = []  # keys per MGET
        flushes: list[int] = []  # a pipeline each
        real_pipeline = counts._client.pipeline

        def counting_pipeline(*args: object, **kwargs: object) -> object:
            flushes.append(1)
            pipe = real_pipeline(*args, **kwargs)
            original = pipe.mget

            def mget(keys: list[bytes]) -> object:
                reads.append(len(keys))
                return original(keys)

            pipe.mget = mget
            return pipe

        counts._client.pipeline = counting_pipeline
        # read: the keys and their previous windows (remote is set once the flush's answer came)
        await until(lambda: len(counts.remote) >= 10_000, 5, "the flush of the keys just seen")
        direct.set(_name((7, window)), 150)  # others admitted 150 of key 7 meanwhile
        reads.clear()
        flushes.clear()
        await until(lambda: len(flushes) >= 3 or counts.errors > 0, 2, "idle flushes")
        assert counts.errors == 0 and sum(reads) == 0, reads  # nothing asked: nothing read
        counts.participants = 4
        # Key 7 asked again: its total (0, read before the others' 150) is stale: this worker's share.
        assert counts.count(7, window, 0.0, 60.0) == 0.0
        assert (7, window) in counts.unsettled
        await until(lambda: counts.remote.get((7, window)) == 150, 2, "key 7 read again")
        assert reads and all(n <= 2 for n in reads), reads  # key 7 and its previous window, per flush
    finally:
        await counts.stop()
        direct.close()
        server.stop()
