"""[jwt] compiled from real config text: an issuer's consumer_prefix (checked, and put before the subject
and the team), and the warnings where issuers would give different users one consumer id or team: on one
route, across the routes of a shared budget, and in a route's authorize teams."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from fastgw.ai.budgets import Budgets
from fastgw.config.compiler import compile_config
from fastgw.config.context import CompileContext
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.policy.chain import Pending, run_chain
from fastgw.snapshot import Route, Snapshot
from tests.support.configs import MINIMAL
from tests.support.counter_tables import memory_table

SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_CONFIG_SECRET", SECRET)


def issuer(name: str, prefix: str | None = None) -> str:
    """An HS256 issuer named ``name`` whose ``iss`` is ``https://NAME.example.test/``, teams in 'team'."""
    line = "" if prefix is None else f"consumer_prefix = {prefix}\n"
    return (
        f'[jwt.issuers.{name}]\nissuer = "https://{name}.example.test/"\naudiences = []\n'
        f'algorithms = ["HS256"]\nsecret = {{ env = "JWT_CONFIG_SECRET" }}\nteam_claim = "team"\n{line}'
    )


def signed_in(route: Route, name: str, **claims: Any) -> Exchange:
    """A request to ``route`` with a token of issuer ``name`` (HS256, ``claims`` over sub 'alice'), after
    the route's chain has authenticated it."""
    base = {"iss": f"https://{name}.example.test/", "sub": "alice", "exp": int(time.time()) + 60}
    token = jwt.encode({**base, **claims}, SECRET, "HS256")
    ex = Exchange(b"GET", b"/", b"1.1", [(b"authorization", b"Bearer " + token.encode())])
    _, result = run_chain(route.chain, ex)
    assert result is None and not isinstance(result, Pending)
    return ex


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
        ('"okta:"', '"okta-eu:"'),  # alike, but neither starts the other
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


def test_the_prefix_starts_the_team_too(tmp_path: Path) -> None:
    """Two identity providers' teams 'platform' are two teams once their issuers have prefixes: the team
    budgets, the usage rows and the team header see the prefixed name; a token without a team has none."""
    snapshot = compile_with(tmp_path, issuer("okta") + issuer("entra", '"entra:"'))
    both = next(r for r in snapshot.routes if r.name == "both")
    assert signed_in(both, "okta", team="platform").consumer.team == "platform"  # no prefix: as before
    assert signed_in(both, "entra", team="platform").consumer.team == "entra:platform"
    assert signed_in(both, "entra").consumer.team == ""  # not the team "entra:" of every team-less user


LLM = """
[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "u"
base_path = "/v1"
[[llm.models]]
name = "m"
targets = [{ provider = "oa", model = "gpt-4o" }]
"""


def llm_route(name: str, issuers: str, budget: str) -> str:
    """An llm route at /NAME accepting ``issuers`` (config text of a list), with ``budget`` (its keys)."""
    return f"""
[[routes]]
name = "{name}"
path = "/{name}"
kind = "llm"
auth = "jwt"
jwt = {{ issuers = [{issuers}] }}
[[routes.handler.budgets]]
{budget}
requests_per_minute = 1
"""


def test_a_team_budget_counts_two_issuers_teams_of_one_name_apart(tmp_path: Path) -> None:
    config = MINIMAL + LLM + llm_route("chat", '"okta", "entra"', 'name = "per-team"\nkey = "team"')
    config += issuer("okta", '"okta:"') + issuer("entra", '"entra:"')
    file = str(tmp_path / "gw.toml")
    snapshot = compile_config(config.encode(), file, CompileContext(file, counters=memory_table()))
    chat = next(r for r in snapshot.routes if r.name == "chat")
    budgets = chat.handler.budgets  # type: ignore[union-attr]
    assert isinstance(budgets, Budgets)

    def refused(name: str) -> bool:
        ex = signed_in(chat, name, team="platform", sub=f"someone-of-{name}")
        return budgets.reserve(ex, None, 40, {"max_tokens": 1}).refusal is not None

    # One request a minute per team: okta's platform team has used its own, entra's is another team.
    assert [refused(n) for n in ("okta", "entra", "okta", "entra")] == [False, False, True, True]


