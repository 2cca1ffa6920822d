"""The gate-saturation page: how often each gate sits near 0 or 1 over a text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from markupsafe import Markup

from app.core.errors import InputError
from app.core.slots import Overloaded
from app.dynamics.results import SATURATION_CHARS, SATURATION_HIGH, SATURATION_LOW
from app.dynamics.service import DynamicsService
from app.dynamics.views.form import Base, ModelChoice, Reader, base, model_choices, resolve_model
from app.trace.views import DEFAULT_TEXT
from app.ui import svg


@dataclass
class GateSummary:
    layer: int
    gate: str
    closed: int  # units left-saturated more than half the time
    open: int
    rarely: int  # saturated (either way) less than 10% of the time
    units: int


@dataclass
class SaturationPlot:
    """One layer's scatter: a single keyboard widget that announces the highlighted dot in `live`."""

    layer: int
    svg: Markup
    live: str  # id of the readout the widget writes into
    dots: int


@dataclass
class SaturationPage(Base):
    choices: list[ModelChoice] = field(default_factory=list)
    model: str = ""
    plots: list[SaturationPlot] = field(default_factory=list)
    summary: list[GateSummary] = field(default_factory=list)
    source: str = ""
    held_out: bool = True
    stand_in: str = ""  # what was measured when neither held-out text nor a text was there
    warning: str = ""  # shown above the plots when the text was not held-out text
    seconds: str = ""
    low: float = SATURATION_LOW
    high: float = SATURATION_HIGH
    chars: int = SATURATION_CHARS


GATE_NAMES = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}


def build_saturation(service: DynamicsService, query: Mapping[str, str], compute: bool = True) -> SaturationPage:
    page = SaturationPage(**vars(base("saturation", query, service)))
    r = Reader(query)
    entry = resolve_model(service, r)
    if entry is None:
        return page
    page.model = entry.name
    page.choices = model_choices(service, entry.name)
    text = query.get("text")
    r.check(lambda: service.check_gated(entry))
    if r.errors or not compute:
        page.errors = r.errors
        page.pending = not page.errors
        return page
    try:
        why = service.missing_held_out(entry)
        if why is not None and text is None:  # no held-out text and none carried: the main page's, said loudly
            text, page.stand_in = DEFAULT_TEXT, "the main page's default text"
        res = service.saturation(entry, None if text is None else text.replace("\r\n", "\n"))
    except (InputError, Overloaded) as e:
        page.refuse(e)
        return page
    page.source = res.source
    page.held_out = res.held_out
    if not res.held_out:
        what = page.stand_in or "the current text (carried from the view you came from)"
        page.warning = (f"Not held-out text. {res.warning}. Measured on {what} instead: {res.chars:,} characters, "
                        f"against the {SATURATION_CHARS:,} held-out characters this view is meant for, and text the "
                        "model may have trained on, so these fractions are rough.")
    page.seconds = "from cache" if res.cached else f"measured in {res.seconds:.1f} s"
    for layer, per in sorted(res.layers.items()):
        points = []
        for g, d in per.items():
            left, right = d["left"], d["right"]
            for u, (lf, rt) in enumerate(zip(left.tolist(), right.tolist())):
                href = "/?" + urlencode({"model": entry.name, "layer": layer, "state": g, "unit": u})
                points.append(svg.Point(lf, rt, f"g-{g}", f"{g}[{layer}][{u}] ({GATE_NAMES[g]} gate): "
                                        f"< {SATURATION_LOW:g} {lf:.0%} of the time, > {SATURATION_HIGH:g} {rt:.0%}",
                                        href))
            page.summary.append(GateSummary(layer, g, int((left > 0.5).sum()), int((right > 0.5).sum()),
                                            int(((left + right) < 0.1).sum()), len(left)))
        live = f"sat-readout-{layer}"
        plot = svg.scatter(
            points, title=f"layer {layer}: each gate unit's time saturated", diagonal=True,
            x_label=f"fraction of steps left-saturated (< {SATURATION_LOW:g})",
            y_label=f"fraction right-saturated (> {SATURATION_HIGH:g})",
            legend=[(f"g-{g}", f"{g} {GATE_NAMES[g]}") for g in per],
            keys=svg.Keys(live, f"layer {layer} gate units, {len(points):,} dots: arrow keys move between them "
                                "(left and right by left saturation, up and down by right saturation), "
                                "Enter opens the unit in the main view"))
        page.plots.append(SaturationPlot(layer, plot, live, len(points)))
    return page
