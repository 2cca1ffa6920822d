"""Bad input, told to the person who sent it: which field, what is wrong, which HTTP status; and the
JSON shape every refusal of the API has (ErrorDetail)."""

from __future__ import annotations

from pydantic import BaseModel

from models.errors import RnnscopeError


class InputError(RnnscopeError):
    """A request value the user can fix. `field` names the control the page shows it beside."""

    def __init__(self, message: str, field: str = "text", status: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class ErrorDetail(BaseModel):  # every refusal of the JSON API (no docstring: it would change the OpenAPI schema)
    detail: str
