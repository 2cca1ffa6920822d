"""The /compare page's view model: the query string in, plain values and finished spans out.

One text, 2-4 models side by side. Matching by unit: the anchor's panel shows the anchor, every
other panel its model's best match (or the candidate picked in the URL), each coloured with the
main view's level classes (app.ui.render.char_spans, app.ui.levels), so it reads like the main page.
Matching by probe: every panel shows its own model's best unit for the probe. The whole state is the
query string (text, models, anchor, by, probe, pattern, pick), so every view is a shareable link.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
from markupsafe import Markup

from models.probes import BINARY, NUMERIC, PROBES
from models.ranking import UnitScore

from app.compare.schemas import MAX_MODELS
from app.compare.service import CompareService, Match, unseen_note
from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.selection import UnitRef, passes, resolve_unit, whole_number
from app.core.slots import Overloaded
from app.ui.urls import NAV_TEXT_LIMIT, SHARED, nav_query
from app.probe.schemas import DEFAULT_PROBE, MAX_PATTERN_CHARS
from app.probe.service import probe_values
from app.trace.views import DEFAULT_TEXT, UNKNOWN_TITLE, model_options
from app.ui.levels import levels
from app.ui.picker import UnitPicker, unit_picker
from app.ui.render import char_spans
from app.ui.scale import STATE_INFO, Swatch, legend, neuron_scale
from app.ui.urls import neuron_url

CANDIDATES = 5  # the best match and the next few, one click away
MODES = ("unit", "probe")
FIELDS = ("text", "models", "by", "model", "layer", "state", "unit", "probe", "pattern")  # controls with a message slot
BUSY = "busy"


@dataclass
class Candidate:
    label: str  # "layer 1 · h[331]"
    score: str  # "r +0.934" / "AUC 0.998 +"
    title: str  # what the score means, for the button's title
    pick: str  # "LAYER:STATE:UNIT", the value static/compare.js puts in the URL
    current: bool


@dataclass
class Panel:
    model: str
    label: str  # "GRU 2×600 · 1.45 bpc"
    role: str  # "anchor", "match" (by unit) or "probe"
    heading: str  # "layer 1 · h · unit 331"
    score: str  # "r = +0.934 with the anchor" / "AUC 0.998"; "" for the anchor
    rank_note: str  # "best match of 4,800 units" / "candidate 3" / "picked: not among the best 5"
    description: str  # what the state is
    legend: list[Swatch]
    legend_note: str
    chars_html: Markup
    values: list[float | None]  # per character, for static/compare.js's readout (rendered with tojson)
    candidates: list[Candidate]
    stats: list[str]
    note: str  # many unseen characters: say so
    neuron_url: str
    main_url: str  # "" when the text is too long to put in a link
    layer: int
    state: str
    unit: int


@dataclass
class ModelCheck:
    name: str
    label: str
    checked: bool
    anchor: bool  # the anchor's model: always compared (static/compare.js keeps its box ticked and disabled)


@dataclass
class ComparePage:
    shared: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    no_models: bool = False
    models_dir: str = ""
    text: str = DEFAULT_TEXT
    max_chars: int = 0
    by: str = "unit"
    probe: str = DEFAULT_PROBE
    pattern: str = ""
    probes: list[tuple[str, str]] = field(default_factory=list)  # (id, title)
    max_pattern: int = MAX_PATTERN_CHARS
    max_models: int = MAX_MODELS
    picker: UnitPicker | None = None
    choices: list[ModelCheck] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    picks: list[str] = field(default_factory=list)  # "MODEL:LAYER:STATE:UNIT" of every panel not on its best match
    summary: str = ""
    title: str = "Compare models · rnnscope"
    self_url: str = ""
    retry_after: int = 0  # a busy server: when to try again (the 503's Retry-After)

    @property
    def status(self) -> int:
        if BUSY in self.errors:
            return 503
        return 422 if self.errors else 200

    @property
    def nav_query(self) -> str:
        return nav_query(self.shared)


def build_compare(service: CompareService, query: Mapping[str, str], getlist: Callable[[str], list[str]],
                  compute: bool = True) -> ComparePage:
    """Read and check every setting (the first problem per field is kept); then match and build the panels."""
    traces = service.traces
    page = ComparePage(shared={k: query[k] for k in SHARED if query.get(k) is not None},
                       max_chars=traces.settings.max_chars,
                       probes=[(p.id, p.title) for p in PROBES.values()])
    registry = traces.registry
    registry.refresh()
    if not registry.entries:
        page.no_models, page.models_dir = True, str(registry.models_dir)
        return page

    def fail(e: InputError) -> None:
        page.errors.setdefault(e.field, e.message)

    raw = query.get("text")
    page.text = text = DEFAULT_TEXT if raw is None else raw.replace("\r\n", "\n")
    passes(lambda: traces.check_text(text), fail)
    by = query.get("by") or "unit"
    if by not in MODES:
        fail(InputError(f"match by {by[:40]!r} is not one of: unit, probe", field="by"))
        by = "unit"
    page.by = by
    page.probe = query.get("probe") or DEFAULT_PROBE
    page.pattern = (query.get("pattern") or "")[:MAX_PATTERN_CHARS]
    if by == "probe" and page.probe not in PROBES:
        fail(InputError(f"unknown probe {page.probe[:40]!r}: choose one of {', '.join(PROBES)}", field="probe"))

    default = registry.default_name(traces.settings.default_model) or registry.names()[0]
    try:
        anchor = traces.model(query.get("model") or default)
    except InputError as e:
        fail(e)
        anchor = registry.get(default)
    ref = resolve_unit(traces, anchor, query.get("layer"), query.get("state"), query.get("unit"), fail)
    page.picker = unit_picker(model_options(traces, anchor.name), anchor, ref.layer, ref.state, ref.unit)

    asked = [n for n in getlist("models") if n]
    names = list(dict.fromkeys(asked if asked else service.default_models(anchor.name)))
    if by == "unit":  # the anchor's model is always compared, first
        names = [anchor.name] + [n for n in names if n != anchor.name]
    page.choices = [ModelCheck(o.name, o.label, o.name in names, by == "unit" and o.name == anchor.name)
                    for o in model_options(traces, anchor.name)]
    entries: list[ModelEntry] = []
    passes(lambda: entries.extend(service.models(names, least=2)), fail)
    picks = _picks(service, getlist("pick"), {e.name: e for e in entries}, fail)
    page.picks = [f"{m}:{r.layer}:{r.state}:{r.unit}" for m, r in picks.items()]
    if page.errors or not compute:
        return page
    try:
        if by == "unit":
            _by_unit(service, page, text, anchor, ref, entries, picks)
        else:
            _by_probe(service, page, text, entries, picks)
    except InputError as e:
        fail(e)
        page.panels = []
    except Overloaded as busy:  # not the user's input: the page says so in place of the panels (503)
        page.errors[BUSY] = busy.message
        page.retry_after = busy.retry_after
        page.panels = []
    page.title = _title(page, anchor, ref)
    return page


def _picks(service: CompareService, raw: list[str], shown: dict[str, ModelEntry],
           fail: Callable[[InputError], None]) -> dict[str, UnitRef]:
    """?pick=MODEL:LAYER:STATE:UNIT: the candidate a panel shows instead of its best match (models not shown are ignored)."""
    out: dict[str, UnitRef] = {}
    for item in raw:
        parts = item.rsplit(":", 3)
        if len(parts) != 4:
            fail(InputError(f"pick {item[:60]!r} is not MODEL:LAYER:STATE:UNIT", field="pick"))
            continue
        model, layer, state, unit = parts
        entry = shown.get(model)
        if entry is None:
            continue
        try:
            ref = UnitRef(whole_number(layer, "layer", 0, label=f"pick for {model}: layer"), state,
                          whole_number(unit, "unit", 0, label=f"pick for {model}: unit"))
            ref.check(service.traces, entry)
        except InputError as e:
            fail(InputError(e.message if e.message.startswith("pick") else f"pick for {model}: {e.message}",
                            field="pick"))
            continue
        out[model] = ref
    return out


def _by_unit(service: CompareService, page: ComparePage, text: str, anchor: ModelEntry, ref: UnitRef,
             entries: list[ModelEntry], picks: dict[str, UnitRef]) -> None:
    values, anchor_trace = service.anchor_values(anchor, text, ref)
    targets = entries[1:]
    matches = service.match_values(text, anchor, ref, values, targets, CANDIDATES)
    what = f"{anchor.name}'s layer {ref.layer} · {ref.state} · unit {ref.unit}"
    page.summary = (f"Each model's unit whose value on these {len(text):,} characters correlates most with {what} "
                    "(|Pearson r|, any layer and state); the next candidates are one click away.")
    unseen = anchor.checkpoint.vocab.unknown_positions(text)
    anchor_panel = _panel(anchor, text, ref, values, "anchor", "", "the anchor: every other panel is matched to it",
                          [], unseen, unseen_note(anchor, text, unseen))
    anchor_panel.stats.append("trace from cache" if anchor_trace.cached else
                              f"traced in {anchor_trace.seconds * 1000:.0f} ms")
    page.panels = [anchor_panel]
    for m in matches:
        page.panels.append(_match_panel(service, m, text, picks.get(m.entry.name), values, NUMERIC, "match"))


def _by_probe(service: CompareService, page: ComparePage, text: str, entries: list[ModelEntry],
              picks: dict[str, UnitRef]) -> None:
    probe = page.probe
    labels = probe_values(probe, text, page.pattern or None)
    matches = service.match_probe(text, probe, page.pattern or None, entries, CANDIDATES)
    p = PROBES[probe]
    marked = f", {int(labels.sum()):,} of {len(text):,} characters marked" if p.kind == BINARY else ""
    name = f"regex /{page.pattern}/" if probe == "regex" else probe
    page.summary = f"Each model's own best unit for the {name} probe ({p.title}{marked}); scored as the Find units panel does."
    page.panels = [_match_panel(service, m, text, picks.get(m.entry.name), labels, p.kind, "probe") for m in matches]


def _match_panel(service: CompareService, m: Match, text: str, pick: UnitRef | None, probe: np.ndarray, kind: str,
                 role: str) -> Panel:
    """A model's panel: its picked candidate (or best match) coloured, the candidates listed."""
    best = m.units[0]
    ref = pick or UnitRef(best.layer, best.state, best.unit)
    values, _ = service.unit_trace(m.entry, text, ref)
    keys = [(u.layer, u.state, u.unit) for u in m.units]
    if ref.as_tuple() in keys:
        k = keys.index(ref.as_tuple())
        chosen = m.units[k]
        rank_note = (f"best {'match' if role == 'match' else 'unit'} of {m.scored:,} units" if k == 0
                     else f"candidate {k + 1} of {len(keys)}")
    else:
        chosen = service.score_unit(values, probe, kind, ref)
        rank_note = f"picked: not among the best {len(keys)}"
    cands = [_candidate(u, (u.layer, u.state, u.unit) == ref.as_tuple(), role) for u in m.units]
    panel = _panel(m.entry, text, ref, values, role, _score(chosen, role), rank_note, cands, m.unseen, m.note)
    if m.reused:
        panel.stats.append("ranking from cache")
    else:
        panel.stats.append(f"{m.scored:,} units scored in {m.rank_seconds * 1000:.0f} ms")
        panel.stats.append("trace from cache" if m.cached else f"traced in {m.trace_seconds * 1000:.0f} ms")
    return panel


