"""Rules for the modules mypyc compiles (fastgw/native.py's COMPILED), checked by parsing them.

A compiled coroutine does not keep its own "exception being handled" the way CPython's do: one that
suspends inside an ``except`` block leaves that exception as the thread's current one while other Tasks
run, and a compiled ``finally`` that awaits in another Task then raises it as its own (a TimeoutError of
one request ended the next requests on the worker; a provider's truncated answer, read by
ai/provider_calls.py's ``finally: await reply.close()``, ended the next one). So no compiled module awaits
in an except block or a finally block: it keeps the exception and answers after the try statement
(fastgw/ai/attempts.py shows how), and what a finally must do never waits (``UpstreamReply.close``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from fastgw.native import COMPILED

ROOT = Path(__file__).resolve().parents[1]
_SUSPENDING = (ast.Await, ast.AsyncFor, ast.AsyncWith)


def awaits_in_except_blocks(source: str) -> list[int]:
    """Lines of the awaits (``await``, ``async for``, ``async with``) inside except handlers and finally
    blocks (each may run with an exception being handled)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        blocks: list[ast.AST] = []
        if isinstance(node, ast.ExceptHandler):
            blocks = [node]
        elif isinstance(node, (ast.Try, ast.TryStar)):
            blocks = list(node.finalbody)
        for block in blocks:
            lines += [n.lineno for n in ast.walk(block) if isinstance(n, _SUSPENDING)]
    return sorted(set(lines))


def test_no_compiled_module_awaits_inside_an_except_block() -> None:
    found = []
    for module in COMPILED:
        path = ROOT / (module.replace(".", "/") + ".py")
        found += [f"{path.relative_to(ROOT)}:{line}" for line in awaits_in_except_blocks(path.read_text())]
    assert found == [], "await in an except or finally block of a compiled module (see this file's docstring)"


def test_the_check_finds_an_await_in_an_except_block() -> None:
    source = "async def f():\n    try:\n        pass\n    except ValueError:\n        await g()\n"
    assert awaits_in_except_blocks(source) == [5]
    assert awaits_in_except_blocks(source.replace("await g()", "h()")) == []
    in_finally = "async def f():\n    try:\n        pass\n    finally:\n        await g()\n"
    assert awaits_in_except_blocks(in_finally) == [5]
