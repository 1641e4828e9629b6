"""Secrets named in the config by reference: a file, an environment variable or a systemd credential.

A secret never sits in TOML (the loader refuses an inline string without echoing it) and never appears in
an error message: failures name the config key and where the secret was looked for, not its value.
Resolution happens in the process that needs the secret (the control process for the admin token and the
audit key) and in the supervisor when it validates a config, so a missing secret fails a reload cleanly.
"""

from __future__ import annotations

import os
from typing import Final

from fastgw.config.errors import ConfigError
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


# The admin API answers anyone who reaches its listener, so its token must be unguessable: 32 bytes are
# 128 bits even as hex (the 128-bit floor of NIST SP 800-63B for secrets an attacker can try online). A
# length alone passes "aaaa...a": fewer than 8 distinct bytes in 32 is no random string (a random hex
# string of 32 characters has 16 distinct ones in all but a vanishing fraction of cases).
ADMIN_TOKEN_MIN_BYTES: Final = 32
ADMIN_TOKEN_MIN_DISTINCT: Final = 8


def admin_token(ref: SecretRef) -> bytes:
    """The admin API's bearer token, refused when it is too short or repetitive to be a random secret.
    Raises ConfigError naming the key (never the token)."""
    token = resolve_secret(ref)
    if len(token) < ADMIN_TOKEN_MIN_BYTES or len(set(token)) < ADMIN_TOKEN_MIN_DISTINCT:
        raise ConfigError(
            ref.file,
            ref.key,
            f"the admin token ({ref.kind} {ref.name}) is shorter than {ADMIN_TOKEN_MIN_BYTES} bytes or too"
            " repetitive to be random; make one with: openssl rand -hex 32",
        )
    return token


def check_control_secrets(snapshot: Snapshot) -> None:
    """Resolve the secrets only the control process uses (admin token, audit key) now, so a missing one
    fails start-up or a reload with its key named instead of failing later in the control process."""
    if snapshot.admin is not None:
        admin_token(snapshot.admin.token)
    if snapshot.audit.key is not None:
        resolve_secret(snapshot.audit.key)
    if snapshot.store.dsn is not None:
        resolve_secret(snapshot.store.dsn)
