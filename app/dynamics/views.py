"""Page view models for the dynamics views: the query string in, plain values and SVG out.

Every page reads the shared URL state (model, layer, state, unit, text) and its own fields,
checks each, and keeps the first problem per field for the page to show beside that control.
No maths in templates: colours are positions on the scale, plots are finished SVG Markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
from markupsafe import Markup

from models.dynamics import MAX_LOOKBACK, MAX_TOPK

from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.slots import Overloaded
from app.dynamics.service import (
    DEFAULT_INTERVENE_TOPK,
    DEFAULT_LOOKBACK,
    MAX_COMPARE,
    MAX_GENERATE,
    MAX_INTERVENE_CHARS,
    SATURATION_CHARS,
    SATURATION_HIGH,
    SATURATION_LOW,
    DynamicsService,
    FlowResult,
    GenerationPlan,
    InterventionResult,
)
from app.trace.views import DEFAULT_TEXT, UNKNOWN_TITLE
from app.ui import svg
from app.ui.scale import STATE_INFO, Scale, neuron_scale

SHARED = ("model", "layer", "state", "unit", "text")
NAV_TEXT_LIMIT = 2_000  # server-rendered links carry the text up to this length (static/dynamics.js carries any)
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
class Swatch:
    pos: str
    label: str


@dataclass
class ModelChoice:
    name: str
    label: str
    layers: int
    hidden: int
    states: str  # space-separated (static/app.js re-fills the pickers from these on a model change)
    selected: bool
    cell: str = ""


@dataclass
class Picker:
    """The model / layer / state / unit controls, with the same ids as the main page's."""

    models: list[ModelChoice]
    layers: list[int]
    layer: int
    states: list[tuple[str, str]]
    state: str
    unit: int
    unit_max: int


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


def nav_query(shared: Mapping[str, str]) -> str:
    keep = {k: shared[k] for k in SHARED if shared.get(k) not in (None, "")}
    if len(keep.get("text", "")) > NAV_TEXT_LIMIT:
        keep.pop("text")
    return "?" + urlencode(keep) if keep else ""


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
        try:
            call()
            return True
        except InputError as e:
            self.fail(e)
            return False


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
    d_layer, d_state, d_unit = service.default_unit(entry)
    layer = r.int("layer", d_layer)
    state = r.q.get("state") or d_state
    unit = r.int("unit", d_unit)
    if "layer" not in r.errors:
        r.check(lambda: service.traces.check_layer(entry, layer))
    if not r.check(lambda: service.traces.check_state(entry, state)):
        state = "h"
    if "unit" not in r.errors:
        r.check(lambda: service.traces.check_units(entry, [unit]))
    return layer, state, unit  # type: ignore[return-value]


def picker(service: DynamicsService, entry: ModelEntry, layer: int, state: str, unit: int) -> Picker:
    return Picker(model_choices(service, entry.name), list(range(entry.layers)), layer,
                  [(s, STATE_INFO.get(s, (s, ""))[0]) for s in entry.states], state, unit, entry.hidden - 1)


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


def legend(scale: Scale, steps: int = 11) -> list[Swatch]:
    lo = scale.lo / scale.hi
    out = []
    for k in range(steps):
        p = lo + (1 - lo) * k / (steps - 1)
        label = ""
        if k == 0:
            label = _fmt(scale.lo)
        elif k == steps - 1:
            label = _fmt(scale.hi)
        elif lo < 0 and k == steps // 2:
            label = "0"
        out.append(Swatch(f"{p:.3f}", label))
    return out


def _fmt(x: float) -> str:
    return f"{x:+g}" if x else "0"


def _sci(x: float) -> str:
    if not math.isfinite(x):
        return "overflow"
    return "0" if x == 0 else (f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}")


def _show(ch: str) -> str:
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(ch, ch)


def _base(active: str, query: Mapping[str, str], service: DynamicsService | None = None) -> Base:
    b = Base(active, shared_of(query))
    if service is not None:
        service.registry.refresh()
        b.no_models = not service.registry.entries
        b.models_dir = str(service.registry.models_dir)
    return b


# ------------------------------------------------------------------ generate


