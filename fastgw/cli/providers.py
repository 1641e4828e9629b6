"""``fastgw providers set-key|list|remove|rotate-master-key``: LLM provider keys stored encrypted, through
the admin API of the running gateway (its control process holds the master key and writes the store).

``set-key`` reads the key from stdin (without echo on a terminal), never from the command line, where
``ps`` and shell history would show it; no command prints a key back, only its prefix.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any
from urllib.parse import quote

from fastgw.cli.admin import admin_command

# A provider key is a few hundred bytes at most; reading more from stdin means the wrong file was piped.
STDIN_MAX_BYTES = 64 * 1024


def read_key() -> str:
    """The key from stdin: a prompt without echo on a terminal, else the whole input less one trailing
    newline. Raises SystemExit with a reason (never the input)."""
    if sys.stdin.isatty():
        text = getpass.getpass("provider key (not echoed): ")
    else:
        data = sys.stdin.buffer.read(STDIN_MAX_BYTES + 1)
        if len(data) > STDIN_MAX_BYTES:
            raise SystemExit(f"fastgw: providers set-key: stdin holds more than {STDIN_MAX_BYTES} bytes")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise SystemExit("fastgw: providers set-key: the key on stdin is not ASCII") from None
        if text.endswith("\n"):
            text = text[:-1].removesuffix("\r")
    if not text:
        raise SystemExit("fastgw: providers set-key: no key on stdin (pipe it in, e.g. < key-file)")
    return text


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.action == "list":
        return "GET", "/providers", None
    if args.action == "rotate-master-key":
        return "POST", "/providers/rotate-master-key", {}
    name = quote(args.name, safe="")
    if args.action == "remove":
        return "POST", f"/providers/{name}/remove", {}
    return "POST", f"/providers/{name}/key", {"key": read_key()}


def _describe(action: str, result: dict[str, Any]) -> str:
    if action == "list":
        lines = []
        for p in result["providers"]:
            state = "" if p["usable"] else "  UNUSABLE: its master key is not configured"
            if p["usable"] and not p["current"]:
                state = "  (under a previous master key: run rotate-master-key)"
            lines.append(
                f"{p['provider']}  {p['prefix']}  master key {p['key_id']}  updated {p['updated']}{state}"
            )
        return "\n".join(lines) or "no provider keys stored"
    if action == "remove":
        return f"removed the stored key of provider {result['provider']} ({result['prefix']})"
    if action == "rotate-master-key":
        done = result["reencrypted"]
        names = f": {', '.join(done)}" if done else ""
        return f"{len(done)} provider keys re-encrypted under master key {result['master_key']}{names}"
    return (
        f"stored the key of provider {result['provider']} ({result['prefix']}) under master key"
        f" {result['key_id']}; workers use it from their next request"
    )


def providers(args: argparse.Namespace) -> int:
    return admin_command(args, lambda: _request(args), lambda result: _describe(args.action, result))


def add_parser(sub: Any) -> None:
    """The ``providers`` command in fastgw/__main__.py's argument tree."""
    cmd = sub.add_parser("providers", help="LLM provider keys stored encrypted (through the admin API)")
    actions = cmd.add_subparsers(dest="action", required=True)
    set_key = actions.add_parser("set-key", help="store a provider's key, read from stdin (never argv)")
    set_key.add_argument("name", help="the [[llm.providers]] name")
    actions.add_parser("list", help="stored provider keys: name, prefix, master key id (never the key)")
    remove = actions.add_parser("remove", help="delete a provider's stored key")
    remove.add_argument("name")
    actions.add_parser(
        "rotate-master-key",
        help="re-encrypt every stored key under llm.master_key (the old one in llm.previous_master_keys)",
    )
    for leaf in actions.choices.values():
        leaf.add_argument("--config", required=True, help="the gateway config (admin listener and token)")
        leaf.add_argument("--json", action="store_true", help="print the admin API's JSON answer")
