"""Page view models: the query string in, plain values for the template out (no maths in templates)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup

from models.evaluate import is_weak

from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.selection import UnitRef, passes, resolve_unit, whole_number
from app.trace.service import TraceService, unit_values
from app.trace.timeline import SliderControls, TimelineView, parse_step, slider, timeline_view
from app.ui.levels import bar_classes, levels
from app.ui.render import char_spans
from app.ui.scale import STATE_INFO, Scale, Swatch, legend, neuron_scale, surprisal_scale
from app.ui.urls import neuron_url

DEFAULT_TEXT = (
    '"My dear Mr. Bennet," said his lady to him one day, "have you heard that '
    'Netherfield Park is let at last?"\n'
    "Mr. Bennet replied that he had not.\n"
    '"But it is," returned she; "for Mrs. Long has just been here, and she told me all about it."\n'
)
MODES = ("neuron", "surprisal")
UNKNOWN_TITLE = "the model never saw this character: it reads it as the unknown character"
FIELDS = ("model", "layer", "state", "unit", "mode", "text", "compare", "snapshot")  # every control with an inline message slot


EXAMPLE_TEXT_LIMIT = 2_000


def default_text(entry: ModelEntry) -> str:
    """A fresh page's text: the card's own example (quickstart keeps held-out text of the model's kind), else Austen."""
    example = entry.card.get("example_text")
    return example if isinstance(example, str) and 0 < len(example) <= EXAMPLE_TEXT_LIMIT else DEFAULT_TEXT


@dataclass
class ViewRequest:
    model: str
    layer: int
    state: str
    unit: int
    mode: str
    text: str
    compare: tuple[int, str, int] | None = None  # second unit (layer, state, unit), outlined; None = off
    probe: str | None = None  # the Find units panel's probe: the one the time-lapse chart follows


@dataclass
class ModelOption:
    name: str
    label: str
    layers: int
    hidden: int
    states: str  # space-separated, read by static/app.js when the model changes
    selected: bool
    snapshots: dict | None = None  # the training-step slider's steps and labels (static/timeline.js); None: none


@dataclass
class Controls:
    """What the form shows: the request's values where they parsed, or sensible fallbacks."""

    models: list[ModelOption]
    model: str
    layers: list[int]
    layer: int
    states: list[tuple[str, str]]  # (state, description)
    state: str
    unit: int
    unit_max: int
    mode: str
    text: str
    max_chars: int
    compare: bool = False  # the second unit is on
    layer2: int = 0
    state2: str = "h"
    unit2: int = 0
    slider: SliderControls | None = None  # the training-step slider; None when this model has no snapshots
    snapshot_text: str = ""  # the step box: the step on screen, "" for the final weights, or what was typed (refused)

    @property
    def snapshot_models(self) -> dict[str, dict]:
        """Each model with snapshots -> its slider's steps and labels (static/timeline.js, on a model change)."""
        return {m.name: m.snapshots for m in self.models if m.snapshots}

    @property
    def any_snapshots(self) -> bool:
        """Some installed model has snapshots: the page has the slider's field (hidden for the others)."""
        return bool(self.snapshot_models)


@dataclass
class View:
    title: str
    heading: str
    description: str
    mode: str
    chars_html: Markup  # one escaped, coloured <span> per character (app.ui.render.char_spans)
    legend: list[Swatch]
    legend_note: str
    stats: list[str]
    data: dict  # per-character values, surprisal and predictions for static/app.js (rendered with tojson)
    neuron_url: str = ""  # the main unit's neuron page
    compare_heading: str = ""  # "" when no second unit
    compare_url: str = ""
    legend2: list[Swatch] = field(default_factory=list)
    legend2_note: str = ""
    known: list[KnownUnit] = field(default_factory=list)  # the model card's measured units, one click away
    painted: str = ""  # "LAYER:STATE:UNIT" whose colours are on screen (neuron mode), for static/app.js and tests
    paint: dict = field(default_factory=dict)  # the compact repaint of app.trace.routes.paint: values, scale ends
    timeline: TimelineView | None = None  # the time-lapse panel (a model with snapshots)
    snapshot: str = ""  # "final" or the step on screen, for a model with snapshots (#view's data-snapshot)
    preds: dict = field(default_factory=dict)  # surprisal and predictions alone, for a repaint of other weights


@dataclass
class KnownUnit:
    """A unit the model card measured to track a probe on held-out text (bench/zoo_eval.py)."""

    label: str  # "inside quotes"
    layer: int
    state: str
    unit: int
    score: str  # "AUC 0.998" / "|r| 0.91"
    current: bool
    weak: bool = False  # the unit follows its probe only loosely (models.evaluate.is_weak)


@dataclass
class Page:
    controls: Controls | None
    view: View | None
    errors: dict[str, str] = field(default_factory=dict)
    models_dir: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return 422 if self.errors else 200


def build_page(service: TraceService, params: dict[str, str | None], with_view: bool = True,
               spans: bool = True, preds: bool = False) -> Page:
    """Parse and check every setting; trace (or reuse) and build the view when all are valid.

    `with_view=False` stops after the checks (no model run): enough to save a share link, whose
    view is traced when someone opens it. `spans=False` builds the view without its per-character
    spans: a repaint of spans already on screen needs only the new values (and, with `preds`, the
    surprisal and predictions, which another snapshot's weights change).
    """
    registry = service.registry
    registry.refresh()
    if not registry.entries:
        return Page(None, None, models_dir=str(registry.models_dir), skipped=dict(registry.skipped))
    errors: dict[str, str] = {}

    def fail(e: InputError) -> None:
        errors.setdefault(e.field, e.message)

    name = params.get("model") or registry.default_name(service.settings.default_model)
    assert name is not None
    try:
        entry = service.model(name)
    except InputError as e:
        fail(e)
        entry = registry.get(registry.default_name(service.settings.default_model) or registry.names()[0])
    raw_unit = params.get("unit")
    if raw_unit is not None and raw_unit.strip() == "":  # the box was emptied: say so, show no other unit
        fail(InputError(f"the unit box is empty: type a unit number, 0–{entry.hidden - 1}", field="unit"))
        raw_unit = None
    layer, state, unit = resolve_unit(service, entry, params.get("layer"), params.get("state"), raw_unit,
                                      fail, spaces_are_blank=False).as_tuple()
    mode = params.get("mode") or "neuron"
    if mode not in MODES:
        fail(InputError(f"mode {mode!r} is not one of: {', '.join(MODES)}", field="mode"))
        mode = "neuron"
    raw_text = params.get("text")
    text = default_text(entry) if raw_text is None else raw_text.replace("\r\n", "\n")
    passes(lambda: service.check_text(text), fail)
    compare = _compare(service, entry, params, layer, state, fail)
    step, weights = None, entry
    try:
        step = parse_step(params.get("snapshot"))
        weights = entry if step is None else service.snapshot(entry, step)
    except InputError as e:
        fail(e)

    controls = _controls(service, entry, layer, state, unit, mode, text)
    controls.slider = slider(entry, step)
    controls.snapshot_text = (params.get("snapshot") or "").strip() if "snapshot" in errors else (
        "" if step is None else str(step))
    _compare_controls(controls, entry, compare, params)
    if errors or not with_view:
        return Page(controls, None, errors)
    req = ViewRequest(entry.name, layer, state, unit, mode, text, compare, params.get("probe"))
    try:
        view = build_view(service, weights, req, spans, preds)
    except InputError as e:  # the trace engine refused something the checks above let through
        return Page(controls, None, {e.field: e.message})
    return Page(controls, view)


def _compare(service: TraceService, entry: ModelEntry, params: dict, layer: int, state: str,
             fail) -> tuple[int, str, int] | None:
    """The second unit: on when unit2 is given; layer2 and state2 default to the main unit's."""
    raw_unit = params.get("unit2")
    if raw_unit is None or raw_unit.strip() == "":
        return None
    errors: dict[str, str] = {}

    def fail2(e: InputError) -> None:
        errors.setdefault("compare", "compare with: " + e.message)

    def number(raw: str | None, name: str, default: int) -> int:
        try:
            return whole_number(raw, name, default, spaces_are_blank=False)
        except InputError as e:
            fail2(e)
            return default

    second = UnitRef(number(params.get("layer2"), "layer2", layer), (params.get("state2") or "").strip() or state,
                     number(raw_unit, "unit2", 0))
    if not errors:
        passes(lambda: second.check(service, entry), fail2)
    if errors:
        fail(InputError(errors["compare"], field="compare"))
        return None
    return second.as_tuple()


def _compare_controls(controls: Controls, entry: ModelEntry, compare, params: dict) -> None:
    """What the compare fields show: the request's unit when on, else the main unit's next one (disabled)."""
    if compare is not None:
        controls.compare = True
        controls.layer2, controls.state2, controls.unit2 = compare
        return
    controls.compare = False
    controls.layer2 = controls.layer
    controls.state2 = controls.state
    controls.unit2 = (controls.unit + 1) % entry.hidden if 0 <= controls.unit < entry.hidden else 0
    if params.get("unit2"):  # given but invalid: keep what was typed visible beside its message
        controls.compare = True


def build_view(service: TraceService, entry: ModelEntry, req: ViewRequest, spans: bool = True,
               preds: bool = False) -> View:
    """The view of `entry`'s weights (the final ones, or a snapshot's: app.core.registry) on the text."""
    result = service.view_trace(entry, req.text, req.layer, req.state)
    trace = result.trace
    values = unit_values(trace, req.layer, req.state, req.unit)  # (T,)
    surprisal = trace.surprisal_bits.astype(np.float32)  # (T,)
    scale: Scale = surprisal_scale() if req.mode == "surprisal" else neuron_scale(req.state, values, entry.nonlinearity)
    # Surprisal mode colours each character by how unexpected it was when it arrived: -log2 p(text[t] | text[:t]),
    # which the trace stores one position earlier (as the surprisal of the next character).
    arrived = np.concatenate([[np.nan], surprisal[:-1]]).astype(np.float32)
    shown = arrived if req.mode == "surprisal" else values
    unknown = set(trace.unknown)
    compare_heading, compare_url, legend2, legend2_note, values2, scale2 = "", "", [], "", None, None
    if req.compare is not None:
        layer2, state2, unit2 = req.compare
        trace2 = service.view_trace(entry, req.text, layer2, state2).trace  # the same trace when it holds both
        values2 = unit_values(trace2, layer2, state2, unit2)  # (T,)
        scale2 = neuron_scale(state2, values2, entry.nonlinearity)
        compare_heading = f"layer {layer2} · {state2} · unit {unit2}"
        compare_url = neuron_url(entry.name, layer2, state2, unit2)
        legend2, legend2_note = legend(scale2), scale2.label

    what = f"layer {req.layer} · {req.state} · unit {req.unit}"
    description = STATE_INFO.get(req.state, (req.state, ""))[0]
    if req.mode == "surprisal":
        heading = "surprisal of each character (bits)"
        description = "how unexpected each character was when it arrived: −log₂ p(character | the text before it)"
    else:
        heading = what
    finite = surprisal[np.isfinite(surprisal)]
    stats = [f"{len(req.text):,} characters"]
    if finite.size:
        stats.append(f"{float(finite.mean()):.2f} bits/char on this text")
    if unknown:
        stats.append(f"{len(unknown)} unseen character{'s' if len(unknown) != 1 else ''}")
    stats.append("re-coloured from cache" if result.cached else f"traced in {result.seconds * 1000:.0f} ms")

    what_short = f"{req.state}[{req.layer}][{req.unit}]"
    what2_short = f"{req.compare[1]}[{req.compare[0]}][{req.compare[2]}]" if req.compare is not None else ""
    data: dict = {}
    top = _top_strings(entry.checkpoint.vocab.chars, trace.topk_ids) if spans or preds else []
    # (T, k) per-mille probabilities of the top guesses, for the tooltip data of fresh spans or a repaint at a step
    permille = np.rint(trace.topk_probs.astype(np.float64) * 1000).astype(np.int64) if spans or preds else None
    if spans:
        data = {"what": what_short, "v": _rounded(values, 4), "s": _rounded(surprisal, 2), "top": top,
                "p": permille.tolist()}
        if values2 is not None:
            data["what2"] = what2_short
            data["w"] = _rounded(values2, 4)
    paint = {"what": what_short, "v": float16_base64(values), "hi": scale.hi}
    if values2 is not None:
        paint.update({"what2": what2_short, "w": float16_base64(values2), "hi2": scale2.hi})
    at = f" · step {entry.snapshot:,}" if entry.snapshot is not None else ""
    return View(
        title=f"{entry.name} · {what if req.mode == 'neuron' else 'surprisal'}{at} · rnnscope",
        heading=heading,
        description=description,
        mode=req.mode,
        chars_html=_spans_html(req.text, shown, scale, unknown, values2, scale2) if spans else Markup(""),
        legend=legend(scale),
        legend_note=scale.label,
        stats=stats,
        data=data,
        neuron_url=neuron_url(entry.name, req.layer, req.state, req.unit),
        compare_heading=compare_heading,
        compare_url=compare_url,
        legend2=legend2,
        legend2_note=legend2_note,
        known=known_units(entry, (req.layer, req.state, req.unit)),
        painted=f"{req.layer}:{req.state}:{req.unit}" if req.mode == "neuron" else "",
        paint=paint,
        timeline=timeline_view(entry, entry.snapshot, (req.layer, req.state, req.unit), req.probe),
        snapshot=("final" if entry.snapshot is None else str(entry.snapshot)) if entry.steps else "",
        preds=compact_guesses(surprisal, top, permille) if preds else {},
    )


# Short chip labels; a probe missing here is shown by its id, so a measured unit is never dropped for want of one.
KNOWN_LABELS = {"quotes": "inside quotes", "string": "inside a string", "comment": "inside a comment",
                "short_string": "one-quote string", "long_string": "triple-quoted string",
                "indent": "indentation", "bracket_depth": "bracket depth", "brackets": "inside brackets",
                "line_position": "position in the line", "word_start": "word start", "vowel": "vowel",
                "regex": "regex match"}


def known_units(entry: ModelEntry, current: tuple[int, str, int]) -> list[KnownUnit]:
    """Every probe unit the card measured that exists in this model, in the card's order (weak ones marked)."""
    found = entry.card.get("probe_units")
    out = []
    for probe, u in (found.items() if isinstance(found, dict) else []):
        try:
            layer, state, unit, score, metric = int(u["layer"]), str(u["state"]), int(u["unit"]), float(u["score"]), str(u["metric"])
        except (KeyError, TypeError, ValueError):
            continue
        if not entry.has_unit(layer, state, unit):
            continue
        shown = f"{'AUC' if metric == 'auc' else '|r|'} {score:.3f}"
        out.append(KnownUnit(KNOWN_LABELS.get(probe, probe), layer, state, unit, shown, (layer, state, unit) == current,
                             weak=is_weak(score, metric)))
    return out


def _spans_html(text: str, shown: np.ndarray, scale: Scale, unknown: set[int], values2: np.ndarray | None,
                scale2: Scale | None) -> Markup:
    """The characters of a fresh view; a repaint keeps the ones on screen, so it never builds these."""
    cls, titles = _marks(text, ~np.isfinite(shown), unknown)
    bars = bar_classes(values2, scale2.hi) if values2 is not None and scale2 is not None else None
    return char_spans(text, levels(shown, scale.hi), bars, cls, titles)


def _marks(text: str, missing: np.ndarray, unknown: set[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Extra CSS classes and hover titles for the few characters that need them: newlines,
    characters the model never saw, positions without a value."""
    special = {t for t, ch in enumerate(text) if ch == "\n"} | unknown | set(np.flatnonzero(missing).tolist())
    cls = {t: (" nl" if text[t] == "\n" else "") + (" unk" if t in unknown else "") + (" na" if missing[t] else "")
           for t in special}
    return cls, {t: UNKNOWN_TITLE for t in unknown}


def _top_strings(chars_table: list[str], ids: np.ndarray) -> list[str]:
    """(T, k) vocabulary ids -> T strings of k characters, likeliest first."""
    table = np.array(chars_table, dtype="<U1")
    k = ids.shape[1]
    return table[ids].view(f"<U{k}").ravel().tolist()


def model_options(service: TraceService, selected: str) -> list[ModelOption]:
    """The model picker's entries; a model brought in with `rnnscope import` says so (its card marks it)."""
    out = []
    for e in service.registry.entries.values():
        bpc = f" · {e.val_bpc:.2f} bpc" if e.val_bpc is not None else ""
        relu = " (ReLU)" if e.checkpoint.config.nonlinearity == "relu" else ""
        imported = " · imported" if e.card.get("imported") is True else ""
        label = f"{e.name} · {e.cell.upper()}{relu} {e.layers}×{e.hidden}{bpc}{imported}"
        bar = slider(e, None)
        out.append(ModelOption(e.name, label, e.layers, e.hidden, " ".join(e.states), e.name == selected,
                               bar.data if bar is not None else None))
    return out


def _controls(service, entry: ModelEntry, layer, state, unit, mode, text) -> Controls:
    return Controls(
        models=model_options(service, entry.name),
        model=entry.name,
        layers=list(range(entry.layers)),
        layer=layer,
        states=[(s, STATE_INFO.get(s, (s, ""))[0]) for s in entry.states],
        state=state,
        unit=unit,
        unit_max=entry.hidden - 1,
        mode=mode,
        text=text,
        max_chars=service.settings.max_chars,
    )


def compact_guesses(surprisal: np.ndarray, top: list[str], permille: np.ndarray) -> dict:
    """The tooltip's surprisal and guesses for a repaint of other weights, in the numbers data-trace holds
    but packed: surprisal in hundredths of a bit and probabilities in thousandths as little-endian int16
    (-1: none), base64, and the guesses as one string, k a position. A tenth of the JSON lists' size."""
    cb = np.where(np.isfinite(surprisal), np.rint(np.nan_to_num(surprisal.astype(np.float64)) * 100), -1)
    pack = lambda a: base64.b64encode(np.clip(a, -1, 32767).astype("<i2").tobytes()).decode("ascii")  # noqa: E731
    return {"s": pack(cb), "k": int(permille.shape[1]) if permille.ndim == 2 else 0, "top": "".join(top),
            "p": pack(permille.ravel())}


def float16_base64(a: np.ndarray) -> str:
    """Little-endian float16, base64: a unit's values in 2.7 bytes a character (NaN stays NaN),
    against about 8 as JSON numbers; the page decodes them in static/app.js."""
    return base64.b64encode(np.asarray(a, dtype="<f2").tobytes()).decode("ascii")


def _rounded(a: np.ndarray, digits: int) -> list[float | None]:
    """JSON-ready floats; NaN (no next character) becomes null."""
    r = np.round(a.astype(np.float64), digits)
    return [None if not math.isfinite(x) else x for x in r.tolist()]
