"""Budget threshold alerts: when a request takes a limit past 50, 80 or 100 % (configurable) of its
period, a JSON alert is POSTed to each configured webhook, signed with HMAC-SHA256, and a line is
written to the worker's log and, through the control process, to the audit log (docs/llm-budgets.md,
"Alerts").

Once per threshold per period per key: the request whose usage crosses the threshold raises it, and a
flag cell in the node's shared counter table (keyed by the limit, the key and the threshold, in the
limit's window) makes it once per node even when several requests cross together or keep being refused
(two workers crossing at the same instant may both send: at most one alert per worker). The alert's
``id`` is the same for all of them (limit, key, threshold, period): receivers deduplicate by it.

Never on the request path's time: ``raise_alert`` appends to a bounded queue per webhook (``QUEUE_MAX``;
the oldest alert is dropped, counted and logged when it is full), and a background Task per webhook
delivers its queue in order, so a slow or failing receiver holds only its own alerts. Delivery is at
least once: an alert stays at the head of its queue until the receiver answers 2xx, and is tried again
after a timeout, a connection error, a 408, a 429 or a 5xx (``ATTEMPTS`` tries, backoff doubling from
``BACKOFF_FIRST`` to ``BACKOFF_MAX``, a longer Retry-After honoured up to it); any other answer (a
redirect, a 4xx) will not change by retrying: logged, not retried. Each try is signed when sent, with
the secret in force: a reload hands the queued alerts to the route's new config (``hand_over``).
Each queued alert is also kept on disk until its delivery ends (``alert_spool.py``), so a worker killed
or stopped before its webhooks answered leaves them to the next worker that starts (``start_spool``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from fastgw.ai.alert_spool import AlertSpool
from fastgw.counters.table import CounterTable, key_hash
from fastgw.log_line import log_line
from fastgw.metrics.tallies import BUDGET_ALERTS
from fastgw.policy.http_client import Endpoint, exchange
from fastgw.sinks.audit_notes import AUDIT_NOTES

QUEUE_MAX: Final = 1000  # alerts waiting per webhook per worker: a receiver away must not grow memory
# Tries per alert and webhook: with the backoff below, ~1 minute of retries (0.5+1+2+4+8+16+30 s) covers
# a receiver's restart or a short outage; an alert given up is logged whole (it is in the audit log too).
ATTEMPTS: Final = 8
BACKOFF_FIRST: Final = 0.5  # seconds before the second try, doubling
BACKOFF_MAX: Final = 30.0
TIMEOUT: Final = 5.0  # seconds for one delivery (connect, send, answer)
SIGNATURE_HEADER: Final = "x-fastgw-signature"  # "sha256=" + hex HMAC of "<timestamp>." + body
TIMESTAMP_HEADER: Final = "x-fastgw-timestamp"  # unix seconds, signed with the body (replay check)
# Answers worth another try: the receiver is busy, overloaded or failing, not refusing this alert.
RETRIED_STATUSES: Final = frozenset({408, 425, 429})


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """What ``SIGNATURE_HEADER`` carries: receivers compute the same and compare in constant time."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Alerts:
    """One route's thresholds, webhooks and delivery queues, in one worker."""

    def __init__(
        self,
        route: str,
        thresholds: tuple[int, ...],
        webhooks: tuple[str, ...],
        secret: bytes,
        table: CounterTable,
    ) -> None:
        self.route = route
        self.thresholds = thresholds  # percent, ascending
        self.webhooks = tuple(Webhook(url, secret, route) for url in webhooks)
        self.table = table
        # Set by a reload (hand_over): alerts raised here afterwards (by requests that began before it)
        # are delivered by the route's new config.
        self.successor: Alerts | None = None
        self.replaced = False

    @property
    def pending(self) -> int:
        """Alerts waiting for delivery (counted once per webhook)."""
        return sum(len(hook.queue) for hook in self.webhooks)

    def crossed(self, before: float, after: float, cap: int) -> int:
        """The highest threshold (percent) in ``(before, after]`` of ``cap``, or 0."""
        found = 0
        for percent in self.thresholds:
            level = cap * percent / 100.0
            if before < level <= after:
                found = percent
        return found

    def raise_alert(
        self,
        limit_id: bytes,
        window: int,
        value: str,
        percent: int,
        cap: int,
        fields: dict[str, Any],
        length: float = 0.0,
        refused: bool = False,
    ) -> None:
        """Queue the alert for ``percent`` of ``cap`` unless this period already had it (the node's flag
        cell; ``length``: the period's in seconds for a sliding minute, so the table can reuse the flag's
        cell once the minute is long past; 0 for a calendar period). The cap is part of the flag: a
        consumer's limit raised within the period (after its 100 % alert) has its thresholds again. A
        refusal's alert (``refused``) is flagged apart: a request refused for its size while little was
        used no longer takes the place of the 100 % its limit reaches later."""
        flag = key_hash(
            limit_id + b"#alert%d@%d%s" % (percent, cap, b"r" if refused else b""), value.encode()
        )
        where = self.table.locate(flag)
        if self.table.count(flag, where, window, 0.0) > 0:
            return
        self.table.add(flag, where, window, 1, length)
        alert = {
            "type": "budget.threshold",
            "id": f"{flag & 0xFFFFFFFFFFFFFFFF:016x}-{window}",
            "route": self.route,
            "threshold": percent,
            **fields,
        }
        body = orjson.dumps(alert)
        log_line(f"budget alert: {body.decode()}")
        AUDIT_NOTES.note("budget.threshold", {k: v for k, v in alert.items() if k != "type"})
        target = self.current()
        if target is not None:  # None: a reload removed the route's alerts (logged and audited above)
            target.send(body)

    def current(self) -> Alerts | None:
        """Who delivers now: this config's alerts, or those a reload handed them to (None: removed)."""
        alerts: Alerts | None = self
        while alerts is not None and alerts.replaced:
            alerts = alerts.successor
        return alerts

    def send(self, body: bytes) -> None:
        for hook in self.webhooks:
            hook.push(body)

    def hand_over(self, successor: Alerts | None) -> None:
        """A reload replaced this config: the alerts still queued go to the route's new webhooks, signed
        with its secret (None: the route has no alerts now, and they are dropped, logged)."""
        self.replaced = True
        self.successor = successor
        bodies = list(dict.fromkeys(body for hook in self.webhooks for body in hook.take_all()))
        if not bodies:
            return
        if successor is None or not successor.webhooks:
            log_line(f"{len(bodies)} budget alerts of route {self.route} dropped: its new config sends none")
            BUDGET_ALERTS.dropped += len(bodies)
            return
        for body in bodies:
            successor.send(body)


