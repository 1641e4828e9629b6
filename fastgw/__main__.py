"""Command line: run, check, diff, reload, stop, rollback, keys, consumers, providers, prompt-apis,
audit verify|anchor, store migrate, prices check, usage, cert dev, version.

This module is the entry point (``python -m fastgw`` and the ``fastgw`` console script): the argument tree
and a table from command to its implementation in fastgw/cli/. A command's mistakes that are the user's
(ConfigError) become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

from fastgw import __version__
from fastgw.cli import (
    admin,
    audit,
    cert,
    config_files,
    lifecycle,
    prices,
    prompt_apis,
    providers,
    store,
    usage,
)
from fastgw.config.loader import ConfigError


def _version(args: argparse.Namespace) -> int:
    print(f"fastgw {__version__}")
    return 0


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "run": lifecycle.run,
    "reload": lifecycle.reload,
    "stop": lifecycle.stop,
    "rollback": lifecycle.rollback,
    "check": config_files.check,
    "diff": config_files.diff,
    "keys": admin.admin,
    "consumers": admin.admin,
    "providers": providers.providers,
    "prompt-apis": prompt_apis.prompt_apis,
    "prices": prices.prices,
    "usage": usage.usage,
    "audit": audit.audit,
    "store": store.command,
    "cert": cert.dev,
    "version": _version,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fastgw", description="fastgw API security gateway")
    sub = top.add_subparsers(dest="command", required=True)
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
    c_create.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="PATTERN",
        help="an llm model this consumer may use, a glob like 'gpt-4o*' (repeatable; none: every model)",
    )
    consumers_sub.add_parser("list", help="list consumers")
    for action, text in (
        ("show", "a consumer and its keys"),
        ("disable", "stop all the consumer's keys at once, on every worker (enable brings them back)"),
        ("enable", "let a disabled consumer's keys work again"),
        ("delete", "delete a consumer and its keys (the audit log keeps their history)"),
        ("export", "everything held about a consumer, as JSON (docs/privacy.md)"),
        ("erase", "erase a consumer: it and its keys removed, its usage kept under a pseudonym"),
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
    providers.add_parser(sub)
    prompt_apis.add_parser(sub)
    prices.add_parser(sub)
    usage.add_parser(sub)
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
    store_cmd = sub.add_parser(
        "store", help="the store in the state directory (consumers, key digests, quotas)"
    )
    store_sub = store_cmd.add_subparsers(dest="store_command", required=True)
    migrate = store_sub.add_parser("migrate", help="apply the store's pending schema migrations")
    migrate.add_argument(
        "--config", help="the gateway config (its state directory; default: the quickstart's)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="print the SQL it would run; change nothing")
    store.add_copy_parser(store_sub)
    check = sub.add_parser("check", help="validate a config and print a summary")
    check.add_argument("config", help="path to a TOML config")
    sub.add_parser("version", help="print the version")
    cert = sub.add_parser("cert", help="certificates for development")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    dev = cert_sub.add_parser("dev", help="create a local CA, a localhost server and a client certificate")
    dev.add_argument("--dir", default="fastgw-dev-certs", help="where to write them (default: %(default)s)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
