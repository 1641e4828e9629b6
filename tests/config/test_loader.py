"""Bad config -> one precise line naming file, key path and reason; good config -> a Snapshot."""

from __future__ import annotations

import pytest

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError

BASE = """
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.api]
targets = ["127.0.0.1:9000"]
[[routes]]
name = "r"
path = "/"
upstream = "api"
auth = "none"
"""


def error_for(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_config(text.encode(), "conf/x.toml")
    return str(info.value)


def test_base_compiles() -> None:
    snap = compile_config(BASE.encode(), "conf/x.toml")
    assert snap.routes[0].name == "r"
    assert len(snap.id) == 12


def test_snapshot_id_is_a_hash_of_the_bytes() -> None:
    a = compile_config(BASE.encode(), "a")
    b = compile_config(BASE.encode(), "b")
    c = compile_config((BASE + "\n# changed\n").encode(), "a")
    assert a.id == b.id != c.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE.replace('auth = "none"', ""),
            "conf/x.toml: routes[0].auth: missing required key (every route must state auth",
        ),
        (
            BASE.replace('auth = "none"', 'auth = "nnoe"'),
            "conf/x.toml: routes[0].auth: invalid value 'nnoe' (did you mean 'none'?)",
        ),
        (
            BASE.replace('upstream = "api"', 'upstream = "apu"'),
            "conf/x.toml: routes[0].upstream: no upstream named 'apu' (did you mean 'api'?)",
        ),
        (
            BASE.replace('path = "/"', 'pth = "/"'),
            "conf/x.toml: routes[0].pth: unknown key (did you mean 'path'?)",
        ),
        (
            BASE + '[server]\nmax_header_bytes = "big"\n',
            "conf/x.toml: server.max_header_bytes: expected an integer, got 'big'",
        ),
        (
            BASE + "[server]\nheader_timeout = 0\n",
            "conf/x.toml: server.header_timeout: must be greater than 0",
        ),
        (
            BASE + '[server]\nhttp1 = "h12"\n',
            "conf/x.toml: server.http1: invalid value 'h12' (did you mean 'h11'?)",
        ),
        (
            BASE + '[network]\ndeny = ["10.0.0.300/8"]\n',
            "conf/x.toml: network.deny[0]: '10.0.0.300/8' is not an IP address or CIDR network",
        ),
        (
            BASE.replace('bind = "127.0.0.1:8080"', 'bind = "localhost"'),
            "conf/x.toml: listeners[0].bind: 'localhost' is not host:port",
        ),
        (
            BASE.replace('targets = ["127.0.0.1:9000"]', "targets = []"),
            "conf/x.toml: upstreams.api.targets: needs at least one host:port",
        ),
        (BASE.replace('path = "/"', 'path = "api"'), "conf/x.toml: routes[0].path: must start with '/'"),
        (
            BASE + '[[routes]]\nname = "r"\npath = "/x"\nupstream = "api"\nauth = "none"\n',
            "conf/x.toml: routes[1].name: duplicate route name 'r'",
        ),
        (
            BASE + '[[routes]]\nname = "s"\npath = "/"\nupstream = "api"\nauth = "none"\n',
            "conf/x.toml: routes[1]: same host, path and method as routes[0]",
        ),
        (
            BASE.replace('auth = "none"', 'auth = "none"\nmethods = ["get"]'),
            "conf/x.toml: routes[0].methods[0]: 'get' is not an upper-case method name",
        ),
        (
            BASE.replace('auth = "none"', 'auth = "none"\nrequest_headers.set = { "content-length" = "1" }'),
            "routes[0].request_headers: 'content-length' is managed by the gateway",
        ),
        (
            BASE + '[security_headers]\nremove = ["Content-Length"]\n',
            "conf/x.toml: security_headers.remove[0]: 'Content-Length' is managed by the gateway",
        ),
        (
            BASE.replace('auth = "none"', 'auth = "none"\nresponse_headers.set = { "x" = "a\\nb" }'),
            "routes[0].response_headers.set.x: header value contains CR, LF or NUL",
        ),
        (
            BASE + '[rate_limits.redis]\nurl = "redis://:hunter2@10.0.0.5:6379/0"\n',
            "conf/x.toml: rate_limits.redis.url: carries a password: give it as url_secret",
        ),
        (
            BASE + '[rate_limits.redis]\nurl = "http://10.0.0.5"\n',
            "rate_limits.redis.url: must be a redis://, rediss:// or unix:// URL",
        ),
        (
            BASE + '[rate_limits.redis]\nurl = "redis://r"\nfailure = "half"\n',
            "rate_limits.redis.failure: invalid value 'half'",
        ),
        (
            BASE.replace(
                'auth = "none"', 'auth = "none"\nlimits = [{ name = "a", rate = 1, queue = 5, max_wait = 0 }]'
            ),
            "routes[0].limits[0].max_wait: must be greater than 0",
        ),
        (
            BASE + "[http2]\nmax_concurrent_streams = 0\n",
            "conf/x.toml: http2.max_concurrent_streams: must be greater than 0",
        ),
        ("listeners = 3", "conf/x.toml: listeners: expected an array, got int"),
        ("[[listeners]]\nbind = ", "conf/x.toml: invalid TOML"),
        ("", "conf/x.toml: listeners: missing required key"),
    ],
)
def test_precise_errors(text: str, expected: str) -> None:
    message = error_for(text)
    assert expected in message, message
    assert "\n" not in message


def test_unreadable_file() -> None:
    from fastgw.config.compiler import load_snapshot

    with pytest.raises(ConfigError, match=r"/nonexistent\.toml: cannot read"):
        load_snapshot("/nonexistent.toml")


def test_quickstart_compiles() -> None:
    from fastgw.cli.config_files import quickstart

    data, name = quickstart()
    snap = compile_config(data, name)
    assert snap.demo_upstream == ("127.0.0.1", 8081)
    assert {r.name for r in snap.routes} == {"demo", "demo-local-only", "llm"}
