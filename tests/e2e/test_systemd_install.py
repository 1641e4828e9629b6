"""The documented systemd install, step by step, under a non-root uid.

There is no systemd in the test environment, so the test does what the unit file asks of it, reading the
unit itself: it runs the install commands from conf/fastgw.service's header (paths moved under a scratch
root; the `useradd` step is played by the existing unprivileged user `nobody` and its group), then, as
systemd would for the [Service] section: creates StateDirectory=/LogsDirectory=/RuntimeDirectory= owned by
the service user with their modes, copies each LoadCredential= file (read as root) into a credentials
directory only that user can read, sets UMask=, drops to User=/Group= and runs ExecStartPre= and
ExecStart= with the environment systemd passes (STATE_DIRECTORY, CREDENTIALS_DIRECTORY, NOTIFY_SOCKET...).
It then checks that the gateway starts (READY=1), reads its config and both secrets, and creates its
private files 0600.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import get
from tests.support.ports import free_port
from tests.support.systemd import NotifySocket
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "conf" / "fastgw.service"
SERVICE_USER = "fastgw"  # the name the unit and its install steps use

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="laying out root-owned files and switching uid, as systemd does, needs root"
)


def _unit() -> tuple[list[str], dict[str, list[str]]]:
    """The install commands of the unit's header comment, and the [Service] settings (name -> values)."""
    commands: list[str] = []
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        if raw.startswith("#   "):
            commands.append(raw[4:].split("  # ")[0].strip())
        elif raw.startswith("["):
            section = raw.strip("[]")
        elif section == "Service" and "=" in raw and not raw.startswith("#"):
            key, _, value = raw.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return commands, settings


@pytest.fixture
def root() -> Iterator[Path]:
    """A scratch root that the unprivileged service user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fastgw-install-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_documented_install_starts_as_an_unprivileged_user(root: Path, upstream: TestUpstream) -> None:
    user = pwd.getpwnam("nobody")
    group = grp.getgrgid(user.pw_gid)
    uid, gid = user.pw_uid, user.pw_gid
    commands, service = _unit()
    assert service["User"] == [SERVICE_USER] and service["Group"] == [SERVICE_USER], service
    assert "DynamicUser" not in service

    def moved(text: str) -> str:
        return re.sub(r"(?<![\w.])/(etc|var|run)/", lambda m: f"{root}/{m.group(1)}/", text)

    # 1. The install steps, as root.
    ran = []
    for command in commands:
        if command.startswith("useradd "):
            assert f" {SERVICE_USER}" in command  # played by nobody/nogroup
            continue
        if command.startswith("systemctl "):
            continue  # this test is systemd
        line = moved(command).replace(f"-g {SERVICE_USER}", f"-g {group.gr_name}")
        if line.startswith("install ") and "/etc/systemd/" in line:
            (root / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", "-c", line], cwd=REPO, check=True)
        ran.append(line)
    etc = root / "etc" / "fastgw"
    config = etc / "fastgw.toml"
    assert config.exists(), ran
    assert (_mode(etc), _mode(config), config.stat().st_uid) == (0o750, 0o640, 0)
    assert _mode(etc / "credentials") == 0o700
    # The example config with test addresses (the file keeps its owner and mode).
    admin_port, port = free_port(), free_port()
    logs = root / "var" / "log" / "fastgw"
    text = config.read_text()
    for old, new in (
        ('bind = "0.0.0.0:8080"', f'bind = "127.0.0.1:{port}"'),
        ('bind = "127.0.0.1:9901"', f'bind = "127.0.0.1:{admin_port}"'),
        ('"127.0.0.1:9000", "127.0.0.1:9001"', f'"127.0.0.1:{upstream.port}"'),
        ("workers = 0 ", "workers = 2 "),
        ('"/var/log/fastgw/access.log"', f'"{logs}/access.log"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    assert (_mode(config), config.stat().st_gid) == (0o640, gid)

    # 2. What systemd does before ExecStart.
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    for key, var, default_mode in (
        ("StateDirectory", "STATE_DIRECTORY", "0755"),
        ("LogsDirectory", "LOGS_DIRECTORY", "0755"),
        ("RuntimeDirectory", "RUNTIME_DIRECTORY", "0755"),
    ):
        for name in service.get(key, []):
            base = {"StateDirectory": "var/lib", "LogsDirectory": "var/log", "RuntimeDirectory": "run"}[key]
            directory = root / base / name
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, uid, gid)
            directory.chmod(int(service.get(f"{key}Mode", [default_mode])[0], 8))
            env[var] = str(directory)
    credentials = root / "run" / "credentials" / "fastgw.service"
    credentials.mkdir(parents=True)
    secrets: dict[str, bytes] = {}
    for spec in service.get("LoadCredential", []):
        name, _, source = spec.partition(":")
        secrets[name] = Path(moved(source)).read_bytes()  # read as root, like systemd
        target = credentials / name
        target.write_bytes(secrets[name])
        os.chown(target, uid, gid)
        target.chmod(0o400)
    os.chown(credentials, uid, gid)
    credentials.chmod(0o500)
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    notify = NotifySocket(root / "notify.sock")
    (root / "notify.sock").chmod(0o777)
    env["NOTIFY_SOCKET"] = str(root / "notify.sock")
    umask = int(service.get("UMask", ["0022"])[0], 8)

    def set_umask() -> None:
        os.umask(umask)

    def argv(exec_line: str) -> list[str]:
        """As User=/Group=: setpriv switches the uid and gid and drops the supplementary groups. It keeps
        its capabilities up to the execve, whose path lookup may need them where the test's interpreter
        sits under /root; the gateway itself runs with none (checked below)."""
        words = shlex.split(moved(exec_line))
        assert words[0] == "/usr/local/bin/fastgw", words
        switch = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        return [*switch, sys.executable, "-m", "fastgw", *words[1:]]

    # 3. ExecStartPre= and ExecStart= as the service user.
    check = subprocess.run(
        argv(service["ExecStartPre"][0]),
        env=env,
        preexec_fn=set_umask,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    stderr = root / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            argv(service["ExecStart"][0]),
            env=env,
            preexec_fn=set_umask,  # noqa: PLW1509 - the umask only, before exec
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or any(m.get("READY") == "1" for m in notify.poll()),
            20,
            "READY=1",
        )
        assert proc.poll() is None, stderr.read_text()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status, status
        assert "\nCapEff:\t0000000000000000\n" in status, status
        assert get(port, "/api/x").status == 200
        # The admin token came from the credential: the admin API accepts it.
        token = secrets["admin-token"].strip()
        with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n" % token)
            assert s.recv(200).startswith(b"HTTP/1.1 200"), stderr.read_text()
        state = Path(env["STATE_DIRECTORY"])
        wait_until((state / "audit.log").exists, 5, "the audit log")
        private = sorted(p.name for p in state.iterdir() if p.name.startswith(("fastgw.db", "audit")))
        assert {"fastgw.db", "audit.log"} <= set(private), private
        for name in private:
            assert _mode(state / name) == 0o600, (name, oct(_mode(state / name)))
            assert (state / name).stat().st_uid == uid
        assert "audit.key" not in private  # the audit key is the credential, not a generated file
        assert "Traceback" not in stderr.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        notify.sock.close()
    assert code == 0, stderr.read_text()
