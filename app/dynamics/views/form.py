"""Shared pieces of the dynamics pages' view models: the URL state, the form widgets, the reader that
keeps the first problem per field. One module per page beside this one: the query string in, plain
values and SVG out.

Every page reads the shared URL state (model, layer, state, unit, text) and its own fields,
checks each, and keeps the first problem per field for the page to show beside that control.
No maths in templates: colours are positions on the scale, plots are finished SVG Markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


from app.core import selection
from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.slots import Overloaded
from app.dynamics.service import DynamicsService
from app.trace.views import DEFAULT_TEXT, UNKNOWN_TITLE
from app.ui.picker import UnitPicker, unit_picker
from app.ui.urls import SHARED, nav_query

PRIME_SHOWN = 400
DOT_LIMIT = 201  # hoverable dots on a line plot up to this many points per series
WATCH_ROWS = 15
SALIENCY_DECADES = 3.0
BUSY = "busy"  # the errors key for "no model slot free / the run took too long" (503, not the user's input)


# ------------------------------------------------------------------ shared pieces


@dataclass
class Cell:
    ch: str
    v: str  # position on the colour scale, for --v
    cls: str = ""
    title: str = ""
    t: int | None = None  # position in the text, for click-to-pick (data-t)
    raw: str = ""  # the value itself (data-v), where the page may re-scale in place


@dataclass
class ModelChoice:
    name: str
    label: str
    layers: int
    hidden: int
    states: str  # space-separated (static/app.js re-fills the pickers from these on a model change)
    selected: bool
    cell: str = ""


Picker = UnitPicker  # the name the dynamics pages import it by


@dataclass
class Base:
    """What every dynamics page has: shared state for links, messages per field, nav."""

    active: str
    shared: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    no_models: bool = False
    models_dir: str = ""
    pending: bool = False  # inputs are fine; the page loads the (slow) result block itself, showing progress
    self_url: str = ""

    @property
    def status(self) -> int:
        if BUSY in self.errors:
            return 503
        return 422 if self.errors else 200

    def refuse(self, e: InputError | Overloaded) -> None:
        """A refusal from the service: bad input beside its field, or "the server is busy"."""
        field_ = BUSY if isinstance(e, Overloaded) else e.field
        self.errors.setdefault(field_, e.message)

    @property
    def nav_query(self) -> str:
        return nav_query(self.shared)

    def main_href(self, **override: str | int) -> str:
        """The main view for this page's state, or with a different unit."""
        q = {**self.shared, **{k: str(v) for k, v in override.items()}}
        return "/" + nav_query(q)


class Reader:
    """Query values in, typed values out; the first problem per field is kept."""

    def __init__(self, query: Mapping[str, str]):
        self.q = query
        self.errors: dict[str, str] = {}

    def fail(self, e: InputError) -> None:
        self.errors.setdefault(e.field, e.message)

    def has(self, name: str) -> bool:
        return self.q.get(name) is not None

    def text(self, name: str = "text", default: str = DEFAULT_TEXT) -> str:
        raw = self.q.get(name)
        return default if raw is None else raw.replace("\r\n", "\n")

    def int(self, name: str, default: int | None, label: str | None = None) -> int | None:
        raw = self.q.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return int(raw.strip())
        except ValueError:
            self.fail(InputError(f"{label or name} must be a whole number, got {raw[:40]!r}", field=name))
            return default

    def float(self, name: str, default: float, label: str | None = None) -> float:
        raw = self.q.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            v = float(raw.strip())
        except ValueError:
            self.fail(InputError(f"{label or name} must be a number, got {raw[:40]!r}", field=name))
            return default
        if not math.isfinite(v):
            self.fail(InputError(f"{label or name} must be a finite number, got {raw[:40]!r}", field=name))
            return default
        return v

    def check(self, call: Callable[[], object]) -> bool:
        return selection.passes(call, self.fail)


def shared_of(query: Mapping[str, str]) -> dict[str, str]:
    return {k: query[k] for k in SHARED if query.get(k) is not None}


def model_choices(service: DynamicsService, selected: str) -> list[ModelChoice]:
    return [ModelChoice(e.name, f"{e.name} · {e.cell.upper()} {e.layers}×{e.hidden}", e.layers, e.hidden,
                        " ".join(e.states), e.name == selected, e.cell)
            for e in service.registry.entries.values()]


def resolve_model(service: DynamicsService, r: Reader) -> ModelEntry | None:
    """The requested model (or the default); on an unknown name the message, and the default for the form."""
    registry = service.registry
    registry.refresh()
    if not registry.entries:
        return None
    default = registry.default_name(service.settings.default_model)
    name = r.q.get("model") or default
    try:
        return service.model(name)
    except InputError as e:
        r.fail(e)
        return registry.get(default)  # type: ignore[arg-type]


def resolve_unit(service: DynamicsService, r: Reader, entry: ModelEntry) -> tuple[int, str, int]:
    """The page's unit (app.core.selection, as every page): problems kept per field in the reader."""
    return selection.resolve_unit(service.traces, entry, r.q.get("layer"), r.q.get("state"), r.q.get("unit"),
                                  r.fail).as_tuple()


def picker(service: DynamicsService, entry: ModelEntry, layer: int, state: str, unit: int) -> UnitPicker:
    return unit_picker(model_choices(service, entry.name), entry, layer, state, unit)


def cells(text: str, positions: np.ndarray, titles: list[str] | None = None, missing: np.ndarray | None = None,
          unknown: set[int] | None = None, offset: int = 0, extra: Mapping[int, str] | None = None) -> list[Cell]:
    """One cell per character. positions in [-1, 1]; missing ones are hatched (no value)."""
    out = []
    unknown = unknown or set()
    for k, (ch, p) in enumerate(zip(text, positions.tolist())):
        t = offset + k
        cls = (" nl" if ch == "\n" else "") + (" unk" if t in unknown else "")
        if missing is not None and missing[k]:
            cls += " na"
        if extra and t in extra:
            cls += " " + extra[t]
        title = titles[k] if titles is not None else ""
        if t in unknown:
            title = (title + " · " if title else "") + UNKNOWN_TITLE
        out.append(Cell(ch, f"{p:.3f}", cls, title, t))
    return out


def sci(x: float) -> str:
    if not math.isfinite(x):
        return "overflow"
    return "0" if x == 0 else (f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}")


def show_char(ch: str) -> str:
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(ch, ch)


def base(active: str, query: Mapping[str, str], service: DynamicsService | None = None) -> Base:
    b = Base(active, shared_of(query))
    if service is not None:
        service.registry.refresh()
        b.no_models = not service.registry.entries
        b.models_dir = str(service.registry.models_dir)
    return b
