"""Gateway nodes sharing one PostgreSQL store: their config, and the admin API calls the cluster tests
make directly (the CLI's process start would dominate the times they measure)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.api_keys import keys_config

ADMIN_TOKEN = "admin-token-for-keys-tests-0c5e9a7d31f4"  # what the secrets_dir fixture writes


def cluster_config(upstream_port: int, admin_port: int, secrets_dir: Path, dsn: str) -> str:
    """keys_config (API key routes, admin API, pepper, [auth_throttle] off) with the store on PostgreSQL,
    its DSN in a file."""
    dsn_file = secrets_dir / "store.dsn"
    dsn_file.write_text(dsn + "\n")
    return (
        keys_config(upstream_port, admin_port, secrets_dir)
        + f"""
        [store]
        backend = "postgres"
        dsn = {{ file = "{dsn_file}" }}
        connect_timeout = 5
        """
    )


def admin_call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One admin API call with the test token; (status, parsed JSON body)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
