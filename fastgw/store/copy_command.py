"""``fastgw store copy --from sqlite:PATH --to postgres:DSN [--dry-run] [--force] [--node NAME]``: move a
single node's SQLite store into the PostgreSQL database a cluster will share.

Every table of the store interface (store/tables.py) is copied in one PostgreSQL transaction, then
checked: each table's count in the source and the target, and every source row's key found in the
target. A target that already holds rows is refused unless ``--force`` (then rows already there are
kept, not overwritten); running the copy again inserts nothing twice. ``--dry-run`` changes nothing and
prints what would be copied. Only counts and table names are ever printed, never a row (digests and
encrypted provider keys stay in the databases) nor the DSN's password.

The source's audit anchors become the anchors of one node (``--node``; default: the name a node whose
state directory holds PATH takes, store.node_name), as PostgreSQL keeps one anchor per node.
``postgres:env:NAME`` reads the DSN from the environment, keeping its password out of the process list.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from fastgw.store import node_name
from fastgw.store.base import Store, StoreError
from fastgw.store.tables import AUDIT_ANCHORS, TABLES, StoreTable


class CopyError(Exception):
    """A copy refused before anything was written (bad arguments, a non-empty target): exit 1."""


def _endpoints(source: str, target: str) -> tuple[str, str]:
    """The SQLite path and the PostgreSQL DSN. Raises CopyError."""
    if not source.startswith("sqlite:") or not source[len("sqlite:") :]:
        raise CopyError(
            f"--from must be sqlite:PATH (the SQLite store file), got {source.split(':', maxsplit=1)[0]!r}"
        )
    if not target.startswith("postgres:") or not target[len("postgres:") :]:
        raise CopyError("--to must be postgres:DSN or postgres:env:NAME (a PostgreSQL connection string)")
    path, dsn = source[len("sqlite:") :], target[len("postgres:") :]
    if dsn.startswith("env:"):
        name = dsn[len("env:") :]
        dsn = os.environ.get(name, "")
        if not dsn:
            raise CopyError(f"--to postgres:env:{name}: the environment variable {name} is not set")
    if not os.path.isfile(path):
        raise CopyError(f"--from {path}: no such file (the store is fastgw.db in the state directory)")
    return path, dsn


def _key_of(table: StoreTable, row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(row[table.columns.index(name)] for name in table.key)


def _source_rows(source: Store, table: StoreTable, node: str) -> list[tuple[Any, ...]]:
    rows = source.read_rows(table.name, table.columns)
    if table is AUDIT_ANCHORS:  # PostgreSQL keys an anchor "NODE|LOG" (store/postgres.py)
        rows = [(f"{node}|{log}", *rest) for log, *rest in rows]
    return rows


def _present_keys(target: Store, table: StoreTable) -> set[tuple[Any, ...]]:
    if not target.has_table(table.name):
        return set()  # a dry run against a database not yet migrated
    return {tuple(r) for r in target.read_rows(table.name, table.key)}


def copy_stores(source: Store, target: Store, *, node: str, dry_run: bool, force: bool) -> None:
    """Copy (or, dry, count) every table, printing a line per table, in one transaction. Raises
    CopyError for a non-empty target without ``force``, and when a source row did not reach the target
    (the copy is then rolled back whole)."""
    held = {t.name: target.count_rows(t.name) for t in TABLES if target.has_table(t.name)}
    if any(held.values()) and not force:
        listed = ", ".join(f"{name} {count}" for name, count in held.items() if count)
        raise CopyError(
            f"{target.where} already holds rows ({listed}): copy into an empty database, or --force"
            " to add the rows it lacks (rows already there are kept)"
        )
    plan = [(t, _source_rows(source, t, node)) for t in TABLES]
    print(f"{'table':<22}{'source':>8}{'target':>8}{'would copy' if dry_run else 'copied':>12}")
    complete = True
    with target.transaction():  # all tables or none
        for table, rows in plan:
            present = _present_keys(target, table)
            if dry_run:
                copied = sum(_key_of(table, r) not in present for r in rows)
                print(f"{table.name:<22}{len(rows):>8}{held.get(table.name, 0):>8}{copied:>12}")
                continue
            copied = target.insert_rows(table.name, table.columns, rows)
            after = _present_keys(target, table)
            missing = sum(_key_of(table, r) not in after for r in rows)
            complete = complete and not missing
            verdict = "ok" if not missing else f"{missing} MISSING (a row there already has its name)"
            print(f"{table.name:<22}{len(rows):>8}{len(after):>8}{copied:>12}   {verdict}")
        if not complete:  # raised inside the block: the transaction is rolled back
            raise CopyError("incomplete copy (rows counted MISSING): rolled back, nothing was written")


def copy_command(
    source_arg: str, target_arg: str, *, dry_run: bool, force: bool, node: str | None = None
) -> int:
    """Exit 0: copied and verified (or a dry run); 1: refused, failed or not verified, nothing written
    (one line on stderr saying why)."""
    from fastgw.store.postgres import PostgresStore
    from fastgw.store.sqlite import SQLiteStore

    try:
        path, dsn = _endpoints(source_arg, target_arg)
        node = node or node_name(os.path.dirname(os.path.abspath(path)))
        if "|" in node:
            raise CopyError("--node must not contain '|'")
        source = SQLiteStore(path, migrate=False)
        try:
            if source.pending_migrations():
                raise CopyError(
                    f"{path}: its schema is older than this fastgw's: run fastgw store migrate on it first"
                )
            target = PostgresStore(dsn, node=node, migrate=not dry_run)
            try:
                verb = "would copy" if dry_run else "copying"
                print(f"{verb} {path} -> {target.where} (audit anchors as node {node!r})")
                copy_stores(source, target, node=node, dry_run=dry_run, force=force)
            finally:
                target.close()
        finally:
            source.close()
    except (CopyError, StoreError) as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1
    print("dry run: nothing was written" if dry_run else "verified: every row of the source is in the target")
    return 0
