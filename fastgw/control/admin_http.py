"""The admin API's HTTP side: a small HTTP/1.1 JSON server with a routing table of :class:`Endpoint` rows.

Never on the public listener. Every endpoint but the probes needs ``Authorization: Bearer <token>``; the
token is read from its secret reference at start and kept only as a SHA-256 digest, compared in constant
time. h11 parses: this path is cold, so correctness and strictness beat speed here. Every field is meant
for people: times are ISO 8601 UTC strings (``TIMES``), periods are named with their start and end, never
the raw numbers the store and the counters keep. Which endpoints exist is admin_api.py's business: each
group of them (identities, usage, ...) is one module returning its rows.
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
from dataclasses import dataclass
from typing import Any, Final

import h11
import orjson

from fastgw.codec.problem import problem_fields
from fastgw.codec.serialize import status_line
from fastgw.control.consumers import KeyServiceError
from fastgw.store.base import CommitUnknownError, StoreError

MAX_BODY: Final = 64 * 1024  # the largest admin request (a consumer with its fields): far below this
# Fields the store keeps as unix seconds, shown as ISO 8601 UTC (null stays null).
TIMES: Final = ("created", "expires", "revoked", "updated", "disabled")
READ_TIMEOUT: Final = 10.0  # a client that sends nothing for this long is answered 408 and dropped
# The problem type (last segment of its URI) of a KeyServiceError, by status.
_KEY_SERVICE_PROBLEMS: Final = {404: "not-found", 409: "conflict", 503: "audit-unavailable"}

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
    """What an endpoint gets: the request's headers (lower-case names), JSON body, query parameters
    (the last value of each name) and peer address."""

    headers: dict[str, str]
    body: dict[str, Any]
    peer: Any
    query: dict[str, str]


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of the admin API's routing table: ``pattern`` is a path whose ``*`` segments match one
    non-empty segment each, passed to ``handler`` (URL-unquoted) after the Call. A handler returns a
    JSON object (``_status`` in it sets the status, default 200) or ``(bytes, content type)``."""

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


class AdminHttpServer:
    """Serves ``endpoints`` to bearers of the token whose SHA-256 digest is ``token_digest``."""

    def __init__(self, endpoints: tuple[Endpoint, ...], token_digest: bytes) -> None:
        self.endpoints = endpoints
        self._token_digest = token_digest
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket, unix: bool) -> None:
        """Serve on the listener the supervisor bound (it outlives this process: a restarted control
        process serves on the same socket, and a busy port fails the start, not a loop of restarts)."""
        if unix:
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
        path, _, query_string = request.target.decode("latin-1").partition("?")
        query = dict(urllib.parse.parse_qsl(query_string))
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        try:
            endpoint, params = self._route(method, path)
            if not endpoint.public:
                self._authenticate(headers.get("authorization", ""))
            request_body = json_body(body) if method == "POST" else {}
            result = await endpoint.handler(Call(headers, request_body, peer, query), *params)
        except KeyServiceError as exc:
            problem = _KEY_SERVICE_PROBLEMS.get(exc.status, "invalid-request")
            return problem_response(exc.status, problem, exc.detail)
        except AdminError as exc:
            return problem_response(exc.status, exc.problem, exc.detail, exc.headers)
        except CommitUnknownError:  # not "retry": a retried create may make a second key
            detail = (
                "the connection to the store was lost while the change committed: it may or may not have"
                " taken effect (the audit log says EVENT.outcome_unknown); look before retrying"
            )
            return problem_response(503, "outcome-unknown", detail)
        except StoreError:  # the database is down or failing: the data plane serves on from its caches
            return problem_response(503, "store-unavailable", "the store cannot be reached: retry later")
        if isinstance(result, tuple):  # (bytes, content type) from /metrics
            return response(200, result[1], result[0])
        status = int(result.pop("_status", 200))
        return response(status, "application/json", orjson.dumps(result))

    def _route(self, method: str, path: str) -> tuple[Endpoint, tuple[str, ...]]:
        """The endpoint for a request and its path parameters; 404 if no pattern fits the path, 405
        (with ``Allow``) if some do but not for this method. Both come before the token check."""
        segments = path.split("/")[1:]
        allowed: list[str] = []
        for endpoint in self.endpoints:
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


def json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, "bad-request", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AdminError(400, "bad-request", "the body must be a JSON object")
    return value


def response(status: int, content_type: str, payload: bytes) -> Response:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(payload))]
    return status, headers, payload


def problem_response(
    status: int, problem: str, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Response:
    """An error as the gateway renders every error (codec/problem.py): the status's reason as title."""
    fields, payload = problem_fields(status, problem, detail, headers=headers)
    return status, fields, payload


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def readable(row: dict[str, Any]) -> dict[str, Any]:
    """A store row as people read it: unix seconds in ``TIMES`` fields become ISO 8601 UTC."""
    out = dict(row)
    for name in TIMES:
        value = out.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = iso(value) if value else None
    return out


def peer_label(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unix"
