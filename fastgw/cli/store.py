"""``fastgw store migrate``: the store's pending schema migrations, applied or printed."""

from __future__ import annotations

import argparse

from fastgw.cli.config_files import quickstart
from fastgw.config.validate import locate


def migrate(args: argparse.Namespace) -> int:
    """``fastgw store migrate``: the store of CONFIG's state directory (the quickstart's without one)."""
    from fastgw.config.compiler import compile_state
    from fastgw.config.loader import parse_table
    from fastgw.config.schema import StateSpec
    from fastgw.store.migrate_command import migrate_command

    if args.config is None:
        data, name = quickstart()
        state = compile_state(parse_table(data, name, "state", StateSpec), name)
    else:
        state = locate(args.config)
    return migrate_command(state.dir, dry_run=args.dry_run)
