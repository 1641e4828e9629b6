"""The ``azure_openai`` provider kind: Azure OpenAI in Microsoft Foundry, deployment-addressed.

Azure OpenAI speaks OpenAI's Chat Completions and Embeddings wire format; what differs is the address
and the credential (https://learn.microsoft.com/azure/ai-foundry/openai/reference):

- ``POST {base}/openai/deployments/{deployment}/chat/completions?api-version={version}`` and
  ``.../embeddings?api-version=...``: the target's model is the deployment name;
- the key in an ``api-key`` header, or a Microsoft Entra ID token as ``authorization: Bearer`` when the
  target's option ``auth = "entra"``;
- answers carry Azure's content-filter annotations (``prompt_filter_results``,
  ``content_filter_results``); a stream starts with a chunk whose ``choices`` is empty and holds only the
  prompt's filter results, which is not part of the answer and is not passed on.

Target options: ``api_version`` (default ``DEFAULT_API_VERSION``), ``auth`` (``api_key`` or ``entra``).
Because the wire format is the pivot's own, a request goes out as the pivot with ``stream`` set (and,
when streaming, ``stream_options.include_usage`` so that the provider's own final usage is counted), and
answers, streams and usage are read by the ``openai`` kind's code (openai.py), which this adapter extends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from fastgw.ai.adapter import (
    Adapter,
    Capabilities,
    InvalidRequestError,
    Json,
    ProviderError,
    ProviderRequest,
    ProviderTarget,
    json_request,
)
from fastgw.ai.provider_errors import error_message, status_error
from fastgw.ai.providers.openai import OpenAIAdapter, OpenAIStream, json_or_none
from fastgw.ai.providers.retry_hints import header_retry_after

KIND: Final = "azure_openai"
# The latest GA data-plane version at the time of writing (learn.microsoft.com: API version lifecycle).
DEFAULT_API_VERSION: Final = "2024-10-21"
CAPABILITIES: Final = Capabilities(n=True, logprobs=True, embeddings=True)
# A deployment name is one path segment (Azure allows letters, digits, '-', '_', '.'; 64 characters).
_DEPLOYMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_API_VERSION: Final = re.compile(r"[A-Za-z0-9.-]{1,32}")


class AzureStreamTranslator(OpenAIStream):
    """Azure's chat SSE stream: OpenAI's (openai.py reads it), less the prompt's content-filter chunk."""

    __slots__ = ()

    def _chunk(self, data: str) -> Json | None:
        chunk = super()._chunk(data)
        if chunk is None:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list:
            raise ProviderError(502, "the provider's stream sent a chunk without choices", kind="bad_stream")
        if not choices and chunk.get("usage") is None:
            return None  # the prompt's content-filter results: not part of the answer
        return chunk


class AzureOpenAIAdapter(OpenAIAdapter):
    """Stateless; one instance serves every azure_openai provider. Answers are OpenAI's (the inherited
    ``chat_response`` and ``embeddings_response`` read them); requests, credentials and errors are Azure's."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(CAPABILITIES, KIND)

    def credential_headers(self, key: str, options: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
        """``api-key: <key>``, or ``authorization: Bearer <token>`` when ``options["auth"] == "entra"``."""
        auth = options.get("auth", "api_key")
        if auth == "entra":
            return ((b"authorization", b"Bearer " + key.encode()),)
        if auth != "api_key":
            raise ValueError(f"azure_openai auth must be api_key or entra, not {auth!r}")
        return ((b"api-key", key.encode()),)

    def _deployment_request(self, target: ProviderTarget, operation: str, body: Json) -> ProviderRequest:
        if not _DEPLOYMENT.fullmatch(target.model):
            raise InvalidRequestError(
                f"azure deployment name {target.model!r} is not one path segment", "model"
            )
        version = target.options.get("api_version", DEFAULT_API_VERSION)
        if not _API_VERSION.fullmatch(version):
            raise InvalidRequestError(f"azure api-version {version!r} is malformed", "model")
        path = (
            f"{target.base_path}/openai/deployments/{target.model}/{operation}?api-version={quote(version)}"
        )
        return json_request(path, target.headers, body)

    def _dropped(self, pivot: Json, target: ProviderTarget) -> Json:
        if not target.drop_unsupported:
            return pivot
        return {name: value for name, value in pivot.items() if name not in target.drop_unsupported}

    def chat_request(self, pivot: Json, target: ProviderTarget, stream: bool) -> ProviderRequest:
        body = self._dropped(pivot, target)
        body = {**body, "model": target.model, "stream": stream}
        if stream:
            asked = pivot.get("stream_options")
            body["stream_options"] = {**(asked if isinstance(asked, dict) else {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return self._deployment_request(target, "chat/completions", body)

    def chat_stream(self) -> AzureStreamTranslator:
        return AzureStreamTranslator()

    def embeddings_request(self, pivot: Json, target: ProviderTarget) -> ProviderRequest:
        return self._deployment_request(
            target, "embeddings", {**self._dropped(pivot, target), "model": target.model}
        )

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message = error_message(json_or_none(body), f"the azure_openai provider answered {status}")
        retry_after = header_retry_after(headers)
        return status_error(status, message, retry_after)


ADAPTER: Final = AzureOpenAIAdapter()
_CONFORMS: Final[Adapter] = ADAPTER  # mypy checks the contract here
