"""The control channel's messages: a frozen dataclass per kind, and the one codec that reads and writes them.

On the wire a message is a JSON object whose ``t`` key is its type tag and whose other keys are its
fields (``channel.py`` frames it). ``MESSAGES`` maps each tag to its class; ``decode`` checks every field
against the class's annotations, so an unknown tag, a missing or unexpected field or a value of the wrong
type is a ``MessageError`` naming the message and the field, raised where the frame is read, never a
``KeyError`` inside a handler. Lists on the wire become tuples, so a decoded message is immutable.

Who sends what:

    worker -> control        Hello, Ack, QuotaReport, LedgerReport, MetricsExport
    control -> worker        Reload, CachePush, Health, QuotaBases, MetricsPull, LedgerAck, QuotaAck
    supervisor -> control    Reload (with ``workers``), ReloadResult, ChildDied
    control -> supervisor    ReloadDone, Replace, RequestReload

What changes without a reload and lives in a worker-side cache (API key identities today; provider
credentials, budgets and blocks next) travels as a ``CachePush`` naming the cache: a new cache registers
itself with the worker (``proxy/caches.py``), it needs no new message.

Every process of a node is forked from the same supervisor, so both ends always run the same code: a
message can change shape without a compatibility window.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Final, Union

import orjson


class MessageError(ValueError):
    """A frame that is not a message this code knows, or one with a missing, unexpected or mistyped
    field. The connection it came on is dropped (its sender is broken, or not ours)."""


class ControlMessage:
    """The base of every message: ``TAG`` is its ``t`` on the wire."""

    __slots__ = ()
    TAG: ClassVar[str]


# -- worker -> control -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello(ControlMessage):
    """A worker connected: which slot it fills, its pid, the snapshot it serves."""

    TAG: ClassVar[str] = "hello"
    slot: int
    pid: int
    snapshot: str


@dataclass(frozen=True, slots=True)
class Ack(ControlMessage):
    """A worker's answer to a Reload: the snapshot it now serves, or why it could not compile it."""

    TAG: ClassVar[str] = "ack"
    seq: int
    ok: bool
    snapshot: str = ""
    error: str = ""


# A quota report not acknowledged within this long is sent again (the store could not be written, or the
# control process stopped reading): the store skips one it wrote before, and the admissions counted
# meanwhile wait in the worker's quota book for the next report. Here, with the message, because both
# ends rely on it: the worker resends (process/control_link.py), the control process tells a stopped
# writer from a failing one by its silence (control/write_outage.py).
QUOTA_RESEND_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class QuotaReport(ControlMessage):
    """A worker's quota admissions since its last report: (key hash, period, limit id, key, count).
    Numbered as LedgerReport is (``writer``, ``seq``), and one at a time: the worker sends the next only
    once a QuotaAck says this one was written, and sends it again until then, so the store, which adds a
    batch number once, never counts it twice nor loses it to a control process killed before writing."""

    TAG: ClassVar[str] = "quota"
    writer: str
    seq: int
    entries: tuple[tuple[int, int, str, str, int], ...]


