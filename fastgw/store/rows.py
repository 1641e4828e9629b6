"""Rows as every backend stores them: the column lists, and the converters from a fetched tuple to the
typed rows of store/base.py. Lists and objects are kept as JSON text, so both backends hold the same
values in the same columns and ``fastgw store copy`` can move them verbatim."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from fastgw.store.base import ApiKey, Consumer, ProviderCredential

KEY_COLUMNS: Final = (
    "id, consumer_id, prefix, digest, pepper_id, scopes, roles, routes, created, expires, revoked,"
    " replaced_by"
)
CONSUMER_COLUMNS: Final = "id, name, team, roles, metadata, created, disabled"
CREDENTIAL_COLUMNS: Final = "provider, key_id, nonce, ciphertext, prefix, created, updated"


def to_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def consumer_row(r: Sequence[Any]) -> Consumer:
    return Consumer(
        id=r[0],
        name=r[1],
        team=r[2],
        roles=tuple(orjson.loads(r[3])),
        metadata=orjson.loads(r[4]),
        created=r[5],
        disabled=r[6],
    )


def consumer_values(consumer: Consumer) -> tuple[Any, ...]:
    """The values of CONSUMER_COLUMNS, in order."""
    return (
        consumer.id,
        consumer.name,
        consumer.team,
        to_json(consumer.roles),
        to_json(consumer.metadata),
        consumer.created,
        consumer.disabled,
    )


def key_row(r: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=r[0],
        consumer_id=r[1],
        prefix=r[2],
        digest=bytes(r[3]),
        pepper_id=r[4],
        scopes=tuple(orjson.loads(r[5])),
        roles=tuple(orjson.loads(r[6])),
        routes=None if r[7] is None else tuple(orjson.loads(r[7])),
        created=r[8],
        expires=r[9],
        revoked=r[10],
        replaced_by=r[11],
    )


def key_values(key: ApiKey) -> tuple[Any, ...]:
    """The values of KEY_COLUMNS, in order."""
    return (
        key.id,
        key.consumer_id,
        key.prefix,
        key.digest,
        key.pepper_id,
        to_json(key.scopes),
        to_json(key.roles),
        None if key.routes is None else to_json(key.routes),
        key.created,
        key.expires,
        key.revoked,
        key.replaced_by,
    )


def key_changes(key: ApiKey) -> tuple[Any, ...]:
    """A key's changeable fields (scopes, roles, routes, expires, revoked, replaced_by), then its id."""
    return (
        to_json(key.scopes),
        to_json(key.roles),
        None if key.routes is None else to_json(key.routes),
        key.expires,
        key.revoked,
        key.replaced_by,
        key.id,
    )


def credential_row(r: Sequence[Any]) -> ProviderCredential:
    return ProviderCredential(
        provider=r[0],
        key_id=r[1],
        nonce=bytes(r[2]),
        ciphertext=bytes(r[3]),
        prefix=r[4],
        created=r[5],
        updated=r[6],
    )


def credential_values(row: ProviderCredential) -> tuple[Any, ...]:
    return (row.provider, row.key_id, row.nonce, row.ciphertext, row.prefix, row.created, row.updated)
