"""The OpenAPI document of the HTTP API, written out (the server is plain Starlette, chosen for its lower cost
per request; see docs/serving.md), and the Swagger UI page that renders it at ``/docs``."""

from __future__ import annotations

from typing import Any

from propensity import __version__


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_SCORE = {
    "type": "object",
    "properties": {
        "probability": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
            "description": "Calibrated probability of the action in its horizon (the fallback's tier score when "
            "fallback is true); null when the customer is not eligible.",
        },
        "percentile": {"type": ["number", "null"], "description": "0–100 among the reference population."},
        "segment": {"type": ["string", "null"], "enum": ["high", "medium", "low", None]},
        "eligible": {
            "type": ["boolean", "null"],
            "description": "Whether the action's eligibility rule holds now (false: no score is given); null when "
            "the rule is not evaluated here (an action the project no longer declares).",
        },
        "fallback": {
            "type": "boolean",
            "description": "The score comes from the rule-based fallback (recency and frequency tiers, not "
            "calibrated): the served bundle has no model for this action, or lacks features.",
        },
        "reason_codes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "feature": {"type": "string"},
                    "value": {},
                    "contribution": {"type": "number"},
                    "direction": {"type": "string", "enum": ["up", "down"]},
                },
            },
            "description": "With explain=true: the 3 features that moved the score most (log-odds path attributions).",
        },
    },
    "required": ["probability", "percentile", "segment", "eligible", "fallback"],
}

_META = {
    "model_version": {
        "type": ["string", "null"],
        "description": "The bundle that answered (null: fallback only).",
    },
    "feature_set_version": {"type": ["string", "null"]},
    "scored_at": {"type": "string", "format": "date-time"},
    "expiration_at": {"type": "string", "format": "date-time"},
    "latency_ms": {"type": "number", "description": "Time spent scoring inside the server."},
    "fallback": {"type": "boolean"},
    "canary": {"type": "boolean"},
}

_EVENT = {
    "type": "object",
    "description": "A canonical event. Unknown fields (and the keys of `properties`) are kept in `properties`.",
    "properties": {
        "event_id": {"type": "string", "description": "Optional; a content hash is used when absent."},
        "customer_id": {"type": "string"},
        "event_type": {"type": "string"},
        "event_time": {"type": "string", "format": "date-time", "description": "ISO 8601 or epoch seconds."},
        "amount": {"type": "number"},
        "quantity": {"type": "number"},
        "currency": {"type": "string"},
        "sku": {"type": "string"},
        "category": {"type": "string"},
        "campaign_id": {"type": "string"},
        "channel": {"type": "string"},
        "plan": {"type": "string"},
        "properties": {"type": "object"},
    },
    "required": ["customer_id", "event_type", "event_time"],
}


_COMMON_ERRORS = {
    "400": "The body is not valid JSON.",
    "413": "The body is larger than the server's limit.",
}
_AUTH_ERRORS = {"401": "No valid API key.", "403": "The key lacks the scope this route needs."}


def _with_common_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """Every operation documents the errors any route can give: bad or oversize bodies, missing keys."""
    for item in doc["paths"].values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            extra = dict(_COMMON_ERRORS) if "requestBody" in operation else {}
            if operation.get("security"):
                extra.update(_AUTH_ERRORS)
            for status, text in extra.items():
                responses.setdefault(status, _error_response(text))
    return doc


def openapi_document() -> dict[str, Any]:
    return _with_common_errors(_document())


