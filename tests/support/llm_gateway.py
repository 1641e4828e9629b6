"""A gateway with ``kind = "llm"`` routes in front of the fake providers (OpenAI, Anthropic, Gemini), each
over TLS signed by the tests' CA, for the end-to-end tests that use the official SDKs as clients.

``LlmStack`` starts the three fakes; ``llm_config`` writes the gateway config: one upstream and one
``[[llm.providers]]`` per fake, the public models below, an llm route on ``/v1`` serving every model and
one on ``/narrow/v1`` that allows only ``chat-*`` models, an admin listener for /metrics.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.clients import Response, request
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_gemini import API_KEY as GEMINI_KEY
from tests.support.fake_gemini import FakeGemini
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateways import Gateway, start_gateway
from tests.support.ports import free_port
from tests.support.waiting import wait_until

OPENAI_KEY = "sk-fake-openai-provider-key"
ANTHROPIC_KEY = "sk-ant-test"
ADMIN_TOKEN = "admin-token-for-llm-tests-5d1e0b7a93c2"


def server_context(certs: DevCertificates) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


@dataclass
class LlmStack:
    """The three fake providers over TLS; ``close()`` stops them."""

    certs: DevCertificates
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini
    dead_port: int = field(default_factory=free_port)  # nothing listens here: connect refused

    @classmethod
    def start(cls, directory: Path) -> LlmStack:
        certs = write_dev_certificates(directory / "certs")
        openai = FakeOpenAI(api_key=OPENAI_KEY, ssl_context=server_context(certs)).start_in_thread()
        openai.first_token_delay = 0.05
        anthropic = FakeAnthropic(ssl_context=server_context(certs), api_key=ANTHROPIC_KEY)
        gemini = FakeGemini(ssl_context=server_context(certs))
        return cls(certs, openai, anthropic, gemini)

    def close(self) -> None:
        self.openai.stop_thread()
        self.anthropic.close()
        self.gemini.close()


def llm_config(stack: LlmStack, secrets: Path, admin_port: int, *, extra: str = "") -> str:
    """The gateway config; ``extra`` is appended (more models, providers, routes)."""
    secrets.mkdir(exist_ok=True)
    for name, value in (
        ("openai.key", OPENAI_KEY),
        ("anthropic.key", ANTHROPIC_KEY),
        ("gemini.key", GEMINI_KEY),
        ("admin.token", ADMIN_TOKEN),
    ):
        (secrets / name).write_text(value + "\n")
    tls = f'tls = {{ ca = "{stack.certs.ca_cert}", sni = "localhost" }}'
    upstreams = "".join(
        f"""
        [upstreams.{name}]
        targets = ["127.0.0.1:{port}"]
        {tls}
        """
        for name, port in (
            ("openai", stack.openai.port),
            ("anthropic", stack.anthropic.port),
            ("gemini", stack.gemini.port),
            ("dead", stack.dead_port),
        )
    )
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"

        [access_log]
        target = "{{log}}"

        [admin]
        bind = "127.0.0.1:{admin_port}"
        token = {{ file = "{secrets / "admin.token"}" }}
        {upstreams}
        [[llm.providers]]
        name = "oa"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_key = {{ file = "{secrets / "openai.key"}" }}

        [[llm.providers]]
        name = "an"
        kind = "anthropic"
        upstream = "anthropic"
        api_key = {{ file = "{secrets / "anthropic.key"}" }}

        [[llm.providers]]
        name = "ge"
        kind = "gemini"
        upstream = "gemini"
        api_key = {{ file = "{secrets / "gemini.key"}" }}

        [[llm.providers]]
        name = "down"
        kind = "openai"
        upstream = "dead"
        base_path = "/v1"

        [[llm.models]]
        name = "chat-openai"
        targets = [{{ provider = "oa", model = "gpt-4o-mini" }}]

        [[llm.models]]
        name = "chat-anthropic"
        targets = [{{ provider = "an", model = "claude-sonnet-4-5" }}]

        [[llm.models]]
        name = "chat-gemini"
        targets = [{{ provider = "ge", model = "gemini-2.0-flash" }}]

        [[llm.models]]
        name = "embed-openai"
        targets = [{{ provider = "oa", model = "text-embedding-3-small" }}]

        [[llm.models]]
        name = "embed-gemini"
        targets = [{{ provider = "ge", model = "text-embedding-004" }}]

        [[routes]]
        name = "llm"
        path = "/v1"
        auth = "none"
        kind = "llm"

        [[routes]]
        name = "narrow"
        path = "/narrow/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"
        handler = {{ models = ["chat-*"] }}
        {extra}
        """


def llm_record(gw: Gateway, headers: Mapping[str, str]) -> dict[str, Any]:
    """The ``llm`` field of the access-log record of the response with these headers (its x-request-id),
    waiting for it: records are written in batches, so counting lines would race with the last request."""
    request_id = headers["x-request-id"]

    def found() -> dict[str, Any] | None:
        return next((r["llm"] for r in gw.log_records() if r.get("request_id") == request_id), None)

    return wait_until(found, 5.0, f"the access-log record of {request_id}")  # type: ignore[no-any-return]


def post_json(gw: Gateway, path: str, body: Any, headers: str = "") -> Response:
    """A POST of ``body`` (JSON-encoded unless bytes) on a fresh connection: a prompt API call."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n{headers}"
    return request(gw.port, f"{head}content-length: {len(data)}\r\n\r\n".encode() + data, timeout=10)


def scrape(admin_port: int) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text scrape (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class LlmGateway:
    stack: LlmStack
    gateway: Gateway
    admin_port: int

    @property
    def base_url(self) -> str:
        return f"{self.gateway.url}/v1"


@contextmanager
def silent_listener() -> Iterator[socket.socket]:
    """A provider address whose TLS handshake never ends: the kernel completes the TCP one into the
    backlog and nobody answers (a test may accept() to see the gateway's connect begin)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


def silent_provider(port: int, connect_timeout: float) -> str:
    """Config of an upstream and an OpenAI provider, both named "silent", at ``silent_listener``'s port."""
    return f"""
[upstreams.silent]
targets = ["127.0.0.1:{port}"]
tls = {{}}

[[llm.providers]]
name = "silent"
kind = "openai"
upstream = "silent"
base_path = "/v1"
connect_timeout = {connect_timeout}
"""


@contextmanager
def running_llm_gateway(directory: Path, extra: str = "") -> Iterator[LlmGateway]:
    """The fakes and a gateway (one worker) in front of them, stopped on exit; the gateway must exit 0."""
    stack = LlmStack.start(directory)
    try:
        admin_port = free_port()
        gw = start_gateway(directory, llm_config(stack, directory / "secrets", admin_port, extra=extra))
        try:
            yield LlmGateway(stack, gw, admin_port)
        finally:
            code = gw.stop()
        assert code == 0, f"gateway exited with {code}; stderr:\n{gw.stderr()}"
    finally:
        stack.close()
