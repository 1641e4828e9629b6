"""The admin token must be a secret nobody can guess: ``check``, ``run`` and a reload refuse a short or
repetitive one (one line naming the key, never the token), and a missing one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.admin import TOKEN
from tests.support.cli import fastgw
from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


def config_with_token(tmp_path: Path, token: str | None) -> Path:
    secret = tmp_path / "admin.token"
    if token is not None:
        secret.write_text(token + "\n")
    config = tmp_path / "gw.toml"
    config.write_text(
        '[[listeners]]\nbind = "127.0.0.1:0"\n[upstreams.u]\ntargets = ["127.0.0.1:1"]\n'
        '[[routes]]\nname = "r"\npath = "/"\nupstream = "u"\nauth = "none"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
        f'[admin]\nbind = "127.0.0.1:0"\ntoken = {{ file = "{secret}" }}\n'
    )
    return config


@pytest.mark.parametrize("token", ["hunter", "x" * 64, "0123456" * 5])
def test_check_and_run_refuse_a_guessable_admin_token(tmp_path: Path, token: str) -> None:
    config = config_with_token(tmp_path, token)
    out = fastgw("check", str(config))
    assert out.returncode == 2, out.stdout
    line = out.stderr.strip()
    assert line.startswith(f"fastgw: {config}: admin.token: the admin token (file ") and "\n" not in line
    assert "shorter than 32 bytes or too repetitive" in line and token not in line
    run = subprocess.run(
        [sys.executable, "-m", "fastgw", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2 and run.stderr.strip() == line


def test_a_random_admin_token_passes_and_a_missing_one_fails(tmp_path: Path) -> None:
    config = config_with_token(tmp_path, "3f9c1a7e5b2d8064" * 2)  # 32 bytes, as `openssl rand -hex 16`
    assert fastgw("check", str(config)).returncode == 0
    (tmp_path / "admin.token").unlink()
    out = fastgw("check", str(config))
    assert out.returncode == 2
    assert f"admin.token: cannot read secret file {tmp_path / 'admin.token'}" in out.stderr


def test_a_control_process_restarted_without_its_token_file_says_so_in_one_line(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """The token is read again when a control process starts: with its file gone since the config
    loaded, each restart printed a whole traceback (220 lines in 4 s) before the supervisor gave up
    restarting it for a while. One line naming the key now; the data plane serves on throughout."""
    secret = tmp_path / "admin.token"
    secret.write_text(TOKEN + "\n")
    admin_port = free_port()
    gw = gateway_factory(
        basic_config(
            upstream.port,
            extra=f'[admin]\nbind = "127.0.0.1:{admin_port}"\ntoken = {{ file = "{secret}" }}\n',
        )
    )
    secret.unlink()
    os.kill(gw.control_pid(), signal.SIGKILL)
    wait_until(lambda: "cannot start: " in gw.stderr(), 10, "the restarted control process's line")
    assert get(gw.port, "/still").status == 200
    [line] = [ln for ln in gw.stderr().splitlines() if "cannot start: " in ln][:1]
    assert "admin.token" in line and TOKEN not in gw.stderr()
    assert "Traceback" not in gw.stderr()
