"""The one validation path (config/validate.py) and what a reload cannot change."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.config.history import ConfigHistory
from fastgw.config.validate import needs_restart, validate
from tests.support.configs import MINIMAL

BASE = MINIMAL


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ('[[listeners]]\nbind = "127.0.0.1:8081"\nname = "second"\n', "listeners"),
        ("[process]\nworkers = 4\n", "process.workers"),
        ("[process]\nreuse_port = true\n", "process.reuse_port"),
        ("[process]\nwatchdog = false\n", "process.watchdog"),
        ("[rate_limits]\ncapacity = 1024\n", "rate_limits.capacity"),
        ('[state]\ndir = "/tmp/elsewhere"\n', "state.dir"),
        ('[state]\npid_file = "/tmp/elsewhere.pid"\n', "state.pid_file"),
        ('[demo_upstream]\nbind = "127.0.0.1:9999"\n', "demo_upstream"),
    ],
)
def test_a_reload_refuses_what_needs_a_restart_naming_the_key(change: str, key: str, tmp_path: Path) -> None:
    state = f'[state]\ndir = "{tmp_path}"\n' if "[state]" not in change else ""
    running = validate((BASE + state).encode(), "gw.toml")
    new = validate((BASE + state + change).encode(), "gw.toml")
    refusal = needs_restart(running, new)
    assert refusal is not None and refusal.key == key, refusal
    assert str(refusal).startswith(f"gw.toml: {key}: changing it needs a restart (")


def test_a_reload_applies_everything_else(tmp_path: Path) -> None:
    running = validate((BASE + f'[state]\ndir = "{tmp_path}"\n').encode(), "gw.toml")
    changed = BASE.replace('name = "r"', 'name = "r2"') + (
        f'[state]\ndir = "{tmp_path}"\nkeep_configs = 3\n'
        "[server]\nheader_timeout = 5\nserver_name = 'edge'\n[process]\nreload_timeout = 3\n"
    )
    assert needs_restart(running, validate(changed.encode(), "gw.toml")) is None


def test_history_is_kept_per_config_file(tmp_path: Path) -> None:
    a, b = (
        ConfigHistory(str(tmp_path), 10, str(tmp_path / "a.toml")),
        ConfigHistory(str(tmp_path), 10, str(tmp_path / "b.toml")),
    )
    snap_a1 = validate(BASE.encode(), str(tmp_path / "a.toml"))
    snap_b1 = validate((BASE + "# b\n").encode(), str(tmp_path / "b.toml"))
    snap_b2 = validate((BASE + "# b2\n").encode(), str(tmp_path / "b.toml"))
    a.record(BASE.encode(), snap_a1)
    b.record(b"b1", snap_b1)
    b.record(b"b2", snap_b2)
    assert a.directory != b.directory
    assert b.previous(snap_b2.id) == (b"b1", str(tmp_path / "b.toml"))
    assert b.previous(snap_b1.id) is None  # never a's config
    assert a.previous(snap_a1.id) is None
