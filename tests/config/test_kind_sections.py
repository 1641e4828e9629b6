"""A handler kind's own top-level section (the seam issue 22's [llm] attaches to): declared on the kind's
registry entry, it is a key of the schema and a table of the reference, compiled once per config before
any route, and what it compiled reaches the kind's routes through the config's CompileContext (with the
route's name and body bound). Shown with a test-only kind registered by a fixture, served over a socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from fastgw.config import reference
from fastgw.config.compiler import compile_config
from fastgw.config.fields import Section, doc
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, Upstreams
from fastgw.handlers.kind import CompileContext, CompileError, HandlerKind
from fastgw.process.worker import Worker
from tests.support.handler_kinds import register_kind


@dataclass(frozen=True, slots=True, kw_only=True)
class GreetingsSpec:
    """Phrases the greeting routes may say."""

    phrases: dict[str, str] = doc("phrase name -> its text", ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class GreetingSpec:
    phrase: str = doc("which [greetings] phrase the route says", ...)


class Greeting:
    def __init__(self, text: bytes) -> None:
        self.text = text

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        out.start(200, [(b"content-length", b"%d" % len(self.text))])
        await out.write(self.text)
        await out.end()


SECTION_COMPILES: list[str] = []  # the file of each compile_greetings call


def compile_greetings(spec: GreetingsSpec | None, ctx: CompileContext) -> dict[str, bytes]:
    SECTION_COMPILES.append(ctx.file)
    phrases = {} if spec is None else spec.phrases
    for name, text in phrases.items():
        if not text.strip():
            raise ctx.error(f"greetings.phrases.{name}", "must not be blank")
    return {name: text.encode() for name, text in phrases.items()}


def compile_greeting(spec: GreetingSpec, ctx: CompileContext) -> Greeting:
    phrases = ctx.sections["greetings"]
    if spec.phrase not in phrases:
        raise CompileError("phrase", f"no [greetings] phrase {spec.phrase!r}")
    return Greeting(
        b"%s from %s (bound %d)" % (phrases[spec.phrase], ctx.route_name.encode(), ctx.route_max_body_bytes)
    )


GREETING = HandlerKind(
    "Says a configured phrase (a test kind).",
    GreetingSpec,
    compile_greeting,
    section_key="greetings",
    section=Section(
        GreetingsSpec,
        "[greetings] the phrases greeting routes say",
        "optional",
        (("[greetings]", GreetingsSpec, "Phrases (a test kind's section)."),),
    ),
    compile_section=compile_greetings,
)

BASE = """
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
"""
CONFIG = (
    BASE
    + """
[greetings]
phrases = { hello = "hello", bye = "goodbye" }
[[routes]]
name = "hi"
path = "/hi"
kind = "greeting"
auth = "none"
max_body_bytes = 1000
handler = { phrase = "hello" }
[[routes]]
name = "bye"
path = "/bye"
kind = "greeting"
auth = "none"
handler = { phrase = "bye" }
request_size = { max_body_bytes = 10 }
"""
)


@pytest.fixture
def greeting_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    SECTION_COMPILES.clear()
    register_kind(monkeypatch, "greeting", GREETING)


@pytest_asyncio.fixture
async def served(greeting_kind: None) -> AsyncIterator[int]:
    worker = Worker(compile_config(CONFIG.encode(), "greet.toml"))
    await worker.start()
    yield worker.bound[0][1]
    await worker.shutdown()
    await worker.wait_stopped()


async def fetch(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.asyncio
async def test_the_section_reaches_each_route_of_the_kind_with_its_name_and_body_bound(served: int) -> None:
    hi = await fetch(served, "/hi")
    assert hi.startswith(b"HTTP/1.1 200") and hi.endswith(b"\r\n\r\nhello from hi (bound 1000)")
    bye = await fetch(served, "/bye")  # its bound narrowed by its request_size policy
    assert bye.startswith(b"HTTP/1.1 200") and bye.endswith(b"\r\n\r\ngoodbye from bye (bound 10)")
    assert SECTION_COMPILES == ["greet.toml"], "compiled once per config, not once per route"


def test_a_bad_section_is_refused_by_its_key_even_without_a_route_of_the_kind(greeting_kind: None) -> None:
    route = '[[routes]]\nname = "s"\npath = "/"\nkind = "static"\nauth = "none"\n'
    text = BASE + '[greetings]\nphrases = { hello = " " }\n' + route
    with pytest.raises(ConfigError) as err:
        compile_config(text.encode(), "greet.toml")
    assert str(err.value) == "greet.toml: greetings.phrases.hello: must not be blank"


def test_the_schema_knows_the_section_keys(greeting_kind: None) -> None:
    with pytest.raises(ConfigError) as err:
        compile_config(CONFIG.replace("phrases =", "phrase =").encode(), "greet.toml")
    assert "greet.toml: greetings.phrase: unknown key" in str(err.value)


def test_a_route_reads_only_what_its_section_compiled(greeting_kind: None) -> None:
    with pytest.raises(ConfigError) as err:
        compile_config(CONFIG.replace('phrase = "bye"', 'phrase = "later"').encode(), "greet.toml")
    assert str(err.value) == "greet.toml: routes[1].handler.phrase: no [greetings] phrase 'later'"


def test_without_the_kind_its_section_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError) as err:
        compile_config(CONFIG.encode(), "greet.toml")
    assert "greet.toml: greetings: unknown key" in str(err.value)


def test_the_reference_shows_the_section_after_the_kind_handler_table(greeting_kind: None) -> None:
    text = reference.render()
    handler = text.index('#### `routes.handler (kind = "greeting")`')
    section = text.index("#### `[greetings]`\n\nPhrases (a test kind's section).")
    assert handler < section
    assert "| `phrases` | table | **required** | phrase name -> its text |" in text
