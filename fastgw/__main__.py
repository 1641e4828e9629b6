"""Command line: ``fastgw run [CONFIG]``, ``fastgw check CONFIG``, ``fastgw cert dev``, ``fastgw version``.

User mistakes (a bad config, a busy port) get one precise line on stderr and exit status 2, never a
traceback. With no CONFIG, ``run`` serves the quickstart shipped inside the package, so it works from an
installed wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import resources

from fastgw import __version__
from fastgw.config.compiler import compile_config, load_snapshot
from fastgw.config.loader import ConfigError
from fastgw.snapshot import Snapshot

QUICKSTART = "quickstart.toml"


def _quickstart() -> tuple[bytes, str]:
    data = resources.files("fastgw").joinpath("data", QUICKSTART).read_bytes()
    return data, f"<built-in {QUICKSTART}>"


def _load(path: str | None) -> Snapshot:
    if path is None:
        data, name = _quickstart()
        return compile_config(data, name)
    return load_snapshot(path)


def _summary(snapshot: Snapshot) -> str:
    lines = [f"config OK: {snapshot.source} (snapshot {snapshot.id}, http1={snapshot.server.http1})"]
    for ls in snapshot.listeners:
        extra = " proxy_protocol" if ls.proxy_protocol else ""
        lines.append(f"  listener {ls.name}: {ls.host}:{ls.port}{extra}")
    for up in snapshot.upstreams.values():
        targets = ", ".join(t.label for t in up.targets)
        lines.append(f"  upstream {up.name}: {targets} ({up.balance})")
    for route in snapshot.routes:
        chain = ", ".join(p.name + (" (shadow)" if p.shadow else "") for p in route.chain) or "-"
        lines.append(f"  route {route.name} -> {route.upstream.name}; policies: {chain}")
    if snapshot.demo_upstream is not None:
        lines.append(f"  demo upstream: {snapshot.demo_upstream[0]}:{snapshot.demo_upstream[1]}")
    lines.extend(f"  warning: {w}" for w in snapshot.warnings)
    return "\n".join(lines)


def _cert_dev(directory: str) -> int:
    from pathlib import Path

    from fastgw.tls.dev_certs import write_dev_certificates

    out = write_dev_certificates(Path(directory))
    print(f"""wrote development certificates to {directory}/ (for this machine only, never for production):
  CA             {out.ca_cert}  (key {out.ca_key})
  server         {out.server_cert}  (key {out.server_key}), valid for localhost, 127.0.0.1 and ::1
  client (mTLS)  {out.client_cert}  (key {out.client_key})

Use them in a listener:
  [[listeners]]
  bind = "127.0.0.1:8443"
  tls = {{ certificates = [{{ cert = "{out.server_cert}", key = "{out.server_key}" }}] }}

Trust the CA per command:   curl --cacert {out.ca_cert} https://localhost:8443/
or system-wide (Debian):    cp {out.ca_cert} /usr/local/share/ca-certificates/fastgw-dev.crt
                            update-ca-certificates""")
    return 0


def _run(args: argparse.Namespace) -> int:
    snapshot = _load(args.config)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep the stdlib loop as a fallback
        runner = asyncio.run
    else:
        runner = uvloop.run
    from fastgw.server.worker import serve

    try:
        runner(serve(snapshot, args.config, ready=args.ready_file))
    except OSError as exc:
        print(f"fastgw: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgw", description="fastgw API security gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve a config (default: the built-in quickstart)")
    run.add_argument("config", nargs="?", help="path to a TOML config")
    run.add_argument("--ready-file", help="write the bound host:port list here once listening")
    check = sub.add_parser("check", help="validate a config and print a summary")
    check.add_argument("config", help="path to a TOML config")
    sub.add_parser("version", help="print the version")
    cert = sub.add_parser("cert", help="certificates for development")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    dev = cert_sub.add_parser("dev", help="create a local CA, a localhost server and a client certificate")
    dev.add_argument("--dir", default="fastgw-dev-certs", help="where to write them (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "version":
            print(f"fastgw {__version__}")
            return 0
        if args.command == "cert":
            return _cert_dev(args.dir)
        if args.command == "check":
            print(_summary(load_snapshot(args.config)))
            return 0
        return _run(args)
    except ConfigError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
