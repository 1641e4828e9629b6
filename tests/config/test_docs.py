"""Every config key is documented in README's configuration reference, with its default."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from fastgw.config import schema

README = Path(__file__).resolve().parents[2] / "README.md"


def _tables() -> dict[str, type]:
    return {
        "server": schema.ServerSpec,
        "listeners": schema.ListenerSpec,
        "access_log": schema.AccessLogSpec,
        "network": schema.NetworkSpec,
        "upstreams.NAME": schema.UpstreamSpec,
        "routes": schema.RouteSpec,
        "routes.request_headers / response_headers": schema.HeaderOpsSpec,
        "demo_upstream": schema.DemoUpstreamSpec,
    }


def test_every_key_is_in_the_readme_reference() -> None:
    text = README.read_text()
    reference = text[text.index("## Configuration reference") :]
    missing = []
    for table, cls in _tables().items():
        for f in dataclasses.fields(cls):
            if f"`{f.name}`" not in reference:
                missing.append(f"{table}.{f.name}")
    assert not missing, f"undocumented keys: {missing}"


def test_every_key_has_a_doc_string() -> None:
    for cls in _tables().values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            assert f.name in hints
