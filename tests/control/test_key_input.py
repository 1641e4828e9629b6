"""What the key service stores is what every backend can hold: text with NUL is refused with a 422
naming the field, on SQLite as on PostgreSQL (whose text type cannot hold NUL), never a store error."""

from __future__ import annotations

import pytest

from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.snapshot import KeySettings
from tests.support.stores import StoreMaker

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-key-input-tests-000001"})


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.create_consumer({"name": "a\x00b"}), "name"),
        (lambda s: s.create_consumer({"name": "ok", "team": "t\x00"}), "team"),
        (lambda s: s.create_consumer({"name": "ok", "roles": ["r\x00"]}), "roles"),
        (lambda s: s.create_key({"consumer": "acme", "scopes": ["read\x00"]}), "scopes"),
    ],
)
def test_nul_in_stored_text_is_refused_naming_the_field(
    make_store: StoreMaker, call: object, field: str
) -> None:
    service = KeyService(make_store(), lambda: SETTINGS, lambda *a, **k: None, lambda push: None)
    service.create_consumer({"name": "acme"})
    with pytest.raises(KeyServiceError) as err:
        call(service)  # type: ignore[operator]
    assert err.value.status == 422 and err.value.detail.startswith(field) and "NUL" in err.value.detail
    with pytest.raises(KeyServiceError) as missing:
        service.consumer("acme\x00")  # a lookup is a miss, as for any unknown name
    assert missing.value.status == 404
