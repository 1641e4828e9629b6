"""Budget threshold alerts: when a request takes a limit past 50, 80 or 100 % (configurable) of its
period, a JSON alert is POSTed to each configured webhook, signed with HMAC-SHA256, and a line is
written to the worker's log and, through the control process, to the audit log (docs/llm-budgets.md,
"Alerts").

Once per threshold per period per key: the request whose usage crosses the threshold raises it, and a
flag cell in the node's shared counter table (keyed by the limit, the key and the threshold, in the
limit's window) makes it once per node even when several requests cross together or keep being refused
(two workers crossing at the same instant may both send: at most one alert per worker).

Never on the request path's time: ``raise_alert`` appends to a bounded queue (``QUEUE_MAX``; the oldest
alert is dropped and counted when it is full) and a background Task of the worker delivers it, each
webhook retried with a doubling backoff (``BACKOFF_FIRST`` to ``BACKOFF_MAX``, ``ATTEMPTS`` tries).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import ssl
import sys
import time
from typing import Any, Final

import orjson

from fastgw.counters.table import CounterTable, key_hash
from fastgw.policy.http_client import Endpoint, request
from fastgw.sinks.audit_notes import AUDIT_NOTES

QUEUE_MAX: Final = 1000  # alerts waiting per worker: a webhook down for long must not grow memory
ATTEMPTS: Final = 5  # tries per webhook per alert: ~15 s of backoff covers a restart of the receiver
BACKOFF_FIRST: Final = 0.5  # seconds before the second try, doubling
BACKOFF_MAX: Final = 8.0
TIMEOUT: Final = 5.0  # seconds for one delivery (connect, send, answer)
SIGNATURE_HEADER: Final = "x-fastgw-signature"  # "sha256=" + hex HMAC of "<timestamp>." + body
TIMESTAMP_HEADER: Final = "x-fastgw-timestamp"  # unix seconds, signed with the body (replay check)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """What ``SIGNATURE_HEADER`` carries: receivers compute the same and compare in constant time."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Alerts:
    """One route's thresholds, webhooks and delivery queue, in one worker."""

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
        self.endpoints = tuple(
            Endpoint.parse(url, ssl.create_default_context() if url.startswith("https:") else None)
            for url in webhooks
        )
        self.secret = secret
        self.table = table
        self.queue: collections.deque[bytes] = collections.deque()
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

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
        fields: dict[str, Any],
        length: float = 0.0,
    ) -> None:
        """Queue the alert for ``percent`` unless this period already had it (the node's flag cell;
        ``length``: the period's in seconds for a sliding minute, so the table can reuse the flag's cell
        once the minute is long past; 0 for a calendar period)."""
        flag = key_hash(limit_id + b"#alert%d" % percent, value.encode())
        where = self.table.locate(flag)
        if self.table.count(flag, where, window, 0.0) > 0:
            return
        self.table.add(flag, where, window, 1, length)
        alert = {"type": "budget.threshold", "route": self.route, "threshold": percent, **fields}
        body = orjson.dumps(alert)
        sys.stderr.write(f"fastgw: budget alert: {body.decode()}\n")
        AUDIT_NOTES.note("budget.threshold", {k: v for k, v in alert.items() if k != "type"})
        if not self.endpoints:
            return
        if len(self.queue) >= QUEUE_MAX:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(body)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._deliver_all())

    async def _deliver_all(self) -> None:
        while self.queue:
            body = self.queue.popleft()
            for endpoint in self.endpoints:
                if await self._deliver(endpoint, body):
                    self.delivered += 1
                else:
                    self.failed += 1

    async def _deliver(self, endpoint: Endpoint, body: bytes) -> bool:
        delay = BACKOFF_FIRST
        for attempt in range(ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = [
                ("content-type", "application/json"),
                (TIMESTAMP_HEADER, timestamp),
                (SIGNATURE_HEADER, signature(self.secret, timestamp, body)),
            ]
            try:
                async with asyncio.timeout(TIMEOUT):
                    status, _ = await request(endpoint, "POST", headers, body)
                if 200 <= status < 300:
                    return True
            except Exception:  # any failure of the receiver or the network: retried
                pass
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        sys.stderr.write(f"fastgw: budget alert to {endpoint.host}:{endpoint.port} failed {ATTEMPTS} times\n")
        return False
