"""Secrets named in the config by reference: a file, an environment variable or a systemd credential.

A secret never sits in TOML (the loader refuses an inline string without echoing it) and never appears in
an error message: failures name the config key and where the secret was looked for, not its value.
Resolution happens in the process that needs the secret (the control process for the admin token and the
audit key) and in the supervisor when it validates a config, so a missing secret fails a reload cleanly.
"""

from __future__ import annotations

import os

from fastgw.config.loader import ConfigError
from fastgw.snapshot import SecretRef, Snapshot


def resolve_secret(ref: SecretRef) -> bytes:
    """The secret's bytes (one trailing newline removed). Raises ConfigError naming the key."""
    if ref.kind == "env":
        value = os.environ.get(ref.name)
        if value is None:
            raise ConfigError(ref.file, ref.key, f"environment variable {ref.name} is not set")
        data = value.encode()
    else:
        if ref.kind == "credential":
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise ConfigError(
                    ref.file, ref.key, f"credential {ref.name!r}: $CREDENTIALS_DIRECTORY is not set"
                )
            path = os.path.join(directory, ref.name)
        else:
            path = ref.name
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(ref.file, ref.key, f"cannot read secret file {path}: {exc.strerror}") from None
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    if not data:
        raise ConfigError(ref.file, ref.key, f"the secret ({ref.kind} {ref.name}) is empty")
    return data


def check_control_secrets(snapshot: Snapshot) -> None:
    """Resolve the secrets only the control process uses (admin token, audit key) now, so a missing one
    fails start-up or a reload with its key named instead of failing later in the control process."""
    for ref in (snapshot.admin.token if snapshot.admin else None, snapshot.audit.key):
        if ref is not None:
            resolve_secret(ref)
