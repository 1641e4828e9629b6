"""Per-worker upstream connection pools: one per target, grouped and balanced per upstream.

Semantics (aiohttp connector precedent, without its 1800 lines):

* Key: ``(upstream name, scheme, host, port, TLS profile)``. Two upstreams naming the same target get a
  pool each, so each upstream's settings (timeouts, limits, breaker) govern its own requests only, and
  its metrics are its own. Pools outlive Snapshots: a reload that keeps an upstream's target keeps its
  warm connections and health state.
* Idle connections sit in a list of ``(conn, idle_since)``, the newest taken first (LIFO, as nginx's
  keepalive cache and aiohttp): at low load one warm connection carries the requests, instead of each
  going out on the connection idle longest, whose socket state on both sides has left the CPU's caches;
  and connections beyond what the load needs stay unused and reach ``idle_timeout``. Liveness and age
  are checked lazily when a connection is taken, never by a timer: the one taken, and the oldest, which
  is closed once past ``idle_timeout``. A list, not a deque: compiled code pops and appends a list
  inline, where a deque's methods are generic calls (~300 instructions each, two a request).
* ``max_connections`` counts connections in use *and* connects in flight; beyond it requests wait in a
  FIFO queue until ``queue_timeout`` (expired by the worker tick, 503).
* Circuit breaker (passive health): ``max_failures`` consecutive failures open the circuit (the target is
  ejected for ``eject_seconds``); then it is half-open: one trial request at a time, whose success closes
  the circuit and whose failure opens it again. Active health checks (run by the control process) mark
  targets down the same way. When no target is available the balancer uses them all (better a likely 502
  than a certain 503).
* Host names: a target given by name is resolved by the worker (``getaddrinfo``) and its addresses are
  used round robin for ``dns_ttl`` seconds; then the next connect resolves again. If resolution fails,
  the last good addresses stay in use (logged) rather than failing traffic. IP literals skip all of it.
* Retry budget: the one transparent retry (a reused connection that died before answering) is allowed
  only while retries stay under ``retry_min + retry_budget * requests`` over the last two 10 s windows, so a
  failing upstream is not hit with twice the load.

Invariant: between taking a connection (``in_use += 1``) and returning it to the caller there is no
``await`` and no callback, so no other request can observe a half-acquired connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from fastgw.codec.ip_literal import is_ip_literal
from fastgw.log_line import log_line
from fastgw.snapshot import Snapshot, Target, UpstreamSettings
from fastgw.upstream.connection import ConnectionHome, UpstreamConnection

if TYPE_CHECKING:
    from fastgw.tls.client import ClientTls

# Called with a ready connection, or with None and (status, problem, detail) when none can be had.
Waiter = Callable[[UpstreamConnection | None, int, str, str], None]

PoolKey = tuple[str, str, str, int, str]


def pool_key(target: Target, settings: UpstreamSettings) -> PoolKey:
    """(upstream, scheme, host, port, TLS profile): a pool belongs to one upstream (its settings apply to
    every connection in it), and connections are shared only between identical TLS identities."""
    if settings.tls is None:
        return (settings.name, "http", target.host, target.port, "")
    return (settings.name, "https", target.host, target.port, settings.tls.key)


_WRITE_HIGH_WATER: Final = 256 * 1024  # per-connection send buffer before the client side is paused
RETRY_WINDOW: Final = 10.0  # seconds per retry-budget window


class TargetPool(ConnectionHome):
    __slots__ = (
        "_address_index",
        "_addresses",
        "_connecting",
        "_loop",
        "_resolved_at",
        "active_down",
        "ejected_until",
        "ejections",
        "failures",
        "idle",
        "in_use",
        "key",
        "label_bytes",
        "retired",
        "target",
        "trial",
        "waiters",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, settings: UpstreamSettings) -> None:
        self._loop = loop
        self.target = target
        self.settings = settings
        self.key: PoolKey = pool_key(target, settings)
        self.label = target.label
        self.label_bytes = target.label.encode()
        self.idle: list[tuple[UpstreamConnection, float]] = []
        self.in_use = 0
        self._connecting = 0
        self.waiters: deque[tuple[Waiter, float]] = deque()
        self.failures = 0
        self.ejected_until = 0.0
        self.ejections = 0  # times this target was ejected (a metric)
        self.retired = False  # removed by a reload: connections close as their exchanges finish
        self.active_down = False  # marked down by active health checks
        self.trial = False  # a half-open circuit's one trial request is in flight
        self._addresses: list[str] = [] if not is_ip_literal(target.host) else [target.host]
        self._resolved_at = 0.0
        self._address_index = 0

    @property
    def load(self) -> int:
        return self.in_use + self._connecting

    def acquire(self, waiter: Waiter, *, fresh: bool = False, now: float = 0.0) -> UpstreamConnection | None:
        """Return an idle connection now, or arrange for ``waiter`` to be called later and return None.

        ``now`` is the caller's monotonic clock reading, if it has one (saves a clock call per request).
        """
        now = now or time.monotonic()
        if not fresh:
            conn = self.take_idle(now)
            if conn is not None:
                return conn
        settings = self.settings
        if self.in_use + self._connecting < settings.max_connections:
            self._connect(waiter)
        else:
            self.waiters.append((waiter, now + settings.queue_timeout))
        return None

    def take_idle(self, now: float) -> UpstreamConnection | None:
        """An idle connection still fit for use, or None. The fast path of :meth:`acquire`: a caller that
        tries it first builds its waiter (a bound method) only when it has to wait."""
        idle = self.idle
        idle_timeout = self.settings.idle_timeout
        while idle:
            conn, since = idle.pop()
            if conn.closed or now - since > idle_timeout:
                conn.close()
                continue
            if idle:
                oldest, oldest_since = idle[0]
                if now - oldest_since > idle_timeout:  # unused for that long: the load needs one fewer
                    del idle[0]
                    oldest.close()
            self.in_use += 1
            return conn
        return None

    def _connect(self, waiter: Waiter) -> None:

        self._connecting += 1
        loop = self._loop
        tls = self.settings.tls
        task = loop.create_task(self._open(tls))
        timer = loop.call_later(self.settings.connect_timeout, task.cancel)

        def done(fut: asyncio.Task[tuple[asyncio.Transport, UpstreamConnection]]) -> None:
            timer.cancel()
            self._connecting -= 1
            if fut.cancelled():
                self.record_failure()
                waiter(None, 504, "upstream-timeout", f"connect to {self.label} timed out")
                self._serve_waiters()
                return
            exc = fut.exception()
            if exc is not None:
                self.record_failure()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    problem = "upstream-tls"
                    detail = f"TLS verification of {self.label} failed: {exc.verify_message}"
                else:
                    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    problem, detail = "upstream-unavailable", f"cannot connect to {self.label}: {reason}"
                waiter(None, 502, problem, detail)
                self._serve_waiters()
                return
            conn = fut.result()[1]
            conn.transport_set_limits(_WRITE_HIGH_WATER)
            self.in_use += 1
            waiter(conn, 0, "", "")

        task.add_done_callback(done)

    async def _open(self, tls: ClientTls | None) -> tuple[asyncio.Transport, UpstreamConnection]:

        address = await self.address()
        transport, conn = await self._loop.create_connection(
            lambda: UpstreamConnection(self),
            address,
            self.target.port,
            ssl=tls.context if tls is not None else None,
            server_hostname=tls.server_hostname(self.target.host) if tls is not None else None,
        )
        return transport, conn

    async def address(self) -> str:
        """The address to connect to: the literal, or the next of the name's addresses (resolved per TTL)."""
        host = self.target.host
        if is_ip_literal(host):
            return host
        now = time.monotonic()
        if not self._addresses or now >= self._resolved_at + self.settings.dns_ttl:
            try:
                infos = await self._loop.getaddrinfo(host, self.target.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                if not self._addresses:
                    raise
                log_line(f"resolving {host} failed ({exc}); keeping {', '.join(self._addresses)}")
                self._resolved_at = now  # try again after another TTL, not on every connect
            else:
                addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
                if addresses:
                    self._addresses = addresses
                self._resolved_at = now
        self._address_index = (self._address_index + 1) % len(self._addresses)
        return self._addresses[self._address_index]

    def release(self, conn: UpstreamConnection, now: float = 0.0) -> None:
        """Return a healthy, idle-able connection: hand it to the first waiter or keep it idle.

        ``now`` stamps the idle connection: the worker's tick clock will do (it is at most one tick early,
        so a connection is judged idle a little longer than it was and closed sooner, never later).
        """
        self.in_use -= 1
        self.failures = 0
        self.trial = False
        transport = conn.transport
        if transport is not None and not transport.is_reading():
            # Paused for a reader that fell behind (a slow client, a handler's full buffer) when the
            # answer's end came in the same read: the next exchange, or the upstream's close of an idle
            # connection, must be read. (Left paused, the next request on it waited for its deadline.)
            transport.resume_reading()
        if self.waiters:
            waiter, _ = self.waiters.popleft()
            self.in_use += 1
            waiter(conn, 0, "", "")
        elif len(self.idle) < self.settings.max_idle and not conn.closed and not self.retired:
            self.idle.append((conn, now or time.monotonic()))
        else:
            conn.close()

    def discard(self, conn: UpstreamConnection) -> None:
        """A connection in use that will not be reused (closed, broken or mid-message)."""
        self.in_use -= 1
        self.trial = False
        conn.close()
        self._serve_waiters()

    def forget_idle(self, conn: UpstreamConnection) -> None:
        """An idle connection that the upstream closed: drop it now instead of at the next acquire."""
        for i, (idle_conn, _) in enumerate(self.idle):
            if idle_conn is conn:
                del self.idle[i]
                return

    def _serve_waiters(self) -> None:
        while self.waiters and self.in_use + self._connecting < self.settings.max_connections:
            waiter, _ = self.waiters.popleft()
            self._connect(waiter)

    def available(self, now: float) -> bool:
        """Closed circuit, or half-open with no trial in flight; and not marked down by health checks."""
        if self.active_down or self.ejected_until > now:
            return False
        return not (self.trial and self.failures >= self.settings.max_failures)

    def record_failure(self) -> None:
        self.trial = False
        self.failures += 1
        if self.failures >= self.settings.max_failures:
            if self.ejected_until <= time.monotonic():
                self.ejections += 1
            self.ejected_until = time.monotonic() + self.settings.eject_seconds

    def expire_waiters(self, now: float) -> None:
        waiters = self.waiters
        while waiters and waiters[0][1] <= now:
            waiter, _ = waiters.popleft()
            waiter(None, 503, "upstream-busy", f"no free connection to {self.label} within queue_timeout")

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn, _ in idle:
            conn.close()


class UpstreamGroup:
    """The targets of one upstream and how one is picked."""

    __slots__ = (
        "_next",
        "pools",
        "previous_requests",
        "previous_retries",
        "requests",
        "retries",
        "settings",
        "window_start",
    )

    def __init__(self, settings: UpstreamSettings, pools: list[TargetPool]) -> None:
        self.settings = settings
        self.pools = pools
        self._next = 0
        self.requests = 0  # picks in the current retry-budget window
        self.previous_requests = 0
        self.retries = 0  # retries in the current window
        self.previous_retries = 0
        self.window_start = time.monotonic()

    def pick(self) -> TargetPool:
        self.requests += 1
        pools = self.pools
        if len(pools) == 1:
            return pools[0]
        now = time.monotonic()
        healthy = [p for p in pools if p.available(now)] or pools
        if self.settings.balance == "least_conn":
            chosen = min(healthy, key=lambda p: p.load)
        else:
            self._next = (self._next + 1) % len(healthy)
            chosen = healthy[self._next]
        if chosen.failures >= chosen.settings.max_failures:
            chosen.trial = True  # half-open: this request is the trial
        return chosen

    def allow_retry(self) -> bool:
        s = self.settings
        used = self.retries + self.previous_retries
        if used < s.retry_min + s.retry_budget * (self.requests + self.previous_requests):
            self.retries += 1
            return True
        return False

    def roll_window(self, now: float) -> None:
        if now - self.window_start >= RETRY_WINDOW:
            self.window_start = now
            self.previous_requests, self.requests = self.requests, 0
            self.previous_retries, self.retries = self.retries, 0


class PoolManager:
    """All pools of one worker. Groups are rebuilt per Snapshot; target pools are reused by key."""

    __slots__ = ("_down", "_groups", "_loop", "_pools")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pools: dict[PoolKey, TargetPool] = {}
        self._groups: dict[int, UpstreamGroup] = {}
        self._down: set[tuple[str, str]] = set()  # (upstream, target) marked down by health checks

    def group(self, settings: UpstreamSettings) -> UpstreamGroup:
        group = self._groups.get(id(settings))
        if group is None or group.settings is not settings:
            pools = []
            for target in settings.targets:
                key = pool_key(target, settings)
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = TargetPool(self._loop, target, settings)
                else:
                    pool.settings = settings
                pool.active_down = (settings.name, pool.label) in self._down
                pools.append(pool)
            group = self._groups[id(settings)] = UpstreamGroup(settings, pools)
        return group

    def set_health(self, upstream: str, label: str, healthy: bool) -> None:
        """An active health check result (from the control process) for one target of an upstream."""
        key = (upstream, label)
        if healthy:
            self._down.discard(key)
        else:
            self._down.add(key)
        for pool in self._pools.values():
            if pool.settings.name == upstream and pool.label == label:
                pool.active_down = not healthy

    def retain(self, snapshot: Snapshot) -> None:
        """After a reload: pools of targets the new Snapshot no longer names are drained and closed.

        Their idle connections close now; connections in use close when their exchange ends (``release``
        of a retired pool closes instead of keeping idle). Pools still named keep their connections.
        """
        keep = {pool_key(t, u) for u in snapshot.upstreams.values() for t in u.targets}
        self._groups.clear()  # rebuilt lazily per UpstreamSettings; old ones would pin old Snapshots
        for key, pool in list(self._pools.items()):
            if key not in keep:
                del self._pools[key]
                pool.retired = True
                pool.close_idle()

    def tick(self, now: float) -> None:
        for pool in self._pools.values():
            if pool.waiters:
                pool.expire_waiters(now)
        for group in self._groups.values():
            group.roll_window(now)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close_idle()

    @property
    def pools(self) -> list[TargetPool]:
        return list(self._pools.values())
