"""The statuses the limits can answer with, documented on every /api operation."""

from __future__ import annotations

from typing import Any


LIMIT_RESPONSES = {
    "413": "the request body is over the size limit",
    "415": "the request body is not JSON",
    "429": "too many requests from this address (when the server sets a rate limit); see Retry-After",
    "503": "the server is busy, or the model run took longer than its limit (and was stopped); see Retry-After",
}


def document_limits(app: Any) -> None:
    """Add the statuses the limits above can answer with to every /api operation in the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        ref = {"$ref": "#/components/schemas/ErrorDetail"}
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/api/"):
                continue
            for method, op in operations.items():
                statuses = ("429", "503") if method in ("get", "head") else tuple(LIMIT_RESPONSES)
                for status in statuses:
                    op.setdefault("responses", {}).setdefault(status, {
                        "description": LIMIT_RESPONSES[status], "content": {"application/json": {"schema": ref}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
