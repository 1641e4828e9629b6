"""The admin API needs nothing of the control process but ControlAPI: served here over a small fake."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import orjson
import pytest
import pytest_asyncio

from fastgw.codec.control_messages import ReloadResult
from fastgw.config.compiler import compile_config
from fastgw.control.admin_api import AdminServer
from fastgw.control.api import ControlAPI, WorkerView
from fastgw.control.auditing import AuditUnavailableError
from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.snapshot import AdminSettings, SecretRef, Snapshot
from fastgw.store.base import QuotaCount

TOKEN = "9f2c4e7a1b3d5f60718293a4b5c6d7e8"
CONFIG = b"""
[[listeners]]
bind = "127.0.0.1:0"
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""


class FakeControl:
    """Only what ControlAPI lists; records what the admin API asked."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.keys: KeyService = None  # type: ignore[assignment]  # no key endpoint is called here
        self.started = 1_700_000_000.0
        self.loaded_at = 1_700_000_100.0
        self.workers = [WorkerView(0, 101, snapshot.id, 1_700_000_001.0, 3)]
        self.in_reload = False
        self.audit_fails = False
        self.audited: list[str] = []
        self.reload_answer = ReloadResult(ok=True, reason="admin", snapshot=snapshot.id, confirmed=True)
        self.reloads: list[str] = []

    def worker_views(self) -> list[WorkerView]:
        return self.workers

    def reloading(self) -> bool:
        return self.in_reload

    async def pull_metrics(self) -> None:
        pass

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        return b"fastgw_up 1\n", "text/plain"

    def quota_counts(self) -> list[QuotaCount]:
        return []

    def audit_or_raise(self, event: str, **fields: Any) -> None:
        if self.audit_fails:
            raise AuditUnavailableError(event, "/var/lib/fastgw/audit.log: No space left on device")
        self.audited.append(event)

    async def request_reload(self, reason: str, timeout: float) -> ReloadResult:
        self.reloads.append(reason)
        return self.reload_answer


@pytest_asyncio.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, FakeControl]]:
    monkeypatch.setenv("FASTGW_TEST_ADMIN_TOKEN", TOKEN)
    ref = SecretRef(kind="env", name="FASTGW_TEST_ADMIN_TOKEN", key="admin.token", file="test")
    settings = AdminSettings(host="127.0.0.1", port=0, unix="", token=ref, open_metrics=False)
    control = FakeControl(compile_config(CONFIG, "fake.toml"))
    typed: ControlAPI = control
    server = AdminServer(typed, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    await server.start(sock)
    yield sock.getsockname()[1], control
    await server.stop()


async def call(port: int, method: str, path: str) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


@pytest.mark.asyncio
async def test_readyz_follows_the_workers_and_the_reload(served: tuple[int, FakeControl]) -> None:
    port, control = served
    assert await call(port, "GET", "/readyz") == (200, {"ready": True, "workers": 1, "behind": []})
    control.in_reload = True
    assert (await call(port, "GET", "/readyz"))[0] == 503
    control.in_reload = False
    control.workers.append(WorkerView(1, 102, "old", 0.0, 0))
    assert await call(port, "GET", "/readyz") == (503, {"ready": False, "workers": 2, "behind": [102]})


@pytest.mark.asyncio
async def test_status_sums_the_workers_connections(served: tuple[int, FakeControl]) -> None:
    port, control = served
    control.workers.append(WorkerView(1, 102, control.snapshot.id, 0.0, 4))
    status, body = await call(port, "GET", "/status")
    assert status == 200
    assert body["connections"] == 7
    assert [w["pid"] for w in body["workers"]] == [101, 102]


@pytest.mark.asyncio
async def test_a_refused_reload_is_422_with_the_supervisors_reason(served: tuple[int, FakeControl]) -> None:
    port, control = served
    control.reload_answer = ReloadResult(ok=False, reason="admin", snapshot="s", error="routes.0.path: bad")
    status, body = await call(port, "POST", "/reload")
    assert status == 422
    assert body["detail"] == "routes.0.path: bad"
    assert control.audited == ["admin.reload"]


@pytest.mark.asyncio
async def test_a_reload_that_cannot_be_audited_is_not_asked_for(served: tuple[int, FakeControl]) -> None:
    port, control = served
    control.audit_fails = True
    status, body = await call(port, "POST", "/rollback")
    assert (status, body["type"]) == (503, "https://fastgw.dev/problems/audit-unavailable")
    assert body["detail"] == (
        "the audit log cannot be written: /var/lib/fastgw/audit.log: No space left on device; the rollback"
        " is refused, the running config stays"
    )
    assert control.reloads == []


@pytest.mark.asyncio
async def test_a_reload_refused_for_a_full_state_disk_is_503_not_an_invalid_config(
    served: tuple[int, FakeControl],
) -> None:
    port, control = served
    error = "cannot write /var/lib/fastgw/fastgw.status.json: No space left on device: free space on its disk"
    control.reload_answer = ReloadResult(
        ok=False, reason="admin", snapshot="s", error=error, state_unwritable=True
    )
    status, body = await call(port, "POST", "/reload")
    assert (status, body["type"], body["detail"]) == (
        503,
        "https://fastgw.dev/problems/state-unavailable",
        error,
    )


class ConflictingKeys:
    """A key service whose every new consumer name is taken."""

    def create_consumer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise KeyServiceError(409, "a consumer with that name exists")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "status", "title", "problem"),
    [
        ("GET", "/nowhere", 404, "Not Found", "not-found"),
        ("DELETE", "/keys", 405, "Method Not Allowed", "method-not-allowed"),
        ("POST", "/consumers", 409, "Conflict", "conflict"),
    ],
)
async def test_an_admin_error_is_titled_by_its_status(
    served: tuple[int, FakeControl], method: str, path: str, status: int, title: str, problem: str
) -> None:
    port, control = served
    control.keys = ConflictingKeys()  # type: ignore[assignment]
    assert await call(port, method, path) == (
        status,
        {
            "type": f"https://fastgw.dev/problems/{problem}",
            "title": title,
            "status": status,
            "detail": ANY,
        },
    )


@pytest.mark.asyncio
async def test_a_malformed_request_gets_a_titled_problem_and_the_connection_closes(
    served: tuple[int, FakeControl],
) -> None:
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /status HTTP/1.1\r\nHost: a\r\nbroken header line\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # read() returns once the server closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\ncontent-type: application/problem+json\r\n" in head
    assert orjson.loads(body)["title"] == "Bad Request"
