"""Operations from the command line: reload/stop/rollback via the pid file, diff, secrets by reference."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import fastgw
from tests.support.clients import get
from tests.support.full_disk import no_space
from tests.support.gateways import Gateway, basic_config
from tests.support.load import snapshot_id
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


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
    v2_id = snapshot_id(gw.config.read_text())
    assert out.stdout.strip() == (
        f"fastgw: reload done: snapshot {snapshot_id(v1)} -> {v2_id} (pid {gw.proc.pid})"
    )
    # The command returned after the workers acknowledged: version 2 serves now, no waiting.
    assert get(gw.port, "/").header(b"x-v") == b"2"
    # Rollback: the previous valid config, by its snapshot id, although the file still says version 2.
    out = fastgw("rollback", str(gw.config), env={"STATE_DIRECTORY": str(gw.state)})
    assert out.returncode == 0, out.stderr
    assert get(gw.port, "/").header(b"x-v") == b"1"
    assert f"reload (rollback) complete: snapshot {v2_id} -> {snapshot_id(v1)}" in gw.stderr()
    history = sorted(p.name for p in (gw.state / "configs").glob("*/*.toml"))
    assert [h.split("-")[1] for h in history] == [f"{snapshot_id(v1)}.toml", f"{v2_id}.toml"]
    # A second rollback has nowhere older to go: refused with the gateway's reason, nothing changes.
    out = fastgw("rollback", "--pid-file", pid_file)
    assert out.returncode == 1
    assert out.stderr.startswith("fastgw: rollback refused: ") and out.stderr.count("\n") == 1
    assert "no previous valid config to roll back to" in out.stderr
    assert get(gw.port, "/").header(b"x-v") == b"1"
    out = fastgw("stop", "--pid-file", pid_file)
    assert (out.returncode, out.stdout.strip()) == (0, f"fastgw: stopped (pid {gw.proc.pid})")
    assert gw.proc.poll() == 0  # the command waited for the exit
    assert fastgw("reload", "--pid-file", pid_file).returncode == 2  # pid file removed at exit


def test_reload_that_the_gateway_refuses_exits_1_with_its_reason(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """Invalid configs, missing secrets and settings fixed at start: each refused with file, key and
    reason on one line, exit status 1, the running config untouched."""
    gw = gateway_factory(basic_config(upstream.port, route='response_headers = { set = { "x-v" = "1" } }'))
    good = gw.config.read_text()
    refusals = [
        (good.replace('auth = "none"', 'auth = "maybe"'), "routes[0].auth: invalid value 'maybe'"),
        (
            good + '\n[admin]\nbind = "127.0.0.1:0"\ntoken = { env = "FASTGW_TEST_UNSET_TOKEN" }\n',
            "admin.token: environment variable FASTGW_TEST_UNSET_TOKEN is not set",
        ),
        (good + "\n[process]\nworkers = 3\n", "process.workers: changing it needs a restart"),
        (good + "\n[rate_limits]\ncapacity = 1024\n", "rate_limits.capacity: changing it needs a restart"),
        (
            good.replace("[[listeners]]", "[[listeners]]\nbacklog = 16"),
            "listeners: changing it needs a restart",
        ),
        (good.replace('target = "', 'include_query = true\ntarget = "'), "access_log: changing it needs a"),
        (good.replace("[server]", f'[state]\npid_file = "{tmp_path}/x.pid"\n[server]'), "state.pid_file: "),
        (good + "\n[process]\nworkers = 99999999999999999999999\n", "is more than the maximum 1024"),
    ]
    for text, reason in refusals:
        gw.config.write_text(text)
        out = fastgw("reload", "--pid-file", str(gw.state / "fastgw.pid"))
        assert out.returncode == 1, (reason, out.stdout, out.stderr)
        assert out.stderr.startswith(f"fastgw: reload refused: {gw.config}: ") and reason in out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
        assert get(gw.port, "/").header(b"x-v") == b"1"
    gw.config.write_text(good.replace('"x-v" = "1"', '"x-v" = "2"'))
    assert fastgw("reload", str(gw.config), env={"STATE_DIRECTORY": str(gw.state)}).returncode == 0
    assert get(gw.port, "/").header(b"x-v") == b"2"


def test_a_reload_on_a_full_state_disk_is_refused_with_the_cause_in_one_line(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """The state directory takes no writes (ENOSPC): the status file's next version and the audit log.
    The reload is refused, the running config stays, and `fastgw reload` prints why in one line (its
    answer written over the old status file in place), as the supervisor's log does; the control process
    says the refusal is not in the audit log, and the log claims nothing. Before, the reload went ahead
    with neither its answer nor its record written, and the command said it got no answer."""
    gw = gateway_factory(basic_config(upstream.port, route='response_headers = { set = { "x-v" = "1" } }'))
    v1 = gw.config.read_text()
    gw.config.write_text(v1.replace('"x-v" = "1"', '"x-v" = "2"'))
    status, audit = gw.state / "fastgw.status.json", gw.state / "audit.log"
    with no_space(gw.state / f"fastgw.status.json.{gw.proc.pid}.tmp", audit):
        out = fastgw("reload", "--pid-file", str(gw.state / "fastgw.pid"), "--timeout", "10")
        assert get(gw.port, "/").header(b"x-v") == b"1"
        cause = f"cannot write {status}: No space left on device: free space on its disk, then retry"
        assert (out.returncode, out.stdout) == (1, ""), out.stderr
        assert out.stderr == f"fastgw: reload refused: {cause} (a reload must record its outcome there)\n"
        assert f"reload failed (SIGHUP), keeping snapshot {snapshot_id(v1)}: {cause}" in gw.stderr()
        lost = (
            f"AUDIT WRITE FAILED (reload): {audit}: No space left on device; this reload is not in the audit"
        )
        wait_until(lambda: lost in gw.stderr(), 5, "the control process's line for the refusal")
    assert "Traceback" not in gw.stderr()
    assert [r["event"] for r in audit_records(audit)] == ["start"]
    # Room again: the same reload goes through, and is recorded.
    out = fastgw("reload", "--pid-file", str(gw.state / "fastgw.pid"))
    assert out.returncode == 0, out.stderr
    assert get(gw.port, "/").header(b"x-v") == b"2"
    wait_until(lambda: len(audit_records(audit)) == 2, 5, "the reload's record")
    assert [(r["event"], r.get("ok")) for r in audit_records(audit)] == [("start", None), ("reload", True)]
    verify = fastgw("audit", "verify", "--config", str(gw.config), env={"STATE_DIRECTORY": str(gw.state)})
    assert verify.returncode == 0 and "OK, 2 records" in verify.stdout, verify.stdout + verify.stderr


def audit_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stop_exits_1_when_the_gateway_does_not_stop_in_time(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    pid_file = str(gw.state / "fastgw.pid")
    os.kill(gw.proc.pid, signal.SIGSTOP)  # a supervisor that cannot act on SIGTERM
    try:
        out = fastgw("stop", "--pid-file", pid_file, "--timeout", "0.5")
        assert out.returncode == 1
        assert out.stderr == f"fastgw: stop failed: the gateway (pid {gw.proc.pid}) still runs after 0.5s\n"
        # And a reload that gets no answer is not reported as done either.
        out = fastgw("reload", "--pid-file", pid_file, "--timeout", "0.5")
        assert out.returncode == 1 and "reload not confirmed: no answer from the gateway" in out.stderr
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)
    # The pending SIGTERM now stops it; a second stop waits for that.
    out = fastgw("stop", "--pid-file", pid_file)
    assert out.returncode in (0, 2), out.stderr  # 2: it was gone before the command read the pid file
    assert gw.proc.wait(15) == 0


def test_rollback_history_is_per_config_file(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """Two config files sharing a state directory: a rollback of one never lands in the other's
    configs (which would also restart the control process for its admin settings)."""
    state = tmp_path / "shared-state"
    other = gateway_factory(
        basic_config(upstream.port, route='response_headers = { set = { "x-v" = "other" } }')
        + f'\n[state]\ndir = "{state}"\n'
    )
    assert other.stop() == 0
    gw = gateway_factory(
        basic_config(upstream.port, route='response_headers = { set = { "x-v" = "1" } }')
        + f'\n[state]\ndir = "{state}"\n'
    )
    v1 = gw.config.read_text()
    gw.config.write_text(v1.replace('"x-v" = "1"', '"x-v" = "2"'))
    assert fastgw("reload", str(gw.config)).returncode == 0
    listing = fastgw("rollback", "--list", str(gw.config))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith(f"config history of {gw.config} (in {state}/configs/gw1-")
    assert re.search(
        rf"^ +1  snapshot {snapshot_id(v1)}  in service since \S+Z  <- `fastgw rollback`", lines[1]
    )
    assert re.search(rf"^ +2  snapshot {snapshot_id(gw.config.read_text())} .*<- running$", lines[2])
    assert "stays in force until `fastgw reload`" in listing.stdout
    assert fastgw("rollback", str(gw.config)).returncode == 0
    assert get(gw.port, "/").header(b"x-v") == b"1"
    out = fastgw("rollback", str(gw.config))
    assert out.returncode == 1 and "no previous valid config to roll back to" in out.stderr
    assert get(gw.port, "/").header(b"x-v") == b"1"
    assert "restarting the control process" not in gw.stderr()
    assert "`fastgw rollback` has nowhere to go" in fastgw("rollback", "--list", str(gw.config)).stdout


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
