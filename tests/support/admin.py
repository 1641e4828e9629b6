"""The admin API as the end-to-end tests reach it: a config with an admin listener and a small client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.gateways import basic_config

TOKEN = "adm-7f3c9e-test-token-5d21a08b4e6c93f0"


def admin_config(upstream_port: int, admin_port: int, token_file: Path, extra: str = "") -> str:
    return basic_config(
        upstream_port,
        route='network = { deny = ["127.0.0.1/32"], mode = "shadow" }',
        extra=f"""
        [[routes]]
        name = "blocked"
        path = "/blocked"
        upstream = "backend"
        auth = "none"
        network = {{ deny = ["127.0.0.0/8"] }}

        [admin]
        bind = "127.0.0.1:{admin_port}"
        token = {{ file = "{token_file}" }}
        {extra}
        """,
    )


class Admin:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self, method: str, path: str, token: str | None = TOKEN, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method, headers=headers or {}
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.call(method, path, **kw)
        return status, json.loads(body)
