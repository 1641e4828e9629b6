"""The [retention] table: how long each kind of record is kept, enforced daily by the control process
(fastgw/control/retention.py) and audited.

Part of the schema (config/schema.py imports it); compiled here too (:func:`compile_retention`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Final

from fastgw.config.fields import doc

if TYPE_CHECKING:
    from fastgw.config.context import CompileContext

# A century: anything longer is "forever", which is what 0 (the default) says.
DAYS_MAX: Final = (36500, "a century: longer is forever, which 0 says")


def _days(what: str) -> int:
    return doc(f"days to keep {what}; 0: as without [retention]", 0, most=DAYS_MAX)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSpec:
    """One ``KIND_days`` key per kind of record; a new kind is a new key here and a target in
    control/retention.py."""

    ledger_days: int = _days("LLM usage ledger rows (the store's ledger table)")
    quotas_days: int = _days("quota counts not updated for that long (without it: 70 days)")
    changes_days: int = _days(
        "the cluster change log's entries (without it: 7 days; a node away longer resyncs)"
    )
    audit_files_days: int = _days(
        "rotated audit log files (AUDIT_FILE.*) by modification time; never the live log"
    )
    access_logs_days: int = _days("rotated access log files (ACCESS_LOG_FILE.*) by modification time")


def compile_retention(ctx: CompileContext, spec: RetentionSpec) -> dict[str, int]:
    """The kinds given a retention, with their days (the loader has checked the range)."""
    kept = {f.name.removesuffix("_days"): getattr(spec, f.name) for f in fields(spec)}
    for kind, days in kept.items():
        if days < 0:
            raise ctx.error(f"retention.{kind}_days", "must be 0 (keep as without it) or a number of days")
    return {kind: days for kind, days in kept.items() if days}
