"""The audit log: append-only JSON lines, each chained to the one before by an HMAC.

Written only by the control process, one record per admin action or reload, and never dropped (a failed
write raises to the caller). Record i carries ``seq`` and ``mac``::

    MAC_i = HMAC-SHA256(k, MAC_{i-1} || seq_i as 8 bytes big-endian || canonical(record_i without mac))

with MAC_0's predecessor 32 zero bytes and ``canonical`` = orjson with sorted keys. After each append the
last (seq, MAC) is anchored in the store, so removing records from the end is detectable too.
:func:`verify` walks a file and names the first edited, removed, reordered or truncated record.

The store sits in the same state directory as the log: whoever can rewrite one can roll the other back.
An *exported* anchor (:func:`export_anchor`: seq, MAC, time, HMAC-signed with the audit key) kept where
the gateway cannot write is what pins the log's history up to that point.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from fastgw.log_line import log_line
from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import AuditSettings, StateSettings
from fastgw.store.base import AuditAnchor, Store

GENESIS: Final = bytes(32)
KEY_BYTES: Final = 32
# Domain separation: an anchor's signature can never be taken for a record's MAC, nor the reverse.
ANCHOR_CONTEXT: Final = b"fastgw audit anchor v1\0"
ANCHOR_FIELDS: Final = ("log", "seq", "mac", "time")


def audit_key(settings: AuditSettings, state: StateSettings) -> bytes:
    """The configured key, or one generated once in the state directory (0600)."""
    if settings.key is not None:
        return resolve_secret(settings.key)
    path = os.path.join(state.dir, "audit.key")
    try:
        with open(path, "rb") as fh:
            _private(fh.fileno(), path)  # an older file with wider rights: whoever reads it can forge
            return fh.read()
    except FileNotFoundError:
        pass
    os.makedirs(state.dir, mode=0o700, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _private(file: int | str, path: str) -> None:
    """Make a file 0600 (an fd or a path); one the gateway does not own (provisioned root:fastgw 0640)
    cannot be changed: a warning, not a refusal to start."""
    try:
        os.chmod(file, 0o600)
    except PermissionError:
        log_line(f"{path}: not the gateway's to make 0600 (owned by another user): left as it is")


def _cut_torn_tail(path: str) -> None:
    """Remove a last line without its newline: a record cut short by a crash or a full disk mid-write
    (never anchored: the anchor moves after the write). Left, the next record would be glued to it and
    the file read as edited ever after. A removed record the anchor had counted still shows: the file
    then stops short of the anchor."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep, step = size, 65536
        while keep > 0:
            start = max(0, keep - step)
            fh.seek(start)
            cut = fh.read(keep - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        fh.truncate(keep)
    log_line(f"audit log {path}: a last line cut short (a crash or a full disk) removed: {size - keep} bytes")


def _mac(key: bytes, previous: bytes, seq: int, body: dict[str, Any]) -> bytes:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, previous + seq.to_bytes(8, "big") + canonical, hashlib.sha256).digest()


class AuditLog:
    """``node``: the node writing (``[cluster] node``); every record names it, so in a cluster each
    change says where it was made. The store keeps the anchor per node (store/postgres.py)."""

    def __init__(self, path: str, key: bytes, store: Store, node: str = "") -> None:
        self.path = path
        self.node = node
        self._key = key
        self._store = store
        self.problem = ""  # set when the file does not match its anchor at start-up
        if os.path.exists(path):
            _private(path, path)  # an older file with wider rights: it names consumers and keys
            _cut_torn_tail(path)
        anchor = store.audit_anchor(path)
        result = verify(path, key, anchor) if os.path.exists(path) else None
        # Continue after the file's last record when the file checks out; after the anchor when it does
        # not (so the damage stays visible to verify); else after the file's last good record.
        if result is not None and result.ok:
            self.seq, self.mac = result.last_seq, result.last_mac
        elif anchor is not None:
            self.seq, self.mac = anchor.seq, bytes.fromhex(anchor.mac)
        elif result is not None:
            self.seq, self.mac = result.last_seq, result.last_mac
        else:
            self.seq, self.mac = 0, GENESIS
        if result is not None and not result.ok:
            self.problem = result.problem
        self.anchored = anchor.seq if anchor is not None else 0  # the last seq the store holds (Auditing)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record durably (write + fsync) and move the anchor. Raises OSError (its ``filename``
        the log's path) when the record cannot be written: nothing of it is left in the file; StoreError
        when the anchor cannot be moved: the record is in the file, ``seq`` counts it, and ``anchored``
        stays where the store's anchor is."""
        seq = self.seq + 1
        body = {
            "seq": seq,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": event,
            **({"node": self.node} if self.node else {}),
            **fields,
        }
        mac = _mac(self._key, self.mac, seq, body)
        line = orjson.dumps({**body, "mac": mac.hex()}) + b"\n"
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # a full disk writes part of a line: the rest, or the error
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                # No torn record left behind (the next one would be glued to it, and verify call the
                # file edited): the control process is the log's only writer, so cutting back is safe.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                exc.filename = exc.filename or self.path  # os.write names no file: "No space left on device"
                raise
        finally:
            os.close(fd)
        self.seq, self.mac = seq, mac
        self._store.set_audit_anchor(self.path, seq, mac.hex())
        self.anchored = seq
        return body


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    last_seq: int
    last_mac: bytes
    problem: str  # "" when ok; else what is wrong and where (line numbers start at 1)


