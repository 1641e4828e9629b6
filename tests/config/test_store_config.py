"""[store]: the backend and PostgreSQL's DSN, a secret reference checked when a config is validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.config.errors import ConfigError
from fastgw.config.validate import needs_restart, validate
from tests.support.configs import MINIMAL


def config(tmp_path: Path, store: str) -> bytes:
    return (MINIMAL + f'[state]\ndir = "{tmp_path}"\n[store]\n{store}\n').encode()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ('backend = "postgres"', 'store.dsn: backend = "postgres" needs a dsn (a secret reference)'),
        ('backend = "sqlite"\ndsn = { env = "X" }', "store.dsn: is for backend"),
        ('backend = "mysql"', "store.backend"),
        ('backend = "postgres"\ndsn = "postgresql://u:pw@db/x"', "store.dsn"),
        (
            'backend = "postgres"\ndsn = { env = "FASTGW_TEST_NO_SUCH_DSN" }',
            "FASTGW_TEST_NO_SUCH_DSN is not set",
        ),
        ('backend = "postgres"\ndsn = { env = "X" }\nconnect_timeout = 0', "store.connect_timeout"),
    ],
)
def test_bad_store_settings_are_refused_naming_the_key(tmp_path: Path, store: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(config(tmp_path, store), "gw.toml")
    assert message in str(err.value) and "pw@" not in str(err.value)


def test_the_dsn_is_resolved_at_validation_and_changing_the_store_needs_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTGW_TEST_DSN", "postgresql://fastgw:pw@127.0.0.1:5432/fastgw")
    running = validate(config(tmp_path, 'backend = "sqlite"'), "gw.toml")
    assert running.store.backend == "sqlite" and running.store.dsn is None
    new = validate(config(tmp_path, 'backend = "postgres"\ndsn = { env = "FASTGW_TEST_DSN" }'), "gw.toml")
    assert new.store.backend == "postgres" and new.store.dsn is not None
    assert "pw" not in repr(new.store)  # a reference: where the secret is, not the secret
    refusal = needs_restart(running, new)
    assert refusal is not None and refusal.key == "store"
