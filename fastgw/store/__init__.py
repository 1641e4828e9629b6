"""The store: consumers, API key digests, provider keys, quota counts and audit anchors behind one
protocol (store/base.py), with versioned migrations. Two backends: SQLite (store/sqlite.py, one file in
the state directory, the default) and PostgreSQL (store/postgres.py, shared by the nodes of a cluster);
callers open the configured one through :func:`open_store` and never name it.
"""

from __future__ import annotations

import os
import socket

from fastgw.config.errors import ConfigError
from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import StoreSettings
from fastgw.store.base import Store, StoreError


def node_name(state_dir: str) -> str:
    """This node in a shared store (who made a change, whose audit anchor): host and state directory,
    stable across restarts and distinct for two nodes on one machine."""
    return f"{socket.gethostname()}:{os.path.abspath(state_dir)}"


def this_node(state_dir: str, settings: StoreSettings | None) -> str:
    """The configured ``[cluster] node``, else :func:`node_name`."""
    return settings.node if settings is not None and settings.node else node_name(state_dir)


def store_dsn(settings: StoreSettings) -> str:
    """The PostgreSQL DSN from its secret reference. Raises StoreError naming the config key, never the
    secret."""
    assert settings.dsn is not None, "[store] backend = postgres always has a dsn (config/sections.py)"
    try:
        return resolve_secret(settings.dsn).decode()
    except ConfigError as exc:
        raise StoreError(str(exc)) from None
    except UnicodeDecodeError:
        raise StoreError(f"{settings.dsn.file}: store.dsn: the secret is not UTF-8 text") from None


def open_store(state_dir: str, settings: StoreSettings | None = None, *, migrate: bool = True) -> Store:
    """The node's store (SQLite in the state directory unless ``settings`` say PostgreSQL), with pending
    migrations applied (unless ``migrate`` is false: ``fastgw store migrate --dry-run`` looks before it
    changes anything).

    Raises:
        StoreError: it cannot be opened, reached or migrated."""
    if settings is not None and settings.backend == "postgres":
        from fastgw.store.postgres import PostgresStore

        return PostgresStore(
            store_dsn(settings),
            node=this_node(state_dir, settings),
            migrate=migrate,
            connect_timeout=settings.connect_timeout,
        )
    from fastgw.store.sqlite import SQLiteStore

    return SQLiteStore.in_state_dir(state_dir, migrate=migrate)
