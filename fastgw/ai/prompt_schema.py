"""JSON Schemas of ``[[prompt_api]]`` (input and output), compiled once per config.

Schemas are compiled here with ``jsonschema`` (the maintained reference validator for Python: every draft
up to 2020-12 by the schema's ``$schema``, 2020-12 when it names none): a schema that does not compile, a
``$ref`` outside the schema itself (never fetched: a config load makes no network call), or references
that go round without consuming any data (no body ends that recursion) is a ConfigError naming the file
and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from fastgw.config.context import CompileContext

# Objects and arrays nested in a schema document, at most: the metaschema check and the reference walk
# recurse per level, and jsonschema's check_schema exhausted Python's stack at ~200 (100 levels of
# "properties"), a crash of the config load instead of its error. 100 is 50 levels of properties, far
# beyond any request body a template fills.
SCHEMA_DEPTH_MAX: Final = 100
# Violations of one document weighed for the most relevant: best_match takes the max of every error it
# is given, and a body of 2M wrong array items made 2M error objects (seconds of the worker's loop) for
# one 400. The first few are enough to name a useful one.
ERRORS_WEIGHED: Final = 16


@dataclass(frozen=True, slots=True)
class Schema:
    """A compiled JSON Schema: the document as written (for listings) and its validator."""

    document: dict[str, Any]
    validator: Any  # a jsonschema Validator instance, compiled once
    best_match: Any  # jsonschema.exceptions.best_match: the most relevant of a document's errors

    def first_error(self, instance: Any) -> tuple[str, str] | None:
        """(JSON path, message) of the most relevant violation, or None when ``instance`` matches."""
        try:
            error = self.best_match(islice(self.validator.iter_errors(instance), ERRORS_WEIGHED))
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

    if _depth(document) > SCHEMA_DEPTH_MAX:
        raise ctx.error(key, f"nested deeper than {SCHEMA_DEPTH_MAX} objects and arrays")
    cls = validators.validator_for(document, default=validators.Draft202012Validator)
    try:
        cls.check_schema(document)
    except RecursionError:  # a shape that recurses more per level than the bound above allows for
        raise ctx.error(key, "nested too deeply to check") from None
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
        subs = list(resource.subresources())
        subs += _unlisted(cls, resource.contents, {id(sub.contents) for sub in subs}, spec)
        stack.extend((sub, resolver.in_subresource(sub)) for sub in subs)
    schemas = {id(resource.contents) for resource, _ in walked}
    targets: dict[int, list[tuple[str, Any]]] = {}  # each schema's references: (keyword, target schema)
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
            if isinstance(target, dict) and keyword in cls.VALIDATORS:  # an ignored keyword applies nothing
                targets.setdefault(id(contents), []).append((keyword, target))
    cycle = _reference_cycle(cls, [resource.contents for resource, _ in walked], schemas, targets)
    if cycle:
        raise ctx.error(
            key,
            f"references that go round without consuming any data: {_chain(document, cycle)} (no value"
            " ends it: a request that reaches it recurses until the validator gives up; an unused"
            " definition is checked too)",
        )
    validator = cls(document, registry=registry, format_checker=cls.FORMAT_CHECKER)
    return Schema(document, validator, schema_errors.best_match)


def _unlisted(cls: Any, contents: Any, listed: set[int], spec: Any) -> list[Any]:
    """The subschemas the validator applies that the referencing library does not list: the schemas of a
    legacy "dependencies" whose first entry is a list of names, and draft 3's schemas in "type" and
    "disallow". Walked too, so that their references are checked like any other."""
    from referencing import Resource

    if not isinstance(contents, dict):
        return []
    found: list[Any] = []
    dependencies = contents.get("dependencies")
    if isinstance(dependencies, dict) and "dependencies" in cls.VALIDATORS:
        found.extend(dependencies.values())
    for keyword in ("type", "disallow") if "disallow" in cls.VALIDATORS else ():
        value = contents.get(keyword)
        found.extend(value if isinstance(value, list) else [value])
    return [
        Resource.from_contents(sub, default_specification=spec)
        for sub in found
        if isinstance(sub, dict) and id(sub) not in listed
    ]


# The keywords that apply their schemas to the very value being validated (in place), as opposed to a part
# of it (properties, items, contains, ...: those consume data, so a recursion through them ends with the
# value). "then" and "else" apply only beside an "if"; "dependencies" (drafts 4-7; 3 too) holds schemas or
# lists of names; "extends" is draft 3's allOf, and its "type" and "disallow" may list schemas (a type
# name is no schema: _in_place keeps only the walked subschemas).
IN_PLACE: Final = (
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies", "extends",
    "type", "disallow",
)  # fmt: skip


def _in_place(cls: Any, schema: dict[str, Any], schemas: set[int]) -> list[tuple[str, dict[str, Any]]]:
    """(keyword, subschema) for each schema ``schema`` applies to its own value, by the validator's draft."""
    found: list[tuple[str, Any]] = []
    for keyword in IN_PLACE:
        value = schema.get(keyword)
        applied = "if" if keyword in ("then", "else") else keyword
        if value is None or applied not in cls.VALIDATORS or applied not in schema:
            continue
        if isinstance(value, dict) and id(value) in schemas:  # not, if, then, else, type (extends, draft 3)
            subs: Any = (value,)
        elif isinstance(value, dict):  # dependentSchemas, dependencies: a schema (or names) per property
            subs = value.values()
        elif isinstance(value, list):  # allOf, anyOf, oneOf (extends, type)
            subs = value
        else:  # true or false, a type's name
            continue
        found.extend((keyword, sub) for sub in subs if isinstance(sub, dict) and id(sub) in schemas)
    return found