def _document() -> dict[str, Any]:
    json_body = "application/json"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "propensity",
            "version": __version__,
            "description": "Real-time propensity scores: calibrated probabilities for every action of a customer. "
            "When the server has API keys, /v1/predict needs the predict scope, /v1/events ingest, /v1/models* admin "
            "(401 without a valid key, 403 without the scope).",
        },
        "paths": {
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "The process is up."}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: a model is loaded and the online store is built",
                    "responses": {"200": {"description": "Ready."}, "503": _error_response("Not ready.")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Text exposition format.", "content": {"text/plain": {}}}
                    },
                }
            },
            "/v1/predict": {
                "get": {
                    "summary": "Score one customer for every action (or some)",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "parameters": [
                        {
                            "name": "customer_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 256},
                        },
                        {
                            "name": "actions",
                            "in": "query",
                            "required": False,
                            "description": "Comma-separated action names; all when absent.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "explain",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Scores",
                            "content": {json_body: {"schema": {"$ref": "#/components/schemas/Prediction"}}},
                        },
                        "422": _error_response("A parameter is invalid (the error names it)."),
                        "503": _error_response("No model loaded."),
                    },
                },
                "post": {
                    "summary": "Score up to 1,000 customers",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            json_body: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "customer_ids": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "maxItems": 1000,
                                        },
                                        "actions": {"type": "array", "items": {"type": "string"}},
                                    },
                                    "required": ["customer_ids"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Scores per customer",
                            "content": {
                                json_body: {"schema": {"$ref": "#/components/schemas/BatchPrediction"}}
                            },
                        },
                        "400": _error_response("The body is not JSON."),
                        "413": _error_response("The body is too large."),
                        "422": _error_response("A field is invalid (the error names it)."),
                    },
                },
            },
            "/v1/events": {
                "post": {
                    "summary": "Append events (one, or a batch of up to 10,000) and apply them to online features",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "description": "Validated with the bulk ingest's rules; a batch with any invalid event is "
                    "rejected whole (nothing written). Accepted events are durably in the event log before the "
                    "response, and the next prediction reflects them.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            json_body: {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Event"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Event"},
                                            "maxItems": 10000,
                                        },
                                        {
                                            "type": "object",
                                            "properties": {
                                                "events": {
                                                    "type": "array",
                                                    "items": {"$ref": "#/components/schemas/Event"},
                                                    "maxItems": 10000,
                                                }
                                            },
                                            "required": ["events"],
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "Accepted: counts of new and duplicate events."},
                        "400": _error_response("The body is not JSON."),
                        "413": _error_response("The body is too large."),
                        "422": _error_response("Invalid events; `errors` lists each event index and field."),
                        "503": _error_response("Ingest is not enabled on this server (no workspace)."),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The served model and the registry's bundles (admin)",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "responses": {
                        "200": {"description": "Models."},
                        "401": _error_response("No valid key."),
                        "403": _error_response("The key lacks the admin scope."),
                    },
                }
            },
            "/v1/models/{version}/promote": {
                "post": {
                    "summary": "Promote a bundle through the gate and swap it in without failing requests (admin)",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "parameters": [
                        {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            json_body: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "force": {"type": "boolean"},
                                        "reason": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "Promoted and serving."},
                        "404": _error_response("No such bundle."),
                        "409": _error_response("Refused by the gate, already in production, or corrupted."),
                        "422": _error_response("A field is invalid, or the model cannot be served."),
                    },
                }
            },
            "/v1/models/canary": {
                "post": {
                    "summary": "Route a share of customers (a stable hash of the id) to a candidate bundle (admin)",
                    "description": "share 0 stops the canary. Without model_version, the newest candidate.",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            json_body: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "share": {"type": "number", "minimum": 0, "maximum": 1},
                                        "model_version": {"type": ["string", "null"]},
                                    },
                                    "required": ["share"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "The canary is set (or stopped)."},
                        "404": _error_response("No such bundle."),
                        "409": _error_response("No candidate, the bundle is production, or it is corrupted."),
                        "422": _error_response("A field is invalid, or the model cannot be served."),
                    },
                }
            },
            "/v1/models/rollback": {
                "post": {
                    "summary": "Roll production back to the previous bundle and swap it in (admin)",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "responses": {
                        "200": {"description": "Rolled back."},
                        "409": _error_response("Nothing to roll back to."),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key as a bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                "Score": _SCORE,
                "Prediction": {
                    "type": "object",
                    "properties": {
                        "customer_id": {"type": "string"},
                        "cold_start": {
                            "type": "boolean",
                            "description": "Unknown customer: scored on empty features.",
                        },
                        "scores": {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/Score"},
                        },
                        **_META,
                    },
                },
                "BatchPrediction": {
                    "type": "object",
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "customer_id": {"type": "string"},
                                    "cold_start": {"type": "boolean"},
                                    "canary": {
                                        "type": "boolean",
                                        "description": "Scored by the canary bundle.",
                                    },
                                    "model_version": {
                                        "type": "string",
                                        "description": "With canary: the canary bundle that answered.",
                                    },
                                    "scores": {
                                        "type": "object",
                                        "additionalProperties": {"$ref": "#/components/schemas/Score"},
                                    },
                                },
                            },
                        },
                        **_META,
                    },
                },
                "Event": _EVENT,
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                                "errors": {"type": "array", "items": {"type": "object"}},
                            },
                            "required": ["code", "message"],
                        }
                    },
                },
            },
        },
    }


SWAGGER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>propensity API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
