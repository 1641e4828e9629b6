"""What every section's compile function is given: the config file (for errors and relative paths),
the shared helpers, and what earlier sections produced (auth policies, the throttle, counters, clocks).

One ``CompileContext`` lives for one compile; nothing in it survives into the Snapshot except the
objects the policies keep. Counters, identities and clocks come in here, not through module globals,
so a test can compile against its own counter table or age a token with a fake clock.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from fastgw.config.errors import ConfigError
from fastgw.config.fields import HeaderOpsSpec, SecretSpec
from fastgw.snapshot import KeySettings, SecretRef

# An HTTP token (RFC 9110 5.6.2): header names, method names, limit names.
TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers whose framing or routing meaning the gateway owns; config may not set or remove them.
MANAGED: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
)


class CompileContext:
    """Helpers and shared results for one compile of one config file."""

    def __init__(
        self,
        file: str,
        *,
        counters: Any = None,
        identities: Any = None,
        failures: Any = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.file = file
        self.warnings: list[str] = []
        self.state_dir = ""
        self.keys: KeySettings | None = None
        # Per-process tables the data plane shares across snapshots (None: the worker's own, see
        # counters/ and policy/identity.py); a test passes fresh ones.
        self.counters = counters
        self.identities = identities
        self.failures = failures  # policy.throttle.FailureState: failed authentications (None: FAILURES)
        self.clock = clock  # wall time: token expiry, quotas (seconds since the epoch)
        self.monotonic = monotonic  # intervals: throttle windows, retries
        self.throttle: Any = None  # policy.throttle.ThrottleSettings | None, set by [auth_throttle]
        # auth scheme -> its compiled policy, filled by each auth section; routes pick from it by name.
        self.auth: dict[str, Any] = {}
        # auth scheme -> request headers that carry its credential (removed before the upstream).
        self.credential_headers: dict[str, frozenset[bytes]] = {}
        self.jwt_issuer_names: dict[str, str] = {}  # [jwt.issuers.NAME] -> its "iss" value
        # [jwt.issuers.NAME] -> its consumer_prefix, which starts its consumers' ids and teams ('' for none).
        self.jwt_consumer_prefixes: dict[str, str] = {}
        self.global_policies: list[Any] = []  # policies every route runs first ([network])
        self.listener_client_auth = False  # some listener asks for client certificates
        # Handler kinds' top-level sections, compiled (handlers/kind.py): section key -> what the
        # kind's compile_section returned, for the kind's route compiles to read.
        self.sections: dict[str, Any] = {}
        self.upstreams: dict[str, Any] = {}  # [upstreams.NAME], compiled: what handler kinds may call
        # Budgets with shared = true seen so far (ai/budget_config.py): name -> (its key and limits, where
        # first given), so that every route sharing one states the same allowance.
        self.shared_budgets: dict[str, tuple[Any, str]] = {}
        # The same budgets' routes, each as "routes[i] (name)" and the JWT issuers it accepts
        # (policy/jwt_config.py warns where two routes' issuers would give different users one id).
        self.shared_budget_issuers: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        # The route being compiled (set by begin_route).
        self.route_key = ""
        self.route_name = ""
        self.route_path = ""  # the route's path as written (a handler kind may publish paths below it)
        self.route_schemes: tuple[str, ...] = ()
        self.route_jwt_issuers: tuple[str, ...] = ()  # the [jwt.issuers] names it accepts (auth = "jwt")
        self.route_drop_request: set[bytes] = set()
        # A route policy may narrow the body limit the connection enforces (Route.max_body_bytes): the
        # connection answers 413 before the upstream sees the body (Content-Length: at once; chunked: when
        # the running total passes it). -1: no narrowing.
        self.route_body_limit = -1
        # The route's body bound once its policies are compiled: what a handler can be given at most.
        self.route_max_body_bytes = 0

    def begin_route(self, index: int, name: str) -> None:
        self.route_key = f"routes[{index}]"
        self.route_name = name
        self.route_schemes = ()
        self.route_jwt_issuers = ()
        self.route_drop_request = set()
        self.route_body_limit = -1
        self.route_max_body_bytes = 0

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, key, reason)

    def positive(self, key: str, value: float) -> None:
        if value <= 0:
            raise self.error(key, f"must be greater than 0, got {value}")

    def path(self, value: str) -> str:
        """A file named in the config: relative paths are relative to the config file."""
        if os.path.isabs(value) or self.file.startswith("<"):
            return value
        return os.path.join(os.path.dirname(os.path.abspath(self.file)), value)

    def header_ops(
        self, key: str, spec: HeaderOpsSpec
    ) -> tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...]]:
        for name in (*spec.set, *spec.remove):
            if not TOKEN.fullmatch(name):
                raise self.error(key, f"{name!r} is not a valid header name")
            if name.lower() in MANAGED:
                raise self.error(key, f"{name!r} is managed by the gateway and cannot be set or removed")
        for name, value in spec.set.items():
            if any(c in value for c in "\r\n\x00"):
                raise self.error(f"{key}.set.{name}", "header value contains CR, LF or NUL")
        drop = frozenset(n.lower().encode() for n in (*spec.remove, *spec.set))
        add = tuple((n.lower().encode(), v.encode("latin-1")) for n, v in spec.set.items())
        return drop, add

    def secret(self, key: str, spec: SecretSpec) -> SecretRef:
        given = [
            (k, v) for k, v in (("file", spec.file), ("env", spec.env), ("credential", spec.credential)) if v
        ]
        if len(given) != 1:
            raise self.error(key, "name exactly one of file, env or credential (secrets are never inline)")
        if spec.file:
            return SecretRef(kind="file", name=self.path(spec.file), key=key, file=self.file)
        if spec.env:
            return SecretRef(kind="env", name=spec.env, key=key, file=self.file)
        name = given[0][1]
        if "/" in name or name in (".", ".."):
            raise self.error(f"{key}.credential", "must be a credential name, not a path")
        return SecretRef(kind="credential", name=name, key=key, file=self.file)

    def verifying_tls(self, table: str, ca: str | None) -> ssl.SSLContext:
        """The client TLS context for calls the gateway makes itself (identity providers): verifying,
        with the system store or the table's ``ca`` bundle."""
        from fastgw.tls.client import build_client_tls
        from fastgw.tls.server import TlsConfigError

        try:
            return build_client_tls(True, self.path(ca) if ca else None, None, None, None).context
        except TlsConfigError as exc:
            raise self.error(f"{table}.{exc.key}", str(exc)) from None
