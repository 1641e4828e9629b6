"""No consumer, key or provider-key change goes unaudited (README, "Failure modes"): the audit record is
written inside the change's store transaction, so when the audit log cannot be written the change is
refused (503) and nothing of it is stored, on SQLite as on PostgreSQL. Before, the record followed the
commit, and a failed write left the change in force with only a log line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.snapshot import KeySettings
from tests.support.stores import StoreMaker

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-audited-changes-000001"})


class Audit:
    """An audit log that can be made to fail as control/auditing.py's Auditing.change does: a 503."""

    def __init__(self) -> None:
        self.failing = False
        self.events: list[str] = []

    def __call__(self, event: str, **fields: Any) -> None:
        if self.failing:
            raise KeyServiceError(503, f"the audit log cannot be written ({event}): retry later")
        self.events.append(event)


@pytest.mark.parametrize(
    ("change", "unchanged"),
    [
        (
            lambda s: s.create_consumer({"name": "other"}),
            lambda s: [c["name"] for c in s.consumers()] == ["acme"],
        ),
        (lambda s: s.create_key({"consumer": "acme"}), lambda s: len(s.keys()) == 1),
        (lambda s: s.revoke(s.keys()[0]["id"]), lambda s: not s.keys()[0].get("revoked")),
        (lambda s: s.rotate(s.keys()[0]["id"], {}), lambda s: len(s.keys()) == 1),
        (lambda s: s.disable("acme"), lambda s: not s.consumer("acme").get("disabled")),
        (lambda s: s.delete_consumer("acme"), lambda s: s.consumer("acme")["name"] == "acme"),
        (lambda s: s.update(s.keys()[0]["id"], {"scopes": ["read"]}), lambda s: not s.keys()[0]["scopes"]),
    ],
)
def test_a_change_the_audit_log_cannot_record_is_refused_and_not_stored(
    make_store: StoreMaker,
    change: Callable[[KeyService], object],
    unchanged: Callable[[KeyService], bool],
) -> None:
    audit = Audit()
    pushes: list[object] = []
    service = KeyService(make_store(), lambda: SETTINGS, audit, pushes.append)
    service.create_consumer({"name": "acme"})
    service.create_key({"consumer": "acme"})
    pushed = len(pushes)
    audit.failing = True
    with pytest.raises(KeyServiceError) as refused:
        change(service)
    assert refused.value.status == 503
    assert unchanged(service), "the change was rolled back with its audit record"
    assert len(pushes) == pushed, "nothing was pushed to the workers"