class Webhook:
    """One receiver's queue and its delivery Task (in one worker), signing with its config's secret."""

    def __init__(self, url: str, secret: bytes, route: str) -> None:
        self.url = url
        self.route = route
        self.secret = secret
        self.endpoint = Endpoint.parse(
            url, ssl.create_default_context() if url.startswith("https:") else None
        )
        self.queue: collections.deque[bytes] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._full_logged = False
        self.spool: AlertSpool | None = None  # set by the worker (start_spool, attach_spool)
        self.files: dict[bytes, str] = {}  # queued body -> its spool file

    @property
    def where(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def push(self, body: bytes, kept: str | None = None) -> None:
        """Queue ``body`` and keep it in the spool (``kept``: the spool file it is in already)."""
        if len(self.queue) >= QUEUE_MAX:
            self._forget(self.queue.popleft())
            self.dropped += 1
            BUDGET_ALERTS.dropped += 1
            if not self._full_logged:  # once per backlog: the receiver is away, every alert would say so
                self._full_logged = True
                log_line(f"budget alerts to {self.where}: {QUEUE_MAX} waiting, the oldest dropped")
        self.queue.append(body)
        spool = self.spool
        if kept is None and spool is not None:
            kept = spool.keep(self.route, self.url, body)
        if kept is not None:
            self.files[body] = kept
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._deliver_all())

    def take_all(self) -> list[bytes]:
        """The queued alerts, this webhook's delivery stopped (a reload hands them over)."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()  # one in flight may arrive twice: delivery is at least once (ids dedupe)
        bodies = list(self.queue)
        self.queue.clear()
        for body in bodies:
            self._forget(body)  # the successor keeps its own
        return bodies

    def _forget(self, body: bytes) -> None:
        """``body``'s delivery here ended: its spool file goes."""
        path = self.files.pop(body, None)
        if path is not None and self.spool is not None:
            self.spool.remove(path)

    async def _deliver_all(self) -> None:
        queue = self.queue
        while queue:
            body = queue[0]  # stays queued until done: a reload hands it over, a stop counts it
            delivered = await self._deliver(body)
            if queue and queue[0] is body:
                queue.popleft()
                self._forget(body)
            if delivered:
                self.delivered += 1
                BUDGET_ALERTS.delivered += 1
            else:
                self.failed += 1
                BUDGET_ALERTS.failed += 1
        self._full_logged = False

    async def _deliver(self, body: bytes) -> bool:
        delay = BACKOFF_FIRST
        outcome = ""
        for attempt in range(ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = [
                ("content-type", "application/json"),
                (TIMESTAMP_HEADER, timestamp),
                (SIGNATURE_HEADER, signature(self.secret, timestamp, body)),
            ]
            wait = delay
            try:
                async with asyncio.timeout(TIMEOUT):
                    status, fields, _ = await exchange(self.endpoint, "POST", headers, body)
            except Exception as exc:  # any failure of the receiver or the network: tried again
                outcome = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    return True
                outcome = f"answered {status}"
                if status not in RETRIED_STATUSES and status < 500:
                    log_line(f"budget alert to {self.where} {outcome}, not retried: {body.decode()}")
                    return False
                wait = max(delay, _retry_after(fields))
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(min(wait, BACKOFF_MAX))
                delay = min(delay * 2, BACKOFF_MAX)
        log_line(f"budget alert to {self.where} failed {ATTEMPTS} times ({outcome}): {body.decode()}")
        return False


def _retry_after(fields: list[tuple[bytes, bytes]]) -> float:
    """A Retry-After in seconds (0 when absent or a date: the backoff applies)."""
    for name, value in fields:
        if name == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return 0.0
    return 0.0


def route_alerts(handler: object) -> Alerts | None:
    """The alerts of an llm route's handler (its budgets'), or None: read by the worker at a reload
    and a stop, without importing the llm handler (a gateway without llm routes never loads it)."""
    alerts = getattr(getattr(handler, "budgets", None), "alerts", None)
    return alerts if isinstance(alerts, Alerts) else None


def attach_spool(routes: Iterable[Alerts], spool: AlertSpool | None) -> None:
    """Alerts queued by these routes' webhooks from now on are kept in ``spool``."""
    for alerts in routes:
        for hook in alerts.webhooks:
            hook.spool = spool


def start_spool(routes: Mapping[str, Alerts], state_dir: str, pid: int) -> AlertSpool | None:
    """This worker's spool, attached to ``routes``, with the alerts that workers no longer running left
    queued again (their route's webhook of the same URL; a URL the config no longer has: every webhook
    of the route, as a reload's hand-over; a route without alerts now: dropped, logged). None where the
    state directory cannot hold it (logged: delivery stays in memory)."""
    if not state_dir:
        return None
    spool = AlertSpool(state_dir, pid)
    try:
        spool.open()
        left = spool.adopt()
    except OSError as exc:
        log_line(f"budget alerts: cannot keep them in {spool.dir} ({exc.strerror}); in memory only")
        return None
    attach_spool(routes.values(), spool)
    pushed: set[tuple[int, bytes]] = set()  # (webhook, body): one copy per receiver
    dropped = 0
    for entry in left:
        alerts = routes.get(entry.route)
        hooks = alerts.webhooks if alerts is not None else ()
        same = [hook for hook in hooks if hook.url == entry.url]
        for hook in same or hooks:
            if (id(hook), entry.body) not in pushed:
                pushed.add((id(hook), entry.body))
                hook.push(entry.body, entry.path if hook in same else None)
        if not same:
            spool.remove(entry.path)
        if not hooks:
            dropped += 1
    if dropped:
        log_line(f"{dropped} budget alerts left by a previous worker dropped: their routes send none now")
        BUDGET_ALERTS.dropped += dropped
    if len(left) > dropped:
        log_line(f"{len(left) - dropped} budget alerts left by a previous worker queued again")
    return spool


async def drain_alerts(routes: list[Alerts], seconds: float) -> int:
    """Let the alerts queued in ``routes`` go out within ``seconds`` (a stopping worker); the number
    left undelivered (each is in the audit log)."""
    tasks = [h.task for a in routes for h in a.webhooks if h.task is not None and not h.task.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=seconds)
    return sum(a.pending for a in routes)