def test_prefixes_of_which_one_starts_the_other_are_warned_about(tmp_path: Path) -> None:
    snapshot = compile_with(tmp_path, issuer("okta", '"a"') + issuer("entra", '"ab"'))
    assert shared_id_warnings(snapshot) == []
    assert [w for w in snapshot.warnings if "prefixes" in w] == [
        "routes[2] (both): jwt issuers 'okta' and 'entra' have the consumer prefixes 'a' and 'ab', the one"
        " the start of the other: sub 'balice' from 'okta' and sub 'alice' from 'entra' are both the"
        " consumer 'abalice' (and their teams meet alike): they share limits, budgets and usage rows; give"
        " them prefixes of which neither is the start of the other"
    ]
    # What the warning says, with signed tokens: two users, one consumer.
    both = next(r for r in snapshot.routes if r.name == "both")
    assert signed_in(both, "okta", sub="balice").consumer.consumer_id == "abalice"
    assert signed_in(both, "entra", sub="alice").consumer.consumer_id == "abalice"


def compile_shared(okta: str | None, entra: str | None, key: str = "consumer") -> Snapshot:
    """Routes 'chat' (okta's tokens only) and 'batch' (entra's only), with one shared budget by ``key``."""
    budget = f'name = "spend"\nshared = true\nkey = "{key}"'
    config = MINIMAL + LLM + llm_route("chat", '"okta"', budget) + llm_route("batch", '"entra"', budget)
    return compile_config((config + issuer("okta", okta) + issuer("entra", entra)).encode(), "gw.toml")


def test_a_shared_budget_over_routes_of_different_issuers_is_warned_about() -> None:
    """No route accepts both issuers, so no route is warned about, yet the budget would count okta's alice
    and entra's alice as one."""
    assert list(compile_shared(None, None).warnings) == [  # this one only: none of a route
        "routes[2].handler.budgets[0] (batch): shared budget 'spend' also counts on routes[1] (chat), whose"
        " jwt issuer 'okta' gives its users the same consumer ids and teams as this route's 'entra' (the"
        " sub alone): users with the same sub share the budget; set jwt.issuers.entra.consumer_prefix (e.g."
        ' "entra:")'
    ]
    (overlap,) = [w for w in compile_shared('"a"', '"ab"', "team").warnings if "shared" in w]
    assert overlap.startswith(
        "routes[2].handler.budgets[0] (batch): shared budget 'spend' also counts on routes[1] (chat): jwt"
        " issuers 'okta' and 'entra' have the consumer prefixes 'a' and 'ab'"
    )
    assert overlap.endswith(
        "they share the budget; give them prefixes of which neither is the start of the other"
    )


@pytest.mark.parametrize(
    ("okta", "entra", "key"),
    [
        (None, '"entra:"', "consumer"),
        ('"corp:"', '"corp:"', "api_key"),
        (None, None, "route"),  # everyone together in any case
    ],
)
def test_a_shared_budget_over_issuers_kept_apart_is_not_warned_about(
    okta: str | None, entra: str | None, key: str
) -> None:
    assert [w for w in compile_shared(okta, entra, key).warnings if "shared" in w] == []


def authorize_route(auth: str, teams: str) -> str:
    return f"""
[[routes]]
name = "admin"
path = "/admin"
upstream = "u"
auth = {auth}
jwt = {{ issuers = ["okta", "entra"] }}
authorize = {{ teams = [{teams}], methods = {{ POST = {{ teams = ["entra:ops"] }} }} }}
[keys]
pepper = {{ env = "JWT_CONFIG_SECRET" }}
"""


def test_an_authorize_team_no_prefixed_issuer_can_give_is_warned_about() -> None:
    issuers = issuer("okta", '"okta:"') + issuer("entra", '"entra:"')

    def warnings(auth: str, teams: str) -> list[str]:
        config = MINIMAL + authorize_route(auth, teams) + issuers
        return [w for w in compile_config(config.encode(), "gw.toml").warnings if "authorize" in w]

    assert warnings('"jwt"', '"platform", "okta:ops"') == [
        "routes[1].authorize.teams[0] (admin): no caller of this route has the team 'platform': its jwt"
        " issuers put their consumer_prefix ('okta:', 'entra:') before the team claim; name the team as the"
        " gateway sees it, e.g. 'okta:platform'"
    ]
    assert warnings('"jwt"', '"okta:platform", "entra:platform"') == []
    assert warnings('["jwt", "api_key"]', '"platform"') == []  # an API key's consumer may be in it


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"okta\\n"', "must be printable (no control characters)"),
        ('"ok\\u0000ta:"', "must be printable (no control characters)"),
        ('"' + "x" * 65 + '"', "is 65 characters, at most 64: it starts every consumer id of the issuer"),
        (
            '"Okta Corp:"',
            "must not contain a space, '\"' or '\\': a team named with it could not be required",
        ),
        ("'okta\"'", "must not contain a space"),
        ("'okta\\'", "must not contain a space"),
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
