"""The OpenAPI 3.1 document, generated from the route table (:mod:`propensity.server.endpoints`) and the
request and response models (:mod:`propensity.server.schemas`): the same declarations validate requests, so
the document cannot drift from what the server does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from propensity.core.version import __version__
from propensity.server.endpoints import Endpoint
from propensity.server.errors import JSON
from propensity.server.schemas import Error

REF = "#/components/schemas/{model}"
_DESCRIPTION = (
    "Real-time propensity scores: calibrated probabilities for every action of a customer. When the server has "
    "API keys, /v1/predict needs the predict scope, /v1/events ingest, /v1/models* admin (401 without a valid "
    'key, 403 without the scope). Errors are JSON: {"error": {"code", "message", "field"?, "errors"?}}.'
)


class _Schemas:
    """Collects the JSON Schemas of every model used, as components, and hands out references to them."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, kind: Any) -> dict[str, Any]:
        schema = TypeAdapter(kind).json_schema(ref_template=REF, schema_generator=GenerateJsonSchema)
        self.components.update(schema.pop("$defs", {}))
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            self.components[kind.__name__] = schema
            return {"$ref": REF.format(model=kind.__name__)}
        return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": REF.format(model="Error")}}}}


def _parameters(schemas: _Schemas, model: Any, where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        options = prop.pop("anyOf", None)
        if options:  # an optional parameter: absent, not null
            prop.update(next(o for o in options if o.get("type") != "null"))
        if prop.get("default", 0) is None:
            del prop["default"]
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required,
                                 "schema": prop}  # fmt: skip
        if description:
            param["description"] = description
        out.append(param)
    return out


def _operation(e: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": e.name, "summary": e.summary}
    if e.description:
        op["description"] = e.description
    if e.tags:
        op["tags"] = list(e.tags)
    params = []
    if e.path_params is not None:
        params += _parameters(schemas, e.path_params, "path")
    if e.query is not None:
        params += _parameters(schemas, e.query, "query")
    if params:
        op["parameters"] = params
    ok: dict[str, Any] = {"description": e.ok_description}
    ok["content"] = {e.ok_content_type: {"schema": schemas.of(e.ok)} if e.ok is not None else {}}
    responses: dict[str, Any] = {"200": ok}
    for status, (description, model) in sorted(e.responses.items()):
        responses[str(status)] = (
            _error(description) if model is None else {"description": description,
                                                       "content": {JSON: {"schema": schemas.of(model)}}}
        )  # fmt: skip
    if e.body is not None:
        op["requestBody"] = {"required": e.body_required, "content": {JSON: {"schema": schemas.of(e.body)}}}
        responses.setdefault("400", _error("The body is not valid JSON."))
        responses.setdefault("413", _error("The body is larger than the server's limit."))
        responses.setdefault("422", _error("A field is invalid (the error names it)."))
    if e.query is not None or e.path_params is not None:
        responses.setdefault("422", _error("A parameter is invalid (the error names it)."))
    if e.scope is not None:
        op["security"] = [{"bearer": []}, {"apiKey": []}]
        responses.setdefault("401", _error("No valid API key."))
        responses.setdefault("403", _error(f"The key lacks the {e.scope} scope."))
    op["responses"] = responses
    return op


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The document of ``endpoints`` (the app's route table)."""
    schemas = _Schemas()
    schemas.of(Error)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        if e.in_schema:
            paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "propensity", "version": __version__, "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key as a bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": dict(sorted(schemas.components.items())),
        },
    }
