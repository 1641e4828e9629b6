"""``fastgw store migrate``: the store's pending schema migrations, applied or printed."""

from __future__ import annotations

import argparse

from fastgw.cli.config_files import quickstart


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
