"""[retention]: each configured kind of record is trimmed to its age (store rows by their time column,
rotated log files by modification time, never the live files), and each run is audited with counts."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fastgw.config.errors import ConfigError
from fastgw.config.validate import validate
from fastgw.control.retention import DAY_SECONDS, Retention
from fastgw.snapshot import Snapshot
from fastgw.store.base import QuotaAdmission
from tests.support.configs import MINIMAL
from tests.support.stores import StoreMaker

NOW = 2_000_000_000.0


def snapshot(tmp_path: Path, retention: str) -> Snapshot:
    text = MINIMAL + f'[state]\ndir = "{tmp_path}"\n[retention]\n{retention}\n'
    return validate(text.encode(), str(tmp_path / "gw.toml"))


def aged(path: Path, days_old: float) -> Path:
    path.write_text("x")
    os.utime(path, (NOW - days_old * DAY_SECONDS, NOW - days_old * DAY_SECONDS))
    return path


def test_old_rows_and_rotated_files_go_new_ones_and_live_files_stay(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    store = make_store()
    store.add_quota_counts(1.0, [QuotaAdmission(1, -2, "daily", "old", 1)], NOW - 40 * DAY_SECONDS)
    store.add_quota_counts(1.0, [QuotaAdmission(2, -2, "daily", "new", 1)], NOW - 5 * DAY_SECONDS)
    snap = snapshot(
        tmp_path, "quotas_days = 30\naudit_files_days = 90\naccess_logs_days = 7\nledger_days = 400"
    )
    access = tmp_path / "access.log"
    snap = replace(snap, access_log=replace(snap.access_log, target=str(access)))
    audit_file = Path(snap.audit.file)
    audit_file.parent.mkdir(parents=True, exist_ok=True)
    live = [aged(audit_file, 1000), aged(access, 1000)]  # live files: old, but never removed
    old = [aged(Path(f"{audit_file}.1"), 100), aged(Path(f"{access}.2.gz"), 8)]
    kept = [aged(Path(f"{audit_file}.2"), 80), aged(Path(f"{access}.1"), 6)]
    events: list[dict[str, Any]] = []
    retention = Retention(store, lambda: snap, lambda e, **f: events.append({"event": e, **f}), print)

    removed = retention.enforce(NOW)

    assert removed == {"access_logs": 1, "audit_files": 1, "ledger": 0, "quotas": 1}  # no ledger table yet
    assert [c.key for c in store.quota_counts()] == ["new"]
    assert all(p.exists() for p in live + kept) and not any(p.exists() for p in old)
    assert events == [
        {
            "event": "retention",
            "days": {"access_logs": 7, "audit_files": 90, "ledger": 400, "quotas": 30},
            "removed": removed,
        }
    ]
    assert retention.enforce(NOW) == {"access_logs": 0, "audit_files": 0, "ledger": 0, "quotas": 0}


def test_a_quota_key_and_period_age_together_never_one_run_alone(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    """A row per run (store/quota_sql.py): an old run's count of a period another run still counts in
    is kept, or the quota would admit again what it had refused."""
    store = make_store()
    store.add_quota_counts(1.0, [QuotaAdmission(1, -3, "monthly", "k", 5)], NOW - 40 * DAY_SECONDS)
    store.add_quota_counts(2.0, [QuotaAdmission(1, -3, "monthly", "k", 1)], NOW - 5 * DAY_SECONDS)
    snap = snapshot(tmp_path, "quotas_days = 30")
    assert Retention(store, lambda: snap, lambda e, **f: None, print).enforce(NOW) == {"quotas": 0}
    assert [(c.key, c.count) for c in store.quota_counts()] == [("k", 6)]


def test_without_retention_nothing_is_removed_or_audited(make_store: StoreMaker, tmp_path: Path) -> None:
    store = make_store()
    store.add_quota_counts(1.0, [QuotaAdmission(1, -2, "daily", "old", 1)], 1.0)
    snap = snapshot(tmp_path, "")
    events: list[str] = []
    assert Retention(store, lambda: snap, lambda e, **f: events.append(e), print).enforce(time.time()) == {}
    assert events == [] and len(store.quota_counts()) == 1


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("nothing_days = 3", "retention.nothing_days: unknown key"),
        ("ledger_days = -1", "retention.ledger_days: must be 0"),
        ("ledger_days = 36501", "retention.ledger_days: 36501 is more than the maximum 36500"),
        ('ledger_days = "a year"', "retention.ledger_days"),
    ],
)
def test_bad_retention_is_refused_naming_the_key(tmp_path: Path, retention: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        snapshot(tmp_path, retention)
    assert message in str(err.value)


def test_a_count_of_a_period_still_running_is_kept_whatever_quotas_days(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    """quotas_days = 7 removed a monthly key idle for 10 days in the middle of its month: the key got a
    fresh allowance for the rest of the month. Rows written this month are kept until it ends."""
    import calendar

    now = float(calendar.timegm((2033, 5, 20, 12, 0, 0)))
    store = make_store()
    store.add_quota_counts(1.0, [QuotaAdmission(1, -3, "monthly", "this-month", 5)], now - 10 * DAY_SECONDS)
    store.add_quota_counts(1.0, [QuotaAdmission(2, -5, "monthly", "last-month", 5)], now - 25 * DAY_SECONDS)
    snap = snapshot(tmp_path, "quotas_days = 7")
    assert Retention(store, lambda: snap, lambda e, **f: None, print).enforce(now) == {"quotas": 1}
    assert [c.key for c in store.quota_counts()] == ["this-month"]