def verify(
    path: str,
    key: bytes,
    anchor: AuditAnchor | None = None,
    exported: tuple[int, str] | None = None,
) -> VerifyResult:
    """Check the chain of an audit file, and that it holds each given anchor: the store's (``anchor``)
    and an exported one (``exported``: ``(seq, MAC hex)``). A file must reach an anchor's seq, and its
    record at that seq must carry the anchor's MAC (records after it may follow). Raises OSError when the
    file cannot be read."""
    stored = (anchor.seq, anchor.mac) if anchor is not None else None
    anchors = [
        (a, name) for a, name in ((stored, "the store's anchor"), (exported, "the exported anchor")) if a
    ]
    wanted = {a[0] for a, _name in anchors}
    macs: dict[int, str] = {}
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    previous, expected, count = GENESIS, 1, 0

    def bad(problem: str) -> VerifyResult:
        return VerifyResult(False, count, expected - 1, previous, problem)

    seqs: list[int | None] = []
    for raw in lines:
        try:
            record = orjson.loads(raw)
            seqs.append(int(record["seq"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            seqs.append(None)
    for number, raw in enumerate(lines, 1):
        seq = seqs[number - 1]
        if seq is None:
            return bad(f"line {number}: not an audit record (edited)")
        record = orjson.loads(raw)
        if seq != expected:
            if expected in seqs[number:]:
                return bad(f"line {number}: seq {seq} where seq {expected} was expected (reordered)")
            if seq > expected:
                return bad(f"line {number}: seq {expected}..{seq - 1} missing before seq {seq} (removed)")
            return bad(f"line {number}: seq {seq} repeats or goes back, expected {expected} (reordered)")
        mac_hex = record.pop("mac", None)
        if not isinstance(mac_hex, str) or not hmac.compare_digest(
            _mac(key, previous, seq, record).hex(), mac_hex
        ):
            return bad(f"line {number}: seq {seq}: MAC does not match (edited)")
        if seq in wanted:
            macs[seq] = mac_hex
        previous, expected, count = bytes.fromhex(mac_hex), expected + 1, count + 1
    for (anchored_seq, anchored_mac), name in anchors:
        if count < anchored_seq:
            return bad(f"truncated: the file ends at seq {count} but {name} is seq {anchored_seq}")
        if not hmac.compare_digest(macs.get(anchored_seq, ""), anchored_mac):
            return bad(f"line {anchored_seq}: seq {anchored_seq} differs from {name} (edited)")
    return VerifyResult(True, count, count, previous, "")


def _anchor_signature(key: bytes, fields: dict[str, Any]) -> str:
    body = orjson.dumps({name: fields[name] for name in ANCHOR_FIELDS}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, ANCHOR_CONTEXT + body, hashlib.sha256).hexdigest()


def export_anchor(log: str, key: bytes, seq: int, mac: bytes) -> bytes:
    """One JSON line naming the log's last record (seq, MAC) now, signed with the audit key."""
    fields: dict[str, Any] = {
        "log": log,
        "seq": seq,
        "mac": mac.hex(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return orjson.dumps({**fields, "sig": _anchor_signature(key, fields)}) + b"\n"


def read_anchor(data: bytes, key: bytes) -> tuple[int, str, dict[str, Any]]:
    """(seq, MAC hex, fields) of an exported anchor. Raises ValueError, in one line, for anything that is
    not an anchor signed with ``key`` (a wrong key and an edited anchor look alike)."""
    try:
        fields = orjson.loads(data.strip().splitlines()[-1] if data.strip() else b"")
    except orjson.JSONDecodeError:
        raise ValueError("not an exported audit anchor (expected one JSON line)") from None
    if not isinstance(fields, dict) or any(name not in fields for name in (*ANCHOR_FIELDS, "sig")):
        raise ValueError(f"not an exported audit anchor (needs {', '.join((*ANCHOR_FIELDS, 'sig'))})")
    seq, mac, sig = fields["seq"], fields["mac"], fields["sig"]
    if type(seq) is not int or seq < 1 or not isinstance(mac, str) or not isinstance(sig, str):
        raise ValueError("not an exported audit anchor (seq must be a positive integer, mac and sig hex)")
    if not hmac.compare_digest(_anchor_signature(key, fields), sig):
        raise ValueError("the anchor's signature does not match the audit key (edited, or another key)")
    return seq, mac, fields
