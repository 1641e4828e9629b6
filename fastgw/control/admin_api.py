"""The admin API's endpoints: the control process's own (probes, status, routes, quotas, reload, metrics)
and each group's module (admin_identities.py: consumers, keys, provider keys). The HTTP server, token
check and error rendering are admin_http.py's.

    GET  /healthz    200 while the control process runs (no token)
    GET  /readyz     200 when every worker is connected and on the snapshot in force, else 503 (no token)
    GET  /status     snapshot id, source and load time, uptime, workers, connections
    GET  /routes     the routes of the snapshot in force
    GET  /quotas     quota counts: limit, key, period (day/month with ISO start and end), count
    POST /reload     re-read the config file; 200 with the new snapshot once every worker serves it, 422
                     if it is invalid or changes a setting that needs a restart, 503 if not confirmed, if
                     the audit log cannot record it (audit-unavailable) or the state directory's disk is
                     full (state-unavailable)
    POST /rollback   restore the previous valid config of the same file; as /reload (422 if there is none)
    GET  /metrics    Prometheus exposition (no token when admin.open_metrics = true)
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import asdict
from typing import Any, Final

from fastgw.control.admin_http import AdminError, AdminHttpServer, Call, Endpoint, iso, peer_label, readable
from fastgw.control.admin_identities import IdentityEndpoints
from fastgw.control.admin_privacy import PrivacyEndpoints
from fastgw.control.admin_prompts import PromptApiEndpoints
from fastgw.control.admin_usage import UsageEndpoints
from fastgw.control.api import ControlAPI
from fastgw.control.auditing import AuditUnavailableError
from fastgw.counters.quota import period_bounds
from fastgw.secret_refs import admin_token
from fastgw.snapshot import AdminSettings

# A reload the supervisor refused, by ReloadResult.state_unwritable: the config's fault (422), or the
# state directory's, whose disk cannot take the reload's answer (503: free space, then retry).
REFUSALS: Final = {False: (422, "invalid-config"), True: (503, "state-unavailable")}


class AdminServer:
    def __init__(self, control: ControlAPI, settings: AdminSettings) -> None:
        self.control = control
        self.settings = settings
        own = (
            Endpoint("GET", "/healthz", self._healthz, public=True),
            Endpoint("GET", "/readyz", self._readyz, public=True),
            Endpoint("GET", "/status", self._status),
            Endpoint("GET", "/routes", self._routes),
            Endpoint("GET", "/quotas", self._quotas),
            Endpoint("POST", "/reload", self._reload),
            Endpoint("POST", "/rollback", self._rollback),
            Endpoint("GET", "/metrics", self._metrics, public=settings.open_metrics),
        )
        endpoints = (
            own
            + IdentityEndpoints(control).endpoints()
            + PrivacyEndpoints(control).endpoints()
            + PromptApiEndpoints(control).endpoints()
            + UsageEndpoints(control).endpoints()
        )
        self.http = AdminHttpServer(endpoints, hashlib.sha256(admin_token(settings.token)).digest())

    async def start(self, sock: socket.socket) -> None:
        await self.http.start(sock, unix=bool(self.settings.unix))

    async def stop(self) -> None:
        await self.http.stop()

    async def _healthz(self, call: Call) -> dict[str, Any]:
        return {"status": "ok"}

    async def _readyz(self, call: Call) -> dict[str, Any]:
        c = self.control
        current = c.snapshot.id
        workers = c.worker_views()
        behind = [p.pid for p in workers if p.snapshot != current]
        ready = bool(workers) and not behind and not c.reloading()
        return {"_status": 200 if ready else 503, "ready": ready, "workers": len(workers), "behind": behind}

    async def _status(self, call: Call) -> dict[str, Any]:
        c = self.control
        await c.pull_metrics()
        workers = c.worker_views()
        return {
            "snapshot": c.snapshot.id,
            "source": c.snapshot.source,
            "loaded_at": iso(c.loaded_at),
            "started_at": iso(c.started),
            "uptime_s": round(time.time() - c.started, 3),
            "workers": [
                {
                    "slot": p.slot,
                    "pid": p.pid,
                    "snapshot": p.snapshot,
                    "connected_at": iso(p.connected),
                    "connections": p.connections,
                }
                for p in workers
            ],
            "connections": sum(p.connections for p in workers),
        }

    async def _quotas(self, call: Call) -> dict[str, Any]:
        """Quota counts in the store (up to one flush interval behind the workers), newest first."""
        rows = self.control.quota_counts()
        return {"quotas": [readable(quota_period(asdict(row))) for row in rows]}

    async def _routes(self, call: Call) -> dict[str, Any]:
        snapshot = self.control.snapshot
        return {
            "snapshot": snapshot.id,
            "routes": [
                {
                    "name": r.name,
                    "upstream": r.upstream.name,
                    "targets": [t.label for t in r.upstream.targets],
                    "policies": [
                        {"name": p.name, "mode": "shadow" if p.shadow else "enforce"} for p in r.chain
                    ],
                }
                for r in snapshot.routes
            ],
        }

    async def _reload(self, call: Call) -> dict[str, Any]:
        return await self._reload_as("admin", call.peer)

    async def _rollback(self, call: Call) -> dict[str, Any]:
        return await self._reload_as("rollback", call.peer)

    async def _reload_as(self, reason: str, peer: Any) -> dict[str, Any]:
        c = self.control
        word = "reload" if reason == "admin" else "rollback"
        try:  # an admin action that cannot be audited is refused, not done silently
            c.audit_or_raise(f"admin.{word}", client=peer_label(peer))
        except AuditUnavailableError as exc:  # the log or its anchor: the disk or the store, named
            detail = f"{exc.what}: {exc.cause}; the {word} is refused, the running config stays"
            raise AdminError(503, "audit-unavailable", detail) from None
        try:
            result = await c.request_reload(reason, c.snapshot.process.reload_timeout + 5.0)
        except TimeoutError:
            raise AdminError(504, "reload-timeout", "the supervisor did not answer in time") from None
        if not result.ok:  # the config, or (a full disk) the state directory the reload must write
            raise AdminError(*REFUSALS[result.state_unwritable], result.error)
        if not result.confirmed:  # in force at the supervisor, but the workers did not all say so
            detail = result.detail or "no confirmation"
            raise AdminError(
                503, "reload-unconfirmed", f"snapshot {result.snapshot} is not confirmed: {detail}"
            )
        return {
            "snapshot": result.snapshot,
            "previous": result.old,
            "confirmed": result.confirmed,
            "replaced_workers": list(result.failed),
        }

    async def _metrics(self, call: Call) -> tuple[bytes, str]:
        await self.control.pull_metrics()
        return self.control.render_metrics(call.headers.get("accept", ""))


def quota_period(row: dict[str, Any]) -> dict[str, Any]:
    """The store's period code (counters/quota.py) as the period's name, start and end."""
    kind, start, end = period_bounds(int(row["period"]))
    return {**row, "period": kind, "period_start": iso(start), "period_end": iso(end)}