def _panel(entry: ModelEntry, text: str, ref: UnitRef, values: np.ndarray, role: str, score: str, rank_note: str,
           candidates: list[Candidate], unseen: list[int], note: str | None) -> Panel:
    """The text coloured by one unit with the main view's level classes: one span per character."""
    scale = neuron_scale(ref.state, values, entry.nonlinearity)
    missing = ~np.isfinite(values)
    cls: dict[int, str] = {}
    for t, ch in enumerate(text):
        if ch == "\n":
            cls[t] = " nl"
    for t in unseen:
        cls[t] = cls.get(t, "") + " unk"
    for t in np.flatnonzero(missing).tolist():
        cls[t] = cls.get(t, "") + " na"
    titles = {t: UNKNOWN_TITLE for t in unseen}
    stats = []
    if unseen:
        stats.append(f"{len(unseen):,} unseen character{'s' if len(unseen) != 1 else ''}")
    main = {"model": entry.name, "layer": ref.layer, "state": ref.state, "unit": ref.unit, "text": text}
    bpc = f" · {entry.val_bpc:.2f} bpc" if entry.val_bpc is not None else ""
    return Panel(
        model=entry.name, label=f"{entry.cell.upper()} {entry.layers}×{entry.hidden}{bpc}", role=role,
        heading=f"layer {ref.layer} · {ref.state} · unit {ref.unit}", score=score, rank_note=rank_note,
        description=STATE_INFO.get(ref.state, (ref.state, ""))[0], legend=legend(scale), legend_note=scale.label,
        chars_html=char_spans(text, levels(values, scale.hi), None, cls, titles),
        values=_rounded(values), candidates=candidates, stats=stats, note=note or "",
        neuron_url=neuron_url(entry.name, ref.layer, ref.state, ref.unit),
        main_url="/?" + urlencode(main) if len(text) <= NAV_TEXT_LIMIT else "",  # a longer text makes too long a link
        layer=ref.layer, state=ref.state, unit=ref.unit)


