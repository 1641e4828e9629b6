"""Admin API endpoints for a consumer's data on request (control/privacy.py):

GET  /consumers/REF/export   everything held about the consumer, as JSON
POST /consumers/REF/erase    remove the consumer and its keys; usage rows kept under a pseudonym
"""

from __future__ import annotations

from typing import Any

from fastgw.control.admin_http import Call, Endpoint, readable
from fastgw.control.api import ControlAPI
from fastgw.control.privacy import ConsumerPrivacy


class PrivacyEndpoints:
    def __init__(self, control: ControlAPI) -> None:
        self._control = control

    def endpoints(self) -> tuple[Endpoint, ...]:
        return (
            Endpoint("GET", "/consumers/*/export", self._export),
            Endpoint("POST", "/consumers/*/erase", self._erase),
        )

    async def _export(self, call: Call, ref: str) -> dict[str, Any]:
        held = ConsumerPrivacy(self._control.keys).export(ref)
        return {**held, "consumer": readable(held["consumer"]), "keys": [readable(k) for k in held["keys"]]}

    async def _erase(self, call: Call, ref: str) -> dict[str, Any]:
        return ConsumerPrivacy(self._control.keys).erase(ref)
