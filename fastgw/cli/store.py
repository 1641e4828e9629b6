"""``fastgw store migrate``: the store's pending schema migrations, applied or printed; ``fastgw store
copy``: a SQLite store into PostgreSQL (store/copy_command.py)."""

from __future__ import annotations

import argparse
from typing import Any

from fastgw.cli.config_files import quickstart


def command(args: argparse.Namespace) -> int:
    if args.store_command == "copy":
        from fastgw.store.copy_command import copy_command

        return copy_command(args.source, args.target, dry_run=args.dry_run, force=args.force, node=args.node)
    return migrate(args)


def add_copy_parser(store_sub: Any) -> None:
    """``fastgw store copy``'s arguments (argparse's subparsers object has no public type)."""
    copy = store_sub.add_parser("copy", help="copy a SQLite store into PostgreSQL, then verify the counts")
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH", help="the SQLite file")
    copy.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="postgres:DSN",
        help="the PostgreSQL database (postgres:env:NAME reads the DSN from the environment)",
    )
    copy.add_argument("--dry-run", action="store_true", help="show what would be copied; write nothing")
    copy.add_argument("--force", action="store_true", help="copy into a database that holds rows already")
    copy.add_argument("--node", help="the node whose audit anchors these become (default: PATH's host:dir)")


def migrate(args: argparse.Namespace) -> int:
    """``fastgw store migrate``: the store CONFIG's [store] names (SQLite in its state directory unless it
    says PostgreSQL; the quickstart's without a config). Only [state] and [store] are read."""
    from fastgw.config.compiler import compile_state, compile_store
    from fastgw.config.loader import parse_table, read_config_bytes
    from fastgw.config.schema import StateSpec, StoreSpec
    from fastgw.store.migrate_command import migrate_command

    if args.config is None:
        data, name = quickstart()
    else:
        data, name = read_config_bytes(args.config), args.config
    state = compile_state(parse_table(data, name, "state", StateSpec), name)
    store = compile_store(parse_table(data, name, "store", StoreSpec), name)
    return migrate_command(state.dir, dry_run=args.dry_run, settings=store)
