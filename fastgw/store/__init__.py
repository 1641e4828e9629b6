"""The store: consumers, API key digests, quota counts and audit anchors behind one protocol
(store/base.py), with versioned migrations (store/migrations.py). SQLite (store/sqlite.py) is the only
backend today; callers open it through :func:`open_store` and never name it.
"""

from __future__ import annotations

from fastgw.store.base import Store


def open_store(state_dir: str, *, migrate: bool = True) -> Store:
    """The node's store in its state directory, with pending migrations applied (unless ``migrate`` is
    false: ``fastgw store migrate --dry-run`` looks before it changes anything).

    Raises:
        StoreError: it cannot be opened or migrated."""
    from fastgw.store.sqlite import SQLiteStore

    return SQLiteStore.in_state_dir(state_dir, migrate=migrate)
