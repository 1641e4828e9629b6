"""``fastgw keys ...`` and ``fastgw consumers ...``: requests to the admin API of the running gateway,
and their answers as lines for a person (or the JSON itself with ``--json``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from fastgw.cli.config_files import compile_for_tools


def admin(args: argparse.Namespace) -> int:
    """``fastgw keys|consumers ...`` through the admin API of the running gateway."""
    return admin_command(args, lambda: _admin_request(args), lambda result: _describe(args, result))


def admin_command(
    args: argparse.Namespace,
    request: Callable[[], tuple[str, str, dict[str, Any] | None]],
    describe: Callable[[dict[str, Any]], str],
) -> int:
    """One admin API request of a CLI command (``keys``, ``consumers``, ``providers``) to the gateway that
    ``args.config`` names, and its answer: the JSON itself with ``args.json``, else ``describe``'s lines.
    ``request`` is called after the config compiled (it may read stdin or refuse the arguments). Exit
    status: 0 done, 1 refused by the gateway (its reason on stderr), 2 the gateway unreachable."""
    from fastgw.control.admin_client import AdminUnavailableError, admin_call

    snapshot = compile_for_tools(args.config)
    method, path, body = request()
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
    print(describe(result))
    return 0


def _admin_request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    from urllib.parse import quote

    if args.command == "consumers":
        if args.action == "list":
            return "GET", "/consumers", None
        if args.action == "show":
            return "GET", f"/consumers/{quote(args.name, safe='')}", None
        if args.action in ("disable", "enable", "delete", "erase"):
            return "POST", f"/consumers/{quote(args.name, safe='')}/{args.action}", {}
        if args.action == "export":
            return "GET", f"/consumers/{quote(args.name, safe='')}/export", None
        limits: dict[str, int] = {}
        for item in args.limit:
            name, _, number = item.partition("=")
            if not name or not number.isdigit() or int(number) <= 0:
                raise SystemExit(f"fastgw: --limit {item!r}: expected NAME=N with N a positive integer")
            limits[name] = int(number)
        body_c: dict[str, Any] = {"name": args.name, "team": args.team, "roles": args.role}
        if limits:
            body_c["limits"] = limits
        if args.model is not None:
            body_c["models"] = args.model
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
                f"  models: {', '.join((result.get('metadata') or {}).get('models') or ['(every model)'])}",
                f"  created: {result['created']}",
                f"  keys ({len(result['keys'])}):",
            ]
            lines.extend("    " + _key_line(k) for k in result["keys"])
            return "\n".join(lines)
        if args.action == "export":
            return orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        if args.action == "erase":
            return f"erased: {result['keys']} keys removed, usage rows now {result['pseudonym']}'s"
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
