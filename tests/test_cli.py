"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from fastgw import __version__
from tests.support.cli import fastgw, fastgw_each

ROOT = Path(__file__).resolve().parents[1]


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
    # check resolves every secret reference, as run does: environment variables and systemd credentials.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "admin-token").write_text("t" + os.urandom(32).hex() + "\n")
    (credentials / "audit-key").write_text("k" * 32)
    (credentials / "introspection-secret").write_text("introspection-client-secret")
    env = {
        "FASTGW_KEY_PEPPER": "p" * 32,
        "FASTGW_ADMIN_TOKEN": os.urandom(32).hex(),
        "FASTGW_STORE_DSN": "postgresql://fastgw:pw@127.0.0.1:5432/fastgw",  # cluster.toml's (never dialled)
        "CREDENTIALS_DIRECTORY": str(credentials),
        # llm.toml's provider keys (check resolves them; nothing is called)
        "OPENAI_API_KEY": "sk-example",
        "OPENAI_API_KEY_SPARE": "sk-example-spare",
        "AZURE_OPENAI_API_KEY": "azure-example",
        "ANTHROPIC_API_KEY": "sk-ant-example",
        "GEMINI_API_KEY": "gemini-example",
        "FASTGW_BUDGET_ALERT_SECRET": "budget-alert-example",  # llm-budgets.toml's webhook key
    }
    for path in examples:
        (tmp_path / path.name).write_text(path.read_text())
    outs = fastgw_each([(("check", str(tmp_path / path.name)), env) for path in examples])
    for path, out in zip(examples, outs, strict=True):
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
    env = {
        "FASTGW_TEST_REDIS_URL": "redis://:s3cret-pw@10.1.2.3:6379/0\n",
        # The example's other secrets: its admin token, key pepper and store DSN (never dialled by check).
        "FASTGW_ADMIN_TOKEN": os.urandom(32).hex(),
        "FASTGW_KEY_PEPPER": "p" * 32,
        "FASTGW_STORE_DSN": "postgresql://fastgw:s3cret-pw@10.1.2.4:5432/fastgw",
    }
    out = fastgw("check", str(config), env=env)
    assert out.returncode == 0, out.stderr
    assert "http2=on" in out.stdout
    assert "rate limits shared through redis 10.1.2.3:6379/0" in out.stdout
    assert "s3cret" not in out.stdout + out.stderr


