"""Model lists of JWT and mTLS identities on an llm route, as the official SDKs see them: a token's
``models`` claim (the issuer's ``models_claim``) and a certificate's ``[[mtls.consumers]]`` ``models``
bound what the caller reaches; ``GET /v1/models`` lists only that, and any other model is a 404
``model_not_found`` in the client's SDK shape. Real ES256 tokens (pyjwt) and real client certificates
from the tests' CA over TLS."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest

from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.certificates import fingerprint, second_cert
from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway
from tests.support.idp import Idp
from tests.support.ports import free_port

HI = [{"role": "user", "content": "hi"}]


def sdk(gw: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)


def test_a_tokens_models_claim_bounds_what_it_reaches(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    idp = Idp.create(tmp_path)
    gw = gateway_factory(
        demo_llm_config(free_port(), route='auth = "jwt"', extra=idp.issuer_table('models_claim = "models"'))
    )
    with sdk(gw, idp.token(models=["demo-ch*"])) as client:
        answer = client.chat.completions.create(model="demo-chat", messages=HI)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "You said: hi"
        assert [m.id for m in client.models.list()] == ["demo-chat"]
        with pytest.raises(openai.NotFoundError) as refused:
            client.embeddings.create(model="demo-embed", input="x")
        assert refused.value.code == "model_not_found" and "demo-embed" in refused.value.message
    with sdk(gw, idp.token(models="demo-chat demo-embed")) as client:  # a space-separated string
        assert client.embeddings.create(model="demo-embed", input="x").data
        assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]
    # Closed by default: a token without the claim (or with one of another type) reaches no model.
    for bare in (idp.token(), idp.token(models={"demo-chat": True})):
        with sdk(gw, bare) as client:
            assert list(client.models.list()) == []
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="demo-chat", messages=HI)  # type: ignore[arg-type]
    # The Anthropic SDK (its bearer token is the JWT) gets the refusal in Anthropic's shape.
    with (
        anthropic.Anthropic(
            base_url=gw.url, auth_token=idp.token(models=["demo-embed"]), max_retries=0
        ) as claude,
        pytest.raises(anthropic.NotFoundError) as also,
    ):
        claude.messages.create(model="demo-chat", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    body = also.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"


def tls_client(certs: DevCertificates, cert: tuple[Path, Path], gw: Gateway) -> openai.OpenAI:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.load_cert_chain(*cert)
    return openai.OpenAI(
        base_url=f"https://127.0.0.1:{gw.port}/v1",
        api_key="unused: the certificate authenticates",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ctx),
    )


def test_a_certificates_mapping_lists_its_models(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    narrow = (certs.client_cert, certs.client_key)
    wide = second_cert(certs, "wide.client.test", client=True)
    gw = gateway_factory(
        demo_llm_config(
            free_port(),
            route='auth = "mtls"',
            listener=(
                f'tls = {{ certificates = [{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}],'
                f' client_auth = "optional", client_ca = "{certs.ca_cert}" }}'
            ),
            extra=f"""
            [[mtls.consumers]]
            consumer = "embedder"
            sha256 = "{hashlib.sha256(fingerprint(narrow[0])).hexdigest()}"
            models = ["demo-embed"]

            [[mtls.consumers]]
            consumer = "everything"
            san = "wide.client.test"
            """,
        )
    )
    with tls_client(certs, narrow, gw) as client:
        assert [m.id for m in client.models.list()] == ["demo-embed"]
        assert client.embeddings.create(model="demo-embed", input="x").data
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(model="demo-chat", messages=HI)  # type: ignore[arg-type]
        assert refused.value.code == "model_not_found" and "demo-chat" in refused.value.message
    with tls_client(certs, wide, gw) as client:  # a mapping without models: every model the route serves
        assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]
        answer = client.chat.completions.create(model="demo-chat", messages=HI)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "You said: hi"
