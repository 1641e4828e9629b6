"""Register a test-only handler kind for one test: in the kind registry and, when it declares a
top-level section, in the schema (ConfigSpec is built from the registries at import, so it is rebuilt)."""

from __future__ import annotations

import pytest

from fastgw.config import schema
from fastgw.handlers.kind import HandlerKind
from fastgw.handlers.registry import KINDS


def register_kind(monkeypatch: pytest.MonkeyPatch, name: str, kind: HandlerKind) -> None:
    """``kind`` serves ``kind = name`` routes until the test ends; its section is a top-level key."""
    monkeypatch.setitem(KINDS, name, kind)
    monkeypatch.setattr(schema, "ConfigSpec", schema.build_config_spec())
