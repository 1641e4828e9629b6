"""``fastgw diff OLD NEW``: what a reload would change, in the config's own terms.

Both files are fully validated first (a diff against a config that would not load is useless). Named
things are matched by name (listeners, upstreams, routes); every other key is compared field by field,
so the output names the exact key path that changed, e.g. ``~ routes[api].network.mode: 'shadow' ->
'enforce'``. ``+`` added, ``-`` removed, ``~`` changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastgw.config.compiler import compile_spec
from fastgw.config.loader import parse_config, read_config_bytes
from fastgw.config.schema import ConfigSpec

_NAMED = {"listeners": "name", "routes": "name"}


def _load(path: str) -> ConfigSpec:
    data = read_config_bytes(path)
    spec = parse_config(data, path)
    compile_spec(spec, data, path)  # validate completely
    return spec


def _compare(path: str, old: Any, new: Any, out: list[str]) -> None:
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        for f in dataclasses.fields(old):
            _compare(f"{path}.{f.name}" if path else f.name, getattr(old, f.name), getattr(new, f.name), out)
        return
    if isinstance(old, dict) and isinstance(new, dict) and path in ("upstreams",):
        _compare_named(path, old, new, out)
        return
    key = path.rsplit(".", 1)[-1]
    if isinstance(old, tuple) and isinstance(new, tuple) and key in _NAMED:
        field = _NAMED[key]
        _compare_named(path, {getattr(x, field): x for x in old}, {getattr(x, field): x for x in new}, out)
        return
    if old is None and new is not None:
        out.append(f"+ {path}")
    elif old is not None and new is None:
        out.append(f"- {path}")
    elif dataclasses.is_dataclass(old) or dataclasses.is_dataclass(new) or old != new:
        if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
            _compare(path, old, new, out)
        else:
            out.append(f"~ {path}: {_show(old)} -> {_show(new)}")


def _compare_named(path: str, old: dict[str, Any], new: dict[str, Any], out: list[str]) -> None:
    for name in old.keys() - new.keys():
        out.append(f"- {path}[{name}]")
    for name in new.keys() - old.keys():
        out.append(f"+ {path}[{name}]")
    for name in old.keys() & new.keys():
        _compare(f"{path}[{name}]", old[name], new[name], out)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def diff_configs(old_path: str, new_path: str) -> list[str]:
    """Changes from OLD to NEW, one line each, sorted by key path. Raises ConfigError."""
    out: list[str] = []
    _compare("", _load(old_path), _load(new_path), out)
    return sorted(out, key=lambda line: line[2:])
