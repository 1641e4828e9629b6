"""``[[prompt_api]]``: a prompt template published as a JSON API, compiled once per config.

Each entry names the path it answers (POST, on a route of ``kind = "prompt_api"`` whose path covers it),
the JSON Schema its body must match, the templates of the system and user messages (prompt_template.py),
the ``[[llm.models]]`` alias that answers, sampling parameters, and optionally an output schema: the
answer is then asked for in the provider's JSON-schema mode and validated against it.

Schemas are compiled by prompt_schema.py (read here from the config or a file); a schema it refuses, or a
template naming a field the input schema does not declare, is a ConfigError naming the file, the key and,
for a template, its line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from fastgw.ai.prompt_schema import Schema, compile_schema
from fastgw.ai.prompt_template import Template, TemplateError, check_names, compile_template
from fastgw.config.context import CompileContext
from fastgw.config.fields import doc

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PATH: Final = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")
# A schema file is read whole at load; 1 MiB is far beyond any hand-written schema.
SCHEMA_FILE_MAX: Final = 1 << 20
TOKENS_MAX: Final = (10_000_000, "no model answers with more tokens in one call")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptApiSpec:
    name: str = doc("the API's name: admin listing, OpenAPI operationId, access log", ...)
    path: str = doc(
        "the path it answers (POST), under the path of a route with kind = 'prompt_api', e.g."
        " '/v1/prompts/summarize'",
        ...,
    )
    description: str = doc("one line for the admin listing and the OpenAPI document", "")
    model: str = doc("the [[llm.models]] name that answers (its targets, fallbacks and keys apply)", ...)
    system: str = doc("the system message's template ('' for none); see template", "")
    template: str = doc(
        "the user message's template: {{ field }} or {{ field.sub.0 }} inserts a field of the validated"
        " body (strings as they are, other values as JSON, absent fields as ''); \\{{ is a literal {{;"
        " nothing else is evaluated",
        ...,
    )
    input_schema: dict[str, Any] = doc(
        "the JSON Schema of the request body (an object schema with properties); or input_schema_file", {}
    )
    input_schema_file: str = doc("a JSON file holding the input schema (relative to this config)", "")
    output_schema: dict[str, Any] = doc(
        "a JSON Schema (an object schema) the answer must match: asked for in the provider's JSON-schema"
        " mode, validated, retried once, else 502. Empty: the answer is text, returned as"
        ' {"result": "..."}',
        {},
    )
    output_schema_file: str = doc("a JSON file holding the output schema (relative to this config)", "")
    temperature: float | None = doc(
        "sampling temperature sent to the provider (unset: its default)",
        None,
        most=(2.0, "the OpenAI and Gemini APIs' maximum; Anthropic's is 1"),
    )
    top_p: float | None = doc(
        "nucleus sampling sent to the provider (unset: its default)",
        None,
        most=(1.0, "a probability mass"),
    )
    max_tokens: int | None = doc(
        "the answer's token limit sent to the provider; also counted against the model's context_window",
        None,
        most=TOKENS_MAX,
    )


@dataclass(frozen=True, slots=True)
class PromptApi:
    name: str
    path: str
    description: str
    model: str
    system: Template | None
    template: Template
    input_schema: Schema
    output_schema: Schema | None
    parameters: dict[str, Any]  # temperature, top_p, max_tokens as sent (unset ones left out)
    max_tokens: int  # 0: unset
    context_window: int  # the model's, 0: unknown


def _schema_document(ctx: CompileContext, key: str, inline: dict[str, Any], file: str) -> dict[str, Any]:
    if inline and file:
        raise ctx.error(f"{key}_file", f"give {key.rsplit('.', 1)[-1]} or its file, not both")
    if not file:
        return inline
    path = ctx.path(file)
    try:
        with open(path, "rb") as f:
            data = f.read(SCHEMA_FILE_MAX + 1)
    except OSError as exc:
        raise ctx.error(f"{key}_file", f"cannot read {file}: {exc.strerror}") from None
    if len(data) > SCHEMA_FILE_MAX:
        raise ctx.error(f"{key}_file", f"{file} is over {SCHEMA_FILE_MAX} bytes")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ctx.error(f"{key}_file", f"{file} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ctx.error(f"{key}_file", f"{file} holds no JSON object")
    return document


def _template(ctx: CompileContext, key: str, text: str, schema: dict[str, Any]) -> Template:
    try:
        template = compile_template(text)
        check_names(template, schema)
    except TemplateError as exc:
        raise ctx.error(key, str(exc)) from None
    return template


def compile_prompt_apis(specs: tuple[PromptApiSpec, ...], ctx: CompileContext) -> dict[str, PromptApi]:
    """Every ``[[prompt_api]]`` by name (after ``[llm]``: the models must exist)."""
    apis: dict[str, PromptApi] = {}
    paths: set[str] = set()
    llm: Any = ctx.sections.get("llm")
    for i, spec in enumerate(specs):
        key = f"prompt_api[{i}]"
        if not _NAME.fullmatch(spec.name):
            raise ctx.error(f"{key}.name", f"{spec.name!r} is not an API name (letters, digits, _ . -)")
        if spec.name in apis:
            raise ctx.error(f"{key}.name", f"a prompt API named {spec.name!r} is defined twice")
        if not _PATH.fullmatch(spec.path):
            raise ctx.error(f"{key}.path", f"{spec.path!r} is not an absolute path without a trailing '/'")
        if spec.path in paths:
            raise ctx.error(f"{key}.path", f"another prompt API answers {spec.path!r}")
        model = llm.models.get(spec.model) if llm is not None else None
        if model is None:
            raise ctx.error(f"{key}.model", f"no [[llm.models]] named {spec.model!r}")
        document = _schema_document(ctx, f"{key}.input_schema", spec.input_schema, spec.input_schema_file)
        if not document:
            raise ctx.error(f"{key}.input_schema", "required: the JSON Schema of the request body")
        input_schema = compile_schema(ctx, f"{key}.input_schema", document)
        out_doc = _schema_document(ctx, f"{key}.output_schema", spec.output_schema, spec.output_schema_file)
        output_schema = compile_schema(ctx, f"{key}.output_schema", out_doc) if out_doc else None
        if output_schema is not None:
            _check_json_schema_mode(ctx, f"{key}.output_schema", model)
        system = _template(ctx, f"{key}.system", spec.system, document) if spec.system else None
        template = _template(ctx, f"{key}.template", spec.template, document)
        parameters = _parameters(ctx, key, spec)
        _check_requests(ctx, key, model, parameters, output_schema)
        if spec.max_tokens is not None and 0 < model.context_window <= spec.max_tokens:
            raise ctx.error(
                f"{key}.max_tokens",
                f"{spec.max_tokens} leaves no room for a prompt in {spec.model!r}'s context window"
                f" ({model.context_window} tokens)",
            )
        apis[spec.name] = PromptApi(
            spec.name,
            spec.path,
            spec.description,
            spec.model,
            system,
            template,
            input_schema,
            output_schema,
            parameters,
            spec.max_tokens or 0,
            model.context_window,
        )
        paths.add(spec.path)
    return apis


def _check_json_schema_mode(ctx: CompileContext, key: str, model: Any) -> None:
    """Every target of the model takes a JSON-schema ``response_format``, or the model drops it (then the
    answer is only validated): else each request would be a 400 from the adapter, found at load instead."""
    from fastgw.ai.providers.registry import ADAPTERS  # only for APIs with an output schema

    for target in model.targets:
        adapter = ADAPTERS[target.provider.kind]
        if not adapter.capabilities.json_schema and "response_format" not in target.target.drop_unsupported:
            raise ctx.error(
                key,
                f"model {model.name!r} has a target of kind {target.provider.kind!r}, which has no"
                " JSON-schema mode: add 'response_format' to its drop_unsupported (the answer is then only"
                " validated)",
            )


def _check_requests(
    ctx: CompileContext, key: str, model: Any, parameters: dict[str, Any], output: Schema | None
) -> None:
    """Build the API's request for each target of its model, as a request would: what an adapter refuses
    (a JSON Schema keyword Gemini's subset lacks, ...) or a provider's range excludes (Anthropic's
    temperature is 0 to 1) would otherwise be every request's failure, answered to callers who control
    only the values of the input's fields."""
    from fastgw.ai.adapter import InvalidRequestError
    from fastgw.ai.providers.registry import ADAPTERS

    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    pivot: dict[str, Any] = {"model": model.name, "messages": messages, **parameters}
    if output is not None:
        pivot["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": output.document},
        }
    for target in model.targets:
        name = f"{target.provider.name}/{target.target.model}"
        kind = target.provider.kind
        if kind == "anthropic" and parameters.get("temperature", 0.0) > 1.0:
            raise ctx.error(f"{key}.temperature", f"at most 1 for target {name} (an anthropic provider)")
        try:
            ADAPTERS[kind].chat_request(pivot, target.target, False)
        except InvalidRequestError as exc:
            raise ctx.error(key, f"target {name} cannot take this API's request: {exc.message}") from None


def _parameters(ctx: CompileContext, key: str, spec: PromptApiSpec) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if spec.temperature is not None:
        if not 0.0 <= spec.temperature <= 2.0:
            raise ctx.error(f"{key}.temperature", "between 0 and 2")
        parameters["temperature"] = spec.temperature
    if spec.top_p is not None:
        if not 0.0 < spec.top_p <= 1.0:
            raise ctx.error(f"{key}.top_p", "greater than 0, at most 1")
        parameters["top_p"] = spec.top_p
    if spec.max_tokens is not None:
        if spec.max_tokens < 1:
            raise ctx.error(f"{key}.max_tokens", "at least 1")
        parameters["max_tokens"] = spec.max_tokens
    return parameters