@dataclass
class GeneratePage(Base):
    picker: Picker | None = None
    text: str = ""
    n: int = 300
    temperature: float = 0.8
    seed: str = ""
    max_n: int = MAX_GENERATE
    max_chars: int = 0
    stream_url: str = ""
    what: str = ""
    prime_cells: list[Cell] = field(default_factory=list)
    prime_cut: int = 0
    legend: list[Swatch] = field(default_factory=list)
    legend_note: str = ""
    seed_note: str = ""


def build_generate(service: DynamicsService, query: Mapping[str, str]) -> GeneratePage:
    page = GeneratePage(**vars(_base("generate", query, service)))
    r = Reader(query)
    page.text = r.text()
    page.max_chars = service.settings.max_chars
    entry = resolve_model(service, r)
    if entry is None:
        return page
    layer, state, unit = resolve_unit(service, r, entry)
    page.picker = picker(service, entry, layer, state, unit)
    page.n = r.int("n", 300, "length") or 0
    page.temperature = r.float("temperature", 0.8)
    seed = r.int("seed", None)
    page.seed = "" if seed is None else str(seed)
    # Every field checked on its own, so each message shows at once, not one per try.
    r.check(lambda: service.check_text(page.text, what="the prime text"))
    if "n" not in r.errors:
        r.check(lambda: service.check_length(page.n))
    if "temperature" not in r.errors:
        r.check(lambda: service.check_temperature(page.temperature))
    r.check(lambda: service.check_seed(seed))
    run = r.has("n")  # the form always sends n: a bare /generate shows the form only
    plan: GenerationPlan | None = None
    if not r.errors:
        try:
            plan = service.plan_generation(entry.name, page.text, page.n, page.temperature, seed, layer, state, unit)
        except InputError as e:
            r.fail(e)
    page.errors = r.errors
    if plan is None or not run:
        return page
    try:
        values, scale = service.prime_scale(plan)
    except (InputError, Overloaded) as e:
        page.refuse(e)
        return page
    shown = plan.prime[-PRIME_SHOWN:]
    page.prime_cut = len(plan.prime) - len(shown)
    tail = values[page.prime_cut:]
    titles = [f"{_show(ch)} (prime, position {page.prime_cut + k}): {float(v):.4f}" for k, (ch, v) in enumerate(zip(shown, tail))]
    page.prime_cells = cells(shown, scale.positions(tail), titles, ~np.isfinite(tail),
                             set(entry.checkpoint.vocab.unknown_positions(shown)), extra=None)
    for c, v in zip(page.prime_cells, tail.tolist()):
        c.raw = f"{v:.4f}" if math.isfinite(v) else ""
    page.legend, page.legend_note = legend(scale), scale.label
    page.what = f"{state}[{layer}][{unit}]"
    params = {"model": entry.name, "text": plan.prime, "n": plan.n, "temperature": f"{plan.temperature:g}",
              "layer": layer, "state": state, "unit": unit}
    if plan.seed_given:
        params["seed"] = plan.seed
        page.seed_note = f"seed {plan.seed}: this link reproduces the run exactly"
    else:
        page.seed_note = "no seed given: the server picks one and shows it when the run starts"
    page.stream_url = "/api/v1/generate/stream?" + urlencode(params)
    return page


# ------------------------------------------------------------------ gradient flow


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


def build_gradients(service: DynamicsService, query, getlist: Callable[[str], list[str]],
                    compute: bool = True) -> GradientsPage:
    page = GradientsPage(**vars(_base("gradients", query, service)))
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
    page.panels = [_flow_panel(res, page.text) for res in results]
    return page


