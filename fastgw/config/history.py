"""The last K valid configs of each config file, kept under the state directory for ``fastgw rollback``.

History is per config file: ``configs/<file name>-<digest of its real path>/<seq>-<snapshot id>.toml``,
with the original path in a sibling ``.source`` file. A state directory shared by runs of different files
(the quickstart one day, your own config the next) therefore never rolls one back into the other's
configs. Rolling back restores the newest entry older than the newest entry of the running snapshot whose
id differs, so rolling back twice steps back twice; nothing is deleted except entries beyond
``keep_configs``. A rolled back config stays in force until the next explicit reload, which reads the
config file again. ``fastgw rollback --list CONFIG`` prints :meth:`ConfigHistory.describe`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time

from fastgw.snapshot import Snapshot


def history_dir(state_dir: str, source: str) -> str:
    """Where the configs of ``source`` (a path, or ``<built-in ...>``) are kept."""
    where = source if source.startswith("<") else os.path.realpath(source)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(where.strip("<>")))[0])
    digest = hashlib.blake2b(where.encode(), digest_size=4).hexdigest()
    return os.path.join(state_dir, "configs", f"{name or 'config'}-{digest}")


class ConfigHistory:
    def __init__(self, state_dir: str, keep: int, source: str) -> None:
        self.directory = history_dir(state_dir, source)
        self.source = source
        self.keep = keep

    def entries(self) -> list[tuple[int, str, str]]:
        """(seq, snapshot id, path of the .toml) oldest first."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        out = []
        for name in names:
            stem, ext = os.path.splitext(name)
            seq, _, snap = stem.partition("-")
            if ext == ".toml" and seq.isdigit() and snap:
                out.append((int(seq), snap, os.path.join(self.directory, name)))
        out.sort()
        return out

    def record(self, data: bytes, snapshot: Snapshot) -> None:
        """Remember a config that went into service (not again if it is already the newest entry)."""
        entries = self.entries()
        if entries and entries[-1][1] == snapshot.id:
            return
        seq = entries[-1][0] + 1 if entries else 1
        base = os.path.join(self.directory, f"{seq:06d}-{snapshot.id}")
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(base + ".source.tmp", "w") as fh:
                fh.write(snapshot.source)
            with open(base + ".toml.tmp", "wb") as fh:
                fh.write(data)
            os.replace(base + ".source.tmp", base + ".source")
            os.replace(base + ".toml.tmp", base + ".toml")
            for _seq, _snap, path in entries[: max(0, len(entries) + 1 - self.keep)]:
                os.unlink(path)
                os.unlink(os.path.splitext(path)[0] + ".source")
        except OSError as exc:
            sys.stderr.write(f"fastgw: cannot keep config history in {self.directory}: {exc.strerror}\n")

    def _target(self, running_id: str) -> int | None:
        """Index in entries() of the config a rollback from ``running_id`` restores."""
        entries = self.entries()
        positions = [i for i, (_seq, snap, _path) in enumerate(entries) if snap == running_id]
        start = positions[-1] if positions else len(entries)
        for i in range(start - 1, -1, -1):
            if entries[i][1] != running_id:
                return i
        return None

    def previous(self, running_id: str) -> tuple[bytes, str] | None:
        """Bytes and original source of the config to roll back to from ``running_id``."""
        index = self._target(running_id)
        if index is None:
            return None
        # Roll back to the older entry; the rolled-back config is not re-recorded, so a second rollback
        # continues from the older entry (its newest position).
        path = self.entries()[index][2]
        with open(path, "rb") as fh:
            data = fh.read()
        return data, self.source

    def describe(self, running_id: str | None) -> list[str]:
        """What ``fastgw rollback --list`` prints: each kept config, which one runs, where a rollback
        would go, and the rules."""
        entries = self.entries()
        lines = [f"config history of {self.source} (in {self.directory}), oldest first:"]
        target = self._target(running_id) if running_id else None
        running = max((i for i, e in enumerate(entries) if e[1] == running_id), default=None)
        for i, (seq, snap, path) in enumerate(entries):
            try:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(path).st_mtime))
            except OSError:
                when = "?"
            mark = (
                "  <- running"
                if i == running
                else "  <- `fastgw rollback` restores this"
                if i == target
                else ""
            )
            lines.append(f"  {seq:>4}  snapshot {snap}  in service since {when}{mark}")
        if not entries:
            lines.append("  (none yet: a config is recorded when it goes into service)")
        if running_id is None:
            lines.append("The gateway is not running (or its status file is unreadable): nothing is marked.")
        elif target is None:
            lines.append("`fastgw rollback` has nowhere to go: no older config of this file is kept.")
        lines.append(
            "A rollback restores the newest kept config older than the running one; rolling back again "
            "steps further back. It stays in force until `fastgw reload`, which reads the file again. "
            f"The last {self.keep} configs that went into service are kept (state.keep_configs)."
        )
        return lines
