"""[jwt] compiled from real config text: an issuer's consumer_prefix (checked, and put before the subject),
and the warning for a route whose issuers would give the same subject the same consumer id."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.policy.chain import Pending, run_chain
from fastgw.snapshot import Snapshot
from tests.support.configs import MINIMAL

SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_CONFIG_SECRET", SECRET)


def issuer(name: str, prefix: str | None = None) -> str:
    """An HS256 issuer named ``name`` whose ``iss`` is ``https://NAME.example.test/``."""
    line = "" if prefix is None else f"consumer_prefix = {prefix}\n"
    return (
        f'[jwt.issuers.{name}]\nissuer = "https://{name}.example.test/"\naudiences = []\n'
        f'algorithms = ["HS256"]\nsecret = {{ env = "JWT_CONFIG_SECRET" }}\n{line}'
    )


def compile_with(tmp_path: Path, issuers: str, accepted: tuple[str, ...] = ("okta", "entra")) -> Snapshot:
    """A config with route 'solo' (okta only), route 'both' (``accepted``: routes[2]), and ``issuers``."""
    names = ", ".join(f'"{n}"' for n in accepted)
    config = f"""{MINIMAL}
[[routes]]
name = "solo"
path = "/solo"
upstream = "u"
auth = "jwt"
jwt = {{ issuers = ["okta"] }}
[[routes]]
name = "both"
path = "/both"
upstream = "u"
auth = ["jwt", "api_key"]
jwt = {{ issuers = [{names}] }}
[keys]
pepper = {{ env = "JWT_CONFIG_SECRET" }}
{issuers}
"""
    file = tmp_path / "gw.toml"
    return compile_config(config.encode(), str(file))


def shared_id_warnings(snapshot: Snapshot) -> list[str]:
    return [w for w in snapshot.warnings if "same consumer ids" in w]


def test_a_route_accepting_two_issuers_without_prefixes_is_warned_about(tmp_path: Path) -> None:
    snapshot = compile_with(tmp_path, issuer("okta") + issuer("entra"))
    assert shared_id_warnings(snapshot) == [
        "routes[2] (both): jwt issuers 'okta' and 'entra' give their users the same consumer ids (the sub"
        " alone): users with the same sub share limits, budgets and usage rows; set"
        ' jwt.issuers.entra.consumer_prefix (e.g. "entra:")'
    ]
    # An explicit '' is no prefix either; a third bare issuer is named, and the advice covers all but the
    # first in [jwt.issuers] order (setting a prefix renames an issuer's consumers).
    three = issuer("okta") + issuer("entra", '""') + issuer("google")
    (warning,) = shared_id_warnings(compile_with(tmp_path, three, ("google", "okta", "entra")))
    assert warning.startswith("routes[2] (both): jwt issuers 'okta', 'entra' and 'google' give")
    assert warning.endswith(
        'set jwt.issuers.entra.consumer_prefix (e.g. "entra:") and jwt.issuers.google.consumer_prefix'
        ' (e.g. "google:")'
    )


@pytest.mark.parametrize(
    ("okta", "entra"),
    [
        (None, '"entra:"'),  # the usual fix: the issuer in use keeps its ids, the new one is prefixed
        ('"okta:"', '"entra:"'),
        ('"corp:"', '"corp:"'),  # the same prefix, stated twice: the operator's word that subs are shared
    ],
)
def test_distinct_or_explicitly_equal_prefixes_are_not_warned_about(
    tmp_path: Path, okta: str | None, entra: str
) -> None:
    assert shared_id_warnings(compile_with(tmp_path, issuer("okta", okta) + issuer("entra", entra))) == []


def test_routes_accepting_one_issuer_each_are_not_warned_about(tmp_path: Path) -> None:
    snapshot = compile_with(tmp_path, issuer("okta") + issuer("entra"), accepted=("entra",))
    assert shared_id_warnings(snapshot) == []


def test_the_prefix_starts_the_consumer_name_and_id(tmp_path: Path) -> None:
    snapshot = compile_with(tmp_path, issuer("okta") + issuer("entra", '"entra:"'))
    both = next(r for r in snapshot.routes if r.name == "both")

    def identity(iss: str) -> tuple[str, str]:
        token = jwt.encode({"iss": iss, "sub": "alice", "exp": int(time.time()) + 60}, SECRET, "HS256")
        ex = Exchange(b"GET", b"/both", b"1.1", [(b"authorization", b"Bearer " + token.encode())])
        _, result = run_chain(both.chain, ex)
        assert result is None and not isinstance(result, Pending)
        return ex.consumer.consumer, ex.consumer.consumer_id

    assert identity("https://okta.example.test/") == ("alice", "alice")  # unset: the sub, as before
    assert identity("https://entra.example.test/") == ("entra:alice", "entra:alice")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"okta\\n"', "must be printable (no control characters)"),
        ('"ok\\u0000ta:"', "must be printable (no control characters)"),
        ('"' + "x" * 65 + '"', "is 65 characters, at most 64: it starts every consumer id of the issuer"),
    ],
)
def test_bad_prefixes_are_refused_in_one_line(tmp_path: Path, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_with(tmp_path, issuer("okta") + issuer("entra", value))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'gw.toml'}: jwt.issuers.entra.consumer_prefix: {reason}")


def test_a_prefix_of_the_longest_length_is_accepted(tmp_path: Path) -> None:
    compile_with(tmp_path, issuer("okta") + issuer("entra", '"' + "x" * 64 + '"'))
