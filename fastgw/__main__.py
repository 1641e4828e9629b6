"""Command line: run, check, diff, reload, stop, rollback, audit verify|anchor, store migrate, cert dev,
version.

User mistakes (a bad config, a busy port) get one precise line on stderr and exit status 2, never a
traceback. With no CONFIG, ``run`` serves the quickstart shipped inside the package, so it works from an
installed wheel. ``check`` and ``run`` validate through the same function (config/validate.py).

``reload``, ``rollback`` and ``stop`` signal the supervisor named by the pid file, then wait for its
answer in the status file beside it (process/status_file.py): exit 0 when the gateway applied the reload
or stopped, 1 with the gateway's reason on one line when it refused, or did not answer or stop in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from importlib import resources
from typing import Any

import orjson

from fastgw import __version__
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError, read_config_bytes
from fastgw.config.validate import load, locate, validate
from fastgw.snapshot import Snapshot

QUICKSTART = "quickstart.toml"


def _quickstart() -> tuple[bytes, str]:
    data = resources.files("fastgw").joinpath("data", QUICKSTART).read_bytes()
    return data, f"<built-in {QUICKSTART}>"


def _load(path: str | None, workers: int | None = None) -> tuple[bytes, Snapshot]:
    """The config validated as ``check`` and ``run`` both validate it."""
    if path is None:
        data, name = _quickstart()
        return data, validate(data, name, workers=workers)
    return load(path, workers=workers)


def _compile(path: str) -> Snapshot:
    """The config as the tools beside a running gateway need it (audit verify, keys, consumers): compiled,
    without the checks only a gateway about to start needs (secrets of the control process, memory)."""
    return compile_config(read_config_bytes(path), path)


def _summary(snapshot: Snapshot) -> str:
    http2 = "on" if snapshot.http2.enabled else "off"
    lines = [
        f"config OK: {snapshot.source} (snapshot {snapshot.id}, http1={snapshot.server.http1}, http2={http2})"
    ]
    for ls in snapshot.listeners:
        extra = " proxy_protocol" if ls.proxy_protocol else ""
        lines.append(f"  listener {ls.name}: {ls.host}:{ls.port}{extra}")
    for up in snapshot.upstreams.values():
        targets = ", ".join(t.label for t in up.targets)
        lines.append(f"  upstream {up.name}: {targets} ({up.balance})")
    for route in snapshot.routes:
        chain = ", ".join(p.name + (" (shadow)" if p.shadow else "") for p in route.chain) or "-"
        served = route.upstream.name if route.handler is None else f"({route.kind})"
        lines.append(f"  route {route.name} -> {served}; policies: {chain}")
    if snapshot.demo_upstream is not None:
        lines.append(f"  demo upstream: {snapshot.demo_upstream[0]}:{snapshot.demo_upstream[1]}")
    redis = snapshot.ratelimit_redis
    if redis is not None:
        host = redis.url.split("@")[-1].split("//")[-1]  # never the password
        every = f"flush {redis.flush_interval:g}s, fail {redis.failure}"
        lines.append(f"  rate limits shared through redis {host} ({every})")
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
    from fastgw.process.supervisor import Supervisor, supervise

    workers = args.workers or None  # 0: the config decides
    if args.workers is not None and args.workers < 0:
        print("fastgw: --workers must not be negative", file=sys.stderr)
        return 2
    data, snapshot = _load(args.config, workers)
    try:
        supervisor = Supervisor(snapshot, data, args.config, workers=workers, ready_file=args.ready_file)
    except OSError as exc:  # validation sized it against this machine: the environment refused
        print(f"fastgw: cannot allocate shared memory: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return supervise(supervisor)  # a bind failure: one line naming the listener, exit 2
    except KeyboardInterrupt:
        return 0


def _pid_file(args: argparse.Namespace) -> str:
    if args.pid_file is not None:
        return str(args.pid_file)
    if args.config is None:
        raise ConfigError("fastgw", "", "name the gateway's CONFIG or its --pid-file")
    return locate(args.config).pid_file


def _signal(args: argparse.Namespace, sig: signal.Signals, what: str) -> int:
    """Signal the supervisor named by the pid file, then wait for what it made of it (status file)."""
    from fastgw.process import status_file

    path = _pid_file(args)
    try:
        with open(path) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        print(
            f"fastgw: cannot read pid file {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr
        )
        return 2
    status_path = status_file.path_for(path)
    status = status_file.read(status_path)
    if status is not None and status.get("pid") != pid:
        status = None  # left by an earlier run
    sent = time.monotonic()
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        print(f"fastgw: no process {pid} (stale pid file {path})", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"fastgw: not allowed to signal process {pid}", file=sys.stderr)
        return 2
    if sig == signal.SIGTERM:
        within = args.timeout or float((status or {}).get("stop_within") or DEFAULT_WAIT)
        return _wait_stopped(pid, sent + within, within)
    within = args.timeout or float((status or {}).get("reload_within") or DEFAULT_WAIT) + WAIT_MARGIN
    deadline = sent + within
    while True:
        status = status_file.read(status_path)
        last = (status or {}).get("last") if (status or {}).get("pid") == pid else None
        if isinstance(last, dict) and float(last.get("began") or 0) >= sent:
            break
        if not _alive(pid):
            print(f"fastgw: {what} not done: the gateway (pid {pid}) exited", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(
                f"fastgw: {what} not confirmed: no answer from the gateway (pid {pid}) within {within:g}s "
                f"in {status_path}",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL)
    if not last.get("ok"):
        print(f"fastgw: {what} refused: {last.get('error')}", file=sys.stderr)
        return 1
    replaced = last.get("replaced_workers") or []
    extra = f"; replaced workers {replaced} that failed to compile it" if replaced else ""
    print(
        f"fastgw: {what} done: snapshot {last.get('previous')} -> {last.get('snapshot')} (pid {pid}){extra}"
    )
    return 0


DEFAULT_WAIT = 30.0  # seconds, when the gateway has not said (no status file: an older version)
WAIT_MARGIN = 3.0  # beyond the gateway's own reload deadline: the status write and our polling
POLL = 0.05


def _alive(pid: int) -> bool:
    """The process still runs (a zombie does not: it has exited, its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie counts as running there)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _wait_stopped(pid: int, deadline: float, within: float) -> int:
    while _alive(pid):
        if time.monotonic() >= deadline:
            print(
                f"fastgw: stop failed: the gateway (pid {pid}) still runs after {within:g}s", file=sys.stderr
            )
            return 1
        time.sleep(POLL)
    print(f"fastgw: stopped (pid {pid})")
    return 0


