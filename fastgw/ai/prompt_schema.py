"""JSON Schemas of ``[[prompt_api]]`` (input and output), compiled once per config.

Schemas are compiled here with ``jsonschema`` (the maintained reference validator for Python: every draft
up to 2020-12 by the schema's ``$schema``, 2020-12 when it names none): a schema that does not compile, or
a ``$ref`` outside the schema itself (never fetched: a config load makes no network call) is a ConfigError
naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastgw.config.context import CompileContext


@dataclass(frozen=True, slots=True)
class Schema:
    """A compiled JSON Schema: the document as written (for listings) and its validator."""

    document: dict[str, Any]
    validator: Any  # a jsonschema Validator instance, compiled once
    best_match: Any  # jsonschema.exceptions.best_match: the most relevant of a document's errors

    def first_error(self, instance: Any) -> tuple[str, str] | None:
        """(JSON path, message) of the most relevant violation, or None when ``instance`` matches."""
        try:
            error = self.best_match(self.validator.iter_errors(instance))
        except RecursionError:  # a recursive schema ($ref to itself) over a body nested ~1000 deep
            return "$", "the document is nested too deeply to validate"
        except Exception as exc:  # a value a check cannot take (a "regex" format's pattern too large)
            return "$", f"the document cannot be validated ({type(exc).__name__})"
        if error is None:
            return None
        return error.json_path, _short(error.message)


def _short(message: str) -> str:
    """A validator message quotes the offending value: bounded, so a 1 MB string is not echoed back."""
    return message if len(message) <= 300 else message[:297] + "..."


# The keywords that name another schema: 2020-12's $ref and $dynamicRef, 2019-09's $recursiveRef (each
# resolved as $ref is, to check that it names a schema of this document).
REFERENCE_KEYWORDS: Final = ("$ref", "$dynamicRef", "$recursiveRef")


def compile_schema(ctx: CompileContext, key: str, document: dict[str, Any]) -> Schema:
    """A JSON Schema checked against its metaschema and compiled once; it must describe an object (a
    JSON body, a JSON-schema-mode answer) and may refer only inside itself."""
    # Imported here: jsonschema costs ~75 ms and ~8 MiB per process, paid only by configs with prompt APIs.
    from jsonschema import exceptions as schema_errors
    from jsonschema import validators

    cls = validators.validator_for(document, default=validators.Draft202012Validator)
    try:
        cls.check_schema(document)
    except schema_errors.SchemaError as exc:
        where = "".join(f"/{p}" for p in exc.absolute_path) or "/"
        raise ctx.error(key, f"not a valid JSON Schema at {where}: {_short(exc.message)}") from None
    if document.get("type") != "object":
        raise ctx.error(f"{key}.type", "must be 'object': the body and the answer are JSON objects")
    # References are checked as the validator resolves them (the referencing library: JSON Pointer and
    # percent escapes, anchors, $id / draft-4 id bases, only in schema positions, never in an enum or const
    # value), against a registry that holds this schema alone and fetches nothing. The validator gets the
    # same registry: without it, jsonschema fetches an unknown URI itself (urlopen, no timeout, on the
    # event loop) when a request's validation reaches it, and looks up each $id resource slowly.
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    spec = specification_with(str(document.get("$schema", "")), default=DRAFT202012)
    root = spec.create_resource(document)
    registry = Registry().with_resource(root.id() or "", root).crawl()
    walked = []  # every subschema (schema positions only) with the resolver of its base
    stack = [(root, registry.resolver_with_root(root))]
    while stack:
        resource, resolver = stack.pop()
        walked.append((resource, resolver))
        stack.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())
    schemas = {id(resource.contents) for resource, _ in walked}
    for resource, resolver in walked:
        contents = resource.contents
        if not isinstance(contents, dict):
            continue
        for keyword in REFERENCE_KEYWORDS:
            ref = contents.get(keyword)
            if ref is None:
                continue
            if not isinstance(ref, str):
                raise ctx.error(key, f"{keyword} = {ref!r}: a reference is a string")
            try:
                target = resolver.lookup(ref).contents
            except Unresolvable:
                inside = ref.startswith("#")
                reason = "no such place in the schema" if inside else "only references inside the schema"
                raise ctx.error(key, f"{keyword} = {ref!r}: {reason}") from None
            if not isinstance(target, bool) and id(target) not in schemas:
                # A pointer into a value (a const, an enum, an unknown keyword): no schema there, and
                # every request would fail to validate.
                raise ctx.error(
                    key, f"{keyword} = {ref!r}: it points at no schema (a value, or an unknown keyword)"
                )
    validator = cls(document, registry=registry, format_checker=cls.FORMAT_CHECKER)
    return Schema(document, validator, schema_errors.best_match)
