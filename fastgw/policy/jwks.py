"""JSON Web Key Sets: parsing (files and URLs alike) and, for a JWKS URL, keeping the keys fresh.

Parsing keeps only public keys of the families the issuer's algorithms use; a private key (``d``) or a
symmetric key (``kty: oct``) makes the whole set invalid, since publishing one is a mistake worth
stopping on. A remote set (``jwks_url``, or ``discovery_url`` whose ``jwks_uri`` names it) is fetched by
each worker in the background every ``refresh`` seconds; a token naming an unknown ``kid`` triggers one
early fetch, at most once per ``min_interval`` (during that cooldown it asks for a fetch as soon as the
cooldown ends, so a flood of random kids costs at most one fetch per interval and cannot keep a newly
published key out for longer than that).

When the identity provider is down, the last good keys stay in use (stale beats down) for at most
``max_stale`` seconds after they were fetched. Every good set is also saved in the state directory (one
0600 file per issuer and URL, with its fetch time), so a reload or a restarted worker starts with the
last good keys instead of none. While stale keys are served, each failed fetch logs one line and
:data:`STALE` (exported as ``fastgw_jwks_stale_seconds``) holds the keys' fetch time.

The discovery document's ``issuer`` must be the configured issuer (OIDC Discovery 4.3), and it is read
again every ``rediscover`` seconds and after any failed key-set fetch, so a moved ``jwks_uri`` is found.
A plain ``http://`` ``jwks_uri`` is refused unless the issuer allows it or it names a loopback address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import time
from typing import Any

import orjson

from fastgw.atomic_file import write_whole
from fastgw.log_line import log_line
from fastgw.policy.http_client import CALL_ERRORS, Endpoint, request

# issuer name -> wall-clock fetch time of the keys this worker serves although its last fetch failed
# (exported by the worker as a gauge; absent while the keys are fresh).
STALE: dict[str, float] = {}


def is_loopback(host: str) -> bool:
    """Whether a URL host is this machine (plain http to it never crosses a network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_jwks(document: Any, fits: Any, where: str) -> tuple[dict[str, Any], list[Any]]:
    """(keys by kid, keys without kid) of the usable keys. Raises ValueError naming ``where``.

    An entry that is no signing key this library reads (an encryption key, ``use: enc``, as Keycloak
    publishes by default; an algorithm or curve pyjwt lacks) is skipped: one such entry used to refuse the
    whole set, so an IdP adding one took every token down once the saved keys passed jwks_max_stale. A
    set of nothing else is still an error, naming what was skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where} has no 'keys' list")
    from jwt import PyJWK  # pyjwt: loaded with the first key set (the worker imports STALE only)

    by_kid: dict[str, Any] = {}
    without_kid: list[Any] = []
    skipped: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: keys[{i}] is not an object")
        if entry.get("kty") == "oct":
            raise ValueError(f"{where}: keys[{i}] is a symmetric key; use a secret reference")
        if "d" in entry:
            raise ValueError(f"{where}: keys[{i}] is a private key: publish public keys only")
        if entry.get("use") == "enc":
            skipped.append(f"keys[{i}]: an encryption key (use 'enc')")
            continue
        try:
            key = PyJWK(entry).key
        except Exception as exc:  # untrusted input to a parser: PyJWKError, InvalidKeyError (not one), ...
            skipped.append(f"keys[{i}]: {exc or type(exc).__name__}")
            continue
        if not fits(key):
            continue  # keys for other algorithms may share the set; they are simply not used here
        kid = entry.get("kid")
        if isinstance(kid, str) and kid:
            by_kid[kid] = key
        else:
            without_kid.append(key)
    if skipped and not by_kid and not without_kid:
        raise ValueError(f"{where}: {'; '.join(skipped[:3])}: no usable key")
    return by_kid, without_kid


class RemoteJwks:
    """One issuer's remote key set on one worker: fetched, refreshed, saved and restored."""

    def __init__(
        self,
        *,
        name: str,
        issuer: str,
        jwks: Endpoint | None,
        discovery: Endpoint | None,
        tls: ssl.SSLContext | None,
        fits: Any,
        refresh: float,
        min_interval: float,
        timeout: float,
        max_stale: float,
        rediscover: float,
        allow_insecure_http: bool,
        saved_file: str | None,
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.configured_jwks = jwks
        self.jwks = jwks  # the URL in use: configured, or the last discovered jwks_uri
        self.discovery = discovery
        self.tls = tls
        self.fits = fits
        self.refresh_seconds = refresh
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_stale = max_stale
        self.rediscover = rediscover
        self.allow_insecure_http = allow_insecure_http
        self.saved_file = saved_file
        self.by_kid: dict[str, Any] = {}
        self.without_kid: tuple[Any, ...] = ()
        self.fetched_at = 0.0  # wall clock of the keys in use (0: none)
        self.generation = 0  # bumped whenever the key set changes (negative caches compare it)
        # The last fetch failed (the provider is down, or answered garbage): a token whose kid the keys in
        # use lack may well be good, so it gets 503, not 401 (jwt_auth.py). Cleared by a good fetch.
        self.failing = False
        self._document = b""  # canonical bytes of the set in use, to tell a change from a refetch
        self._discovered_at = -1e9
        self._last_attempt = -1e9
        self._inflight: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()
        self._save_failed = False

    def start(self) -> None:
        """Restore the saved keys and begin background refreshes on this worker's loop (idempotent)."""
        if self._task is None:
            self._restore()
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def stop(self) -> None:
        """End background refreshes (the snapshot holding this set was replaced); a request still
        running under that snapshot may fetch once more through :meth:`refresh`."""
        if self._task is not None:
            self._task.cancel()

    def usable(self) -> bool:
        """Whether the keys in use are younger than ``max_stale`` (older ones verify nothing)."""
        return time.time() - self.fetched_at <= self.max_stale

    def may_refetch(self) -> bool:
        return time.monotonic() - self._last_attempt >= self.min_interval

    def fetching(self) -> bool:
        """Whether a fetch is in flight (a request may wait for it: ``refresh`` shares it)."""
        return self._inflight is not None

    def want_refresh(self) -> None:
        """Ask for a fetch as soon as the cooldown allows (an unknown kid arrived during it)."""
        self._wanted.set()

    async def refresh_if_due(self) -> None:
        """What a request whose token may need newer keys waits for: the fetch in flight, else one if the
        cooldown allows (never one more: a request parked while a fetch ran may start only after it
        ended, and a flood of such requests chained fetches back to back), else none, asking for one
        when the cooldown ends."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self.may_refetch():
            await self.refresh()
        else:
            self.want_refresh()

    async def refresh(self) -> bool:
        """Fetch now (concurrent callers share one fetch); True when the fetch succeeded."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight = future
        self._last_attempt = time.monotonic()
        ok = False
        try:
            ok = await self._fetch()
        except Exception as exc:  # a defect must neither hang the requests sharing this fetch nor end
            # the background refreshes: it is one failed fetch, logged, and the next one is tried
            self._failed("the keys", exc)
        finally:
            self._inflight = None
            future.set_result(ok)  # waiters learn the outcome however the fetch ended
        return ok

    async def _refresh_forever(self) -> None:
        while True:
            wait = self.min_interval - (time.monotonic() - self._last_attempt)
            if wait > 0:
                await asyncio.sleep(wait)
            self._wanted.clear()  # a wish made during this fetch asks for the next one
            await self.refresh()
            try:
                async with asyncio.timeout(self.refresh_seconds):
                    await self._wanted.wait()
            except TimeoutError:
                pass

    async def _get_json(self, endpoint: Endpoint) -> Any:
        # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (counters/cluster.py stop),
        # and this runs in a forever loop that shutdown cancels.
        async with asyncio.timeout(self.timeout):
            status, body = await request(endpoint, "GET", [("accept", "application/json")])
        if status != 200:
            raise ValueError(f"HTTP {status}")
        return orjson.loads(body)

    async def _discover(self, discovery: Endpoint) -> Endpoint:
        """The jwks_uri of a discovery document whose issuer is ours. Raises ValueError."""
        document = await self._get_json(discovery)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("issuer") != self.issuer:
            raise ValueError(f"its issuer {document.get('issuer')!r} is not the configured {self.issuer!r}")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise ValueError("no jwks_uri")
        endpoint = Endpoint.parse(uri, self.tls)
        if endpoint.tls is None and not self.allow_insecure_http and not is_loopback(endpoint.host):
            raise ValueError("its jwks_uri is plain http:// (allow_insecure_http = true accepts it)")
        self._discovered_at = time.monotonic()
        return endpoint

    async def _fetch(self) -> bool:
        where = "the JWKS"
        try:
            jwks = self.jwks
            discovery = self.discovery
            if discovery is not None and (
                jwks is None or time.monotonic() - self._discovered_at >= self.rediscover
            ):
                where = "the OIDC discovery document"
                jwks = self.jwks = await self._discover(discovery)
                where = "the JWKS"
            assert jwks is not None
            document = await self._get_json(jwks)
            by_kid, without_kid = parse_jwks(document, self.fits, where)
        except CALL_ERRORS as exc:
            if self.discovery is not None:
                self.jwks = None  # a failed key set may mean a moved jwks_uri: discover again
            self._failed(where, exc)
            return False
        self._install(document, by_kid, tuple(without_kid), time.time())
        self._save(document)
        return True

    def _install(
        self, document: Any, by_kid: dict[str, Any], without_kid: tuple[Any, ...], at: float
    ) -> None:
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        if canonical != self._document:
            self._document = canonical
            self.generation += 1
        self.by_kid, self.without_kid, self.fetched_at = by_kid, without_kid, at
        self.failing = False
        STALE.pop(self.name, None)

    def _failed(self, where: str, error: BaseException) -> None:
        exc = str(error) or type(error).__name__  # a TimeoutError says nothing of itself
        self.failing = True
        if not self.fetched_at:
            log_line(f"fetching {where} of issuer {self.name!r} failed ({exc}); no keys yet")
            return
        age = time.time() - self.fetched_at
        if age <= self.max_stale:
            STALE[self.name] = self.fetched_at
            log_line(
                f"fetching {where} of issuer {self.name!r} failed ({exc}); keeping the last keys,"
                f" serving stale keys fetched {age:.0f} s ago"
                f" (refused after jwks_max_stale = {self.max_stale:g} s)"
            )
        else:
            STALE.pop(self.name, None)
            log_line(
                f"fetching {where} of issuer {self.name!r} failed ({exc}); the last keys are"
                f" {age:.0f} s old, past jwks_max_stale = {self.max_stale:g} s: its tokens are refused"
            )

    def _save(self, document: Any) -> None:
        """Write the set and its fetch time for the next worker or reload: 0600, replaced atomically."""
        path = self.saved_file
        if path is None:
            return
        data = orjson.dumps({"issuer": self.issuer, "fetched_at": self.fetched_at, "jwks": document})
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_whole(path, data, f"{path}.{os.getpid()}.tmp")  # workers save the same file
        except OSError as exc:
            if not self._save_failed:  # once per snapshot: it fails the same way every refresh
                log_line(f"cannot save the keys of issuer {self.name!r} to {path}: {exc.strerror}")
            self._save_failed = True

    def _restore(self) -> None:
        """Start from the saved set when it is younger than ``max_stale`` (a missing file is normal)."""
        path = self.saved_file
        if path is None or self.fetched_at:
            return
        try:
            with open(path, "rb") as fh:
                saved = orjson.loads(fh.read())
            at = saved["fetched_at"]
            if saved.get("issuer") != self.issuer or not isinstance(at, (int, float)):
                raise ValueError("it belongs to another issuer")
            by_kid, without_kid = parse_jwks(saved["jwks"], self.fits, path)
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            log_line(f"ignoring the saved keys of issuer {self.name!r} in {path}: {exc}")
            return
        age = time.time() - at
        if age > self.max_stale:
            return
        self._install(saved["jwks"], by_kid, tuple(without_kid), float(at))
        log_line(f"issuer {self.name!r}: starting with the keys saved {age:.0f} s ago until a fetch succeeds")