def _rollback_list(args: argparse.Namespace) -> int:
    """``fastgw rollback --list CONFIG``: the kept configs of this file and where a rollback goes."""
    from fastgw.config.history import ConfigHistory
    from fastgw.process import status_file

    if args.config is None:
        raise ConfigError("fastgw", "", "rollback --list needs the CONFIG whose history to show")
    state = locate(args.config)
    status = status_file.read(status_file.path_for(args.pid_file or state.pid_file))
    running = None
    if status is not None and _alive(int(status.get("pid") or 0)):
        running = str(status.get("snapshot"))
    print("\n".join(ConfigHistory(state.dir, state.keep_configs, args.config).describe(running)))
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0: intact and it holds its anchors; 1: tampered (or a forged anchor); 2: unreadable; 3: no
    anchor to check the end of the log against (truncation would go unseen) and no ``--no-anchor``."""
    from fastgw.audit import audit_key, read_anchor, verify
    from fastgw.store import open_store

    snapshot = _compile(args.config)
    path = args.file or snapshot.audit.file
    key = audit_key(snapshot.audit, snapshot.state)
    store = open_store(snapshot.state.dir)
    try:
        anchor = store.audit_anchor(os.path.abspath(path)) or store.audit_anchor(path)
    finally:
        store.close()
    exported: tuple[int, str] | None = None
    if args.anchor is not None:
        try:
            with open(args.anchor, "rb") as fh:
                seq, mac, _fields = read_anchor(fh.read(), key)
        except OSError as exc:
            print(f"fastgw: cannot read {args.anchor}: {exc.strerror}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"{args.anchor}: {exc}", file=sys.stderr)
            return 1
        exported = (seq, mac)
    if anchor is None and exported is None and not args.no_anchor:
        print(
            f"fastgw: {path}: no anchor in the store for this file (copied or rotated?): a truncated log "
            "would pass; give --anchor FILE (from 'fastgw audit anchor --export'), or --no-anchor to check "
            "the chain alone",
            file=sys.stderr,
        )
        return 3
    try:
        result = verify(path, key, anchor, exported)
    except OSError as exc:
        print(f"fastgw: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"{path}: TAMPERED: {result.problem} ({result.records} records verified before it)")
        return 1
    held = [f"the store's anchor (seq {anchor.seq})"] if anchor else []
    held += [f"the exported anchor (seq {exported[0]})"] if exported else []
    if held:
        print(f"{path}: OK, {result.records} records, matches {' and '.join(held)}")
    else:
        print(f"{path}: OK, {result.records} records, chain only (--no-anchor: truncation not checked)")
    return 0


def _audit_anchor(args: argparse.Namespace) -> int:
    """Verify the log against the store's anchor, then write its current end as a signed anchor."""
    from fastgw.audit import audit_key, export_anchor, verify
    from fastgw.store import open_store

    snapshot = _compile(args.config)
    path = os.path.abspath(snapshot.audit.file)
    key = audit_key(snapshot.audit, snapshot.state)
    store = open_store(snapshot.state.dir)
    try:
        anchor = store.audit_anchor(path) or store.audit_anchor(snapshot.audit.file)
    finally:
        store.close()
    try:
        result = verify(path, key, anchor)
    except OSError as exc:
        print(f"fastgw: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if not result.ok:  # never bless a damaged log with a fresh anchor
        print(f"{path}: TAMPERED: {result.problem}; no anchor exported", file=sys.stderr)
        return 1
    if result.records == 0:
        print(f"fastgw: {path} has no records yet: nothing to anchor", file=sys.stderr)
        return 2
    line = export_anchor(path, key, result.last_seq, result.last_mac)
    if args.export == "-":
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        return 0
    try:
        tmp = f"{args.export}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, args.export)
    except OSError as exc:
        print(f"fastgw: cannot write {args.export}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{args.export}: anchor of {path} at seq {result.last_seq}")
    return 0


def _store_migrate(args: argparse.Namespace) -> int:
    """``fastgw store migrate``: the store of CONFIG's state directory (the quickstart's without one)."""
    from fastgw.config.compiler import compile_state
    from fastgw.config.loader import parse_table
    from fastgw.config.schema import StateSpec
    from fastgw.store.migrate_command import migrate_command

    if args.config is None:
        data, name = _quickstart()
        state = compile_state(parse_table(data, name, "state", StateSpec), name)
    else:
        state = locate(args.config)
    return migrate_command(state.dir, dry_run=args.dry_run)


def _admin(args: argparse.Namespace) -> int:
    """``fastgw keys|consumers ...`` through the admin API of the running gateway."""
    from fastgw.control.admin_client import AdminUnavailableError, admin_call

    snapshot = _compile(args.config)
    method, path, body = _admin_request(args)
    try:
        status, result = admin_call(snapshot.admin, method, path, body)
    except AdminUnavailableError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2
    if status >= 400:
        print(f"fastgw: {result.get('detail') or result}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(_describe(args, result))
    return 0


def _admin_request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    from urllib.parse import quote

    if args.command == "consumers":
        if args.action == "list":
            return "GET", "/consumers", None
        if args.action == "show":
            return "GET", f"/consumers/{quote(args.name, safe='')}", None
        if args.action in ("disable", "enable", "delete"):
            return "POST", f"/consumers/{quote(args.name, safe='')}/{args.action}", {}
        limits: dict[str, int] = {}
        for item in args.limit:
            name, _, number = item.partition("=")
            if not name or not number.isdigit() or int(number) <= 0:
                raise SystemExit(f"fastgw: --limit {item!r}: expected NAME=N with N a positive integer")
            limits[name] = int(number)
        body_c: dict[str, Any] = {"name": args.name, "team": args.team, "roles": args.role}
        if limits:
            body_c["limits"] = limits
        return "POST", "/consumers", body_c
    if args.action == "list":
        if args.consumer is not None:
            return "GET", f"/consumers/{quote(args.consumer, safe='')}", None
        return "GET", "/keys", None
    if args.action == "create":
        body: dict[str, Any] = {"consumer": args.consumer, "scopes": args.scope, "roles": args.role}
        if args.route:
            body["routes"] = args.route
        if args.expires_in is not None:  # 0 included: the gateway refuses it rather than read "never"
            body["expires_in"] = args.expires_in
        return "POST", "/keys", body
    if args.action == "rotate":
        return "POST", f"/keys/{args.key_id}/rotate", {"grace_seconds": args.grace}
    if args.action == "expire":
        return "POST", f"/keys/{args.key_id}/expire", {"in": args.in_seconds, "extend": args.extend}
    if args.action == "update":
        changes: dict[str, Any] = {}
        for field, values, clear in (
            ("scopes", args.scope, args.no_scopes),
            ("roles", args.role, args.no_roles),
            ("routes", args.route, args.all_routes),
        ):
            if values is not None and clear:
                raise SystemExit(f"fastgw: keys update: give --{field[:-1]} or its clearing option, not both")
            if values is not None:
                changes[field] = values
            elif clear:
                changes[field] = None if field == "routes" else []
        if not changes:
            raise SystemExit("fastgw: keys update: nothing to change (--scope, --role, --route, ...)")
        return "POST", f"/keys/{args.key_id}/update", changes
    return "POST", f"/keys/{args.key_id}/revoke", {}


def _key_line(k: dict[str, Any]) -> str:
    return f"{k['id']}  {k['prefix']}...  {k['consumer']}  {k['state']}" + (
        f"  expires {k['expires']}" if k["expires"] else ""
    )


def _describe(args: argparse.Namespace, result: dict[str, Any]) -> str:
    if args.command == "consumers":
        if args.action == "list":
            rows = result["consumers"]
            return "\n".join(
                f"{c['id']}  {c['name']}  team={c['team']}  roles={','.join(c['roles'])}"
                + ("  disabled" if c.get("disabled") else "")
                for c in rows
            )
        if args.action == "show":
            state = f"disabled since {result['disabled']}" if result.get("disabled") else "enabled"
            limits = (result.get("metadata") or {}).get("limits") or {}
            lines = [
                f"consumer {result['name']} ({result['id']}): {state}",
                f"  team: {result['team'] or '-'}",
                f"  roles: {','.join(result['roles']) or '-'}",
                f"  limits: {', '.join(f'{k}={v}' for k, v in limits.items()) or '-'}",
                f"  created: {result['created']}",
                f"  keys ({len(result['keys'])}):",
            ]
            lines.extend("    " + _key_line(k) for k in result["keys"])
            return "\n".join(lines)
        if args.action == "delete":
            return f"deleted consumer {result['name']} ({result['id']}) and its {len(result['keys'])} keys"
        if args.action in ("disable", "enable"):
            state = "disabled" if result.get("disabled") else "enabled"
            return f"consumer {result['name']} ({result['id']}): {state}"
        return f"created consumer {result['name']} ({result['id']})"
    if args.action == "list":
        return "\n".join(_key_line(k) for k in result["keys"])
    if args.action in ("create", "rotate"):
        new = result["new"] if args.action == "rotate" else result
        lines = [f"key {new['id']} for {new['consumer']}:", "", f"    {new['key']}", ""]
        lines.append("Shown once: store it now. The gateway keeps only a peppered digest.")
        if args.action == "rotate":
            lines.append(f"The old key {result['old']['id']} stays valid until {result['old']['expires']}.")
        return "\n".join(lines)
    if args.action == "update":
        routes = ",".join(result["routes"]) if result["routes"] is not None else "(every route)"
        return (
            f"key {result['id']} ({result['prefix']}...): scopes={','.join(result['scopes'])}"
            f"  roles={','.join(result['roles'])}  routes={routes}"
        )
    expires = f", expires {result['expires']}" if args.action == "expire" else ""
    return f"key {result['id']} ({result['prefix']}...): {result['state']}{expires}"


def _diff(args: argparse.Namespace) -> int:
    from fastgw.config.diff import diff_configs

    lines = diff_configs(args.old, args.new)
    print("\n".join(lines) if lines else "no differences in routes, upstreams, listeners or policies")
    return 1 if lines else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgw", description="fastgw API security gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve a config (default: the built-in quickstart)")
    run.add_argument("config", nargs="?", help="path to a TOML config")
    run.add_argument("--ready-file", help="write the bound host:port list here once every worker serves")
    run.add_argument("--workers", type=int, help="worker processes (default: process.workers, 0 = CPUs)")
    for name, text in (
        ("reload", "reload the running gateway's config file (SIGHUP) and wait for its answer"),
        ("stop", "drain and stop the running gateway (SIGTERM) and wait until it has"),
        ("rollback", "restore the previous valid config of this file (SIGUSR2) and wait for the answer"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", nargs="?", help="the config, to find the pid file in its state directory")
        cmd.add_argument("--pid-file", help="the supervisor's pid file")
        cmd.add_argument(
            "--timeout", type=float, help="seconds to wait for the answer (default: what the gateway says)"
        )
        if name == "rollback":
            cmd.add_argument("--list", action="store_true", help="show this file's kept configs and exit")
    diff = sub.add_parser("diff", help="routes, upstreams, listeners and policies added, removed, changed")
    diff.add_argument("old")
    diff.add_argument("new")
    consumers = sub.add_parser("consumers", help="consumers of API keys (through the admin API)")
    consumers_sub = consumers.add_subparsers(dest="action", required=True)
    c_create = consumers_sub.add_parser("create", help="create a consumer")
    c_create.add_argument("name")
    c_create.add_argument("--team", default="")
    c_create.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    c_create.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="this consumer's own number for limits named NAME keyed by consumer or api_key (repeatable)",
    )
    consumers_sub.add_parser("list", help="list consumers")
    for action, text in (
        ("show", "a consumer and its keys"),
        ("disable", "stop all the consumer's keys at once, on every worker (enable brings them back)"),
        ("enable", "let a disabled consumer's keys work again"),
        ("delete", "delete a consumer and its keys (the audit log keeps their history)"),
    ):
        consumers_sub.add_parser(action, help=text).add_argument("name", help="consumer name or id")
    keys = sub.add_parser("keys", help="API keys (through the admin API of the running gateway)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    k_create = keys_sub.add_parser("create", help="issue a key; its plaintext is printed once")
    k_create.add_argument("consumer", help="consumer name or id")
    k_create.add_argument("--scope", action="append", default=[], help="a scope (repeatable)")
    k_create.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    k_create.add_argument(
        "--route", action="append", default=[], help="allowed route (repeatable; default all)"
    )
    k_create.add_argument(
        "--expires-in", type=float, help="seconds until the key expires, > 0 (default: never)"
    )
    k_list = keys_sub.add_parser("list", help="list keys (ids and visible prefixes, never the keys)")
    k_list.add_argument("--consumer", help="only this consumer's keys (name or id)")
    k_rotate = keys_sub.add_parser("rotate", help="issue a replacement; the old key lasts the grace period")
    k_rotate.add_argument("key_id")
    k_rotate.add_argument("--grace", type=float, default=86400.0, help="seconds (default: %(default)s)")
    k_revoke = keys_sub.add_parser("revoke", help="revoke a key now")
    k_revoke.add_argument("key_id")
    k_expire = keys_sub.add_parser("expire", help="set a key to expire (only earlier, unless --extend)")
    k_expire.add_argument("key_id")
    k_expire.add_argument(
        "--in", dest="in_seconds", type=float, default=0.0, help="seconds from now (default 0: now)"
    )
    k_expire.add_argument(
        "--extend",
        action="store_true",
        help="allow a later expiry (refused for revoked, expired and rotated-out keys)",
    )
    k_update = keys_sub.add_parser("update", help="change a key's scopes, roles or routes, keeping the key")
    k_update.add_argument("key_id")
    k_update.add_argument("--scope", action="append", help="the key's scopes become these (repeatable)")
    k_update.add_argument("--no-scopes", action="store_true", help="remove every scope")
    k_update.add_argument("--role", action="append", help="the key's roles become these (repeatable)")
    k_update.add_argument("--no-roles", action="store_true", help="remove every role of the key")
    k_update.add_argument("--route", action="append", help="the key's allowed routes become these")
    k_update.add_argument("--all-routes", action="store_true", help="allow the key on every route")
    for group in (keys_sub, consumers_sub):
        for leaf in group.choices.values():
            leaf.add_argument("--config", required=True, help="the gateway config (admin listener and token)")
            leaf.add_argument("--json", action="store_true", help="print the admin API's JSON answer")
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the audit log's HMAC chain and its anchor")
    verify.add_argument("file", nargs="?", help="audit log (default: the config's audit.file)")
    verify.add_argument("--config", required=True, help="the gateway config (audit key and state directory)")
    verify.add_argument(
        "--anchor", help="an anchor file from 'fastgw audit anchor --export' the log must hold"
    )
    verify.add_argument(
        "--no-anchor",
        action="store_true",
        help="check the chain alone (truncation goes unseen): exit 0 if intact",
    )
    anchor = audit_sub.add_parser(
        "anchor", help="export the audit log's current end, signed, to keep elsewhere"
    )
    anchor.add_argument(
        "--export", required=True, metavar="FILE", help="where to write it ('-': stdout, e.g. for logger(1))"
    )
    anchor.add_argument("--config", required=True, help="the gateway config (audit key and state directory)")
    store = sub.add_parser("store", help="the store in the state directory (consumers, key digests, quotas)")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    migrate = store_sub.add_parser("migrate", help="apply the store's pending schema migrations")
    migrate.add_argument(
        "--config", help="the gateway config (its state directory; default: the quickstart's)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="print the SQL it would run; change nothing")
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
            print(_summary(_load(args.config)[1]))
            return 0
        if args.command == "reload":
            return _signal(args, signal.SIGHUP, "reload")
        if args.command == "stop":
            return _signal(args, signal.SIGTERM, "stop")
        if args.command == "rollback":
            return _rollback_list(args) if args.list else _signal(args, signal.SIGUSR2, "rollback")
        if args.command == "diff":
            return _diff(args)
        if args.command == "audit":
            return _audit_anchor(args) if args.audit_command == "anchor" else _audit_verify(args)
        if args.command == "store":
            return _store_migrate(args)
        if args.command in ("keys", "consumers"):
            return _admin(args)
        return _run(args)
    except ConfigError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
