"""The store protocol behaves the same on SQLite and PostgreSQL: rows come back equal, lookups, deletes,
provider keys, audit anchors, quota counts and transactions. Each test runs on both backends (the
``make_store`` fixture, tests/conftest.py); PostgreSQL is a real server (tests/support/postgres.py).

Text here never holds NUL: PostgreSQL's text type cannot store it (the store refuses such a row with a
StoreError, tested below), and the admin API refuses it before it reaches the store."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.store.base import (
    ApiKey,
    AuditAnchor,
    Consumer,
    ProviderCredential,
    QuotaAdmission,
    QuotaBase,
    StoreError,
)
from tests.support.stores import StoreMaker

text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=20)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
names = st.lists(text, max_size=4).map(tuple)
keys = st.builds(
    ApiKey,
    id=text,
    consumer_id=st.just("c_1"),
    prefix=text,
    digest=st.binary(min_size=1, max_size=32),
    pepper_id=text,
    scopes=names,
    roles=names,
    routes=st.none() | names,
    created=times,
    expires=st.none() | times,
    revoked=st.none() | times,
    replaced_by=st.none() | text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIXTURE_PER_EXAMPLE = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def consumer(cid: str = "c_1", name: str = "acme") -> Consumer:
    return Consumer(id=cid, name=name, team="t", roles=("ops",), metadata={"limits": {"a": 5}}, created=1.0)


def key(kid: str, digest: bytes, cid: str = "c_1", created: float = 2.0) -> ApiKey:
    return ApiKey(
        id=kid,
        consumer_id=cid,
        prefix="fgw_x",
        digest=digest,
        pepper_id="p1",
        scopes=(),
        roles=(),
        routes=None,
        created=created,
    )


@FIXTURE_PER_EXAMPLE
@given(
    key=keys, later=keys, metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=3), roles=names
)
def test_rows_round_trip(
    make_store: StoreMaker, key: ApiKey, later: ApiKey, metadata: dict[str, object], roles: tuple[str, ...]
) -> None:
    store = make_store()
    row = Consumer(id="c_1", name="acme", team="t", roles=roles, metadata=metadata, created=1.5)
    store.add_consumer(row)
    assert store.consumers() == [row]
    store.add_key(key)
    assert store.key(key.id) == key and store.api_keys("c_1") == [key] and store.api_keys() == [key]
    changed = replace(
        key,
        scopes=later.scopes,
        roles=later.roles,
        routes=later.routes,
        expires=later.expires,
        revoked=later.revoked,
        replaced_by=later.replaced_by,
    )
    store.update_key(replace(changed, prefix="other", created=0.0))  # identity fields never change
    assert store.key(key.id) == changed


@FIXTURE_PER_EXAMPLE
@given(counts=st.lists(st.integers(1, 1000), min_size=1, max_size=5))
def test_quota_counts_add_up_across_runs(make_store: StoreMaker, counts: list[int]) -> None:
    store = make_store()
    for run, n in enumerate(counts):
        store.add_quota_counts(float(run), [QuotaAdmission(7, 3, "l", "k", n)], now=10.0 + run)
        assert store.quota_bases(float(run), [3]) == [QuotaBase(7, 3, sum(counts[:run]))]
    assert store.quota_bases(99.0, [3]) == [QuotaBase(7, 3, sum(counts))]
    assert store.quota_bases(99.0, [4]) == [] and store.quota_bases(99.0, []) == []
    [total] = store.quota_counts()
    assert (total.limit, total.key, total.period, total.count) == ("l", "k", 3, sum(counts))
    store.forget_quotas(before=10.0 + len(counts))
    assert store.quota_counts() == []


def test_runs_sharing_a_store_are_each_sent_every_count_but_their_own(make_store: StoreMaker) -> None:
    """Two nodes (runs 1.0 and 2.0) count one key and period in turn: each run's base is every other run's
    count, never its own (its workers add that), and the total is every admission once. The one-row
    layout folded run 1's count into the base when run 2 wrote, so run 1 was sent its own count again."""
    store = make_store()
    a, b = 1.0, 2.0
    for n, (run, count) in enumerate([(a, 3), (b, 5), (a, 7), (b, 11)]):
        store.add_quota_counts(run, [QuotaAdmission(7, 3, "l", "k", count)], now=10.0 + n)
    store.add_quota_counts(b, [QuotaAdmission(8, 3, "l", "j", 2)], now=20.0)  # a key only run b counted
    assert set(store.quota_bases(a, [3])) == {QuotaBase(7, 3, 5 + 11), QuotaBase(8, 3, 2)}
    assert set(store.quota_bases(b, [3])) == {QuotaBase(7, 3, 3 + 7), QuotaBase(8, 3, 0)}
    assert set(store.quota_bases(9.0, [3])) == {QuotaBase(7, 3, 26), QuotaBase(8, 3, 2)}  # a later run
    assert [(c.limit, c.key, c.period, c.count, c.updated) for c in store.quota_counts()] == [
        ("l", "j", 3, 2, 20.0),
        ("l", "k", 3, 26, 13.0),  # one line per key and period, all runs added, the newest time
    ]