def _flow_panel(res: FlowResult, text: str) -> FlowPanel:
    f, e = res.flow, res.entry
    T, start = f.position, f.start
    back = list(range(T - start, -1, -1))  # steps back for t = start..T
    jac = f.jacobian_norm.astype(np.float64)
    sal = f.saliency.astype(np.float64)
    order = slice(None, None, -1)  # plot against steps back: 0 (t = T) on the left
    titles = [f"t={T - k} ({k} back) {_show(text[T - k])}" for k in range(T - start + 1)]
    dots = len(back) <= DOT_LIMIT
    plot = svg.line_plot(
        [svg.Series("‖∂h_T/∂h_t‖", jac[order].tolist(), "jac", dots),
         svg.Series("saliency of the next char", sal[order].tolist(), "sal", dots)],
        list(range(T - start + 1)), title=f"{e.name}: gradient flow back from position {T}",
        x_label="steps back from T (T − t)", y_label="norm (log scale)", log_y=True, point_titles=titles)
    stats = []
    for k in (1, 10, 50, 100):
        if k <= T - start:
            stats.append(f"‖∂h_T/∂h_(T−{k})‖ = {_sci(float(jac[-1 - k]))}")
    peak = int(np.argmax(sal)) if sal.size else 0
    stats.append(f"saliency peaks at t={start + peak} ({_show(text[start + peak])}, {T - start - peak} back)")
    stats.append(f"{'from cache' if res.cached else f'computed in {res.seconds:.1f} s'}")
    # Colour the window by saliency on a log scale: the largest is 1, 1/1000 of it and below is 0.
    top = float(sal.max()) if sal.size and sal.max() > 0 else 1.0
    pos = np.clip(1 + np.log10(np.maximum(sal, 1e-30) / top) / SALIENCY_DECADES, 0, 1)
    window = text[start:T + 1]
    ctitles = [f"{_show(ch)} at t={start + k} ({T - start - k} back): saliency {_sci(float(s))}"
               for k, (ch, s) in enumerate(zip(window, sal.tolist()))]
    out_cells = cells(window, pos, ctitles, offset=start, unknown=set(
        start + u for u in e.checkpoint.vocab.unknown_positions(window)), extra={T: "at-t"})
    out_cells.append(Cell(res.target, "0", " target" + (" nl" if res.target == "\n" else ""),
                      f"the prediction being explained: p({_show(res.target)} next)", None))
    legend_s = [Swatch(f"{k / 10:.3f}", "") for k in range(11)]
    label = f"{e.cell.upper()} {e.layers}×{e.hidden} · h of layer {f.layer} (the top)"
    return FlowPanel(e.name, label, plot, stats, out_cells, legend_s, f"positions {start}–{T}")


# ------------------------------------------------------------------ the scalar RNN


@dataclass
class ToyRow:
    t: int
    x: str
    h: str
    local: str
    grad: str


@dataclass
class ToyPage(Base):
    w_hh: float = 3.0
    w_xh: float = 2.0
    b: float = 1.0
    h0: float = 0.0
    xs: str = "1 0 0"
    plot_h: Markup | None = None
    plot_grad: Markup | None = None
    rows: list[ToyRow] = field(default_factory=list)
    summary: str = ""
    presets: list[tuple[str, str]] = field(default_factory=list)


TOY_PRESETS = (
    ("the notes' example: w_hh = 3, w_xh = 2, b = 1", {"w_hh": "3", "w_xh": "2", "b": "1", "xs": "1 0 0", "h0": "0"}),
    ("explodes: h stays at 0 where tanh' = 1, so each step multiplies by 3",
     {"w_hh": "3", "w_xh": "0", "b": "0", "xs": " ".join(["0"] * 15), "h0": "0"}),
    ("vanishes: a small weight, w_hh = 0.5",
     {"w_hh": "0.5", "w_xh": "1", "b": "0", "xs": " ".join(["1", *["0"] * 14]), "h0": "0"}),
    ("vanishes: saturation, tanh' ≈ 0 at h ≈ ±1",
     {"w_hh": "3", "w_xh": "2", "b": "1", "xs": " ".join(["1"] * 15), "h0": "0"}),
)


def parse_inputs(raw: str) -> list[float]:
    """'1, 0 0' -> [1.0, 0.0, 0.0]; says which entry is not a number."""
    out = []
    for k, tok in enumerate(raw.replace(",", " ").split()):
        try:
            v = float(tok)
        except ValueError:
            raise InputError(f"input {k + 1} ({tok[:20]!r}) is not a number", field="xs") from None
        if not math.isfinite(v):
            raise InputError(f"input {k + 1} ({tok[:20]!r}) must be a finite number", field="xs")
        out.append(v)
    return out


