"""Bad input, told to the person who sent it: which field, what is wrong, which HTTP status."""

from __future__ import annotations

from models.errors import RnnscopeError


class InputError(RnnscopeError):
    """A request value the user can fix. `field` names the control the page shows it beside."""

    def __init__(self, message: str, field: str = "text", status: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