def test_forgetting_keeps_an_old_run_while_another_run_of_its_key_and_period_is_recent(
    make_store: StoreMaker,
) -> None:
    store = make_store()
    store.add_quota_counts(1.0, [QuotaAdmission(7, 3, "l", "k", 4)], now=10.0)  # run 1, long ago
    store.add_quota_counts(2.0, [QuotaAdmission(7, 3, "l", "k", 6)], now=100.0)  # run 2, recent
    store.add_quota_counts(1.0, [QuotaAdmission(8, 3, "l", "j", 1)], now=10.0)
    store.add_quota_counts(2.0, [QuotaAdmission(8, 3, "l", "j", 1)], now=20.0)
    removed = store.forget_quotas(before=50.0)
    assert [(c.key, c.count) for c in store.quota_counts()] == [("k", 10)]
    assert store.quota_bases(1.0, [3]) == [QuotaBase(7, 3, 6)]  # run 1's row is still its own
    assert removed == 2  # both of key 8's rows, neither of key 7's
    assert store.forget_quotas(before=100.0) == 0 and store.forget_quotas(before=101.0) == 2


def test_a_numbered_quota_report_written_twice_is_counted_once(make_store: StoreMaker) -> None:
    """A worker sends a quota report again to the successor of a control process killed after writing
    it and before acknowledging it: the store skips a batch number it has applied."""
    store = make_store()
    report = [QuotaAdmission(7, 3, "l", "k", 5)]
    assert store.add_quota_counts(1.0, report, 10.0, ("quota-w1", 1)) is True
    assert store.add_quota_counts(1.0, report, 11.0, ("quota-w1", 1)) is False  # the same report again
    assert store.add_quota_counts(1.0, [QuotaAdmission(7, 3, "l", "k", 2)], 12.0, ("quota-w1", 2)) is True
    assert store.add_quota_counts(1.0, report, 13.0, ("quota-w2", 1)) is True  # another worker's numbers
    assert [c.count for c in store.quota_counts()] == [12]


def test_consumers_by_id_or_name_and_deletion_takes_their_keys(make_store: StoreMaker) -> None:
    store = make_store()
    acme, other = consumer(), consumer("c_2", "c_1")  # a name equal to another's id: the id wins
    store.add_consumer(acme)
    store.add_consumer(replace(other, created=2.0))
    assert store.consumer("c_1") == acme and store.consumer("acme") == acme
    assert store.consumer("c_2") == replace(other, created=2.0) and store.consumer("nobody") is None
    store.set_consumer_disabled("c_1", 5.0)
    assert store.consumer("c_1") == replace(acme, disabled=5.0)
    store.set_consumer_disabled("c_1", None)
    store.add_key(key("k_1", b"\x01"))
    store.add_key(key("k_2", b"\x02", cid="c_2"))
    store.delete_consumer("c_1")
    assert store.consumer("acme") is None and store.key("k_1") is None and store.api_keys("c_1") == []
    assert store.consumer("c_1") == replace(other, created=2.0)  # now only a name matches
    assert [k.id for k in store.api_keys()] == ["k_2"]


def test_provider_credentials_replace_keeps_the_first_creation_time(make_store: StoreMaker) -> None:
    store = make_store()
    row = ProviderCredential(
        provider="openai",
        key_id="m1",
        nonce=b"n" * 12,
        ciphertext=b"\x00c",
        prefix="sk-..ab",
        created=1.0,
        updated=1.0,
    )
    store.put_provider_credential(row)
    store.put_provider_credential(replace(row, key_id="m2", ciphertext=b"d", created=9.0, updated=9.0))
    assert store.provider_credential("openai") == replace(row, key_id="m2", ciphertext=b"d", updated=9.0)
    assert [r.provider for r in store.provider_credentials()] == ["openai"]
    assert store.delete_provider_credential("openai") is True
    assert store.delete_provider_credential("openai") is False and store.provider_credentials() == []


def test_audit_anchors_and_a_rolled_back_transaction(make_store: StoreMaker) -> None:
    store = make_store()
    acme = consumer()
    store.add_consumer(acme)
    with pytest.raises(StoreError):
        store.add_consumer(acme)  # a duplicate id
    with pytest.raises(RuntimeError), store.transaction():
        store.set_consumer_disabled("c_1", 5.0)
        with store.transaction():  # joins the outer one
            store.set_audit_anchor("log", 1, "ab")
        raise RuntimeError("abandon")
    assert store.consumer("c_1") == acme and store.audit_anchor("log") is None
    store.set_audit_anchor("log", 1, "ab")
    store.set_audit_anchor("log", 2, "cd")
    assert store.audit_anchor("log") == AuditAnchor("log", 2, "cd")
    store.add_consumer(consumer("c_2", "after"))  # the store is usable after the failures
    assert [c.id for c in store.consumers()] == ["c_1", "c_2"]


def test_a_new_store_has_no_pending_migrations(make_store: StoreMaker) -> None:
    store = make_store()
    assert store.pending_migrations() == [] and store.migrate() == []


def test_a_reference_holding_nul_finds_nothing_and_a_row_holding_it_is_a_store_error(
    make_store: StoreMaker,
) -> None:
    """PostgreSQL's text cannot hold NUL: a lookup by such a reference (a URL path's %00) is a miss on
    both backends; the admin API refuses NUL in what it stores (tests/control/test_key_input.py)."""
    store = make_store()
    store.add_consumer(consumer())
    assert store.consumer("c_1\x00") is None and store.key("k\x00") is None
    if make_store.backend == "postgres":
        with pytest.raises(StoreError):
            store.add_consumer(consumer("c_2", "nul\x00name"))
