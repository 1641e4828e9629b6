"""TOML -> frozen specs, refusing anything it does not understand.

Every refusal is a :class:`ConfigError` naming the file, the key path and the reason, with a did-you-mean
for misspelt keys and values: ``conf/x.toml: routes[2].auht: unknown key (did you mean 'auth'?)``. The
conversion is driven by the spec dataclasses' type hints, so it cannot drift from the schema; a number
above its key's stated maximum (``schema.doc(most=...)``) is refused with the reason for that maximum, and
numbers must be finite (TOML allows ``inf`` and ``nan``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from fastgw.config import schema
from fastgw.config.errors import ConfigError
from fastgw.config.schema import ConfigSpec, SecretSpec

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "parse_config",
    "read_config_bytes",
]  # ConfigError: re-exported, callers find it here


def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin is tuple:
        return "an array"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, path: str, reason: str) -> ConfigError:
        return ConfigError(self.file, path, reason)

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        if tp is Any:  # a table whose keys its owner checks (routes.handler: the kind's own spec)
            return value
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            inner = [a for a in get_args(tp) if a is not type(None)]
            # A scalar or a list of them (routes.auth): an array takes the tuple arm, anything else the first.
            arrays = [a for a in inner if get_origin(a) is tuple]
            if arrays and isinstance(value, list):
                return self.convert(arrays[0], value, path)
            return self.convert(inner[0], value, path)
        if origin is Literal:
            options = get_args(tp)
            if value not in options:
                allowed = ", ".join(repr(o) for o in options)
                hint = _did_you_mean(value, options) if isinstance(value, str) else ""
                raise self.error(path, f"invalid value {value!r}{hint} (expected one of {allowed})")
            return value
        if dataclasses.is_dataclass(tp):
            return self.table(typing.cast(type, tp), value, path)
        if origin is tuple:
            if not isinstance(value, list):
                raise self.error(path, f"expected {_type_name(tp)}, got {type(value).__name__}")
            item = get_args(tp)[0]
            return tuple(self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is dict:
            if not isinstance(value, dict):
                raise self.error(path, f"expected {_type_name(tp)}, got {type(value).__name__}")
            item = get_args(tp)[1]
            return {k: self.convert(item, v, f"{path}.{k}") for k, v in value.items()}
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(path, f"expected a number, got {value!r}")
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                raise self.error(path, f"{value} is too large a number") from None
            if not math.isfinite(number):  # TOML has inf and nan; neither is a usable setting
                raise self.error(path, f"expected a finite number, got {value!r}")
            return number
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, f"expected an integer, got {value!r}")
            return value
        if not isinstance(value, tp):
            raise self.error(path, f"expected {_type_name(tp)}, got {value!r}")
        return value

    def table(self, cls: type[T], value: Any, path: str) -> T:
        if not isinstance(value, dict):
            if cls is SecretSpec:  # never echo what may be a pasted secret
                raise self.error(
                    path,
                    "secrets are never written inline: use { file = PATH }, { env = NAME } "
                    "or { credential = NAME }",
                )
            raise self.error(path or "(top level)", f"expected a table, got {value!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in value:
            if key not in fields:
                where = f"{path}.{key}" if path else key
                raise self.error(where, f"unknown key{_did_you_mean(key, fields)}")
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            where = f"{path}.{name}" if path else name
            if name in value:
                kwargs[name] = self.convert(hints[name], value[name], where)
                most = f.metadata.get("max")
                converted = kwargs[name]
                # A list of numbers (e.g. statuses) states the maximum of each of its items.
                items = converted if isinstance(converted, tuple) else (converted,)
                for i, item in enumerate(items):
                    if most is not None and item is not None and item > most:
                        at = f"{where}[{i}]" if isinstance(converted, tuple) else where
                        raise self.error(
                            at, f"{item} is more than the maximum {most} ({f.metadata['max_reason']})"
                        )
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                reason = "missing required key"
                if name == "auth":
                    reason += ' (every route must state auth; write auth = "none" for a public route)'
                raise self.error(where, reason)
        return cls(**kwargs)


def _document(data: bytes, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from None


def parse_config(data: bytes, file: str) -> ConfigSpec:
    """Parse TOML bytes into a ConfigSpec. Raises ConfigError."""
    # schema.ConfigSpec looked up at each call: a test registering its own handler kind puts a rebuilt
    # one there (schema.build_config_spec).
    return _Converter(file).table(schema.ConfigSpec, _document(data, file), "")


def convert_table(cls: type[T], value: dict[str, Any], file: str, key: str) -> T:
    """A table already read from TOML as the spec ``cls`` (a handler kind's ``handler`` table)."""
    return _Converter(file).table(cls, value, key)


def parse_table(data: bytes, file: str, key: str, cls: type[T]) -> T:
    """Only the top-level table ``key`` (its defaults when absent), whatever errors the rest holds: how
    the CLI finds a running gateway's pid file in a config the gateway may yet refuse."""
    return _Converter(file).table(cls, _document(data, file).get(key, {}), key)


def read_config_bytes(path: str) -> bytes:
    """The bytes of a config file. Raises ConfigError naming the file for an unreadable one."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None


def read_config(path: str) -> tuple[bytes, ConfigSpec]:
    """Read and parse a config file. Raises ConfigError (also for an unreadable file)."""
    data = read_config_bytes(path)
    return data, parse_config(data, path)
