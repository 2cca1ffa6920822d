"""One unit reference: a (layer, state, unit) read from a request, defaulted and checked in one place.

Every page and route that names a unit (the main page and its compare unit, the dynamics pages,
the generation stream, the Find units panel's marked row) goes through here, so a unit is read the
same way everywhere and each refusal keeps its one wording ("layer must be a whole number, got 'x'";
the range messages come from TraceService's check_layer, check_state and check_units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.errors import InputError
from app.core.registry import ModelEntry

if TYPE_CHECKING:  # the checks live on the trace service; only its type is needed here
    from app.trace.service import TraceService

Fail = Callable[[InputError], None]


def whole_number(raw: str | None, name: str, default: int, *, label: str | None = None, lo: int | None = None,
                 hi: int | None = None, spaces_are_blank: bool = True) -> int:
    """An int query value, `default` when absent or blank; InputError naming the field otherwise.

    `spaces_are_blank=False` (the main page, as it always has) treats only the empty string as blank,
    so a value of only spaces is refused rather than defaulted.
    """
    if raw is None or (raw.strip() if spaces_are_blank else raw) == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"{label or name} must be a whole number, got {raw[:40]!r}", field=name) from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{label or name} must be between {lo} and {hi}, got {value}", field=name)
    return value


@dataclass(frozen=True)
class UnitRef:
    layer: int
    state: str
    unit: int

    @classmethod
    def default_for(cls, entry: ModelEntry) -> UnitRef:
        """The model card's quote unit if it names one, else layer 0, h, unit 0."""
        q = entry.quote_unit
        return cls(q.layer, q.state, q.unit) if q is not None else cls(0, "h", 0)

    @classmethod
    def exact(cls, layer: str | None, state: str | None, unit: str | None) -> UnitRef | None:
        """All three given as whole numbers and a state, or None: no defaults, no checks (a row to mark)."""
        try:
            return cls(int(layer or ""), str(state), int(unit or ""))
        except ValueError:
            return None

    def check(self, traces: TraceService, entry: ModelEntry) -> None:
        """The layer, then the state, then the unit against the model: the first refusal raises."""
        traces.check_layer(entry, self.layer)
        traces.check_state(entry, self.state)
        traces.check_units(entry, [self.unit])

    def as_tuple(self) -> tuple[int, str, int]:
        return self.layer, self.state, self.unit


def resolve_unit(traces: TraceService, entry: ModelEntry, layer: str | None, state: str | None, unit: str | None,
                 fail: Fail, *, spaces_are_blank: bool = True) -> UnitRef:
    """A page's unit: absent parts default to the card's quote unit; every problem goes to `fail` (the
    page keeps the first per field) and the page still gets a unit to show its form with (an unknown
    state falls back to h)."""
    default = UnitRef.default_for(entry)
    bad: set[str] = set()

    def number(raw: str | None, name: str, d: int) -> int:
        try:
            return whole_number(raw, name, d, spaces_are_blank=spaces_are_blank)
        except InputError as e:
            fail(e)
            bad.add(name)
            return d

    n_layer = number(layer, "layer", default.layer)
    name = state or default.state
    n_unit = number(unit, "unit", default.unit)
    if "layer" not in bad:
        passes(lambda: traces.check_layer(entry, n_layer), fail)
    if not passes(lambda: traces.check_state(entry, name), fail):
        name = "h"
    if "unit" not in bad:
        passes(lambda: traces.check_units(entry, [n_unit]), fail)
    return UnitRef(n_layer, name, n_unit)


def passes(call: Callable[[], object], fail: Fail) -> bool:
    """Run one check: True when it passed; its InputError goes to `fail` (a page keeps collecting)."""
    try:
        call()
        return True
    except InputError as e:
        fail(e)
        return False
