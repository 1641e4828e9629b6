"""The ``[[prompt_api]]`` entries of a Snapshot as a listing (admin ``GET /prompt-apis``) and as an OpenAPI
3.1 document (``GET /prompt-apis/openapi.json``, ``fastgw prompt-apis openapi``).

OpenAPI 3.1 takes JSON Schema 2020-12 as it is, so the input and output schemas go in unchanged, each
given an ``$id`` (unless it has one) so that its own ``#/...`` references resolve inside it wherever the
document places it. An API appears in ``paths`` once a prompt_api route publishes it and serves its path
(a more specific route may take the path: then that route is the one listed, or none when it is no
prompt_api route); its ``security`` is that route's auth schemes (any one of them, as the route accepts).
"""

from __future__ import annotations

from typing import Any, Final

from fastgw import __version__
from fastgw.ai.prompt_config import PromptApi
from fastgw.ai.prompt_handler import PromptApiHandler
from fastgw.snapshot import Snapshot

OPENAPI_VERSION: Final = "3.1.0"
_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
# A route's auth scheme (policy/auth_choice.py) as an OpenAPI security scheme.
SECURITY_SCHEMES: Final[dict[str, dict[str, Any]]] = {
    "api_key": {"type": "http", "scheme": "bearer", "description": "a fastgw API key (fgw_...)"},
    "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "introspection": {"type": "http", "scheme": "bearer", "description": "an OAuth 2.0 access token"},
    "mtls": {"type": "mutualTLS", "description": "a client certificate the gateway trusts"},
}
PROBLEM_SCHEMA: Final = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "path": {"type": "string", "description": "the JSON path of the body's first violation (400)"},
        "request_id": {"type": "string"},
    },
}


def publishers(snapshot: Snapshot) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """API name -> the (route name, auth schemes) of the routes publishing it that the router sends its
    path to (on some host)."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for route in snapshot.routes:
        handler = getattr(route, "handler", None)
        if isinstance(handler, PromptApiHandler):
            for api in handler.apis:
                serving = snapshot.router.serving(api.path.encode(), b"POST")
                if any(found is route for found in serving):
                    out.setdefault(api.name, []).append((handler.route_name, handler.schemes))
    return out


def listing(apis: dict[str, PromptApi], snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every [[prompt_api]] with its schemas and the routes that serve it (none: unreachable)."""
    published = publishers(snapshot)
    return [
        {
            "name": api.name,
            "path": api.path,
            "method": "POST",
            "description": api.description,
            "model": api.model,
            "routes": [
                {"name": name, "auth": list(schemes)} for name, schemes in published.get(api.name, [])
            ],
            "parameters": api.parameters,
            "context_window": api.context_window or None,
            "input_schema": api.input_schema.document,
            "output_schema": api.output_schema.document if api.output_schema is not None else None,
        }
        for api in apis.values()
    ]


def _with_id(schema: dict[str, Any], name: str, part: str) -> dict[str, Any]:
    return schema if "$id" in schema else {"$id": f"urn:fastgw:prompt-api:{name}:{part}", **schema}


def openapi(
    apis: dict[str, PromptApi], snapshot: Snapshot, title: str = "fastgw prompt APIs"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the published prompt APIs."""
    published = publishers(snapshot)
    paths: dict[str, Any] = {}
    used: set[str] = set()
    for api in apis.values():
        routes_of = published.get(api.name)
        if not routes_of:
            continue
        schemes = {s for _, names in routes_of for s in names if s != "none"}
        used |= schemes
        result: dict[str, Any] = (
            _with_id(api.output_schema.document, api.name, "output")
            if api.output_schema is not None
            else {"type": "string"}
        )
        problem = {"application/problem+json": {"schema": _PROBLEM_REF}}
        operation: dict[str, Any] = {
            "operationId": api.name,
            "summary": api.description or api.name,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _with_id(api.input_schema.document, api.name, "input")}
                },
            },
            "responses": {
                "200": {
                    "description": "the model's answer",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["result"],
                                "properties": {"result": result},
                            }
                        }
                    },
                },
                "400": {
                    "description": "the body does not match the input schema, or is too long",
                    "content": problem,
                },
                "401": {"description": "no valid credential", "content": problem},
                "429": {"description": "a rate limit or quota is exhausted", "content": problem},
                "502": {"description": "the model's answer is unusable", "content": problem},
            },
            "security": [{name: []} for name in sorted(schemes)],
        }
        if not schemes:  # a public route
            operation["security"] = []
            del operation["responses"]["401"]
        paths[api.path] = {"post": operation}
    components: dict[str, Any] = {"schemas": {"Problem": PROBLEM_SCHEMA}}
    if used:
        components["securitySchemes"] = {name: SECURITY_SCHEMES[name] for name in sorted(used)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": components,
    }
