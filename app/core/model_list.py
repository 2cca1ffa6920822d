"""A form's list of models (compare's and dynamics' `models` field): names in, registry entries out."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from app.core.errors import InputError
from app.core.registry import ModelEntry


def entries_for_models_field(lookup: Callable[[str], ModelEntry], names: Iterable[str]) -> list[ModelEntry]:
    """Each name's entry via `lookup` (TraceService.model). An unknown name is a 404 on the `models` field,
    not `model`, so the page shows the message beside the list the user ticked."""
    out = []
    for n in names:
        try:
            out.append(lookup(n))
        except InputError as e:
            raise InputError(e.message, field="models", status=404) from None
    return out