def build_toy(service: DynamicsService, query: Mapping[str, str]) -> ToyPage:
    page = ToyPage(**vars(_base("toy", query)))
    r = Reader(query)
    page.w_hh, page.w_xh, page.b = r.float("w_hh", 3.0), r.float("w_xh", 2.0), r.float("b", 1.0)
    page.h0 = r.float("h0", 0.0)
    page.xs = query.get("xs", "1 0 0")
    carry = {k: v for k, v in page.shared.items() if len(v) <= NAV_TEXT_LIMIT}
    page.presets = [(label, "/toy?" + urlencode({**p, **carry})) for label, p in TOY_PRESETS]
    xs: list[float] = []
    r.check(lambda: xs.extend(parse_inputs(page.xs)))
    page.errors = r.errors
    if page.errors:
        return page
    try:
        res = service.toy(page.w_hh, page.w_xh, page.b, xs, page.h0)
    except InputError as e:
        page.errors = {e.field: e.message}
        return page
    T = len(xs)
    ts = list(range(1, T + 1))
    grads = [abs(g) if math.isfinite(g) else math.nan for g in res.run.dhT_dht]
    dots = T <= 60
    titles = [f"t={t}, x={_sci(x)}" for t, x in zip(ts, xs)]
    page.plot_h = svg.line_plot([svg.Series("h_t", res.run.h, "h", dots)], ts, title="hidden state h_t",
                                x_label="step t", y_label="h_t", y_lo=-1.0, y_hi=1.0, point_titles=titles)
    page.plot_grad = svg.line_plot([svg.Series("|∂h_T/∂h_t|", grads, "jac", dots)], ts,
                                   title=f"gradient reaching each step from h_{T}", x_label="step t",
                                   y_label="|∂h_T/∂h_t| (log scale)", log_y=True, point_titles=titles)
    page.rows = [ToyRow(t, _sci(x), f"{h:+.4f}", f"{loc:+.4g}", _sci(g))
                 for t, x, h, loc, g in zip(ts, xs, res.run.h, res.local, res.run.dhT_dht)]
    first = res.run.dhT_dh1
    verdict = ("explodes" if not math.isfinite(first) or abs(first) > 1e2 else
               "vanishes" if abs(first) < 1e-2 else "shrinks" if abs(first) < 1 else "grows" if abs(first) > 1 else
               "stays the same")
    page.summary = (f"∂h_{T}/∂h_1 = {_sci(first)}: over {T - 1} step{'s' if T != 2 else ''} back the gradient "
                    f"{verdict}" if T > 1 else "give two or more inputs to see the gradient travel back")
    return page


# ------------------------------------------------------------------ gate saturation


@dataclass
class GateSummary:
    layer: int
    gate: str
    closed: int  # units left-saturated more than half the time
    open: int
    rarely: int  # saturated (either way) less than 10% of the time
    units: int


@dataclass
class SaturationPage(Base):
    choices: list[ModelChoice] = field(default_factory=list)
    model: str = ""
    plots: list[tuple[int, Markup]] = field(default_factory=list)
    summary: list[GateSummary] = field(default_factory=list)
    source: str = ""
    seconds: str = ""
    low: float = SATURATION_LOW
    high: float = SATURATION_HIGH
    chars: int = SATURATION_CHARS


GATE_NAMES = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}


def build_saturation(service: DynamicsService, query: Mapping[str, str], compute: bool = True) -> SaturationPage:
    page = SaturationPage(**vars(_base("saturation", query, service)))
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
        if text is None and service.saturation_source(entry) is None:
            text = DEFAULT_TEXT  # no held-out file and no text: measure the main page's default text
        res = service.saturation(entry, None if text is None else text.replace("\r\n", "\n"))
    except (InputError, Overloaded) as e:
        page.refuse(e)
        return page
    page.source = res.source
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
        page.plots.append((layer, svg.scatter(
            points, title=f"layer {layer}: each gate unit's time saturated", diagonal=True,
            x_label=f"fraction of steps left-saturated (< {SATURATION_LOW:g})",
            y_label=f"fraction right-saturated (> {SATURATION_HIGH:g})",
            legend=[(f"g-{g}", f"{g} {GATE_NAMES[g]}") for g in per])))
    return page


# ------------------------------------------------------------------ interventions


@dataclass
class WatchRow:
    t: int
    context: str
    before: str
    after: str
    change: str


@dataclass
class PredRow:
    """One next-character guess, ready to show: the character, its probability, a bar length."""

    ch: str
    pct: str  # "31.2%"
    bar: str  # the probability in percent, for the bar's --p
    cls: str = ""  # " actual" when it is the character that really comes next


@dataclass
class ChangeRow:
    ch: str
    before: str
    after: str
    change: str  # in percentage points
    cls: str  # "up", "down" or "same"


