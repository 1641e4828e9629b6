"""The store tests' backends: each test of the store protocol runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stores import BACKENDS, StoreMaker


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    maker = StoreMaker(str(request.param), tmp_path, dsn)
    yield maker
    maker.close()
