"""The admin API: a small HTTP/1.1 JSON service in the control process, on its own listener.

Never on the public listener. Every endpoint but the probes needs ``Authorization: Bearer <token>``; the
token is read from its secret reference at start and kept only as a SHA-256 digest, compared in constant
time. h11 parses: this path is cold, so correctness and strictness beat speed here. Every field is meant
for people: times are ISO 8601 UTC strings (``_TIMES``), periods are named with their start and end, never
the raw numbers the store and the counters keep.

    GET  /healthz    200 while the control process runs (no token)
    GET  /readyz     200 when every worker is connected and on the snapshot in force, else 503 (no token)
    GET  /status     snapshot id, source and load time, uptime, workers, connections
    GET  /routes     the routes of the snapshot in force
    GET  /quotas     quota counts: limit, key, period (day/month with ISO start and end), count
    POST /reload     re-read the config file; 200 with the new snapshot once every worker serves it, 422
                     if it is invalid or changes a setting that needs a restart, 503 if not confirmed
    POST /rollback   restore the previous valid config of the same file; as /reload (422 if there is none)
    GET  /metrics    Prometheus exposition (no token when admin.open_metrics = true)
    GET|POST /consumers, GET|POST /keys, POST /keys/ID/rotate|revoke|expire|update: consumers and API keys
    GET  /consumers/REF (by id or URL-quoted name, with its keys), POST /consumers/REF/disable|enable|delete
    GET  /providers, POST /providers/NAME/key|remove, /providers/rotate-master-key: LLM provider keys
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import h11
import orjson

from fastgw.codec.problem import problem_fields
from fastgw.codec.serialize import status_line
from fastgw.control.api import ControlAPI
from fastgw.control.consumers import KeyServiceError
from fastgw.counters.quota import period_bounds
from fastgw.secret_refs import admin_token
from fastgw.snapshot import AdminSettings
from fastgw.store.base import StoreError

MAX_BODY: Final = 64 * 1024
# Fields the store keeps as unix seconds, shown as ISO 8601 UTC (null stays null).
_TIMES: Final = ("created", "expires", "revoked", "updated", "disabled")
READ_TIMEOUT: Final = 10.0
# The problem type (last segment of its URI) of a KeyServiceError, by status.
_KEY_SERVICE_PROBLEMS: Final = {404: "not-found", 409: "conflict"}

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]


class AdminError(Exception):
    """An admin request refused with ``status``; ``problem`` is the problem type's last URI segment."""

    def __init__(
        self, status: int, problem: str, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.problem = problem
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Call:
    """What an endpoint gets: the request's headers (lower-case names), JSON body and peer address."""

    headers: dict[str, str]
    body: dict[str, Any]
    peer: Any


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of the admin API's routing table: ``pattern`` is a path whose ``*`` segments match one
    non-empty segment each, passed to ``handler`` (URL-unquoted) after the Call."""

    method: str
    pattern: str
    handler: Handler
    public: bool = False  # served without the bearer token

    def match(self, segments: list[str]) -> tuple[str, ...] | None:
        """The ``*`` segments of a path that fits the pattern, or None."""
        expected = self.pattern.split("/")[1:]
        if len(expected) != len(segments):
            return None
        params: list[str] = []
        for want, got in zip(expected, segments, strict=True):
            if want == "*":
                if not got:
                    return None
                params.append(urllib.parse.unquote(got))
            elif want != got:
                return None
        return tuple(params)


class AdminServer:
    def __init__(self, control: ControlAPI, settings: AdminSettings) -> None:
        self.control = control
        self.settings = settings
        self._token_digest = hashlib.sha256(admin_token(settings.token)).digest()
        self._server: asyncio.Server | None = None
        self._endpoints: Final = (
            Endpoint("GET", "/healthz", self._healthz, public=True),
            Endpoint("GET", "/readyz", self._readyz, public=True),
            Endpoint("GET", "/status", self._status),
            Endpoint("GET", "/routes", self._routes),
            Endpoint("GET", "/quotas", self._quotas),
            Endpoint("POST", "/reload", self._reload),
            Endpoint("POST", "/rollback", self._rollback),
            Endpoint("GET", "/metrics", self._metrics, public=settings.open_metrics),
            Endpoint("GET", "/consumers", self._consumers),
            Endpoint("POST", "/consumers", self._consumer_create),
            Endpoint("GET", "/consumers/*", self._consumer_show),
            Endpoint("POST", "/consumers/*/disable", self._consumer_disable),
            Endpoint("POST", "/consumers/*/enable", self._consumer_enable),
            Endpoint("POST", "/consumers/*/delete", self._consumer_delete),
            Endpoint("GET", "/keys", self._keys),
            Endpoint("POST", "/keys", self._key_create),
            Endpoint("POST", "/keys/*/rotate", self._key_rotate),
            Endpoint("POST", "/keys/*/revoke", self._key_revoke),
            Endpoint("POST", "/keys/*/expire", self._key_expire),
            Endpoint("POST", "/keys/*/update", self._key_update),
            Endpoint("GET", "/providers", self._providers),
            Endpoint("POST", "/providers/rotate-master-key", self._providers_rotate),
            Endpoint("POST", "/providers/*/key", self._provider_set_key),
            Endpoint("POST", "/providers/*/remove", self._provider_remove),
        )

    async def start(self, sock: socket.socket) -> None:
        """Serve on the listener the supervisor bound (it outlives this process: a restarted control
        process serves on the same socket, and a busy port fails the start, not a loop of restarts)."""
        if self.settings.unix:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # the supervisor removes a unix socket's file when it stops

    # -- HTTP --------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    break
                peer = writer.get_extra_info("peername")
                status, headers, payload = await self._respond(request, body, peer)
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=payload)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except (h11.RemoteProtocolError, TimeoutError) as exc:
            # h11 refuses to send on a connection in error, so this answer is framed here
            status = exc.error_status_hint if isinstance(exc, h11.RemoteProtocolError) else 408
            fields, payload = problem_fields(status, "bad-request", str(exc) or "request timed out")
            head = [status_line(status), *(name + b": " + value + b"\r\n" for name, value in fields)]
            with contextlib.suppress(Exception):
                writer.write(b"".join(head) + b"connection: close\r\n\r\n" + payload)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                async with asyncio.timeout(READ_TIMEOUT):  # not wait_for (counters/cluster.py stop)
                    data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _respond(self, request: h11.Request, body: bytes, peer: Any) -> Response:
        method = request.method.decode()
        path = request.target.decode("latin-1").split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        try:
            endpoint, params = self._route(method, path)
            if not endpoint.public:
                self._authenticate(headers.get("authorization", ""))
            request_body = _json_body(body) if method == "POST" else {}
            result = await endpoint.handler(Call(headers, request_body, peer), *params)
        except KeyServiceError as exc:
            problem = _KEY_SERVICE_PROBLEMS.get(exc.status, "invalid-request")
            return _problem_response(exc.status, problem, exc.detail)
        except AdminError as exc:
            return _problem_response(exc.status, exc.problem, exc.detail, exc.headers)
        except StoreError:  # the database is down or failing: the data plane serves on from its caches
            return _problem_response(503, "store-unavailable", "the store cannot be reached: retry later")
        if isinstance(result, tuple):  # (bytes, content type) from /metrics
            return _response(200, result[1], result[0])
        status = int(result.pop("_status", 200))
        return _response(status, "application/json", orjson.dumps(result))

    def _route(self, method: str, path: str) -> tuple[Endpoint, tuple[str, ...]]:
        """The endpoint for a request and its path parameters; 404 if no pattern fits the path, 405
        (with ``Allow``) if some do but not for this method. Both come before the token check."""
        segments = path.split("/")[1:]
        allowed: list[str] = []
        for endpoint in self._endpoints:
            params = endpoint.match(segments)
            if params is None:
                continue
            if endpoint.method == method:
                return endpoint, params
            allowed.append(endpoint.method)
        if not allowed:
            raise AdminError(404, "not-found", f"no admin endpoint {path}")
        allow = ", ".join(allowed)
        raise AdminError(405, "method-not-allowed", f"{path} accepts {allow}", ((b"allow", allow.encode()),))

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        presented = hashlib.sha256(token.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token_digest):
            raise AdminError(
                401,
                "unauthorized",
                "a valid admin bearer token is required",
                ((b"www-authenticate", b'Bearer realm="fastgw-admin"'),),
            )

    # -- endpoints ---------------------------------------------------------------------------------------
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
            "loaded_at": _iso(c.loaded_at),
            "started_at": _iso(c.started),
            "uptime_s": round(time.time() - c.started, 3),
            "workers": [
                {
                    "slot": p.slot,
                    "pid": p.pid,
                    "snapshot": p.snapshot,
                    "connected_at": _iso(p.connected),
                    "connections": p.connections,
                }
                for p in workers
            ],
            "connections": sum(p.connections for p in workers),
        }

    async def _quotas(self, call: Call) -> dict[str, Any]:
        """Quota counts in the store (up to one flush interval behind the workers), newest first."""
        rows = self.control.quota_counts()
        return {"quotas": [_readable(_quota_period(asdict(row))) for row in rows]}

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
        try:  # an admin action that cannot be audited is refused, not done silently
            c.audit_or_raise(f"admin.{'reload' if reason == 'admin' else 'rollback'}", client=_peer(peer))
        except OSError as exc:
            raise AdminError(503, "audit-unavailable", f"the audit log cannot be written: {exc}") from None
        try:
            result = await c.request_reload(reason, c.snapshot.process.reload_timeout + 5.0)
        except TimeoutError:
            raise AdminError(504, "reload-timeout", "the supervisor did not answer in time") from None
        if not result.ok:
            raise AdminError(422, "invalid-config", result.error)
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

    # -- consumers and keys (the plaintext of a new key is in this one response only) -------------------
    async def _consumers(self, call: Call) -> dict[str, Any]:
        return {"consumers": [_readable(c) for c in self.control.keys.consumers()]}

    async def _consumer_create(self, call: Call) -> dict[str, Any]:
        return {"_status": 201, **_readable(self.control.keys.create_consumer(call.body))}

    async def _consumer_show(self, call: Call, ref: str) -> dict[str, Any]:
        consumer = self.control.keys.consumer(ref)
        return {**_readable(consumer), "keys": [_readable(k) for k in consumer["keys"]]}

    async def _consumer_disable(self, call: Call, ref: str) -> dict[str, Any]:
        return _readable(self.control.keys.disable(ref))

    async def _consumer_enable(self, call: Call, ref: str) -> dict[str, Any]:
        return _readable(self.control.keys.enable(ref))

    async def _consumer_delete(self, call: Call, ref: str) -> dict[str, Any]:
        return _readable(self.control.keys.delete_consumer(ref))

    async def _key_update(self, call: Call, key_id: str) -> dict[str, Any]:
        return _readable(self.control.keys.update(key_id, call.body))

    async def _keys(self, call: Call) -> dict[str, Any]:
        rows = self.control.keys.keys()
        return {"keys": [_readable(row) for row in rows]}

    async def _key_create(self, call: Call) -> dict[str, Any]:
        return {"_status": 201, **_readable(self.control.keys.create_key(call.body))}

    async def _key_rotate(self, call: Call, key_id: str) -> dict[str, Any]:
        result = self.control.keys.rotate(key_id, call.body)
        return {"_status": 201, "new": _readable(result["new"]), "old": _readable(result["old"])}

    async def _key_revoke(self, call: Call, key_id: str) -> dict[str, Any]:
        return _readable(self.control.keys.revoke(key_id))

    async def _key_expire(self, call: Call, key_id: str) -> dict[str, Any]:
        return _readable(self.control.keys.expire(key_id, call.body))

    async def _providers(self, call: Call) -> dict[str, Any]:
        return {"providers": [_readable(row) for row in self.control.provider_keys.list()]}

    async def _providers_rotate(self, call: Call) -> dict[str, Any]:
        return self.control.provider_keys.rotate_master_key()

    async def _provider_set_key(self, call: Call, name: str) -> dict[str, Any]:
        return _readable(self.control.provider_keys.set_key(name, call.body))

    async def _provider_remove(self, call: Call, name: str) -> dict[str, Any]:
        return self.control.provider_keys.remove(name)

    async def _metrics(self, call: Call) -> tuple[bytes, str]:
        await self.control.pull_metrics()
        return self.control.render_metrics(call.headers.get("accept", ""))


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, "bad-request", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AdminError(400, "bad-request", "the body must be a JSON object")
    return value


def _response(status: int, content_type: str, payload: bytes) -> Response:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(payload))]
    return status, headers, payload


def _problem_response(
    status: int, problem: str, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Response:
    """An error as the gateway renders every error (codec/problem.py): the status's reason as title."""
    fields, payload = problem_fields(status, problem, detail, headers=headers)
    return status, fields, payload


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    """A store row as people read it: unix seconds in ``_TIMES`` fields become ISO 8601 UTC."""
    out = dict(row)
    for name in _TIMES:
        value = out.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = _iso(value) if value else None
    return out


def _quota_period(row: dict[str, Any]) -> dict[str, Any]:
    """The store's period code (counters/quota.py) as the period's name, start and end."""
    kind, start, end = period_bounds(int(row["period"]))
    return {**row, "period": kind, "period_start": _iso(start), "period_end": _iso(end)}


def _peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unix"