@dataclass
class PredSummary:
    """The predictions after one position, unit free and clamped, and the largest changes."""

    t: int
    heading: str
    note: str
    bits: str
    before: list[PredRow]
    after: list[PredRow]
    changes: list[ChangeRow]


@dataclass
class IntervenePage(Base):
    picker: Picker | None = None
    text: str = ""
    value: float = 0.0
    start: int = 0
    watch: str = '"'
    edited: str = ""
    max_chars: int = 0
    what: str = ""
    value_label: str = "0"
    clamp_cells: list[Cell] = field(default_factory=list)
    clamp_legend: list[Swatch] = field(default_factory=list)
    clamp_note: str = ""
    clamp_stats: list[str] = field(default_factory=list)
    prob_plot: Markup | None = None
    watch_rows: list[WatchRow] = field(default_factory=list)
    watch_summary: str = ""
    cf_cells: list[Cell] = field(default_factory=list)
    cf_legend: list[Swatch] = field(default_factory=list)
    cf_note: str = ""
    cf_stats: list[str] = field(default_factory=list)
    clamp_error: str = ""
    cf_error: str = ""
    topk: int = DEFAULT_INTERVENE_TOPK
    max_topk: int = MAX_TOPK
    at: int | None = None  # the position the predictions summary compares (None: start)
    at_label: str = ""  # what the "at" field shows ("" = the default)
    pred_data: dict | None = None  # per position before/after guesses as display strings, for static/dynamics.js
    summary: PredSummary | None = None


def default_edit(text: str) -> str:
    """The demo edit: drop the first double quote (the quote cell should notice)."""
    i = text.find('"')
    edited = text[:i] + text[i + 1:] if i >= 0 else text
    return edited or text


CLAMP_FIELDS = ("state", "value", "start", "watch")


def build_intervene(service: DynamicsService, query: Mapping[str, str], compute: bool = True) -> IntervenePage:
    page = IntervenePage(**vars(_base("intervene", query, service)))
    r = Reader(query)
    page.text = r.text()
    page.max_chars = min(MAX_INTERVENE_CHARS, service.settings.max_chars)  # the clamp's and the edit's limit
    entry = resolve_model(service, r)
    if entry is None:
        return page
    layer, state, unit = resolve_unit(service, r, entry)
    page.picker = picker(service, entry, layer, state, unit)
    page.value = r.float("value", 0.0, "the clamp value")
    page.start = r.int("start", 0) or 0
    raw_watch = query.get("watch")
    page.watch = '"' if raw_watch is None else raw_watch
    page.edited = r.text("edited", default_edit(page.text))
    page.what = f"{state}[{layer}][{unit}]"
    page.value_label = f"{page.value:g}"
    page.topk = r.int("topk", DEFAULT_INTERVENE_TOPK, "topk")  # type: ignore[assignment]
    page.at = r.int("at", None, "the position to compare")
    page.at_label = "" if page.at is None else str(page.at)
    if r.check(lambda: service.check_text(page.text, limit=MAX_INTERVENE_CHARS)) and page.at is not None \
            and "at" not in r.errors:
        r.check(lambda: check_at(page.at, page.text))
    if "topk" not in r.errors:
        r.check(lambda: service.check_topk(page.topk))
    page.errors = dict(r.errors)
    if page.errors:
        return page
    watch = page.watch or None
    if not compute:
        clamp_ok = r.check(lambda: service.check_intervention(entry, page.text, layer, state, unit, page.value,
                                                             page.start, watch, page.topk))
        cf_ok = r.check(lambda: service.check_counterfactual(entry, page.text, page.edited, layer, state, unit))
        page.errors = dict(r.errors)
        page.pending = clamp_ok or cf_ok  # one section can still show while the other says what to fix
        return page
    try:
        _clamp_section(page, service.intervention(entry, page.text, layer, state, unit, page.value, page.start, watch,
                                                  page.topk))
    except (InputError, Overloaded) as e:
        page.refuse(e)
        page.clamp_error = e.message
    try:
        _counterfactual_section(page, service.counterfactual(entry, page.text, page.edited, layer, state, unit))
    except (InputError, Overloaded) as e:
        page.refuse(e)
        page.cf_error = e.message
    return page


