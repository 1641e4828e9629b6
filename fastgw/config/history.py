"""The last K valid configs, kept under the state directory so ``fastgw rollback`` has somewhere to go.

Each config that went into service (at start or by a reload) is stored as
``configs/<seq>-<snapshot id>.toml`` with its original path in a sibling ``.source`` file. Rolling back
restores the newest entry older than the newest entry of the running snapshot whose id differs, so
rolling back twice steps back twice; nothing is deleted except entries beyond ``keep_configs``. A rolled
back config stays in force until the next explicit reload, which reads the config file again.
"""

from __future__ import annotations

import os
import sys

from fastgw.snapshot import Snapshot


class ConfigHistory:
    def __init__(self, state_dir: str, keep: int) -> None:
        self.directory = os.path.join(state_dir, "configs")
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

    def previous(self, running_id: str) -> tuple[bytes, str] | None:
        """Bytes and original source of the config to roll back to from ``running_id``."""
        entries = self.entries()
        positions = [i for i, (_seq, snap, _path) in enumerate(entries) if snap == running_id]
        start = positions[-1] if positions else len(entries)
        for _seq, snap, path in reversed(entries[:start]):
            if snap == running_id:
                continue
            # Roll back to the older entry; the rolled-back config is not re-recorded, so a second
            # rollback continues from the older entry (its newest position).
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                with open(os.path.splitext(path)[0] + ".source") as fh:
                    source = fh.read()
            except OSError:
                source = path
            return data, source
        return None
