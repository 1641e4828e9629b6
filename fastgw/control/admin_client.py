"""The CLI's way into a running gateway: the admin API, found and authenticated through the config.

``fastgw keys ...`` and ``fastgw consumers ...`` do not open the store themselves (the control process is
its only writer); they read the config for the admin listener and the token's secret reference and call
the admin API over TCP or the unix socket.
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

import orjson

from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import AdminSettings


class AdminUnavailableError(Exception):
    """No admin API to talk to (not configured, or the gateway is not running)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def admin_call(
    settings: AdminSettings | None, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """(status, decoded JSON) of one admin API call. Raises AdminUnavailableError with a reason."""
    if settings is None:
        raise AdminUnavailableError("the config has no [admin] table: the admin API is off")
    token = resolve_secret(settings.token).decode()
    conn: http.client.HTTPConnection
    if settings.unix:
        conn = _UnixConnection(settings.unix, timeout=30)
        where = settings.unix
    else:
        conn = http.client.HTTPConnection(settings.host, settings.port, timeout=30)
        where = f"{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=orjson.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except OSError as exc:
        raise AdminUnavailableError(f"cannot reach the admin API at {where}: {exc.strerror or exc}") from None
    finally:
        conn.close()
    try:
        return resp.status, orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        return resp.status, {"detail": data.decode("latin-1")}
