"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastgw import __version__

ROOT = Path(__file__).resolve().parents[1]


def fastgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    out = fastgw("version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fastgw {__version__}"


def test_check_quickstart_prints_summary() -> None:
    out = fastgw("check", str(ROOT / "conf" / "quickstart.toml"))
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout
    assert "route demo -> demo" in out.stdout


def test_check_examples(tmp_path: Path) -> None:
    # The TLS example names development certificates next to it: make them in a copy of the folder.
    from fastgw.tls.dev_certs import write_dev_certificates

    write_dev_certificates(tmp_path / "fastgw-dev-certs")
    for extra in (ROOT / "conf" / "examples").glob("*.json"):  # key sets the examples name
        (tmp_path / extra.name).write_text(extra.read_text())
    examples = sorted((ROOT / "conf" / "examples").glob("*.toml"))
    assert len(examples) >= 2
    for path in examples:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        # Secrets by reference: the API key example reads its pepper from the environment.
        out = fastgw("check", str(copy), env={"FASTGW_KEY_PEPPER": "p" * 32, "FASTGW_ADMIN_TOKEN": "t"})
        assert out.returncode == 0, f"{path}: {out.stderr}"


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[listeners]]\nbind = "127.0.0.1:1"\n[[routes]]\nname = "r"\npath = "/"\nupstream = "x"\n'
    )
    for command in ("check", "run"):
        out = fastgw(command, str(bad))
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0
        assert f"{bad}: routes[0].auth: missing required key" in out.stderr


def test_busy_port_is_one_line_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[[listeners]]\nbind = "127.0.0.1:{port}"\n[upstreams.u]\ntargets = ["127.0.0.1:1"]\n'
            '[[routes]]\nname = "r"\npath = "/"\nupstream = "u"\nauth = "none"\n'
        )
        out = fastgw("run", str(cfg))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"fastgw: cannot bind listener 'public' to 127.0.0.1:{port}: Address already in use (EADDRINUSE)"
    ]


def test_systemd_units_ship_the_hardening_the_docs_promise() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "conf" / "fastgw.service")
    service = unit["Service"]
    expected = {
        "Type": "notify",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "fastgw",  # static: /etc/fastgw is readable through its group (a dynamic user is in none)
        "Group": "fastgw",
        "UMask": "0077",
        "StateDirectory": "fastgw",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert int(service["LimitNOFILE"]) >= 65536
    assert "LoadCredential" in service
    socket_unit = configparser.ConfigParser(strict=False, interpolation=None)
    socket_unit.read(ROOT / "conf" / "fastgw.socket")
    # The socket's name is how fastgw matches it to a listener: the example config must use it.
    name = socket_unit["Socket"]["FileDescriptorName"]
    assert f'name = "{name}"' in (ROOT / "conf" / "examples" / "operations.toml").read_text()


def test_check_names_http2_and_the_redis_host_but_never_its_password(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        (ROOT / "conf" / "examples" / "cluster.toml")
        .read_text()
        .replace('url = "redis://127.0.0.1:6379/0"', 'url_secret = { env = "FASTGW_TEST_REDIS_URL" }')
    )
    out = fastgw("check", str(config), env={"FASTGW_TEST_REDIS_URL": "redis://:s3cret-pw@10.1.2.3:6379/0\n"})
    assert out.returncode == 0, out.stderr
    assert "http2=on" in out.stdout
    assert "rate limits shared through redis 10.1.2.3:6379/0" in out.stdout
    assert "s3cret" not in out.stdout + out.stderr
