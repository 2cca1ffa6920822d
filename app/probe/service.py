"""Finding the neuron: rank every unit against a probe or a selected span, and read atlases.

Ranking reuses the trace the page already ran (TraceService's cache): that trace keeps only h,
so the other states are worked out one layer at a time (float16 (T, U) blocks, what models.probes
scores fastest) and dropped once scored; the model itself does not run again.
Texts too long for a whole-model trace in the cache are traced one layer at a time, uncached,
and the per-layer best lists are merged (memory stays at one layer's states).
Traces and scoring both run on the trace service's bounded model slots (app.core.slots): scoring
every unit is as CPU-heavy as a trace, and a busy server answers 503 rather than piling up.
Atlases (atlas.json beside a checkpoint, built by `rnnscope atlas`) are read lazily, once per
file version, and a missing, corrupt or stale one becomes a message, never an error page.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import probes
from models.atlas import ATLAS_FILE, QUANTILES, load_atlas, neuron_view
from models.checkpoint import WEIGHTS
from models.errors import RnnscopeError
from models.probes import PROBES
from models.ranking import Ranked, UnitGroup, UnitScore, merge_ranked, ranked
from models.trace import run_trace

from app.core.errors import InputError
from app.core.registry import ModelEntry
from app.core.slots import Overloaded
from app.probe.contexts import Context, extremes, quantile_samples, window
from app.trace.service import TraceService, unit_values
from app.ui.scale import SPREAD_PERCENTILE, neuron_scale, state_kind

log = logging.getLogger("rnnscope.probes")

SPAN_METRIC = "span"
PUSHES_K = 8
CONTEXTS = 8  # most positive and most negative contexts on a neuron page, each from its own passage
# What a binary probe's positive characters are, for "no character of this text is ..." messages.
NOUNS = {
    "quotes": "inside double quotes",
    "brackets": "inside parentheses or brackets",
    "comment": "inside a # comment",
    "string": "inside a string literal",
    "short_string": "inside a one-quote string literal",
    "long_string": "inside a triple-quoted string literal",
    "word_start": "the first character of a word",
    "vowel": "a vowel",
    "regex": "inside a match of the pattern",
}


@dataclass(frozen=True)
class Ranking:
    units: list[UnitScore]  # best first (the JSON API's list)
    groups: list[UnitGroup]  # the same ranking one unit (layer, unit) a row, for the page's panel
    scored: int  # units scored (every unit of every state of every layer)
    chars: int
    marked: int | None  # binary probe: characters labelled true; span: characters inside it
    cached: bool  # the trace came from the cache (the model did not run)
    trace_seconds: float
    rank_seconds: float  # labels + scoring, excluding the trace


@dataclass(frozen=True)
class AtlasState:
    atlas: dict | None
    problem: str | None  # why there is no usable atlas, for the page and the API


@dataclass
class NeuronReport:
    model: str
    layer: int
    state: str
    unit: int
    top_layer: int
    nonlinearity: str = "tanh"  # the model's, for the colour scale (app.ui.scale.state_kind)
    atlas_chars: int | None = None
    atlas_source: str | None = None
    atlas_problem: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    hist: list[int] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)
    top: list[Context] = field(default_factory=list)
    bottom: list[Context] = field(default_factory=list)
    quantiles: list[Context] = field(default_factory=list)
    text: str = ""  # the atlas's held-out text the contexts are cut from
    values: np.ndarray | None = None  # the unit's value at every character of it (None: not traced)
    contexts_problem: str | None = None  # why the contexts carry no values or colours
    probes: list[dict] = field(default_factory=list)
    pushes_up: list[tuple[str, float]] | None = None
    pushes_down: list[tuple[str, float]] | None = None


class ProbeService:
    def __init__(self, traces: TraceService):
        self.traces = traces
        self._atlases: dict[str, tuple[tuple, AtlasState]] = {}  # model -> (file stamp, state)
        self._lock = threading.Lock()

    # ---- ranking ------------------------------------------------------------------------
    def rank_probe(self, entry: ModelEntry, text: str, probe: str, pattern: str | None, top: int) -> Ranking:
        self.traces.check_text(text)
        t0 = time.perf_counter()
        values = probe_values(probe, text, pattern)
        kind = PROBES[probe].kind
        label_seconds = time.perf_counter() - t0
        marked = int(values.sum()) if kind == probes.BINARY else None
        return self._rank(entry, text, top, marked, label_seconds,
                          lambda blocks: ranked(blocks, *probes.unit_scores(
                              blocks, values, kind, workers=torch.get_num_threads()), top))

    def rank_span(self, entry: ModelEntry, text: str, start: int, end: int, threshold: float, top: int) -> Ranking:
        self.traces.check_text(text)
        inside = span_mask(len(text), start, end)
        if not math.isfinite(threshold):
            raise InputError("the threshold must be a finite number", field="threshold")
        edges = probes.span_edges(start, end)
        ranking = self._rank(entry, text, top, int(inside.sum()), 0.0,
                             lambda blocks: span_rank(blocks, inside, threshold, top, edges, entry.nonlinearity))
        if not ranking.units or ranking.units[0].score <= 0:
            raise InputError(
                f"no unit is above the threshold {threshold:g} more often inside the span than outside it, or the "
                "reverse: move the threshold (a place on each unit's colour scale, from -1 purple to +1 orange)",
                field="threshold")
        return ranking

    def rank_values(self, entry: ModelEntry, text: str, values: np.ndarray, top: int) -> Ranking:
        """Every unit ranked by |Pearson r| with `values` (T,), e.g. another model's unit on the same text:
        a numeric probe given rather than computed from the text."""
        return self._rank(entry, text, top, None, 0.0, lambda blocks: ranked(blocks, *probes.unit_scores(
            blocks, values, probes.NUMERIC, workers=torch.get_num_threads()), top))

    def _rank(self, entry: ModelEntry, text: str, top: int, marked: int | None, label_seconds: float,
              score) -> Ranking:
        parts: list[Ranked] = []
        scored, cached, trace_s, rank_s = 0, True, 0.0, label_seconds
        for found, n, hit, t_s, r_s in self._scored(entry, text, score):
            parts.extend(found)
            scored, cached, trace_s, rank_s = scored + n, cached and hit, trace_s + t_s, rank_s + r_s
        found = merge_ranked(parts, top)  # per-layer rankings merge into the one-pass order
        return Ranking(found.units, found.groups, scored, len(text), marked, cached, trace_s, rank_s)

    def _scored(self, entry: ModelEntry, text: str, score) -> Iterator[tuple[list[Ranked], int, bool, float, float]]:
        """(rankings, units scored, cache hit, trace s, scoring s) per group of (layer, state)
        blocks (float16; for a cached lazy trace, trace s includes working them out). A text too
        long to cache whole is traced and scored one layer at a time, both in the same model-slot
        run: one wait in the queue per layer."""

        def score_blocks(blocks: dict) -> tuple[Ranked, int, float]:
            t0 = time.perf_counter()
            try:
                found = score(blocks)
            except RnnscopeError as e:
                raise InputError(str(e), field="probe") from None
            return found, sum(b.shape[1] for b in blocks.values()), time.perf_counter() - t0

        if self.traces.fits_whole(entry, len(text)):
            result = self.traces.view_trace(entry, text, 0, entry.states[0])  # the page's cached whole trace

            def derive_and_score() -> tuple[list[Ranked], int, float, float]:
                # A whole trace keeps only h: every layer's other states are worked out here, one
                # layer at a time, on the scoring slot (a busy server answers 503, not a pile-up).
                parts, n_units, derive_s, score_s = [], 0, 0.0, 0.0
                for k, per in result.trace.states.items():
                    t0 = time.perf_counter()
                    blocks = {(k, s): a for s, a in per.arrays().items()}
                    derive_s += time.perf_counter() - t0
                    part, n, seconds = score_blocks(blocks)
                    parts, n_units, score_s = parts + [part], n_units + n, score_s + seconds
                return parts, n_units, derive_s, score_s

            parts, n, derive_s, seconds = self.traces.scoring.run(None, derive_and_score)
            yield parts, n, result.cached, result.seconds + derive_s, seconds
            return
        for layer in range(entry.layers):
            def trace_and_score(layer=layer) -> tuple[Ranked, int, float, float]:
                t0 = time.perf_counter()
                try:
                    tr = run_trace(entry.checkpoint.model, entry.checkpoint.vocab, text, layers=[layer], topk=0,
                                   half=True)  # the values a cached whole trace gives
                except RnnscopeError as e:
                    raise InputError(str(e)) from None
                self.traces.traces_run += 1
                trace_seconds = time.perf_counter() - t0
                part, n, seconds = score_blocks({(layer, s): a for s, a in tr.states[layer].items()})
                return part, n, trace_seconds, seconds

            part, n, t_s, r_s = self.traces.slots.run(None, trace_and_score)
            yield [part], n, False, t_s, r_s

    # ---- atlases and neuron pages --------------------------------------------------------
    def atlas(self, entry: ModelEntry) -> AtlasState:
        """The model's atlas, read once per file version; a problem message when unusable."""
        path = entry.path / ATLAS_FILE
        try:
            st = path.stat()
            stamp: tuple = (entry.version, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (entry.version, None)
        with self._lock:
            held = self._atlases.get(entry.name)
            if held is not None and held[0] == stamp:
                return held[1]
            state = _read_atlas(entry, path)
            self._atlases[entry.name] = (stamp, state)
            return state

    def neuron(self, entry: ModelEntry, layer: int, state: str, unit: int) -> NeuronReport:
        self.traces.check_layer(entry, layer)
        self.traces.check_state(entry, state)
        self.traces.check_units(entry, [unit])
        report = NeuronReport(entry.name, layer, state, unit, top_layer=entry.layers - 1,
                              nonlinearity=entry.nonlinearity)
        held = self.atlas(entry)
        report.atlas_problem = held.problem
        if held.atlas is not None:
            try:
                view = neuron_view(held.atlas, layer, state, unit)
                _fill_from_atlas(report, held.atlas, view)
            except RnnscopeError as e:
                report.atlas_problem = f"{e}; rebuild the atlas with `rnnscope atlas {entry.name}`"
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                report.atlas_problem = (f"{ATLAS_FILE} of {entry.name} is malformed; "
                                        f"rebuild it with `rnnscope atlas {entry.name}`")
        if report.atlas_problem is None and report.text:
            self._contexts(entry, report)
        if layer == entry.layers - 1 and state == "h" and report.pushes_up is None:
            report.pushes_up, report.pushes_down = pushes_from_weights(entry, unit)
        return report

    def _contexts(self, entry: ModelEntry, report: NeuronReport) -> None:
        """Contexts picked from the unit's values over the atlas's text, which the atlas does not keep:
        the text is traced once per (layer, state) and cached like any view, so the unit's neighbours
        cost nothing more. A busy server or a failed trace leaves the atlas's own places, uncoloured."""
        try:
            result = self.traces.view_trace(entry, report.text, report.layer, report.state)
            x = unit_values(result.trace, report.layer, report.state, report.unit)
        except (InputError, Overloaded) as e:
            report.contexts_problem = f"the contexts below are not coloured and carry no values: {e.message}"
            return
        report.values = x
        report.top = extremes(report.text, x, CONTEXTS, high=True)
        report.bottom = extremes(report.text, x, CONTEXTS, high=False)
        report.quantiles = quantile_samples(report.text, x, QUANTILES)


# ---- pure helpers (tested directly) ------------------------------------------------------
def probe_values(probe: str, text: str, pattern: str | None) -> np.ndarray:
    """The probe's labels on `text`, or a message saying why it cannot rank anything there."""
    if probe not in PROBES:
        raise InputError(f"unknown probe {probe!r}: choose one of {', '.join(PROBES)}", field="probe")
    if probe == "regex" and not pattern:
        raise InputError("the regex probe needs a pattern: type a regular expression, e.g. [A-Z][a-z]+",
                         field="pattern")
    try:
        values = probes.labels(probe, text, pattern)
    except RnnscopeError as e:
        raise InputError(str(e), field="pattern" if probe == "regex" else "probe") from None
    if PROBES[probe].kind == probes.BINARY:
        n = int(values.sum())
        if n in (0, len(values)):
            which = "no character" if n == 0 else "every character"
            if probe == "regex":
                where = "nowhere in" if n == 0 else "the whole of"
                raise InputError(f"the pattern matches {where} this text: ranking needs characters inside a match "
                                 "and characters outside", field="pattern")
            raise InputError(f"{which} of this text is {NOUNS[probe]}, so the {probe} probe cannot tell units "
                             "apart: use a text with both kinds of character", field="probe")
    elif float(values.min()) == float(values.max()):
        raise InputError(f"the {probe} probe ({PROBES[probe].title}) is {float(values[0]):g} at every character "
                         "of this text, so it cannot tell units apart: use a text where it varies", field="probe")
    return values


def span_mask(length: int, start: int, end: int) -> np.ndarray:
    if start < 0 or end < 0:
        raise InputError("start and end count characters from 0 and cannot be negative", field="span")
    if end > length:
        raise InputError(f"the span ends at character {end} but the text has {length:,} characters", field="span")
    if start > end:
        raise InputError(f"the span starts at {start} and ends at {end}: end must come after start", field="span")
    if start == end:
        raise InputError("the selected span is empty: select at least one character of the text (drag over it, "
                         "or shift+arrow from a focused character)", field="span")
    if end - start == length:
        raise InputError("the span covers the whole text: leave some characters outside it", field="span")
    inside = np.zeros(length, dtype=bool)
    inside[start:end] = True
    return inside


def span_rank(blocks: dict, inside: np.ndarray, threshold: float, top: int, edges: list[int] | None = None,
              nonlinearity: str = "tanh") -> Ranked:
    """Units on inside the span and off outside (+), or the reverse (-).

    "On" means above `threshold` on the unit's own colour scale (screen_ends), so one threshold
    suits h (tanh), the gates and an unbounded c alike. The span's edge characters (`edges`,
    models.probes.span_edges) count on neither side. models.probes.span_scores gives both
    directions; the reverse is the negation of the first, so one signed score ranks both, best
    |score| first (models.ranking.ranked, as every ranking).
    """
    diff = np.concatenate([probes.span_scores(x, inside, threshold * screen_ends(state, x, nonlinearity), edges)[0]
                           for (_, state), x in blocks.items()])  # (N,)
    return ranked(blocks, np.abs(diff), np.where(diff >= 0, 1, -1), SPAN_METRIC, top)


def screen_ends(state: str, x: np.ndarray, nonlinearity: str = "tanh") -> float | np.ndarray:
    """Each column's colour-scale end on this text, as the main view colours that unit
    (app.ui.scale.neuron_scale): 1 for the bounded states, one per unit for c and kept.

    neuron_scale of an unbounded unit depends only on the 95th percentile of its |values|, so that
    percentile is taken for every column at once and each is then put through neuron_scale.
    """
    if state_kind(state, nonlinearity) != "free":
        return float(neuron_scale(state, np.zeros(0, dtype=np.float32)).hi)
    spread = np.empty(x.shape[1])
    for k in range(0, x.shape[1], 128):  # float32 copies of a slice of columns at a time
        a = np.abs(np.asarray(x[:, k:k + 128], dtype=np.float32))
        if np.isfinite(a).all():
            spread[k:k + 128] = np.percentile(a, SPREAD_PERCENTILE, axis=0)
        else:  # neuron_scale leaves out what is not finite
            a[~np.isfinite(a)] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no scale of its own (1)
                spread[k:k + 128] = np.nanpercentile(a, SPREAD_PERCENTILE, axis=0)
    return np.array([neuron_scale(state, np.array([v] if np.isfinite(v) else [], dtype=np.float32), nonlinearity).hi
                     for v in spread.tolist()], dtype=np.float64)


def pushes_from_weights(entry: ModelEntry, unit: int, k: int = PUSHES_K) -> tuple[list, list]:
    """The output-layer column of a top-layer h unit: the next characters it raises and lowers."""
    w = entry.checkpoint.model.head.weight.detach()[:, unit].float().numpy()  # (V,)
    chars = entry.checkpoint.vocab.chars
    up = np.argsort(-w, kind="stable")[:k]
    down = np.argsort(w, kind="stable")[:k]
    return ([(chars[i], round(float(w[i]), 4)) for i in up], [(chars[i], round(float(w[i]), 4)) for i in down])


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 of the weights file, so an atlas can say which weights it describes."""
    h = hashlib.sha256()
    try:
        with (folder / WEIGHTS).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _read_atlas(entry: ModelEntry, path: Path) -> AtlasState:
    rebuild = f"`rnnscope atlas {entry.name}`"
    try:
        atlas = load_atlas(entry.path)
    except RnnscopeError as e:
        log.warning("atlas of %s unusable: %s", entry.name, e)
        return AtlasState(None, str(e).replace("`rnnscope atlas`", rebuild))
    except (OSError, ValueError) as e:
        log.warning("atlas of %s unreadable: %s", entry.name, e)
        return AtlasState(None, f"{ATLAS_FILE} of {entry.name} cannot be read ({type(e).__name__}); "
                                f"rebuild it with {rebuild}")
    except Exception as e:  # noqa: BLE001 - e.g. valid JSON of the wrong shape: a message, never a 500
        log.warning("atlas of %s malformed: %s: %s", entry.name, type(e).__name__, e)
        return AtlasState(None, f"{ATLAS_FILE} of {entry.name} is malformed; rebuild it with {rebuild}")
    if atlas is None:
        return AtlasState(None, f"no atlas has been built for {entry.name} yet: run {rebuild} "
                                "(it traces the model's held-out text once and saves atlas.json beside the weights)")
    if not isinstance(atlas.get("text"), str) or not isinstance(atlas.get("layers"), dict):
        return AtlasState(None, f"{ATLAS_FILE} of {entry.name} is malformed; rebuild it with {rebuild}")
    built_for = (atlas.get("model") or {}).get("weights_sha256") if isinstance(atlas.get("model"), dict) else None
    if built_for and built_for != weights_fingerprint(entry.path):
        return AtlasState(None, f"{ATLAS_FILE} was built for other weights of {entry.name} (the model has changed "
                                f"since): rebuild it with {rebuild}")
    return AtlasState(atlas, None)


def _fill_from_atlas(report: NeuronReport, atlas: dict, view: dict) -> None:
    report.minimum, report.maximum, report.mean = float(view["min"]), float(view["max"]), float(view["mean"])
    report.hist = [int(c) for c in view["hist"]]
    hi = report.maximum if report.maximum > report.minimum else report.minimum + 1e-6
    report.edges = np.linspace(report.minimum, hi, len(report.hist) + 1).tolist()
    text = atlas["text"]
    report.text = text

    def places(items: list[dict]) -> list[Context]:  # the atlas's own places, before any trace colours them
        return [Context(int(c["position"]), None, window(len(text), int(c["position"]), None), c.get("q"))
                for c in items]

    report.top, report.bottom, report.quantiles = places(view["top"]), places(view["bottom"]), places(view["quantiles"])
    report.probes = view["probes"]
    card = atlas.get("card") if isinstance(atlas.get("card"), dict) else {}
    report.atlas_chars = int(card.get("chars") or len(atlas["text"]))
    report.atlas_source = str(card["source"]) if card.get("source") is not None else None
    if "pushes_up" in view:
        report.pushes_up = [(str(c), float(w)) for c, w in view["pushes_up"]]
        report.pushes_down = [(str(c), float(w)) for c, w in view["pushes_down"]]
