"""``fastgw providers ...`` against a real gateway (supervisor, control process, 2 workers): a provider key
piped to set-key is stored encrypted, listed by prefix only, survives a master key rotation, and appears
in no CLI output, log line, audit record or file of the state directory.

The ``[llm]`` table comes with the llm handler kind (fastgw/ai/kind.py): until that kind is registered,
this module is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fastgw.handlers.registry import KINDS
from fastgw.secrets_at_rest import key_id
from tests.support.admin import TOKEN, Admin, admin_config
from tests.support.cli import fastgw
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream

pytestmark = pytest.mark.skipif("llm" not in KINDS, reason="[llm] needs the llm handler kind registered")

OPENAI_KEY = "sk-proj-ZTJlLXByb3ZpZGVyLWtleS1uZXZlci1zaG93bi0wMDE"
GROQ_KEY = "gsk_ZTJlLWdyb3Eta2V5LXNob3VsZC1uZXZlci1sZWFr0002"


def write_master(path: Path) -> bytes:
    secret = os.urandom(32)
    path.write_text(secret.hex() + "\n")
    path.chmod(0o600)
    return secret


@pytest.fixture
def node(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> tuple[Gateway, Admin, Path]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    master = tmp_path / "master.key"
    write_master(master)
    port = free_port()
    extra = f'\n[llm]\nmaster_key = {{ file = "{master}" }}\n'
    gw = gateway_factory(admin_config(upstream.port, port, token_file, extra=extra), workers=2)
    return gw, Admin(port), tmp_path


def providers(gw: Gateway, *args: str, stdin: str | None = None) -> tuple[int, str]:
    out = fastgw("providers", *args, "--config", str(gw.config), stdin=stdin)
    return out.returncode, out.stdout + out.stderr


def written(gw: Gateway, tmp_path: Path) -> bytes:
    """Everything the node wrote: logs, access log, audit log, store (and its WAL)."""
    return b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".key")


def test_set_key_list_remove_and_rotate_never_show_the_key(node: tuple[Gateway, Admin, Path]) -> None:
    gw, admin, tmp_path = node
    outputs = []
    rc, out = providers(gw, "set-key", "openai", stdin=OPENAI_KEY + "\n")
    outputs.append(out)
    assert rc == 0 and "stored the key of provider openai (sk-p...wMDE)" in out, out
    rc, out = providers(gw, "set-key", "groq", stdin=GROQ_KEY)
    outputs.append(out)
    assert rc == 0, out
    rc, out = providers(gw, "list")
    outputs.append(out)
    assert rc == 0 and out.splitlines()[0].startswith("groq  gsk_...0002  master key "), out
    assert "openai  sk-p...wMDE" in out
    rc, out = providers(gw, "list", "--json")
    outputs.append(out)
    listed = {p["provider"]: p for p in json.loads(out)["providers"]}
    assert set(listed["openai"]) == {
        "provider",
        "prefix",
        "key_id",
        "usable",
        "current",
        "created",
        "updated",
    }
    # Bad input: a clear line, exit 1, nothing stored, nothing echoed.
    rc, out = providers(gw, "set-key", "openai", stdin="")
    assert rc == 1 and "no key on stdin" in out
    rc, out = providers(gw, "set-key", "openai", stdin="sk-with space 1234567890\n")
    assert rc == 1 and "without spaces" in out and "1234567890" not in out
    rc, out = providers(gw, "remove", "groq")
    outputs.append(out)
    assert rc == 0 and "removed the stored key of provider groq (gsk_...0002)" in out
    rc, out = providers(gw, "remove", "groq")
    assert rc == 1 and "no stored key for provider 'groq'" in out
    # The admin API answers the same, and never a key.
    status, body = admin.json("GET", "/providers")
    assert status == 200 and [p["provider"] for p in body["providers"]] == ["openai"]
    assert admin.call("GET", "/providers", token="wrong")[0] == 401
    # Rotation: a new master key, the old one moved to previous_master_keys, a reload, then rotate.
    old_id = listed["openai"]["key_id"]
    config = gw.config.read_text()
    new_master = tmp_path / "master2.key"
    new_id = key_id(write_master(new_master))
    old_master = tmp_path / "master.key"
    config = config.replace(
        f'master_key = {{ file = "{old_master}" }}',
        f'master_key = {{ file = "{new_master}" }}\nprevious_master_keys = [{{ file = "{old_master}" }}]',
    )
    gw.config.write_text(config)
    status, body = admin.json("POST", "/reload")
    assert status == 200, body
    rc, out = providers(gw, "list")
    assert rc == 0 and f"master key {old_id}" in out and "run rotate-master-key" in out, out
    rc, out = providers(gw, "rotate-master-key")
    outputs.append(out)
    assert rc == 0 and f"1 provider keys re-encrypted under master key {new_id}: openai" in out, out
    rc, out = providers(gw, "list", "--json")
    assert json.loads(out)["providers"][0]["key_id"] == new_id
    # The old key can leave the config now: the stored key still opens (the workers get it; no error).
    gw.config.write_text(config.replace(f'\nprevious_master_keys = [{{ file = "{old_master}" }}]', ""))
    status, body = admin.json("POST", "/reload")
    assert status == 200, body
    assert "PROVIDER KEY UNUSABLE" not in gw.stderr()
    # Each worker applied every push (an unknown cache or a bad entry is logged by the worker).
    assert "cache 'provider_keys'" not in gw.stderr() and "unknown cache" not in gw.stderr()
    audit = (gw.state / "audit.log").read_text()
    for event in ("provider.set_key", "provider.remove_key", "provider.rotate_master_key"):
        assert f'"event":"{event}"' in audit
    everything = written(gw, tmp_path) + "".join(outputs).encode()
    for key in (OPENAI_KEY, GROQ_KEY):
        assert key.encode() not in everything
        assert key[4:-4].encode() not in everything  # not even its middle, in any encoding we write
    assert (gw.state / "fastgw.db").stat().st_mode & 0o777 == 0o600


def test_without_a_master_key_set_key_says_what_to_configure(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    gw = gateway_factory(admin_config(upstream.port, free_port(), token_file), workers=1)
    rc, out = providers(gw, "set-key", "openai", stdin=OPENAI_KEY)
    assert rc == 1 and "needs [llm] master_key in the config" in out and "openssl rand -hex 32" in out
    rc, out = providers(gw, "list")
    assert rc == 0 and "no provider keys stored" in out


def test_a_master_key_that_is_not_32_bytes_fails_the_check(tmp_path: Path, upstream: TestUpstream) -> None:
    master = tmp_path / "master.key"
    master.write_text("correct horse battery staple\n")
    config = tmp_path / "gw.toml"
    config.write_text(
        admin_config(
            upstream.port,
            free_port(),
            tmp_path / "t",
            extra=f'\n[llm]\nmaster_key = {{ file = "{master}" }}\n',
        )
        .replace("{port}", str(free_port()))
        .replace("{log}", str(tmp_path / "access.log"))
    )
    (tmp_path / "t").write_text(TOKEN)
    out = fastgw("check", str(config))
    assert out.returncode == 2
    assert "llm.master_key: the master key (file" in out.stderr and "must be 32 random bytes" in out.stderr
    assert "horse" not in out.stderr
