"""Several nodes writing audit logs against one shared store: every record names the node that made the
change ([cluster] node, else host and state directory), and each node's chain has its own anchor in the
database, so nodes whose logs share a path never overwrite each other's anchor."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fastgw.audit import AuditLog, verify
from fastgw.config.errors import ConfigError
from fastgw.config.validate import validate
from fastgw.store import node_name, this_node
from fastgw.store.postgres import PostgresStore
from tests.support.configs import MINIMAL

KEY = b"k" * 32


def records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_each_node_keeps_its_own_anchor_and_names_itself_in_every_record(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same log path, "audit.log", on two machines: here two working directories standing in for them.
    homes = {name: tmp_path / name for name in ("node-a", "node-b")}
    stores = {name: PostgresStore(postgres_dsn, node=name, connect_timeout=5) for name in homes}
    try:
        logs = {}
        for name, home in homes.items():
            home.mkdir()
            monkeypatch.chdir(home)
            logs[name] = AuditLog("audit.log", KEY, stores[name], name)
        for event, name in [("key.revoke", "node-a"), ("key.create", "node-b"), ("key.revoke", "node-a")]:
            monkeypatch.chdir(homes[name])
            logs[name].append(event, key="k_1")
        for name, store in stores.items():
            written = records(homes[name] / "audit.log")
            anchor = store.audit_anchor("audit.log")
            assert anchor is not None and anchor.seq == len(written) == {"node-a": 2, "node-b": 1}[name]
            assert {r["node"] for r in written} == {name}
            result = verify(str(homes[name] / "audit.log"), KEY, anchor)
            assert result.ok, result.problem
    finally:
        for store in stores.values():
            store.close()


def config(tmp_path: Path, cluster: str) -> bytes:
    return (MINIMAL + f'[state]\ndir = "{tmp_path}"\n[cluster]\n{cluster}\n').encode()


def test_the_node_name_comes_from_the_config_or_the_host_and_state_directory(tmp_path: Path) -> None:
    named = validate(config(tmp_path, 'node = "eu-1"'), "gw.toml")
    assert this_node(str(tmp_path), named.store) == "eu-1"
    unnamed = validate(config(tmp_path, ""), "gw.toml")
    assert this_node(str(tmp_path), unnamed.store) == node_name(str(tmp_path))
    assert node_name(str(tmp_path / "a")) != node_name(str(tmp_path / "b"))  # two nodes on one machine


@pytest.mark.parametrize("node", ['"a|b"', '"line\\nbreak"', f'"{"n" * 201}"'])
def test_a_bad_node_name_is_refused_naming_the_key(tmp_path: Path, node: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(config(tmp_path, f"node = {node}"), "gw.toml")
    assert "cluster.node" in str(err.value)
