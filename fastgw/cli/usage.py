"""``fastgw usage``: the usage ledger (LLM requests, tokens and cost), read from the store the config
names; without ``--config``, the quickstart's (so a newcomer sees the demo's usage). The store is at most
one flush interval (sinks/ledger.py ``FLUSH_SECONDS``) behind the running gateway's workers; usage kept
on disk and not yet in the store (a store outage's spool, a stopped worker's reports) is named on stderr.

Rows and how an unknown cost is shown: fastgw/control/usage_report.py (JSON null, CSV empty, table
``unknown``)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any

from fastgw.cli.config_files import quickstart
from fastgw.usage_fields import FILTERS, GROUP_KEYS, PERIODS


def usage(args: argparse.Namespace) -> int:
    from fastgw.config.compiler import compile_state, compile_store
    from fastgw.config.loader import parse_table, read_config_bytes
    from fastgw.config.schema import StateSpec, StoreSpec
    from fastgw.control.usage_report import UsageQueryError, parse_query, row
    from fastgw.store import open_store
    from fastgw.store.base import StoreError

    try:
        query = parse_query({**{f: getattr(args, f) for f in FILTERS}, **_period_args(args)})
    except UsageQueryError as exc:
        print(f"fastgw: usage: --{str(exc).replace('_', '-')}", file=sys.stderr)
        return 2
    data, name = quickstart() if args.config is None else (read_config_bytes(args.config), args.config)
    state = compile_state(parse_table(data, name, "state", StateSpec), name)
    settings = compile_store(parse_table(data, name, "store", StoreSpec), name)
    try:
        store = open_store(state.dir, settings)
        try:
            rows = [row(total) for total in store.usage(query)]
        finally:
            store.close()
    except StoreError as exc:
        print(f"fastgw: usage: {exc}", file=sys.stderr)
        return 1
    print(render(rows, query.group_by, args.format), end="")
    for note in not_yet_in_the_store(state.dir):
        print(f"fastgw: usage: {note}", file=sys.stderr)
    return 0


def not_yet_in_the_store(state_dir: str) -> list[str]:
    """Usage kept in the state directory and not yet added to the store, so missing from the totals: the
    ledger's spool (a store outage; replayed by the control process) and reports workers stopped with
    while no control process ran (added at the next start). Said on stderr, never silently short."""
    from fastgw.control.ledger_spool import SPOOL_FILE, WORKER_LEFT_PREFIX, WORKER_LEFT_SUFFIX

    notes = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    for name in names:
        path = os.path.join(state_dir, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if name == SPOOL_FILE and size:
            notes.append(
                f"{path} holds usage the store could not take yet ({size} bytes), not in these totals: the"
                " control process adds it once the store can be written, or at its next start"
            )
        elif name.startswith(WORKER_LEFT_PREFIX) and name.endswith(WORKER_LEFT_SUFFIX):
            notes.append(
                f"{path} holds usage a worker stopped with while no control process ran, not in these"
                " totals: added at the gateway's next start"
            )
    return notes


def _period_args(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "since": args.since,
        "until": args.until,
        "period": args.period,
        "group_by": ",".join(args.group_by or ()),
    }


COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "unpriced_requests")


def render(rows: list[dict[str, Any]], groups: tuple[str, ...], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    names = [*groups, *COLUMNS, "errors"] if fmt == "table" else [*groups, *(rows[0] if rows else COLUMNS)]
    names = list(dict.fromkeys(names))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(["" if r.get(n) is None else r.get(n) for n in names])
        return out.getvalue()
    if not rows:
        return "no usage recorded for these filters\n"
    cells = [names] + [[_cell(r, n) for n in names] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(names))]
    return "".join(
        "  ".join(
            c.ljust(w) if i < len(groups) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        + "\n"
        for line in cells
    )


def _cell(r: dict[str, Any], name: str) -> str:
    value = r.get(name)
    if name == "cost_usd":
        return "unknown" if value is None else f"{value:.6f}"
    if name == "consumer" and value == "":
        return "(anonymous)"
    return "-" if value == "" else str(value)


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("usage", help="LLM usage and cost from the ledger (default: the quickstart's)")
    cmd.add_argument("--config", help="the gateway config (its store; default: the built-in quickstart)")
    for name in FILTERS:
        cmd.add_argument(f"--{name}", help=f"only this {name}")
    cmd.add_argument("--since", help="first day, YYYY-MM-DD (UTC)")
    cmd.add_argument("--until", help="last day, YYYY-MM-DD (UTC)")
    cmd.add_argument("--period", choices=PERIODS, help="today, or this month so far (UTC)")
    cmd.add_argument(
        "--group-by", action="append", choices=GROUP_KEYS, help="a column to group by (repeat for several)"
    )
    cmd.add_argument("--format", choices=("table", "csv", "json"), default="table")