def test_check_and_run_refuse_the_same_bad_configs_with_the_same_line(tmp_path: Path) -> None:
    """`check` and `run` share one validation path: each bad config is refused by both, exit 2, with
    the same one line naming file, key and reason (and `run` never starts on it, never hangs)."""
    base = (
        '[[listeners]]\nbind = "127.0.0.1:0"\n[upstreams.u]\ntargets = ["127.0.0.1:1"]\n'
        '[[routes]]\nname = "r"\npath = "/"\nupstream = "u"\nauth = "none"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    missing = tmp_path / "no-such-secret"
    credentials = tmp_path / "credentials"  # exists, holds nothing
    credentials.mkdir()
    huge = "1" + "0" * 400  # beyond any float
    cases = [
        (
            base + f'[admin]\ntoken = {{ file = "{missing}" }}\n',
            f"admin.token: cannot read secret file {missing}: No such file or directory",
        ),
        (
            base + '[admin]\ntoken = { env = "FASTGW_TEST_NO_SUCH_VAR" }\n',
            "admin.token: environment variable FASTGW_TEST_NO_SUCH_VAR is not set",
        ),
        (
            base + '[audit]\nkey = { credential = "audit-key" }\n',
            f"audit.key: cannot read secret file {credentials / 'audit-key'}: No such file or directory",
        ),
        (
            base + "[process]\nworkers = 99999999999999999999999\n",
            "process.workers: 99999999999999999999999 is more than the maximum 1024 (",
        ),
        (
            base + "[rate_limits]\ncapacity = 1000000000000\n",
            "rate_limits.capacity: 1000000000000 is more than the maximum 16777216 (",
        ),
        (
            base + "[server]\nheader_timeout = nan\n",
            "server.header_timeout: expected a finite number, got nan",
        ),
        (base + "[server]\ndrain_timeout = inf\n", "server.drain_timeout: expected a finite number, got inf"),
        (
            base + "[server]\nidle_timeout = 1e300\n",
            "server.idle_timeout: 1e+300 is more than the maximum 86400 (",
        ),
        (
            base + f"[process]\nreload_timeout = {huge}\n",
            f"process.reload_timeout: {huge} is too large a number",
        ),
        (
            base.replace('bind = "127.0.0.1:0"', 'bind = "127.0.0.1:0"\nbacklog = 10000000000'),
            "listeners[0].backlog: 10000000000 is more than the maximum 65535 (",
        ),
    ]
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if memory < 2 * 1024 * (1 << 24) * 32:  # 512 GiB of counters: more than half of this machine
        cases.append(
            (
                base + "[process]\nworkers = 1024\n[rate_limits]\ncapacity = 16777216\n",
                "rate_limits.capacity: 1024 workers x 16777216 cells x 32 bytes = 524288 MiB of shared",
            )
        )
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    configs = [tmp_path / f"bad-{n}.toml" for n in range(len(cases))]
    for config, (text, _expected) in zip(configs, cases, strict=True):
        config.write_text(text)
    outs = iter(fastgw_each([((command, str(c)), env) for c in configs for command in ("check", "run")]))
    for config, (text, expected) in zip(configs, cases, strict=True):
        lines = {}
        for command in ("check", "run"):
            out = next(outs)
            assert out.returncode == 2, (command, text, out.stdout, out.stderr)
            assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
            lines[command] = out.stderr
        assert lines["check"] == lines["run"], lines
        assert lines["check"].startswith(f"fastgw: {config}: {expected}"), (lines["check"], expected)
    # --workers goes through the same maximum.
    config = tmp_path / "bad.toml"
    config.write_text(base)
    out = fastgw("run", str(config), "--workers", "5000")
    assert out.returncode == 2 and out.stderr.startswith("fastgw: --workers: 5000 is not between 0 and 1024")


def test_usage_names_the_usage_kept_on_disk_that_its_totals_leave_out(tmp_path: Path) -> None:
    """Batches the store could not take yet (the ledger's spool) and reports a worker stopped with while
    no control process ran are in the state directory, not the store: the totals read low without a
    word until a control process added them. Each is named on stderr; the totals stay the store's."""
    from fastgw.control.ledger_spool import SPOOL_FILE, WORKER_LEFT_PREFIX, LedgerSpool, batch_line

    env = {"STATE_DIRECTORY": str(tmp_path)}
    clean = fastgw("usage", "--format", "json", env=env)
    assert (clean.returncode, clean.stdout.strip(), clean.stderr) == (0, "[]", "")
    row = ["2026-12-07", "acme", "k_1", "", "demo-chat", "demo", "llm", 1, 10, 5, 0, 0, 500, 0, 0]
    spool = LedgerSpool(str(tmp_path / SPOOL_FILE), lambda line: None)
    assert spool.append("5f0c1e9a2b7d4c38", 1, [row])
    spool.close()
    (tmp_path / f"{WORKER_LEFT_PREFIX}0a1b2c3d4e5f6071.jsonl").write_bytes(
        batch_line("0a1b2c3d4e5f6071", 1, [row])
    )
    out = fastgw("usage", "--format", "json", env=env)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2, out.stderr
    assert f"{SPOOL_FILE} holds usage the store could not take yet" in lines[0]
    assert "holds usage a worker stopped with while no control process ran" in lines[1]
    assert all(line.startswith("fastgw: usage: ") and "not in these totals" in line for line in lines)
