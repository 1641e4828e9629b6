"""Admin API endpoints for the prompt APIs (``[[prompt_api]]``) of the snapshot in force.

GET  /prompt-apis               each API: path, model, the routes that publish it (and their auth),
                                its input and output schemas
GET  /prompt-apis/openapi.json  the published ones as an OpenAPI 3.1 document
"""

from __future__ import annotations

from typing import Any

import orjson

from fastgw.ai.prompt_openapi import listing, openapi
from fastgw.control.admin_http import Call, Endpoint
from fastgw.control.api import ControlAPI


class PromptApiEndpoints:
    def __init__(self, control: ControlAPI) -> None:
        self._control = control

    def endpoints(self) -> tuple[Endpoint, ...]:
        return (
            Endpoint("GET", "/prompt-apis", self._list),
            Endpoint("GET", "/prompt-apis/openapi.json", self._openapi),
        )

    async def _list(self, call: Call) -> dict[str, Any]:
        snapshot = self._control.snapshot
        apis = snapshot.sections.get("prompt_api") or {}
        return {"snapshot": snapshot.id, "prompt_apis": listing(apis, snapshot)}

    async def _openapi(self, call: Call) -> tuple[bytes, str]:
        snapshot = self._control.snapshot
        document = openapi(snapshot.sections.get("prompt_api") or {}, snapshot)
        return orjson.dumps(document), "application/json"
