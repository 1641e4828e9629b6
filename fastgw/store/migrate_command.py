"""``fastgw store migrate [--config C] [--dry-run]``: bring the store's schema up to date, or show the SQL
that would do it.

The control process applies pending migrations itself at every start; this command is for doing it ahead
of an upgrade's restart, or for reading what an upgrade will change. A dry run changes nothing: it does
not even create a SQLite database that does not exist yet. On PostgreSQL it connects (the database says
which steps it has had) and prints the steps it lacks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from fastgw.snapshot import StoreSettings
from fastgw.store import open_store
from fastgw.store.base import Migration, StoreError
from fastgw.store.migrations import MIGRATIONS
from fastgw.store.pg_migrations import PG_MIGRATIONS
from fastgw.store.sqlite import FILE_NAME


def _sql(migrations: Sequence[Migration]) -> list[str]:
    lines = []
    for m in migrations:
        note = "" if m.statements else " (already present in this database: only recorded)"
        lines.append(f"-- migration {m.version}: {m.name}{note}")
        lines.extend(f"{statement};" for statement in m.statements)
    return lines


def migrate_command(state_dir: str, *, dry_run: bool, settings: StoreSettings | None = None) -> int:
    """Print what was (or would be) applied; returns the exit status: 0 done or nothing to do, 1 when the
    store cannot be opened or migrated (one line on stderr; a failed migration leaves the ones before it
    applied and itself not at all)."""
    postgres = settings is not None and settings.backend == "postgres"
    path = os.path.join(state_dir, FILE_NAME)
    latest = (PG_MIGRATIONS if postgres else MIGRATIONS)[-1].version
    try:
        if dry_run and not postgres and not os.path.exists(path):
            pending: list[Migration] = list(MIGRATIONS)
            print(f"{path} does not exist yet; the gateway creates it at start with:")
        else:
            store = open_store(state_dir, settings, migrate=False)
            where = store.where
            try:
                pending = store.pending_migrations() if dry_run else store.migrate()
            finally:
                store.close()
            if not pending:
                print(f"{where}: the schema is up to date (migration {latest})")
                return 0
            verb = "would run" if dry_run else "applied"
            print(f"{where}: {len(pending)} migration{'s' if len(pending) > 1 else ''} {verb}:")
    except StoreError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1
    print("\n".join(_sql(pending) if dry_run else [f"  {m.version}: {m.name}" for m in pending]))
    return 0
