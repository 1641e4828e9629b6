"""Admin API endpoints for consumers, API keys and LLM provider keys (the plaintext of a new API key is in
its creation response only; a provider key is never shown back, only its prefix).

    GET|POST /consumers, GET|POST /keys, POST /keys/ID/rotate|revoke|expire|update: consumers and API keys
    GET  /consumers/REF (by id or URL-quoted name, with its keys), POST /consumers/REF/disable|enable|delete
    GET  /providers, POST /providers/NAME/key|remove, /providers/rotate-master-key: LLM provider keys
"""

from __future__ import annotations

from typing import Any

from fastgw.control.admin_http import Call, Endpoint, readable
from fastgw.control.api import ControlAPI


class IdentityEndpoints:
    def __init__(self, control: ControlAPI) -> None:
        self._control = control

    def endpoints(self) -> tuple[Endpoint, ...]:
        return (
            Endpoint("GET", "/consumers", self._consumers),
            Endpoint("POST", "/consumers", self._consumer_create),
            Endpoint("GET", "/consumers/*", self._consumer_show),
            Endpoint("POST", "/consumers/*/disable", self._consumer_disable),
            Endpoint("POST", "/consumers/*/enable", self._consumer_enable),
            Endpoint("POST", "/consumers/*/delete", self._consumer_delete),
            Endpoint("GET", "/keys", self._keys),
            Endpoint("POST", "/keys", self._key_create),
            Endpoint("POST", "/keys/*/rotate", self._key_rotate),
            Endpoint("POST", "/keys/*/revoke", self._key_revoke),
            Endpoint("POST", "/keys/*/expire", self._key_expire),
            Endpoint("POST", "/keys/*/update", self._key_update),
            Endpoint("GET", "/providers", self._providers),
            Endpoint("POST", "/providers/rotate-master-key", self._providers_rotate),
            Endpoint("POST", "/providers/*/key", self._provider_set_key),
            Endpoint("POST", "/providers/*/remove", self._provider_remove),
        )

    async def _consumers(self, call: Call) -> dict[str, Any]:
        return {"consumers": [readable(c) for c in self._control.keys.consumers()]}

    async def _consumer_create(self, call: Call) -> dict[str, Any]:
        return {"_status": 201, **readable(self._control.keys.create_consumer(call.body))}

    async def _consumer_show(self, call: Call, ref: str) -> dict[str, Any]:
        consumer = self._control.keys.consumer(ref)
        return {**readable(consumer), "keys": [readable(k) for k in consumer["keys"]]}

    async def _consumer_disable(self, call: Call, ref: str) -> dict[str, Any]:
        return readable(self._control.keys.disable(ref))

    async def _consumer_enable(self, call: Call, ref: str) -> dict[str, Any]:
        return readable(self._control.keys.enable(ref))

    async def _consumer_delete(self, call: Call, ref: str) -> dict[str, Any]:
        return readable(self._control.keys.delete_consumer(ref))

    async def _key_update(self, call: Call, key_id: str) -> dict[str, Any]:
        return readable(self._control.keys.update(key_id, call.body))

    async def _keys(self, call: Call) -> dict[str, Any]:
        rows = self._control.keys.keys()
        return {"keys": [readable(row) for row in rows]}

    async def _key_create(self, call: Call) -> dict[str, Any]:
        return {"_status": 201, **readable(self._control.keys.create_key(call.body))}

    async def _key_rotate(self, call: Call, key_id: str) -> dict[str, Any]:
        result = self._control.keys.rotate(key_id, call.body)
        return {"_status": 201, "new": readable(result["new"]), "old": readable(result["old"])}

    async def _key_revoke(self, call: Call, key_id: str) -> dict[str, Any]:
        return readable(self._control.keys.revoke(key_id))

    async def _key_expire(self, call: Call, key_id: str) -> dict[str, Any]:
        return readable(self._control.keys.expire(key_id, call.body))

    async def _providers(self, call: Call) -> dict[str, Any]:
        return {"providers": [readable(row) for row in self._control.provider_keys.list()]}

    async def _providers_rotate(self, call: Call) -> dict[str, Any]:
        return self._control.provider_keys.rotate_master_key()

    async def _provider_set_key(self, call: Call, name: str) -> dict[str, Any]:
        return readable(self._control.provider_keys.set_key(name, call.body))

    async def _provider_remove(self, call: Call, name: str) -> dict[str, Any]:
        return self._control.provider_keys.remove(name)
