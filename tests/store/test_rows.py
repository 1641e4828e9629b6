"""Rows go into the store and come back equal, whatever their values: ids and names as str, times as
float, digests as bytes, lists as tuples, "every route" (None) distinct from no route."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.store.base import ApiKey, Consumer, QuotaAdmission, QuotaBase
from fastgw.store.sqlite import SQLiteStore

text = st.text(min_size=1, max_size=20)
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


@settings(max_examples=40, deadline=None)
@given(
    key=keys,
    later=keys,
    metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    roles=names,
)
def test_rows_round_trip(
    key: ApiKey, later: ApiKey, metadata: dict[str, object], roles: tuple[str, ...]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "fastgw.db"))
        try:
            consumer = Consumer(id="c_1", name="acme", team="t", roles=roles, metadata=metadata, created=1.5)
            store.add_consumer(consumer)
            assert store.consumers() == [consumer]
            store.add_key(key)
            assert store.key(key.id) == key and store.api_keys("c_1") == [key]
            # update_key writes the changeable fields and keeps the identity ones.
            changed = replace(
                key,
                scopes=later.scopes,
                roles=later.roles,
                routes=later.routes,
                expires=later.expires,
                revoked=later.revoked,
                replaced_by=later.replaced_by,
            )
            store.update_key(replace(changed, prefix="other", created=0.0))
            assert store.key(key.id) == changed
        finally:
            store.close()


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(1, 1000), min_size=1, max_size=5))
def test_quota_counts_add_up_across_runs(counts: list[int]) -> None:
    """Admissions of earlier runs become the base a new run adds to."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "fastgw.db"))
        try:
            for run, n in enumerate(counts):
                store.add_quota_counts(float(run), [QuotaAdmission(7, 3, "l", "k", n)], now=10.0 + run)
                assert store.quota_bases(float(run), [3]) == [QuotaBase(7, 3, sum(counts[:run]))]
            assert store.quota_bases(99.0, [3]) == [QuotaBase(7, 3, sum(counts))]
            [total] = store.quota_counts()
            assert (total.limit, total.key, total.period, total.count) == ("l", "k", 3, sum(counts))
        finally:
            store.close()
