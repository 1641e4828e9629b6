"""JSON Web Key Sets: parsing (files and URLs alike) and, for a JWKS URL, keeping the keys fresh.

Parsing keeps only public keys of the families the issuer's algorithms use; a private key (``d``) or a
symmetric key (``kty: oct``) makes the whole set invalid, since publishing one is a mistake worth
stopping on. A remote set (``jwks_url``, or ``discovery_url`` whose ``jwks_uri`` names it) is fetched by
each worker in the background every ``refresh`` seconds; a token naming an unknown ``kid`` triggers one
early fetch, at most once per ``min_interval``; when the identity provider is down, the last good keys
stay in use (stale beats down), and a failed fetch is logged.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from typing import Any

import h11
import orjson
from jwt import PyJWK, PyJWKError

from fastgw.policy.http_client import Endpoint, request

FETCH_ERRORS = (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError, orjson.JSONDecodeError, ValueError)


def parse_jwks(document: Any, fits: Any, where: str) -> tuple[dict[str, Any], list[Any]]:
    """(keys by kid, keys without kid) of the usable keys. Raises ValueError naming ``where``."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where} has no 'keys' list")
    by_kid: dict[str, Any] = {}
    without_kid: list[Any] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: keys[{i}] is not an object")
        if entry.get("kty") == "oct":
            raise ValueError(f"{where}: keys[{i}] is a symmetric key; use a secret reference")
        if "d" in entry:
            raise ValueError(f"{where}: keys[{i}] is a private key: publish public keys only")
        try:
            key = PyJWK(entry).key
        except PyJWKError as exc:
            raise ValueError(f"{where}: keys[{i}]: {exc}") from None
        if not fits(key):
            continue  # keys for other algorithms may share the set; they are simply not used here
        kid = entry.get("kid")
        if isinstance(kid, str) and kid:
            by_kid[kid] = key
        else:
            without_kid.append(key)
    return by_kid, without_kid


class RemoteJwks:
    def __init__(
        self,
        jwks: Endpoint | None,
        discovery: Endpoint | None,
        tls: ssl.SSLContext | None,
        fits: Any,
        refresh: float,
        min_interval: float,
        timeout: float,
    ) -> None:
        self.jwks = jwks
        self.discovery = discovery
        self.tls = tls
        self.fits = fits
        self.refresh_seconds = refresh
        self.min_interval = min_interval
        self.timeout = timeout
        self.by_kid: dict[str, Any] = {}
        self.without_kid: tuple[Any, ...] = ()
        self._last_attempt = -1e9
        self._inflight: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin background refreshes on this worker's loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def may_refetch(self) -> bool:
        return time.monotonic() - self._last_attempt >= self.min_interval

    async def refresh(self) -> bool:
        """Fetch now (concurrent callers share one fetch); True when the keys were replaced."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight = future
        self._last_attempt = time.monotonic()
        try:
            ok = await self._fetch()
        finally:
            self._inflight = None
        future.set_result(ok)
        return ok

    async def _refresh_forever(self) -> None:
        while True:
            if time.monotonic() - self._last_attempt >= self.min_interval:
                await self.refresh()
            await asyncio.sleep(self.refresh_seconds)

    async def _get_json(self, endpoint: Endpoint) -> Any:
        # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (cluster_counts.stop),
        # and this runs in a forever loop that shutdown cancels.
        async with asyncio.timeout(self.timeout):
            status, body = await request(endpoint, "GET", [("accept", "application/json")])
        if status != 200:
            raise ValueError(f"HTTP {status}")
        return orjson.loads(body)

    async def _fetch(self) -> bool:
        where = "the JWKS"
        try:
            jwks = self.jwks
            if jwks is None:
                assert self.discovery is not None
                where = "the OIDC discovery document"
                document = await self._get_json(self.discovery)
                uri = document.get("jwks_uri") if isinstance(document, dict) else None
                if not isinstance(uri, str):
                    raise ValueError("no jwks_uri")
                jwks = self.jwks = Endpoint.parse(uri, self.tls)
                where = "the JWKS"
            by_kid, without_kid = parse_jwks(await self._get_json(jwks), self.fits, where)
        except (
            OSError,
            TimeoutError,
            ssl.SSLError,
            h11.ProtocolError,
            orjson.JSONDecodeError,
            ValueError,
        ) as exc:
            sys.stderr.write(
                f"fastgw[{os.getpid()}]: fetching {where} failed ({exc}); keeping the last keys\n"
            )
            return False
        self.by_kid, self.without_kid = by_kid, tuple(without_kid)
        return True
