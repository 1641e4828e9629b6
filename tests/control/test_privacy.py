"""A consumer's data on request: export holds everything kept about it (never a key or digest); erasure
removes it and its keys everywhere, keeps its usage under a pseudonym so totals add up, and audits the
erasure without personal data. On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
import pytest

from fastgw.codec.control_messages import CachePush
from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.control.privacy import ConsumerPrivacy
from fastgw.snapshot import KeySettings
from fastgw.store.base import QuotaAdmission, UsageDelta, UsageQuery
from tests.support.stores import StoreMaker

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-privacy-tests-00000001"})


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.pushes: list[CachePush] = []

    def audit(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})


def setup(make_store: StoreMaker) -> tuple[KeyService, Recorder, list[str]]:
    seen = Recorder()
    service = KeyService(make_store(), lambda: SETTINGS, seen.audit, seen.pushes.append)
    service.create_consumer({"name": "alice@example.com", "team": "t", "metadata": {"phone": "+1 555"}})
    service.create_consumer({"name": "bob"})
    keys = [service.create_key({"consumer": "alice@example.com"})["key"] for _ in range(2)]
    service.create_key({"consumer": "bob"})
    admissions = [
        QuotaAdmission(1, -2, "daily", "alice@example.com", 5),
        QuotaAdmission(2, -4, "daily", "alice@example.com", 7),
        QuotaAdmission(3, -2, "daily", "bob", 11),
    ]
    service.store.add_quota_counts(1.0, admissions, 2.0)
    service.store.add_usage(
        [
            UsageDelta(
                "2026-12-01", "alice@example.com", "k", "", "m", "p", "llm", 3, 30, 9, 0, 0, 500, 0, 0
            ),
            UsageDelta("2026-12-01", "bob", "k", "", "m", "p", "llm", 1, 10, 3, 0, 0, 100, 0, 0),
        ],
        2.0,
    )
    return service, seen, keys


def test_export_holds_the_consumer_its_keys_and_its_usage_but_no_secret(make_store: StoreMaker) -> None:
    service, _seen, plaintexts = setup(make_store)
    held = ConsumerPrivacy(service).export("alice@example.com")
    assert held["consumer"]["name"] == "alice@example.com"
    assert held["consumer"]["metadata"] == {"phone": "+1 555"}
    assert len(held["keys"]) == 2 and all("digest" not in k for k in held["keys"])
    assert sorted(r["run"] for r in held["usage"]["quotas"]) == [5, 7]  # bob's row is not there
    text = orjson.dumps(held).decode()
    for key in service.store.api_keys():
        assert key.digest.hex() not in text
    assert not any(p in text for p in plaintexts)
    with pytest.raises(KeyServiceError) as err:
        ConsumerPrivacy(service).export("nobody")
    assert err.value.status == 404


def test_erase_removes_the_consumer_and_keys_and_keeps_usage_under_a_pseudonym(
    make_store: StoreMaker,
) -> None:
    service, seen, _plaintexts = setup(make_store)
    store = service.store
    digests = {k.digest.hex() for k in store.api_keys(store.consumer("alice@example.com").id)}  # type: ignore[union-attr]
    total = sum(c.count for c in store.quota_counts())
    answer = ConsumerPrivacy(service).erase("alice@example.com")
    assert answer["keys"] == 2 and answer["usage_rows"] == {"quotas": 2, "llm_usage": 1}
    ledger = store.usage(UsageQuery(group_by=("consumer",)))
    assert sum(row.requests for row in ledger) == 4  # the ledger's totals still add up
    assert "alice@example.com" not in orjson.dumps([asdict(row) for row in ledger]).decode()
    assert store.consumer("alice@example.com") is None
    assert [c.name for c in store.consumers()] == ["bob"] and len(store.api_keys()) == 1
    counts = store.quota_counts()
    assert sum(c.count for c in counts) == total  # totals still add up
    assert sorted(c.key for c in counts) == sorted(["bob", answer["pseudonym"], answer["pseudonym"]])
    assert set(seen.pushes[-1].delete) == digests  # every worker drops the keys at once
    record = seen.events[-1]
    assert record["event"] == "consumer.erase"
    assert "alice" not in orjson.dumps(record).decode() and "555" not in orjson.dumps(record).decode()
    with pytest.raises(KeyServiceError) as err:
        ConsumerPrivacy(service).erase("alice@example.com")
    assert err.value.status == 404
