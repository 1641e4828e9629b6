from __future__ import annotations

from fastgw.config.compiler import compile_config
from fastgw.policy.chain import Denial
from fastgw.snapshot import Route


def router_for(routes: str):  # type: ignore[no-untyped-def]
    text = '[[listeners]]\nbind = "127.0.0.1:1"\n[upstreams.u]\ntargets = ["127.0.0.1:2"]\n' + routes
    return compile_config(text.encode(), "t").router


def route(name: str, path: str, extra: str = "") -> str:
    return f'[[routes]]\nname = "{name}"\npath = "{path}"\nupstream = "u"\nauth = "none"\n{extra}\n'


def name_of(result: Route | Denial) -> str | int:
    return result.name if isinstance(result, Route) else result.status


def test_longest_segment_prefix_wins() -> None:
    r = router_for(route("root", "/") + route("api", "/api") + route("v1", "/api/v1/"))
    assert name_of(r.lookup(b"h", b"/api/v1/users", b"GET")) == "v1"
    assert name_of(r.lookup(b"h", b"/api/v1", b"GET")) == "v1"
    assert name_of(r.lookup(b"h", b"/api/v2", b"GET")) == "api"
    assert name_of(r.lookup(b"h", b"/apiv1", b"GET")) == "root"
    assert name_of(r.lookup(b"h", b"/", b"GET")) == "root"


def test_exact_before_prefix_and_404() -> None:
    r = router_for(route("health", "/health", 'match = "exact"') + route("api", "/api"))
    assert name_of(r.lookup(b"h", b"/health", b"GET")) == "health"
    assert name_of(r.lookup(b"h", b"/health/x", b"GET")) == 404
    assert name_of(r.lookup(b"h", b"/other", b"GET")) == 404


def test_case_sensitive() -> None:
    r = router_for(route("admin", "/admin", 'host = "a.example"') + route("pub", "/"))
    assert name_of(r.lookup(b"a.example", b"/Admin", b"GET")) == 404


def test_methods_405_with_allow_and_head_via_get() -> None:
    r = router_for(
        route("get", "/x", 'methods = ["GET"]') + route("post", "/x", 'methods = ["POST"]\nmatch = "prefix"')
    )
    assert name_of(r.lookup(b"h", b"/x", b"POST")) == "post"
    assert name_of(r.lookup(b"h", b"/x", b"HEAD")) == "get"
    denied = r.lookup(b"h", b"/x", b"PUT")
    assert isinstance(denied, Denial) and denied.status == 405
    assert dict(denied.headers)[b"allow"] == b"GET, POST, HEAD"


def test_hosts_exact_wildcard_default_and_ports() -> None:
    r = router_for(
        route("a", "/", 'host = "api.example.com"')
        + route("w", "/", 'host = "*.example.com"')
        + route("d", "/")
    )
    assert name_of(r.lookup(b"API.example.com:8443", b"/", b"GET")) == "a"
    assert name_of(r.lookup(b"x.example.com", b"/", b"GET")) == "w"
    assert name_of(r.lookup(b"example.org", b"/", b"GET")) == "d"
    assert name_of(r.lookup(b"[::1]:80", b"/", b"GET")) == "d"
