"""The gradient-flow page: how far back each model's top layer still feels a character."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup

from models.dynamics import MAX_LOOKBACK

from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.slots import Overloaded
from app.dynamics.results import DEFAULT_LOOKBACK, MAX_COMPARE, FlowResult
from app.dynamics.service import DynamicsService
from app.dynamics.views.form import (Base, Cell, DOT_LIMIT, ModelChoice, Reader, SALIENCY_DECADES, base, cells,
    model_choices, sci, show_char)
from app.ui import svg
from app.ui.scale import Swatch


@dataclass
class FlowPanel:
    name: str
    label: str
    plot: Markup
    stats: list[str]
    cells: list[Cell]
    legend: list[Swatch]
    window: str


@dataclass
class GradientsPage(Base):
    text: str = ""
    position: int = 0
    position_raw: str = ""  # as typed: empty means "the second-last character" of whatever the text is
    lookback: int = DEFAULT_LOOKBACK
    max_lookback: int = MAX_LOOKBACK
    max_compare: int = MAX_COMPARE
    choices: list[ModelChoice] = field(default_factory=list)
    panels: list[FlowPanel] = field(default_factory=list)
    max_chars: int = 0
    axis_note: str = ""


def build_gradients(service: DynamicsService, query, getlist: Callable[[str], list[str]],
                    compute: bool = True) -> GradientsPage:
    page = GradientsPage(**vars(base("gradients", query, service)))
    r = Reader(query)
    page.text = r.text()
    page.max_chars = service.settings.max_chars
    if page.no_models:
        return page
    asked = getlist("compare")
    names = asked if asked else service.default_compare(query.get("model"))
    page.choices = model_choices(service, "")
    for c in page.choices:
        c.selected = c.name in names
    position = r.int("position", None)
    page.position = service.default_position(page.text) if position is None else position
    page.position_raw = query.get("position") or ""
    page.lookback = r.int("lookback", DEFAULT_LOOKBACK) or 0
    entries: list[ModelEntry] = []
    r.check(lambda: entries.extend(service.compare_models(names)))
    r.check(lambda: service.check_flow_request(page.text, page.position, page.lookback))
    page.errors = r.errors
    if page.errors or not compute:
        page.pending = not page.errors
        return page
    try:
        results = service.gradients(entries, page.text, page.position, page.lookback)
    except (InputError, Overloaded) as e:
        page.refuse(e)
        return page
    # The model list's order, whatever order the URL names them in; one y-axis for all, so a curve that
    # falls to 1e-18 and one that stays near 0.1 look as different as they are.
    rank = {name: k for k, name in enumerate(service.registry.names())}
    results = sorted(results, key=lambda res: rank.get(res.entry.name, len(rank)))
    axis = shared_axis(results)
    page.axis_note = (f"all {len(results)} plots share one log y-axis, {svg.axis_label(axis.lo)} to "
                      f"{svg.axis_label(axis.hi)}, so their heights compare directly") if len(results) > 1 else ""
    page.panels = [_flow_panel(res, page.text, axis) for res in results]
    return page


def shared_axis(results: list[FlowResult]) -> svg.Axis:
    """One log axis over every panel's Jacobian norms and saliencies."""
    return svg.log_axis([float(v) for r in results for a in (r.flow.jacobian_norm, r.flow.saliency)
                         for v in np.asarray(a, dtype=np.float64).ravel()])


def _flow_panel(res: FlowResult, text: str, axis: svg.Axis | None = None) -> FlowPanel:
    f, e = res.flow, res.entry
    T, start = f.position, f.start
    back = list(range(T - start, -1, -1))  # steps back for t = start..T
    jac = f.jacobian_norm.astype(np.float64)
    sal = f.saliency.astype(np.float64)
    order = slice(None, None, -1)  # plot against steps back: 0 (t = T) on the left
    titles = [f"t={T - k} ({k} back) {show_char(text[T - k])}" for k in range(T - start + 1)]
    dots = len(back) <= DOT_LIMIT
    plot = svg.line_plot(
        [svg.Series("‖∂h_T/∂h_t‖", jac[order].tolist(), "jac", dots),
         svg.Series("saliency of the next char", sal[order].tolist(), "sal", dots)],
        list(range(T - start + 1)), title=f"{e.name}: gradient flow back from position {T}",
        x_label="steps back from T (T − t)", y_label="norm (log scale)", log_y=True, point_titles=titles,
        y_axis=axis)
    stats = []
    for k in (1, 10, 50, 100):
        if k <= T - start:
            stats.append(f"‖∂h_T/∂h_(T−{k})‖ = {sci(float(jac[-1 - k]))}")
    peak = int(np.argmax(sal)) if sal.size else 0
    stats.append(f"saliency peaks at t={start + peak} ({show_char(text[start + peak])}, {T - start - peak} back)")
    stats.append(f"{'from cache' if res.cached else f'computed in {res.seconds:.1f} s'}")
    # Colour the window by saliency on a log scale: the largest is 1, 1/1000 of it and below is 0.
    top = float(sal.max()) if sal.size and sal.max() > 0 else 1.0
    pos = np.clip(1 + np.log10(np.maximum(sal, 1e-30) / top) / SALIENCY_DECADES, 0, 1)
    window = text[start:T + 1]
    ctitles = [f"{show_char(ch)} at t={start + k} ({T - start - k} back): saliency {sci(float(s))}"
               for k, (ch, s) in enumerate(zip(window, sal.tolist()))]
    out_cells = cells(window, pos, ctitles, offset=start, unknown=set(
        start + u for u in e.checkpoint.vocab.unknown_positions(window)), extra={T: "at-t"})
    out_cells.append(Cell(res.target, "0", " target" + (" nl" if res.target == "\n" else ""),
                      f"the prediction being explained: p({show_char(res.target)} next)", None))
    legend_s = [Swatch(k / 10, "") for k in range(11)]
    label = f"{e.cell.upper()} {e.layers}×{e.hidden} · h of layer {f.layer} (the top)"
    return FlowPanel(e.name, label, plot, stats, out_cells, legend_s, f"positions {start}–{T}")