def _candidate(u: UnitScore, current: bool, role: str) -> Candidate:
    return Candidate(f"layer {u.layer} · {u.state}[{u.unit}]", _score(u, role, short=True),
                     _meaning(u, role), f"{u.layer}:{u.state}:{u.unit}", current)


def _score(u: UnitScore, role: str, short: bool = False) -> str:
    if u.metric == "pearson":
        r = f"r {u.sign * u.score:+.3f}"
        return r if short else r + (" with the anchor" if role == "match" else " with the probe")
    return f"AUC {u.score:.3f} {'+' if u.sign > 0 else '−'}"


def _meaning(u: UnitScore, role: str) -> str:
    if u.metric == "pearson":
        other = "the anchor" if role == "match" else "the probe"
        return f"Pearson r with {other}: {'rises' if u.sign > 0 else 'falls'} as it rises"
    return ("ROC AUC of the probe's labels: " + ("higher" if u.sign > 0 else "lower") + " where the probe is true")


def _rounded(values: np.ndarray) -> list[float | None]:
    r = np.round(values.astype(np.float64), 4)
    return [x if math.isfinite(x) else None for x in r.tolist()]


def _title(page: ComparePage, anchor: ModelEntry, ref: UnitRef) -> str:
    if page.by == "probe":
        return f"Compare models · {page.probe} probe · rnnscope"
    return f"Compare models · {anchor.name} {ref.state}[{ref.layer}][{ref.unit}] · rnnscope"
