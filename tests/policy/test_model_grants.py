"""Model lists carried by identities (policy/model_grants.py): a JWT's models claim as the issuer names it,
closed when the claim is missing; a certificate mapping's ``models``; compiled from real configs and
checked against real tokens and the policies' own identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.policy.jwt_auth import JwtAuth
from fastgw.policy.model_grants import MAX_CLAIM_MODELS, may_use, models_from_claim
from fastgw.policy.mtls import MtlsAuth
from fastgw.tls.dev_certs import write_dev_certificates
from fastgw.tls.server import PeerCertificate
from tests.support.configs import MINIMAL
from tests.support.idp import Idp

PATTERN = st.text(st.characters(categories=("L", "N"), include_characters="-.*?"), min_size=1, max_size=20)


@pytest.mark.parametrize(
    ("claim", "models"),
    [
        (["gpt-4o*", "claude-*"], ("gpt-4o*", "claude-*")),
        ("gpt-4o*  claude-*", ("gpt-4o*", "claude-*")),
        (None, ()),
        ("", ()),
        (7, ()),
        ({"gpt-4o": True}, ()),
        (["gpt-4o", 3, "", None], ("gpt-4o",)),
    ],
)
def test_a_claim_becomes_patterns_and_anything_else_grants_nothing(
    claim: object, models: tuple[str, ...]
) -> None:
    assert models_from_claim(claim) == models


@given(st.lists(PATTERN, max_size=20))
def test_an_array_and_a_space_separated_string_grant_the_same(patterns: list[str]) -> None:
    assert models_from_claim(patterns) == models_from_claim(" ".join(patterns)) == tuple(patterns)


def test_a_claim_is_cut_at_the_bound() -> None:
    assert len(models_from_claim([f"m{i}" for i in range(MAX_CLAIM_MODELS + 5)])) == MAX_CLAIM_MODELS


def test_who_may_use_what() -> None:
    class Listed:
        models = ("gpt-4o*",)

    class Unlisted:
        models = None

    assert may_use(Listed(), "gpt-4o-mini") and not may_use(Listed(), "gpt-4")
    assert may_use(Unlisted(), "anything") and may_use(None, "anything")  # no list, or anonymous
    assert not may_use(type("Empty", (), {"models": ()})(), "gpt-4o")  # an empty list: nothing


def first_policy(tmp_path: Path, auth: str, *, listener: str = "", tables: str = "") -> Any:
    """The route's first policy: MINIMAL with ``auth``, more ``listener`` lines and more ``tables``."""
    config = MINIMAL.replace('auth = "none"', f'auth = "{auth}"').replace(
        'bind = "127.0.0.1:8080"', f'bind = "127.0.0.1:8080"\n{listener}'
    )
    return compile_config((config + tables).encode(), str(tmp_path / "gw.toml")).routes[0].chain[0]


def identity_of(policy: JwtAuth, token: str) -> Any:
    ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", f"Bearer {token}".encode())])
    assert policy.check(ex) is None
    return ex.consumer


def test_a_tokens_models_come_from_the_named_claim(tmp_path: Path) -> None:
    idp = Idp.create(tmp_path)
    named = first_policy(tmp_path, "jwt", tables=idp.issuer_table('models_claim = "llm_models"'))
    assert isinstance(named, JwtAuth)
    assert identity_of(named, idp.token(llm_models=["gpt-4o*"])).models == ("gpt-4o*",)
    assert identity_of(named, idp.token(llm_models="a b")).models == ("a", "b")
    assert identity_of(named, idp.token(models=["gpt-4o*"])).models == ()  # another claim: closed
    unnamed = first_policy(tmp_path, "jwt", tables=idp.issuer_table())
    assert identity_of(unnamed, idp.token(models=["gpt-4o*"])).models is None  # no claim configured


def mtls_policy(tmp_path: Path, mapping: str) -> Any:
    certs = write_dev_certificates(tmp_path / "certs")
    pair = f'{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}'
    tls = f'{{ certificates = [{pair}], client_auth = "optional", client_ca = "{certs.ca_cert}" }}'
    return first_policy(
        tmp_path,
        "mtls",
        listener=f"tls = {tls}",
        tables=f"""
[[mtls.consumers]]
consumer = "embedder"
san = "embed.client.test"
{mapping}
[[mtls.consumers]]
consumer = "other"
san = "other.client.test"
""",
    )


def test_a_certificate_mapping_carries_its_models(tmp_path: Path) -> None:
    policy = mtls_policy(tmp_path, 'models = ["text-embedding-*"]')
    assert isinstance(policy, MtlsAuth)
    for san, models in (("embed.client.test", ("text-embedding-*",)), ("other.client.test", None)):
        ex = Exchange(b"GET", b"/", b"1.1", [])
        ex.client_cert = PeerCertificate(subject="CN=x", sans=(san,), sha256="0" * 64)
        assert policy.check(ex) is None and ex.consumer.models == models


def test_an_empty_model_pattern_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mtls\.consumers\[0\]\.models: a model pattern must not be empty"):
        mtls_policy(tmp_path, 'models = [""]')