def check_at(at: int, text: str) -> None:
    if not 0 <= at < len(text):
        raise InputError(f"position {at} is out of range: the text has positions 0..{len(text) - 1}", field="at")


def _clamp_section(page: IntervenePage, res: InterventionResult) -> None:
    iv, text = res.result, res.text
    delta = (iv.surprisal_after - iv.surprisal_before).astype(np.float32)  # (T,) change predicting text[t+1]
    arrived = np.concatenate([[np.nan], delta[:-1]]).astype(np.float32)  # colour text[t] by how it arrived
    scale = neuron_scale("c", arrived)  # symmetric, ends at the 95th percentile of |change|
    s0 = np.concatenate([[np.nan], iv.surprisal_before[:-1]])
    s1 = np.concatenate([[np.nan], iv.surprisal_after[:-1]])
    titles = []
    for t, ch in enumerate(text):
        if t == 0:
            titles.append(f"{_show(ch)} at 0: the first character has no prediction")
        else:
            titles.append(f"{_show(ch)} at {t}: {s0[t]:.2f} → {s1[t]:.2f} bits ({s1[t] - s0[t]:+.2f})")
    at = res.start if page.at is None else page.at
    extra = {t: "clamped" for t in range(res.start, len(text))}
    if iv.topk:
        extra[at] = (extra.get(at, "") + " at-t").strip()
    page.clamp_cells = cells(text, scale.positions(arrived), titles, ~np.isfinite(arrived),
                             set(res.entry.checkpoint.vocab.unknown_positions(text)), extra=extra)
    page.clamp_legend, page.clamp_note = legend(scale), f"change in bits on arrival; {scale.label}"
    mb, ma = res.mean_before, res.mean_after
    stats = []
    if mb is not None and ma is not None:
        stats.append(f"{mb:.3f} → {ma:.3f} bits/char ({ma - mb:+.3f})")
    stats.append(f"{page.what} was {float(iv.value_before[res.start]):+.4f} at position {res.start}, "
                 f"clamped to {res.value:g} from there on")
    stats.append("both runs from the cache" if res.cached else f"clamped run in {res.seconds:.1f} s")
    page.clamp_stats = stats
    if iv.topk:
        chars = res.entry.checkpoint.vocab.chars
        page.pred_data = _pred_data(iv, chars, text, res.start)
        page.summary = _pred_summary(iv, chars, text, res.start, at, page.what, res.value)
    if res.watch is not None:
        n = len(text) - 1
        if n >= 1:
            page.prob_plot = svg.line_plot(
                [svg.Series(f"p({_show(res.watch)} next), before", iv.prob_before[:n].tolist(), "before"),
                 svg.Series("after the clamp", iv.prob_after[:n].tolist(), "after")],
                list(range(n)), title=f"probability that the next character is {res.watch!r}",
                x_label="position t", y_label=f"p({_show(res.watch)} next)", y_lo=0.0, y_hi=1.0, width=760,
                height=220, mark_x=float(res.start))
        where = [t for t in range(len(text) - 1) if text[t + 1] == res.watch]
        for t in where[:WATCH_ROWS]:
            b, a = float(iv.prob_before[t]), float(iv.prob_after[t])
            context = text[max(0, t - 24):t + 1].replace("\n", "↵")
            page.watch_rows.append(WatchRow(t, context, f"{b:.3f}", f"{a:.3f}", f"{a - b:+.3f}"))
        if where:
            b = float(np.mean(iv.prob_before[where]))
            a = float(np.mean(iv.prob_after[where]))
            page.watch_summary = (f"where {res.watch!r} really comes next ({len(where)} place"
                                  f"{'s' if len(where) != 1 else ''}): mean p {b:.3f} → {a:.3f} ({a - b:+.3f})")
        else:
            page.watch_summary = f"{res.watch!r} never comes next in this text; the plot still shows its probability"


