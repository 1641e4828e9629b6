"""Provider keys in the control process (control/provider_keys.py) over a real store and audit log: what
is stored is ciphertext, what workers get is the key, and no answer, audit record or log holds it."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fastgw.audit import AuditLog
from fastgw.codec.control_messages import CachePush, MessageError, decode, encode
from fastgw.control.consumers import KeyServiceError
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.proxy.caches import (
    CACHES,
    PROVIDER_KEYS,
    PROVIDER_KEYS_CACHE,
    CacheRegistry,
    ProviderKeys,
    provider_key,
)
from fastgw.secrets_at_rest import MasterKey, MasterKeys, key_id
from fastgw.store.sqlite import SQLiteStore

OPENAI_KEY = "sk-proj-Q2hhbmdlTWVQbGVhc2UtdGhpcy1pcy1hLXRlc3Qta2V5"
ANTHROPIC_KEY = "sk-ant-api03-dGVzdC1rZXktZm9yLWZhc3Rndy1wcm92aWRlcnM"


def new_master() -> MasterKey:
    secret = os.urandom(32)
    return MasterKey(key_id(secret), secret)


@dataclass
class Node:
    """The control process's side (service, store, audit) and one worker's cache, fed by the pushes."""

    service: ProviderKeyService
    store: SQLiteStore
    state: Path
    worker: ProviderKeys
    logs: list[str] = field(default_factory=list)
    keys: MasterKeys | None = None

    def everything_written(self) -> bytes:
        """Every byte the node wrote: database (and its WAL), audit log, log lines."""
        files = [p.read_bytes() for p in self.state.iterdir() if p.is_file()]
        return b"".join(files) + "\n".join(self.logs).encode()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(str(state))
    audit = AuditLog(str(state / "audit.log"), b"a" * 32, store)
    worker = ProviderKeys()
    registry = CacheRegistry()
    registry.register(PROVIDER_KEYS_CACHE, worker)

    def push(message: CachePush) -> None:
        registry.apply(message)

    n = Node(None, store, state, worker, keys=MasterKeys(new_master()))  # type: ignore[arg-type]
    n.service = ProviderKeyService(store, lambda: n.keys, audit.append, push, n.logs.append)
    yield n
    store.close()


def test_set_key_stores_ciphertext_and_reaches_the_worker(node: Node) -> None:
    view = node.service.set_key("openai", {"key": OPENAI_KEY})
    assert view["_status"] == 201 and view["prefix"] == "sk-p...a2V5" and view["usable"] and view["current"]
    assert node.worker.get("openai") == OPENAI_KEY.encode()
    row = node.store.provider_credential("openai")
    assert row is not None and row.key_id == node.keys.current.id  # type: ignore[union-attr]
    assert OPENAI_KEY.encode() not in row.ciphertext
    # Replacing keeps the row's creation time and says it replaced (by prefix).
    again = node.service.set_key("openai", {"key": OPENAI_KEY[::-1]})
    assert again["_status"] == 200 and again["created"] == view["created"]
    assert node.worker.get("openai") == OPENAI_KEY[::-1].encode()
    audit = (node.state / "audit.log").read_text()
    assert '"event":"provider.set_key"' in audit and '"replaced":"sk-p...a2V5"' in audit
    written = node.everything_written()
    assert OPENAI_KEY.encode() not in written and OPENAI_KEY[::-1].encode() not in written
    for name in ("fastgw.db", "audit.log"):
        assert (node.state / name).stat().st_mode & 0o777 == 0o600


def test_list_and_remove_never_show_the_key(node: Node) -> None:
    node.service.set_key("openai", {"key": OPENAI_KEY})
    node.service.set_key("anthropic", {"key": ANTHROPIC_KEY})
    listed = node.service.list()
    assert [p["provider"] for p in listed] == ["anthropic", "openai"]
    assert all(OPENAI_KEY not in str(p) and ANTHROPIC_KEY not in str(p) for p in listed)
    assert node.service.remove("openai") == {"provider": "openai", "prefix": "sk-p...a2V5", "removed": True}
    assert node.worker.get("openai") is None and node.worker.get("anthropic") == ANTHROPIC_KEY.encode()
    with pytest.raises(KeyServiceError, match="no stored key for provider 'openai'") as err:
        node.service.remove("openai")
    assert err.value.status == 404
    assert '"event":"provider.remove_key"' in (node.state / "audit.log").read_text()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "key must be 1 to"),
        ({"key": ""}, "key must be 1 to"),
        ({"key": "sk-with a space-1234567890"}, "without spaces"),
        ({"key": "sk-\u00e9t\u00e9-1234567890"}, "printable ASCII"),
        ({"key": 12345}, "key must be"),
        ({"key": OPENAI_KEY, "extra": 1}, "unknown field 'extra'"),
    ],
)
def test_bad_input_is_refused_without_echoing_it(node: Node, body: dict[str, object], reason: str) -> None:
    with pytest.raises(KeyServiceError, match=reason) as err:
        node.service.set_key("openai", body)
    assert err.value.status == 422 and "1234567890" not in err.value.detail
    assert node.store.provider_credentials() == []


def test_bad_provider_name_and_no_master_key(node: Node) -> None:
    with pytest.raises(KeyServiceError, match="provider names are"):
        node.service.set_key("../etc", {"key": OPENAI_KEY})
    node.keys = None
    with pytest.raises(KeyServiceError, match=r"needs \[llm\] master_key") as err:
        node.service.set_key("openai", {"key": OPENAI_KEY})
    assert err.value.status == 422


def test_rotation_reencrypts_and_old_rows_open_until_then(node: Node) -> None:
    old = node.keys.current  # type: ignore[union-attr]
    node.service.set_key("openai", {"key": OPENAI_KEY})
    node.service.set_key("anthropic", {"key": ANTHROPIC_KEY})
    # The operator configures a new master key and moves the old one to previous_master_keys (a reload).
    new = new_master()
    node.keys = MasterKeys(new, (old,))
    listed = {p["provider"]: p for p in node.service.list()}
    assert listed["openai"]["usable"] and not listed["openai"]["current"]
    node.worker.replace_all({})
    node.service.set_key("groq", {"key": "gsk_" + "x" * 40})  # new rows: under the new key at once
    node.worker.replace_all(node.service.full_table().full or {})  # during rotation: all still open
    assert node.worker.get("openai") == OPENAI_KEY.encode()
    assert node.worker.get("anthropic") == ANTHROPIC_KEY.encode()
    before = {r.provider: r for r in node.store.provider_credentials()}
    result = node.service.rotate_master_key()
    assert result == {"master_key": new.id, "previous": [old.id], "reencrypted": ["anthropic", "openai"]}
    after = {r.provider: r for r in node.store.provider_credentials()}
    assert {r.key_id for r in after.values()} == {new.id}
    assert after["openai"].ciphertext != before["openai"].ciphertext
    assert after["groq"] == before["groq"]  # already under the new key: untouched
    # The old key can now leave the config: every row opens with the new one alone.
    node.keys = MasterKeys(new)
    table = node.service.full_table().full
    assert table == {"anthropic": ANTHROPIC_KEY, "groq": "gsk_" + "x" * 40, "openai": OPENAI_KEY}
    assert not node.logs
    audit = (node.state / "audit.log").read_text()
    assert '"event":"provider.rotate_master_key"' in audit and new.id in audit
    assert OPENAI_KEY.encode() not in node.everything_written()


def test_rotation_without_the_old_key_changes_nothing(node: Node) -> None:
    node.service.set_key("openai", {"key": OPENAI_KEY})
    before = node.store.provider_credentials()
    node.keys = MasterKeys(new_master())  # the old key dropped from the config too early
    with pytest.raises(
        KeyServiceError, match=r"neither llm\.master_key nor in llm\.previous_master_keys"
    ) as err:
        node.service.rotate_master_key()
    assert err.value.status == 409 and "nothing was re-encrypted" in err.value.detail
    assert node.store.provider_credentials() == before
    assert not node.service.list()[0]["usable"]


def test_a_row_that_does_not_open_is_left_out_of_the_push_and_logged(node: Node) -> None:
    node.service.set_key("openai", {"key": OPENAI_KEY})
    node.service.set_key("anthropic", {"key": ANTHROPIC_KEY})
    db = sqlite3.connect(node.state / "fastgw.db")
    db.execute("UPDATE provider_credentials SET provider = 'groq' WHERE provider = 'openai'")
    db.commit()
    db.close()
    assert node.service.full_table().full == {"anthropic": ANTHROPIC_KEY}
    assert node.logs == [
        f"PROVIDER KEY UNUSABLE: provider 'groq': the stored key does not decrypt under master key"
        f" {node.keys.current.id} (the row was changed, or belongs to another provider)"  # type: ignore[union-attr]
    ]
    row = node.store.provider_credential("anthropic")
    assert row is not None
    node.store.put_provider_credential(replace(row, ciphertext=row.ciphertext[:-1] + b"\0"))
    assert node.service.full_table().full == {}


def test_the_worker_registry_reads_a_push_off_the_wire(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker's control link does with the frames (process/control_link.py): decode, CACHES.apply;
    the llm handler then reads provider_key()."""
    monkeypatch.setattr(PROVIDER_KEYS, "_keys", {})
    node.service.set_key("openai", {"key": OPENAI_KEY})
    full = decode(encode(node.service.full_table()))
    assert isinstance(full, CachePush)
    CACHES.apply(full)
    assert provider_key("openai") == OPENAI_KEY.encode() and provider_key("groq") is None
    delete = decode(encode(CachePush(PROVIDER_KEYS_CACHE, delete=("openai",))))
    assert isinstance(delete, CachePush)
    CACHES.apply(delete)
    assert provider_key("openai") is None
    with pytest.raises(MessageError, match="bad entry") as err:
        CACHES.apply(CachePush(PROVIDER_KEYS_CACHE, put={"openai": 12345678}))
    assert "12345678" not in str(err.value)
