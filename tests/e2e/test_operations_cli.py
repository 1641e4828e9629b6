"""Operations from the command line: reload/stop/rollback via the pid file, diff, secrets by reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Gateway, TestUpstream, basic_config, get, wait_until
from tests.e2e.test_supervisor import snapshot_id
from tests.test_cli import fastgw


def test_reload_rollback_and_stop_through_the_pid_file(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, route='response_headers = { set = { "x-v" = "1" } }'))
    pid_file = str(gw.state / "fastgw.pid")
    assert (gw.state / "fastgw.pid").read_text().strip() == str(gw.proc.pid)
    v1 = gw.config.read_text()
    gw.config.write_text(v1.replace('"x-v" = "1"', '"x-v" = "2"'))
    out = fastgw("reload", "--pid-file", pid_file)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: get(gw.port, "/").header(b"x-v") == b"2", 5, "version 2 to serve")
    # Rollback: the previous valid config, by its snapshot id, although the file still says version 2.
    out = fastgw("rollback", str(gw.config), env={"STATE_DIRECTORY": str(gw.state)})
    assert out.returncode == 0, out.stderr
    wait_until(lambda: get(gw.port, "/").header(b"x-v") == b"1", 5, "version 1 to serve again")
    assert (
        f"reload (rollback) complete: snapshot {snapshot_id(gw.config.read_text())} -> {snapshot_id(v1)}"
        in (gw.stderr())
    )
    history = sorted(p.name for p in (gw.state / "configs").glob("*.toml"))
    assert [h.split("-")[1] for h in history] == [
        f"{snapshot_id(v1)}.toml",
        f"{snapshot_id(gw.config.read_text())}.toml",
    ]
    # A second rollback has nowhere older to go: reported, nothing changes.
    fastgw("rollback", "--pid-file", pid_file)
    wait_until(lambda: "no previous valid config to roll back to" in gw.stderr(), 5, "the refusal")
    assert get(gw.port, "/").header(b"x-v") == b"1"
    out = fastgw("stop", "--pid-file", pid_file)
    assert out.returncode == 0
    assert gw.proc.wait(15) == 0
    assert fastgw("reload", "--pid-file", pid_file).returncode == 2  # pid file removed at exit


def test_signal_commands_explain_a_missing_pid_file(tmp_path: Path) -> None:
    out = fastgw("reload", "--pid-file", str(tmp_path / "nope.pid"))
    assert out.returncode == 2
    assert out.stderr.startswith(f"fastgw: cannot read pid file {tmp_path / 'nope.pid'}")


def test_diff_names_each_changed_key(tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    new = tmp_path / "new.toml"
    base = basic_config(9, route='network = { deny = ["10.0.0.0/8"], mode = "shadow" }')
    old.write_text(base.replace("{port}", "8080").replace("{log}", "off"))
    changed = (
        base.replace('mode = "shadow"', 'mode = "enforce"').replace(
            'targets = ["127.0.0.1:9"]', 'targets = ["127.0.0.1:9", "127.0.0.1:10"]'
        )
        + '\n[[routes]]\nname = "extra"\npath = "/extra"\nupstream = "backend"\nauth = "none"\n'
    )
    new.write_text(changed.replace("{port}", "8080").replace("{log}", "off"))
    out = fastgw("diff", str(old), str(new))
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert "~ routes[main].network.mode: 'shadow' -> 'enforce'" in lines
    assert "~ upstreams[backend].targets: ['127.0.0.1:9'] -> ['127.0.0.1:9', '127.0.0.1:10']" in lines
    assert "+ routes[extra]" in lines
    assert len(lines) == 3, lines
    same = fastgw("diff", str(old), str(old))
    assert same.returncode == 0 and "no differences" in same.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[[routes]]\nname = 1\n")
    out = fastgw("diff", str(old), str(broken))
    assert out.returncode == 2 and out.stderr.startswith(f"fastgw: {broken}: ")


def test_secrets_are_references_never_inline_never_echoed(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    base = basic_config(9).replace("{port}", "8080").replace("{log}", "off")
    config.write_text(base + '\n[admin]\ntoken = "hunter2-secret"\n')
    out = fastgw("check", str(config))
    assert out.returncode == 2
    assert "admin.token: secrets are never written inline" in out.stderr
    assert "hunter2" not in out.stderr
    config.write_text(base + '\n[admin]\ntoken = { env = "FASTGW_TEST_NO_SUCH_VAR" }\n')
    out = fastgw("run", str(config))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"fastgw: {config}: admin.token: environment variable FASTGW_TEST_NO_SUCH_VAR is not set"
    )
    config.write_text(base + '\n[admin]\ntoken = { credential = "admin-token" }\n')
    out = fastgw("run", str(config), env={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert out.returncode == 2
    assert f"cannot read secret file {tmp_path / 'creds' / 'admin-token'}" in out.stderr
    config.write_text(base + '\n[admin]\ntoken = { env = "A", file = "b" }\n')
    out = fastgw("check", str(config))
    assert "admin.token: name exactly one of file, env or credential" in out.stderr
