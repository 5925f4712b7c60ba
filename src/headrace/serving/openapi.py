"""The server's OpenAPI 3 description, served at ``/v2/docs/openapi.json``.

Written out by hand rather than generated, as the routes are few and fixed; the tests run
schemathesis against a live server with it, so a route or a status code that drifts from
this description fails there.
"""

from __future__ import annotations

from typing import Any

from headrace import __version__
from headrace.serving.codec import DATATYPES

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    why = {
        400: "The request is malformed (the message says which input and why).",
        401: "The route's bearer token is missing or wrong.",
        404: "No such model or version.",
        405: "The route exists but not with this method.",
        413: "The body is larger than the server's limit.",
        500: "The model raised on some rows of the request.",
        503: "Not ready, or the model's queue is full (see Retry-After).",
        504: "The request took longer than the server's timeout.",
    }
    return {str(s): _json(_ref("Error"), why[s]) for s in statuses}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_SECURED: list[dict[str, list[str]]] = [{}, {"bearer": []}]


def _model_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = {
        "get": {
            "summary": "Model metadata: versions, platform, input and output tensors.",
            "parameters": parameters,
            "security": _SECURED,
            "responses": {
                "200": _json(_ref("ModelMetadata"), "The model's metadata."),
                **_errors(401, 404, 503),
            },
        }
    }
    ready = {
        "get": {
            "summary": "Whether the model is loaded and warmed up.",
            "parameters": parameters,
            "security": _SECURED,
            "responses": {
                "200": _json(_ref("ModelReady"), "The model is ready."),
                "400": _json(_ref("ModelReady"), "Not ready: not loaded (yet), or unloaded."),
                **_errors(401, 404),
            },
        }
    }
    infer = {
        "post": {
            "summary": "Predict: one 2-D input [rows, fields] or one 1-D input per field.",
            "parameters": parameters,
            "security": _SECURED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("InferenceRequest")}},
            },
            "responses": {
                "200": _json(_ref("InferenceResponse"), "One prediction (and score) per row."),
                **_errors(400, 401, 404, 413, 500, 503, 504),
            },
        }
    }
    return {prefix: metadata, f"{prefix}/ready": ready, f"{prefix}/infer": infer}


def _schemas() -> dict[str, Any]:
    datatype = {"type": "string", "enum": list(DATATYPES)}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
    parameters = {"type": "object", "additionalProperties": True}
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": datatype,
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "TensorMetadata": tensor_meta,
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": shape,
                "datatype": datatype,
                "parameters": parameters,
                "data": {"type": "array", "description": "Row-major values, flat or nested."},
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": parameters},
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": parameters,
                "inputs": {"type": "array", "items": _ref("RequestInput"), "minItems": 1},
                "outputs": {"type": "array", "items": _ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": shape,
                "datatype": datatype,
                "parameters": parameters,
                "data": {"type": "array"},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": parameters,
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
        "RepositoryIndexRequest": {
            "type": "object",
            "properties": {"ready": {"type": "boolean"}},
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version", "state", "reason"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string", "enum": ["READY", "UNAVAILABLE", "LOADING"]},
                    "reason": {"type": "string"},
                },
            },
        },
        "Empty": {"type": "object"},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of every route the HTTP server answers."""
    repository_action = {
        "post": {
            "summary": "Load or unload a model (the repository extension).",
            "parameters": [_NAME],
            "security": _SECURED,
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("Empty")}},
            },
            "responses": {
                "200": _json(_ref("Empty"), "Done."),
                **_errors(400, 401, 404, 413, 503),
            },
        }
    }
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {
                "summary": "Liveness: the process answers.",
                "responses": {"200": _json(_ref("Live"), "Live.")},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness: started, and every served model had its first load.",
                "responses": {
                    "200": _json(_ref("Ready"), "Ready."),
                    "400": _json(_ref("Ready"), "Not ready: stopping, or still loading."),
                },
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata.",
                "responses": {"200": _json(_ref("ServerMetadata"), "Name, version, extensions.")},
            }
        },
        **_model_paths("/v2/models/{name}", [_NAME]),
        **_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]),
        "/v2/repository/index": {
            "post": {
                "summary": "Every release the server knows of, with its state.",
                "security": _SECURED,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("RepositoryIndexRequest")}},
                },
                "responses": {
                    "200": _json(_ref("RepositoryIndex"), "The index."),
                    **_errors(400, 401, 413),
                },
            }
        },
        "/v2/repository/models/{name}/load": repository_action,
        "/v2/repository/models/{name}/unload": repository_action,
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition.",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "headrace inference server (Open Inference Protocol v2)",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
