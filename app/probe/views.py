"""View models for the "Find units" panel and the neuron page: plain strings and numbers for the
templates (no maths there), including the histogram's SVG geometry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
from markupsafe import Markup, escape

from models.probes import BINARY, PROBES, span_edges
from models.ranking import TIE, UnitScore

from app.core.selection import UnitRef
from app.probe.schemas import DEFAULT_PROBE, MAX_PATTERN_CHARS
from app.probe.contexts import Context
from app.probe.service import SPAN_METRIC, NeuronReport, Ranking
from app.ui.scale import STATE_INFO, Scale, Swatch, legend, neuron_scale
from app.ui.urls import neuron_url

DEFAULT_THRESHOLD = 0.3
DEFAULT_TOP = 20
METRIC_LABELS = {"auc": "AUC", "pearson": "|r|", SPAN_METRIC: "Δ on"}
SHOW = {"\n": "↵", "\t": "⇥"}
# What the sign means, per metric: (+1, -1).
SIGNS = {
    "auc": ("higher where the probe is true", "lower where the probe is true"),
    "pearson": ("rises with the probe's value", "falls as the probe's value rises"),
    SPAN_METRIC: ("on inside the span, off outside", "off inside the span, on outside"),
}


@dataclass(frozen=True)
class ProbeOption:
    id: str
    title: str


@dataclass(frozen=True)
class FindUnitsPanel:
    probes: list[ProbeOption]
    threshold: float = DEFAULT_THRESHOLD
    probe: str = DEFAULT_PROBE  # the probe the panel opens on (part of the view: URL and share links)
    title: str = ""  # that probe's description
    pattern: str = ""  # the regex probe's pattern; "" for every other probe
    default: str = DEFAULT_PROBE  # static/probe.js leaves the default out of the URL
    max_pattern: int = MAX_PATTERN_CHARS
    rank_on_load: bool = False  # the view names a probe: show its ranking as the page opens

    @property
    def threshold_meaning(self) -> str:
        return threshold_meaning(self.threshold)


@dataclass
class RankRow:
    rank: int | None  # None: another state of the unit above it
    layer: int
    state: str
    unit: int
    metric: str
    score: str
    sign: str  # "+" or "−"
    sign_title: str
    neuron_url: str
    current: bool
    roughness: str = ""  # for the row's title: why this state is shown first
    alts: list[RankRow] = field(default_factory=list)  # the unit's other states, behind the row's expand button
    expanded: bool = False  # the current unit is one of them: show them from the start


@dataclass
class RankingView:
    rows: list[RankRow] = field(default_factory=list)
    summary: str = ""
    error: str = ""
    error_field: str = ""
    hint: str = ""
    tie: str = f"{TIE:g}"  # scores this close count as a tie (the hint under the table says so)


def find_units_panel(probe: str | None = None, pattern: str | None = None) -> FindUnitsPanel:
    """The panel, opened on the view's probe (and the regex probe's pattern).

    Tolerant, as a page must be: an unknown probe (a hand-edited URL, a link stored by an older
    version) opens the default probe, and a pattern without the regex probe is ignored; the share
    API refuses both before a link is stored (app.share.service)."""
    chosen = probe if probe in PROBES else DEFAULT_PROBE
    shown = (pattern or "")[:MAX_PATTERN_CHARS] if chosen == "regex" else ""
    return FindUnitsPanel(
        [ProbeOption(p.id, p.title) for p in PROBES.values()],
        probe=chosen, title=PROBES[chosen].title, pattern=shown,
        rank_on_load=chosen != DEFAULT_PROBE and (chosen != "regex" or bool(shown)))


def ranking_view(model: str, ranking: Ranking, what: str, current: tuple[int, str, int] | None) -> RankingView:
    """One row per unit (layer, unit): the state models.ranking.order_states puts first (the
    cleanest of those within TIE of the unit's best score), its other states behind the row."""

    def row(u: UnitScore, rank: int | None) -> RankRow:
        plus, minus = SIGNS[u.metric]
        return RankRow(
            rank=rank, layer=u.layer, state=u.state, unit=u.unit, metric=METRIC_LABELS[u.metric],
            score=f"{u.score:.3f}", sign="+" if u.sign > 0 else "−", sign_title=plus if u.sign > 0 else minus,
            neuron_url=neuron_url(model, u.layer, u.state, u.unit),
            current=current == (u.layer, u.state, u.unit),
            roughness="" if u.roughness is None or not math.isfinite(u.roughness) else f"{u.roughness:.3f}")

    rows = []
    for k, g in enumerate(ranking.groups, 1):
        first = row(g.states[0], k)
        first.alts = [row(u, None) for u in g.states[1:]]
        first.expanded = any(a.current for a in first.alts)
        rows.append(first)
    parts = [what, f"{ranking.scored:,} units scored in {ranking.rank_seconds * 1000:.0f} ms"]
    parts.append("trace from cache" if ranking.cached else f"traced in {ranking.trace_seconds * 1000:.0f} ms")
    return RankingView(rows=rows, summary=" · ".join(parts))


def probe_summary(probe: str, ranking: Ranking, pattern: str | None) -> str:
    p = PROBES[probe]
    name = f"regex /{pattern}/" if probe == "regex" else probe
    if p.kind == BINARY and ranking.marked is not None:
        return f"{name}: {ranking.marked:,} of {ranking.chars:,} characters marked"
    return f"{name} ({p.title})"


def span_summary(text: str, start: int, end: int, threshold: float) -> str:
    edges = "; its first and last count neither way" if span_edges(start, end) else ""
    return (f"span {start}–{end} ({end - start:,} characters: “{excerpt(text[start:end])}”{edges}), "
            f"on above {threshold:g} of each unit's colour scale")


def threshold_meaning(threshold: float) -> str:
    """What the slider's number means, in words beside it (static/probe.js says the same as it moves)."""
    share = math.floor(abs(threshold) * 100 + 0.5)  # JS's Math.round, so the page and the script agree
    if threshold > 0:
        return f"{share}% of the way from white to orange"
    if threshold < 0:
        return f"{share}% of the way from white to purple"
    return "white: any positive value"


def excerpt(s: str, limit: int = 40) -> str:
    shown = "".join(SHOW.get(c, c) for c in s)
    return shown if len(shown) <= limit else shown[: limit - 11] + "…" + shown[-10:]


# ---------------------------------------------------------------- neuron page


@dataclass
class Bar:
    x: str
    y: str
    w: str
    h: str
    v: str  # the bin's middle on the unit's colour scale, for --v
    title: str


@dataclass
class HistogramView:
    width: int
    height: int
    bars: list[Bar]
    axis_y: str
    ticks: list[tuple[str, str]]  # (x, label)
    mean_x: str
    zero_x: str  # "" when 0 is outside the range
    label: str


@dataclass
class ContextRow:
    lead: Markup  # the lead-in where the unit's run began (coloured); "" when the body shows it
    skipped: str  # "412 characters left out" between the lead-in and the body, or ""
    body: Markup  # the characters around the one just read, which is outlined
    note: str  # its value, and "position 1,234" or "30th percentile"
    main_url: str  # this context, opened in the main view on this unit
    coloured: bool  # one span per character coloured by the unit (False: the atlas's places, no trace)


@dataclass
class PushRow:
    char: str
    weight: str
    bar: str  # width share in [0, 1]


@dataclass
class ProbeRow:
    probe: str
    title: str
    metric: str
    score: str
    sign: str
    sign_title: str


@dataclass
class NeuronPage:
    title: str
    heading: str
    description: str
    main_url: str
    legend: list[Swatch]  # the contexts' colour scale (empty when they are not coloured)
    legend_note: str
    contexts_problem: str
    prev_url: str
    next_url: str
    atlas_problem: str
    atlas_note: str
    histogram: HistogramView | None
    stats: list[str]
    top: list[ContextRow]
    bottom: list[ContextRow]
    quantiles: list[ContextRow]
    probes: list[ProbeRow]
    pushes_up: list[PushRow]
    pushes_down: list[PushRow]
    pushes_note: str


def neuron_page(r: NeuronReport, hidden: int) -> NeuronPage:
    what = f"layer {r.layer} · {r.state} · unit {r.unit}"
    main_url = "/?" + urlencode({"model": r.model, "layer": r.layer, "state": r.state, "unit": r.unit})
    scale = neuron_scale(r.state, r.values, r.nonlinearity) if r.values is not None else None

    def rows(items: list[Context]) -> list[ContextRow]:
        return [context_row(r, c, scale) for c in items]

    stats = []
    if r.minimum is not None:
        stats = [f"min {r.minimum:+.3f}", f"mean {r.mean:+.3f}", f"max {r.maximum:+.3f}"]
    pushes_note = ""
    if r.pushes_up is None:
        pushes_note = (f"Only the top layer's h (layer {r.top_layer} · h) feeds the output layer directly, so only its "
                       "units have next-character pushes.")
    return NeuronPage(
        title=f"{r.model} · {what} · neuron · rnnscope",
        heading=f"{r.model} · {what}",
        description=STATE_INFO.get(r.state, (r.state, ""))[0],
        main_url=main_url,
        legend=legend(scale) if scale is not None else [],
        legend_note=f"{scale.label} (held-out text)" if scale is not None else "",
        contexts_problem=r.contexts_problem or "",
        prev_url=neuron_url(r.model, r.layer, r.state, r.unit - 1) if r.unit > 0 else "",
        next_url=neuron_url(r.model, r.layer, r.state, r.unit + 1) if r.unit < hidden - 1 else "",
        atlas_problem=r.atlas_problem or "",
        atlas_note=(f"from the atlas: {r.atlas_chars:,} characters of held-out text"
                    + (f" ({r.atlas_source})" if r.atlas_source else "")) if r.atlas_chars else "",
        histogram=histogram(r, scale) if r.hist else None,
        stats=stats,
        top=rows(r.top),
        bottom=rows(r.bottom),
        quantiles=rows(r.quantiles),
        probes=[ProbeRow(p["probe"], PROBES[p["probe"]].title if p["probe"] in PROBES else "",
                         METRIC_LABELS.get(p["metric"], p["metric"]), f"{p['score']:.3f}",
                         "+" if p["sign"] > 0 else "−", SIGNS.get(p["metric"], ("", ""))[0 if p["sign"] > 0 else 1])
                for p in r.probes],
        pushes_up=_pushes(r.pushes_up or []),
        pushes_down=_pushes(r.pushes_down or []),
        pushes_note=pushes_note,
    )


def context_row(r: NeuronReport, c: Context, scale: Scale | None) -> ContextRow:
    """One context: its stretches of the atlas's text, one span per character coloured by the unit
    (as the main view colours it, --v its place on the scale) when the unit was traced."""
    text, p = r.text, c.position
    place = f"{round(c.q * 100)}th percentile" if c.q is not None else f"position {p:,}"
    note = place if c.value is None else f"{c.value:+.3f} · {place}"
    first, last = c.pieces[0][0], c.pieces[-1][1]
    url = "/?" + urlencode({"model": r.model, "layer": r.layer, "state": r.state, "unit": r.unit,
                            "text": text[first:last]})
    lead, skipped = Markup(""), ""
    if c.lead is not None:
        a, b = c.lead
        lead = _coloured(text, a, b, None, r.values, scale)
        skipped = f"{c.main[0] - b:,} characters left out"
    a, b = c.main
    return ContextRow(lead, skipped, _coloured(text, a, b, p, r.values, scale), note, url, r.values is not None)


def _coloured(text: str, a: int, b: int, peak: int | None, values: np.ndarray | None, scale: Scale | None) -> Markup:
    """text[a:b] as one <span class="ch"> per character, style="--v:…" and its value as a title; the
    character just read (peak) outlined. Without values, plain text with the peak in a <mark>."""
    if values is None or scale is None:
        out = []
        for t in range(a, b):
            shown = escape(SHOW.get(text[t], text[t]))
            out.append(Markup("<mark>{}</mark>").format(shown) if t == peak else shown)
        return Markup("").join(out)
    pos = scale.positions(values[a:b])
    out = []
    for k, t in enumerate(range(a, b)):
        cls = "ch active" if t == peak else "ch"
        tip = f"{values[t]:+.3f}" + (": the character just read" if t == peak else "")
        out.append(f'<span class="{cls}" style="--v:{pos[k]:.3f}" title="{escape(tip)}">'
                   f'{escape(SHOW.get(text[t], text[t]))}</span>')
    return Markup("".join(out))


def histogram(r: NeuronReport, scale: Scale | None = None, width: int = 560, height: int = 150,
              pad: int = 22) -> HistogramView:
    """Bars in SVG user units; x maps the value range onto [pad, width - pad]. Bars take the contexts'
    colour scale when there is one, so a bar and a character of the same value look alike."""
    counts = np.asarray(r.hist, dtype=np.float64)
    edges = np.asarray(r.edges, dtype=np.float64)
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo if hi > lo else 1.0
    plot_w, plot_h = width - 2 * pad, height - pad - 8
    axis_y = 8 + plot_h

    def x_of(v: float) -> float:
        return pad + (v - lo) / span * plot_w

    scale = scale or neuron_scale(r.state, np.array([lo, hi], dtype=np.float32), r.nonlinearity)
    mids = (edges[:-1] + edges[1:]) / 2
    positions = scale.positions(mids.astype(np.float32))
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    total = int(counts.sum())
    bars = []
    for k, c in enumerate(counts):
        h = c / top * plot_h
        x0, x1 = x_of(edges[k]), x_of(edges[k + 1])
        share = c / total * 100 if total else 0.0
        bars.append(Bar(f"{x0:.1f}", f"{axis_y - h:.1f}", f"{max(x1 - x0 - 1, 0.5):.1f}", f"{h:.1f}",
                        f"{positions[k]:.3f}",
                        f"{edges[k]:+.3f} to {edges[k + 1]:+.3f}: {int(c):,} characters ({share:.1f}%)"))
    ticks = [(f"{x_of(lo):.1f}", f"{lo:+.2f}"), (f"{x_of(hi):.1f}", f"{hi:+.2f}")]
    zero_x = f"{x_of(0.0):.1f}" if lo < 0 < hi else ""
    if zero_x:
        ticks.append((zero_x, "0"))
    return HistogramView(width, height, bars, f"{axis_y:.1f}", ticks, f"{x_of(r.mean or 0.0):.1f}", zero_x,
                         f"histogram of {r.state}[{r.layer}][{r.unit}] over {total:,} held-out characters")


def _pushes(items: list[tuple[str, float]]) -> list[PushRow]:
    biggest = max((abs(w) for _, w in items), default=0.0) or 1.0
    return [PushRow("␣" if c == " " else _show(c), f"{w:+.3f}", f"{abs(w) / biggest:.3f}") for c, w in items]


def _show(s: str) -> str:
    return "".join(SHOW.get(c, c) for c in s)


def current_unit(layer: str | None, state: str | None, unit: str | None) -> tuple[int, str, int] | None:
    """The main view's unit, as sent along with a ranking request (to mark its row)."""
    ref = UnitRef.exact(layer, state, unit)
    return None if ref is None else ref.as_tuple()
