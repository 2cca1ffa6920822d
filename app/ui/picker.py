"""The model / layer / state / unit controls, as the main page has them, for every page that picks a unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.registry import ModelEntry
from app.ui.scale import STATE_INFO


@dataclass
class UnitPicker:
    """What the controls show; they keep the main page's ids, so static/app.js fills them on a model change."""

    models: list[Any]  # the page's model options (name, label, layers, hidden, states, selected)
    layers: list[int]
    layer: int
    states: list[tuple[str, str]]  # (state, its short description)
    state: str
    unit: int
    unit_max: int


def unit_picker(models: list[Any], entry: ModelEntry, layer: int, state: str, unit: int) -> UnitPicker:
    """The controls for `entry`'s layers, states and units, showing the chosen unit."""
    return UnitPicker(models, list(range(entry.layers)), layer,
                      [(s, STATE_INFO.get(s, (s, ""))[0]) for s in entry.states], state, unit, entry.hidden - 1)