def _counterfactual_section(page: IntervenePage, res) -> None:
    cf = res.result
    delta = np.array([np.nan if d is None else d for d in cf.delta], dtype=np.float32)
    scale = neuron_scale("c", delta)
    titles = []
    for j, ch in enumerate(cf.edited):
        if cf.before[j] is None:
            titles.append(f"{_show(ch)} at {j}: no counterpart in the original (inserted or changed); "
                          f"value {cf.after[j]:+.4f}")
        else:
            titles.append(f"{_show(ch)} at {j}: {cf.before[j]:+.4f} → {cf.after[j]:+.4f} ({delta[j]:+.4f})")
    page.cf_cells = cells(cf.edited, scale.positions(delta), titles, ~np.isfinite(delta),
                          set(res.entry.checkpoint.vocab.unknown_positions(cf.edited)))
    page.cf_legend, page.cf_note = legend(scale), f"change in {page.what}; {scale.label}"
    finite = delta[np.isfinite(delta)]
    stats = [f"{len(cf.edited):,} characters, {res.unaligned:,} without a counterpart (hatched)"]
    if finite.size:
        j = int(np.nanargmax(np.abs(np.where(np.isfinite(delta), delta, 0))))
        stats.append(f"largest change {float(delta[j]):+.4f} at position {j} ({_show(cf.edited[j])})")
    if res.original == cf.edited:
        stats.append("the edited text equals the original: edit it to see what changes")
    page.cf_stats = stats


def _pct(p: float) -> str:
    return f"{100 * p:.1f}"


def _points(d: float) -> str:
    """A change in probability, in percentage points."""
    x = 100 * d
    if x == 0:
        return "0 pp"
    return f"{x:+.1f} pp" if abs(x) >= 0.05 else f"{x:+.2g} pp"


def _guesses(ids: np.ndarray, probs: np.ndarray, chars: list[str], actual: str | None) -> list[list]:
    """[shown char, percent] per guess; a third element 1 marks the character that really comes next."""
    out: list[list] = []
    for i, p in zip(ids.tolist(), probs.tolist()):
        ch = chars[i]
        out.append([_show(ch), _pct(p), 1] if ch == actual else [_show(ch), _pct(p)])
    return out


def _pred_data(iv, chars: list[str], text: str, start: int) -> dict:
    """What static/dynamics.js shows on hover or focus, per position, every value formatted here.
    `after` is null before `start`: there the two runs are the same run."""
    nxt = [text[t + 1] if t + 1 < len(text) else None for t in range(len(text))]
    return {
        "start": start,
        "before": [_guesses(iv.topk_ids_before[t], iv.topk_probs_before[t], chars, nxt[t]) for t in range(len(text))],
        "after": [None if t < start else _guesses(iv.topk_ids_after[t], iv.topk_probs_after[t], chars, nxt[t])
                  for t in range(len(text))],
        "same": f"the same: the clamp starts at position {start}",
    }


def _rows(ids: np.ndarray, probs: np.ndarray, chars: list[str], actual: str | None) -> list[PredRow]:
    return [PredRow(_show(chars[i]), _pct(p) + "%", _pct(p), " actual" if chars[i] == actual else "")
            for i, p in zip(ids.tolist(), probs.tolist())]


def _pred_summary(iv, chars: list[str], text: str, start: int, t: int, what: str, value: float) -> PredSummary:
    actual = text[t + 1] if t + 1 < len(text) else None
    heading = f"Next-character predictions after {_show(text[t])!r} at position {t}"
    if t < start:
        note = (f"position {t} comes before the clamp starts (position {start}): both runs are the same run here, "
                "so nothing changes")
    elif t == start:
        note = f"the first prediction made with {what} clamped to {value:g}"
    else:
        note = f"{t - start} step{'s' if t - start != 1 else ''} after the clamp starts (position {start})"
    if actual is None:
        bits = "the text ends here: there is no actual next character to score"
    else:
        b, a = float(iv.surprisal_before[t]), float(iv.surprisal_after[t])
        bits = f"the actual next character {_show(actual)!r}: {b:.2f} → {a:.2f} bits ({a - b:+.2f})"
    changes = []
    for i, b, a in zip(iv.change_ids[t].tolist(), iv.change_before[t].tolist(), iv.change_after[t].tolist()):
        d = a - b
        changes.append(ChangeRow(_show(chars[i]), _pct(b) + "%", _pct(a) + "%", _points(d),
                                 "up" if d > 0 else "down" if d < 0 else "same"))
    return PredSummary(t, heading, note, bits,
                       _rows(iv.topk_ids_before[t], iv.topk_probs_before[t], chars, actual),
                       _rows(iv.topk_ids_after[t], iv.topk_probs_after[t], chars, actual), changes)
