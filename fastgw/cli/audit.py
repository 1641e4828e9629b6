"""``fastgw audit verify`` and ``fastgw audit anchor``: the audit log's HMAC chain checked against its
anchors, and its current end exported as a signed anchor to keep elsewhere."""

from __future__ import annotations

import argparse
import os
import sys

from fastgw.cli.config_files import compile_for_tools


def audit(args: argparse.Namespace) -> int:
    return anchor(args) if args.audit_command == "anchor" else verify(args)


def verify(args: argparse.Namespace) -> int:
    """Exit 0: intact and it holds its anchors; 1: tampered (or a forged anchor); 2: unreadable; 3: no
    anchor to check the end of the log against (truncation would go unseen) and no ``--no-anchor``."""
    from fastgw.audit import audit_key, read_anchor, verify
    from fastgw.store import open_store

    snapshot = compile_for_tools(args.config)
    path = args.file or snapshot.audit.file
    key = audit_key(snapshot.audit, snapshot.state)
    store = open_store(snapshot.state.dir, snapshot.store)
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


def anchor(args: argparse.Namespace) -> int:
    """Verify the log against the store's anchor, then write its current end as a signed anchor."""
    from fastgw.audit import audit_key, export_anchor, verify
    from fastgw.store import open_store

    snapshot = compile_for_tools(args.config)
    path = os.path.abspath(snapshot.audit.file)
    key = audit_key(snapshot.audit, snapshot.state)
    store = open_store(snapshot.state.dir, snapshot.store)
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