@dataclass(frozen=True, slots=True)
class LedgerReport(ControlMessage):
    """A worker's usage ledger sums since its last report (sinks/ledger.py): (day, consumer, key, team,
    model, provider, route, requests, prompt, completion, cached, reasoning tokens, cost in 1e-9 USD,
    unpriced, errors). ``writer`` (a random id of the worker's run) and ``seq`` (rising) number the batch:
    the worker sends it again until a LedgerAck says it was written or spooled, and the store adds a
    batch number once, so a report re-sent to a control process's successor is never counted twice."""

    TAG: ClassVar[str] = "ledger"
    writer: str
    seq: int
    entries: tuple[tuple[str, str, str, str, str, str, str, int, int, int, int, int, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class AuditNote(ControlMessage):
    """An event a worker asks the control process to put in the audit log (sinks/audit_notes.py)."""

    TAG: ClassVar[str] = "audit"
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MetricsExport(ControlMessage):
    """A worker's gauges and counters (metrics/worker.py ``export``), the answer to a MetricsPull."""

    TAG: ClassVar[str] = "metrics"
    seq: int
    data: dict[str, Any]


# -- control -> worker (Reload also supervisor -> control) --------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reload(ControlMessage):
    """Put this config in force. From the supervisor it also names the workers that must ack it and why."""

    TAG: ClassVar[str] = "reload"
    seq: int
    config: str  # TOML is UTF-8 text
    source: str
    hash: str
    workers: tuple[int, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CachePush(ControlMessage):
    """A change to the worker-side cache named ``cache``: ``full`` replaces its whole content (sent when a
    worker connects), then ``put`` sets entries and ``delete`` removes them. Keys are strings; values are
    whatever the cache's adapter reads (proxy/caches.py)."""

    TAG: ClassVar[str] = "cache"
    cache: str
    full: dict[str, Any] | None = None
    put: dict[str, Any] = field(default_factory=dict)
    delete: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Health(ControlMessage):
    """A health checker's verdict on one target of an upstream."""

    TAG: ClassVar[str] = "health"
    upstream: str
    target: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class QuotaBases(ControlMessage):
    """The counts the store holds for the current periods: (key hash, period, count)."""

    TAG: ClassVar[str] = "quota_bases"
    entries: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class LedgerAck(ControlMessage):
    """The worker's LedgerReports up to ``seq`` are in the store or in the spool: it may forget them."""

    TAG: ClassVar[str] = "ledger_ack"
    seq: int


@dataclass(frozen=True, slots=True)
class QuotaAck(ControlMessage):
    """The worker's QuotaReport ``seq`` is in the store: it may send the next."""

    TAG: ClassVar[str] = "quota_ack"
    seq: int


@dataclass(frozen=True, slots=True)
class MetricsPull(ControlMessage):
    """Send your metrics (a MetricsExport with this ``seq``)."""

    TAG: ClassVar[str] = "metrics_pull"
    seq: int


# -- supervisor -> control ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReloadResult(ControlMessage):
    """How a reload ended, for the audit log, the reload counters and the admin requests in ``ids``.

    ``ok``: the config was valid and is in force at the supervisor (``confirmed``: every worker said so;
    ``failed``: the pids being replaced because they could not compile it); otherwise ``error`` says why,
    and ``state_unwritable`` whether the state directory refused it (a full disk), not the config."""

    TAG: ClassVar[str] = "reload_result"
    ok: bool
    reason: str
    snapshot: str
    ids: tuple[str, ...] = ()
    error: str = ""
    old: str = ""
    failed: tuple[int, ...] = ()
    confirmed: bool = False
    detail: str = ""
    state_unwritable: bool = False


@dataclass(frozen=True, slots=True)
class ChildDied(ControlMessage):
    """A child of the supervisor died (it is being restarted): counted in fastgw_restarts_total."""

    TAG: ClassVar[str] = "child_died"
    child: str
    pid: int


# -- control -> supervisor ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReloadDone(ControlMessage):
    """Every worker of reload ``seq`` acked, or the wait timed out: ``failed`` pids, with ``errors``."""

    TAG: ClassVar[str] = "reload_done"
    seq: int
    failed: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Replace(ControlMessage):
    """Restart these workers: they cannot serve the config in force (``error`` says why)."""

    TAG: ClassVar[str] = "replace"
    pids: tuple[int, ...]
    error: str = ""


@dataclass(frozen=True, slots=True)
class RequestReload(ControlMessage):
    """The admin API asks for a reload (or ``rollback``); the ReloadResult carries ``id`` back."""

    TAG: ClassVar[str] = "request_reload"
    reason: str
    id: str


MESSAGES: Final[dict[str, type[ControlMessage]]] = {
    cls.TAG: cls
    for cls in (
        Hello,
        Ack,
        QuotaReport,
        LedgerReport,
        AuditNote,
        MetricsExport,
        Reload,
        CachePush,
        Health,
        QuotaBases,
        LedgerAck,
        QuotaAck,
        MetricsPull,
        ReloadResult,
        ChildDied,
        ReloadDone,
        Replace,
        RequestReload,
    )
}

# -- the codec ---------------------------------------------------------------------------------------------
_Check = Callable[[object], object]  # a wire value in, the field's value out; raises _MistypedError


class _MistypedError(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _exact(kind: type) -> _Check:
    def check(value: object) -> object:
        if type(value) is not kind:  # bool is an int subclass: True is not a pid
            raise _MistypedError(kind.__name__)
        return value

    return check


def _number(value: object) -> object:
    if type(value) is int or type(value) is float:
        return float(value)
    raise _MistypedError("float")


def _anything(value: object) -> object:
    return value


def _checker(hint: Any) -> _Check:
    """A check for one field's annotation: the handful of types messages use."""
    if hint is Any:
        return _anything
    if hint is float:
        return _number
    if hint in (int, str, bool):
        return _exact(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [_checker(a) for a in args if a is not type(None)]
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args)

        def union(value: object) -> object:
            if value is None and type(None) in args:
                return None
            for option in options:
                try:
                    return option(value)
                except _MistypedError:
                    pass
            raise _MistypedError(names)

        return union
    if origin is dict:
        values = _checker(args[1])

        def mapping(value: object) -> object:
            if not isinstance(value, dict) or not all(type(k) is str for k in value):
                raise _MistypedError("object")
            if values is _anything:
                return value
            return {k: values(v) for k, v in value.items()}

        return mapping
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _checker(args[0])

        def sequence(value: object) -> tuple[object, ...]:
            if not isinstance(value, (list, tuple)):
                raise _MistypedError("array")
            return tuple(item(v) for v in value)

        return sequence
    if origin is tuple:
        items = [_checker(a) for a in args]

        def record(value: object) -> tuple[object, ...]:
            if not isinstance(value, (list, tuple)) or len(value) != len(items):
                raise _MistypedError(f"array of {len(items)}")
            return tuple(check(v) for check, v in zip(items, value, strict=True))

        return record
    raise TypeError(f"control messages cannot carry a {hint!r}")  # a programming error, at import


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: _Check
    required: bool


def _layout(cls: type[ControlMessage]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        _Field(f.name, _checker(hints[f.name]), f.default is MISSING and f.default_factory is MISSING)
        for f in fields(cls)  # type: ignore[arg-type]
    )


_LAYOUTS: Final = {cls: _layout(cls) for cls in MESSAGES.values()}


def to_wire(message: ControlMessage) -> dict[str, object]:
    """The JSON object for ``message`` (its fields and ``t``)."""
    wire: dict[str, object] = {"t": message.TAG}
    for f in _LAYOUTS[type(message)]:
        wire[f.name] = getattr(message, f.name)
    return wire


def from_wire(wire: object) -> ControlMessage:
    """The message a JSON object stands for; MessageError if it is not one, saying what is wrong."""
    if not isinstance(wire, dict):
        raise MessageError("a control message must be a JSON object")
    tag = wire.get("t")
    cls = MESSAGES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise MessageError(f"unknown control message type {tag!r}")
    layout = _LAYOUTS[cls]
    unexpected = set(wire) - {"t"} - {f.name for f in layout}
    if unexpected:
        raise MessageError(f"{tag} message: unexpected field {sorted(unexpected)[0]!r}")
    values: dict[str, object] = {}
    for f in layout:
        if f.name not in wire:
            if f.required:
                raise MessageError(f"{tag} message: missing field {f.name!r}")
            continue
        try:
            values[f.name] = f.check(wire[f.name])
        except _MistypedError as exc:
            raise MessageError(f"{tag} message: field {f.name!r} must be {exc.expected}") from None
    return cls(**values)


def encode(message: ControlMessage) -> bytes:
    """A message as JSON bytes (channel.py adds the length prefix)."""
    return orjson.dumps(to_wire(message))


def decode(body: bytes) -> ControlMessage:
    """JSON bytes as a message; MessageError for anything else."""
    try:
        wire = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"bad frame: {exc}") from None
    return from_wire(wire)
