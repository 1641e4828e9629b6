"""``ConfigError``: the one exception a config problem raises, at the bottom of config/ so that the
schema, the policy sections and the compiler can all raise it without importing one another."""

from __future__ import annotations


class ConfigError(Exception):
    """A config that must not be used. ``str()`` is the one line shown to the user."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