def _reference_cycle(
    cls: Any, walked: list[Any], schemas: set[int], targets: dict[int, list[tuple[str, Any]]]
) -> list[tuple[Any, str]]:
    """The first chain of in-place positions (references, allOf, not, if, ...) that comes back to a schema
    already on it, as [(schema, keyword it leaves by), ..., (the first schema again, "")]; [] when none.

    The validator follows such a chain forever on a value that takes it (any value, for a chain of $ref and
    allOf; anyOf, then, else and dependentSchemas on some), never reaching a smaller part of the value; a
    recursion that passes through properties, items or another keyword that descends into a part of the
    value ends with the value (a tree is fine). A $dynamicRef or $recursiveRef whose target is a dynamic
    anchor may land on any schema with that anchor at run time: each one is counted as a target."""
    # The schemas a dynamic reference may land on: by ("$dynamicAnchor", name), ("$recursiveAnchor", True).
    dynamic: dict[tuple[str, object], list[Any]] = {}
    for schema in walked:
        if isinstance(schema, dict):
            for anchor in ("$dynamicAnchor", "$recursiveAnchor"):
                name = schema.get(anchor)
                if isinstance(name, str) or name is True:
                    dynamic.setdefault((anchor, name), []).append(schema)
    legacy = "$dynamicRef" not in cls.VALIDATORS and "$recursiveRef" not in cls.VALIDATORS

    def edges(schema: dict[str, Any]) -> list[tuple[str, Any]]:
        found = []
        for keyword, target in targets.get(id(schema), ()):
            found.append((keyword, target))
            if keyword == "$dynamicRef" and target.get("$dynamicAnchor") == schema[keyword].partition("#")[2]:
                found.extend(
                    (keyword, t) for t in dynamic.get(("$dynamicAnchor", target["$dynamicAnchor"]), ())
                )
            elif keyword == "$recursiveRef" and target.get("$recursiveAnchor") is True:
                found.extend((keyword, t) for t in dynamic.get(("$recursiveAnchor", True), ()))
        if legacy and "$ref" in schema:  # drafts 3 to 7: $ref's siblings are ignored
            return [(k, t) for k, t in found if k == "$ref"]
        return found + _in_place(cls, schema, schemas)

    done: set[int] = set()
    for start in walked:
        if not isinstance(start, dict) or id(start) in done:
            continue
        # Depth first without recursion (a schema may be nested deeper than Python's stack): the path's
        # schemas, each with its remaining edges.
        path: list[tuple[Any, str, list[tuple[str, Any]]]] = [(start, "", edges(start)[::-1])]
        on_path = {id(start): 0}
        while path:
            schema, _, remaining = path[-1]
            if not remaining:
                path.pop()
                del on_path[id(schema)]
                done.add(id(schema))
                continue
            keyword, target = remaining.pop()
            path[-1] = (schema, keyword, remaining)
            if id(target) in on_path:
                chain = [(s, k) for s, k, _ in path[on_path[id(target)] :]]
                return [*chain, (target, "")]
            if id(target) not in done:
                on_path[id(target)] = len(path)
                path.append((target, "", edges(target)[::-1]))
    return []


def _chain(document: dict[str, Any], cycle: list[tuple[Any, str]]) -> str:
    """A cycle as '#/$defs/a ($ref) -> #/$defs/b ($ref) -> #/$defs/a' (JSON Pointers into the document;
    a long one cut in the middle: the message is one line)."""
    pointers: dict[int, str] = {}
    stack: list[tuple[Any, str]] = [(document, "#")]
    while stack:
        value, pointer = stack.pop()
        if isinstance(value, dict):
            pointers.setdefault(id(value), pointer)
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        for name, sub in items:
            step = str(name).replace("~", "~0").replace("/", "~1")
            stack.append((sub, f"{pointer}/{step}"))
    steps = [f"{pointers.get(id(s), '?')} ({k})" if k else pointers.get(id(s), "?") for s, k in cycle]
    if len(steps) > 9:
        steps = [*steps[:4], f"... {len(steps) - 8} more", *steps[-4:]]
    return " -> ".join(steps)


def _depth(document: Any) -> int:
    """How deep objects and arrays nest in ``document`` (walked without recursion)."""
    deepest = 0
    stack = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
