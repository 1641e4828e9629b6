"""The [store] table: which backend holds consumers, API keys and provider keys; and [cluster]: this
node's name among the nodes that share one (its writes and audit records carry it).

Part of the schema (config/schema.py re-exports it); apart so the schema stays readable. Compiled by
config/sections.py ``store``; opened by fastgw/store/__init__.py ``open_store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastgw.config.fields import SecretSpec, doc


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    backend: Literal["sqlite", "postgres"] = doc(
        '"sqlite" (one file in the state directory, one node) or "postgres" (one database shared by every'
        " node of a cluster)",
        "sqlite",
    )
    dsn: SecretSpec | None = doc(
        'the PostgreSQL connection string, e.g. "postgresql://fastgw:PASSWORD@db.internal:5432/fastgw'
        '?sslmode=verify-full&sslrootcert=/etc/fastgw/db-ca.pem" (a secret reference: it holds the password;'
        ' TLS through its sslmode, sslrootcert, sslcert and sslkey); needed by backend = "postgres"',
        None,
    )
    connect_timeout: float = doc(
        "seconds to wait at start for PostgreSQL to accept connections before the start fails",
        10.0,
        most=(300, "five minutes: longer hides a database that is not coming"),
    )


# A node's name is stored with its writes and audit anchor (store/postgres.py keys anchors "NODE|LOG"):
# short, printable, without the separator.
NODE_NAME_MAX = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    node: str = doc(
        "this node's name in the shared store's change log and in every audit record it writes;"
        ' "" (default): the host name and the state directory (distinct for two nodes on one machine)',
        "",
    )
