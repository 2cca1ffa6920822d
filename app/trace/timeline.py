"""The main view's training-step slider and time-lapse panel (issue #23): which snapshot the view shows,
what the slider says about each step, and the small chart and sample beside the text.

A snapshot is the model's own folder's `snapshots/` (models.snapshots): the same model at an earlier
step. The slider's positions are the snapshots in step order and, last, the final weights (no
`snapshot` in the URL). The chart is drawn here as plain SVG markup (app.ui.svg's axes, no script):
validation bits/char and the timeline's recorded best-unit score for one probe, both against the
step on a log axis (most of the change happens in the first few percent of a run), the step on
screen marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from app.core.errors import InputError
from app.core.registry import ModelEntry, Snapshot
from app.ui.svg import Axis

CHART_PROBE = "quotes"  # the probe the chart shows when the view names none the timeline recorded


@dataclass
class SliderControls:
    """The slider and the number box: positions 0..n-1 are the snapshots, n the final weights."""

    steps: list[int]
    labels: list[str]  # what the slider says at each snapshot ("step 441 · 2,822,400 characters seen")
    final_label: str
    index: int
    step: int | None  # the snapshot on screen; None = the final weights

    @property
    def label(self) -> str:
        return self.final_label if self.step is None else self.labels[self.index]

    @property
    def data(self) -> dict:
        """For static/timeline.js (the model picker's option carries it, to refill the slider on a model change)."""
        return {"steps": self.steps, "labels": self.labels, "final": self.final_label}


@dataclass
class BestUnit:
    layer: int
    state: str
    unit: int
    score: str  # "AUC 0.712"
    current: bool


@dataclass
class TimelineView:
    """The panel under the text: where in training these weights are, the chart, and the step's sample."""

    heading: str
    facts: list[str]
    chart: Markup  # its accessible name says what it shows and where the mark is
    probe: str | None  # the probe whose best unit the chart follows (None: the timeline recorded none)
    best: BestUnit | None  # that probe's best unit at this step, one click away
    best_label: str  # "best inside-quotes unit at this step"
    prime: str
    sample: str | None  # None for the final weights: samples are taken at snapshots
    keys: list[tuple[str, str]] = field(default_factory=list)  # (css class, label): the chart's legend


def parse_step(raw: str | None) -> int | None:
    """The `snapshot` setting: blank or absent = the final weights; otherwise one of the model's steps."""
    if raw is None or raw.strip() == "":
        return None
    try:
        step = int(raw.strip())
    except ValueError:
        raise InputError(f"the training step must be a whole number, got {raw[:40]!r}", field="snapshot") from None
    if step < 0:
        raise InputError(f"the training step counts from 0, got {step}", field="snapshot")
    return step


def slider(entry: ModelEntry, step: int | None) -> SliderControls | None:
    """The slider for `entry` at `step` (None: the final weights); None when the model has no snapshots."""
    snaps = entry.timeline.snapshots
    if not snaps:
        return None
    steps = [s.step for s in snaps]
    index = steps.index(step) if step in steps else len(steps)
    return SliderControls(steps, [step_label(s) for s in snaps], final_label(entry), index,
                          step if step in steps else None)


def step_label(s: Snapshot) -> str:
    return f"step {s.step:,} · {s.chars_seen:,} characters seen"


def final_label(entry: ModelEntry) -> str:
    return " · ".join(["final weights"] + _final_facts(entry))


def _final_facts(entry: ModelEntry) -> list[str]:
    """The card's training step and characters seen, where it says them (an imported model's does not)."""
    steps, chars = _card_int(entry, "train_steps"), _card_int(entry, "chars_seen")
    return ([f"step {steps:,}"] if steps is not None else []) + ([f"{chars:,} characters seen"] if chars is not None else [])


def timeline_view(entry: ModelEntry, step: int | None, current: tuple[int, str, int], wanted_probe: str | None
                  ) -> TimelineView | None:
    """The panel for the model's timeline at `step` (None: the final weights), following `wanted_probe` in
    the chart when the timeline recorded it (else quotes, else the first it recorded)."""
    snaps = entry.timeline.snapshots
    if not snaps:
        return None
    probe = chart_probe(snaps, wanted_probe)
    now = entry.timeline.at(step) if step is not None else None
    final_step = _card_int(entry, "train_steps")
    if now is not None:
        heading = f"Training step {now.step:,}"
        facts = [f"{now.chars_seen:,} characters seen"]
        if now.val_bpc is not None:
            facts.append(f"validation {now.val_bpc:.3f} bits/char")
        if now.training_seconds is not None:
            facts.append(f"{_duration(now.training_seconds)} of training")
    else:
        heading = "Final weights"
        facts = _final_facts(entry) or ["the checkpoint training kept"]
        if entry.val_bpc is not None:
            facts.append(f"validation {entry.val_bpc:.3f} bits/char")
    best = None
    if probe is not None:
        u = (now.probe_units if now is not None else entry.card.get("probe_units") or {}).get(probe)
        best = _best_unit(entry, u, current)
    chart, _, keys = chart_svg(snaps, probe, now.step if now else None, final_step, entry.val_bpc)
    best_label = f"best {probe} unit " + ("on the model card" if now is None else "at this step")
    return TimelineView(heading=heading, facts=facts, chart=chart, probe=probe, best=best, best_label=best_label,
                        prime=entry.timeline.prime, sample=now.sample if now is not None else None, keys=keys)


def chart_probe(snaps: tuple[Snapshot, ...], wanted: str | None) -> str | None:
    recorded = list(dict.fromkeys(p for s in snaps for p in s.probe_units))
    if wanted in recorded:
        return wanted
    if CHART_PROBE in recorded:
        return CHART_PROBE
    return recorded[0] if recorded else None


def _best_unit(entry: ModelEntry, u: object, current: tuple[int, str, int]) -> BestUnit | None:
    try:
        layer, state, unit = int(u["layer"]), str(u["state"]), int(u["unit"])  # type: ignore[index]
        score, metric = float(u["score"]), str(u["metric"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    if not entry.has_unit(layer, state, unit):
        return None
    return BestUnit(layer, state, unit, f"{'AUC' if metric == 'auc' else '|r|'} {score:.3f}",
                    (layer, state, unit) == current)


def _score(s: Snapshot, probe: str | None) -> tuple[float, str]:
    u = s.probe_units.get(probe) if probe else None
    try:
        return float(u["score"]), str(u["metric"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return math.nan, ""


def _card_int(entry: ModelEntry, key: str) -> int | None:
    v = entry.card.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---- the chart ----------------------------------------------------------------------------------
W, LEFT, RIGHT, TOP = 400, 46, 12, 22
PANEL, GAP, BOTTOM = 78, 30, 34
ZERO = 22  # px left of the log axis where step 0 (the untrained weights) is drawn


def chart_svg(snaps: tuple[Snapshot, ...], probe: str | None, now: int | None, final_step: int | None,
              final_bpc: float | None) -> tuple[Markup, str, list[tuple[str, str]]]:
    """Two panels over one log step axis: validation bits/char above, the probe's best-unit score below.

    Returns the markup, a sentence saying what it shows (its accessible name) and the legend entries."""
    steps = [s.step for s in snaps]
    top_step = max(steps + ([final_step] if final_step else []))
    hi_e = max(1, math.ceil(math.log10(max(top_step, 1)) - 1e-9))
    x_axis = Axis(1.0, 10.0 ** hi_e, True)
    pw = W - LEFT - RIGHT - ZERO
    n_panels = 2 if probe else 1  # no probe recorded: bits/char alone
    plot_h = n_panels * PANEL + (n_panels - 1) * GAP
    height = TOP + plot_h + BOTTOM

    def px(step: float) -> float:
        return LEFT if step <= 0 else LEFT + ZERO + x_axis.frac(step) * pw

    bpc = [s.val_bpc if s.val_bpc is not None else math.nan for s in snaps]
    scored = [_score(s, probe) for s in snaps]
    scores = [v for v, _ in scored]
    metric = next((m for v, m in scored if m), "auc")
    what = "AUC" if metric == "auc" else "|r|"
    noun = probe or ""
    bpc_vals = [v for v in bpc + ([final_bpc] if final_bpc is not None else []) if math.isfinite(v)]
    b_lo = math.floor(min(bpc_vals, default=1.0) * 2) / 2
    b_hi = math.ceil(max(bpc_vals, default=2.0) * 2) / 2
    b_axis = Axis(b_lo, b_hi if b_hi > b_lo else b_lo + 0.5, False)
    s_axis = Axis(0.5, 1.0, False) if metric == "auc" else Axis(0.0, 1.0, False)
    panels = [(TOP, b_axis, bpc, "bpc", "bits/char", _three(b_axis))]
    if probe:
        panels.append((TOP + PANEL + GAP, s_axis, scores, "score", what, _three(s_axis)))
    shown = f"best {noun} unit's {what}" if probe else "no probe scores recorded"
    at = next((s for s in snaps if s.step == now), None)
    note = (f"Validation bits/char and the {shown} at each of {len(snaps)} snapshots, steps {steps[0]:,} to "
            f"{steps[-1]:,} on a log axis")
    if at is not None:
        v, _ = _score(at, probe)
        note += (f"; step {at.step:,} marked"
                 + (f": {at.val_bpc:.3f} bits/char" if at.val_bpc is not None else "")
                 + (f", {what} {v:.3f}" if math.isfinite(v) else ""))
    elif final_step is not None:
        note += f"; the final weights (step {final_step:,}) marked"
    out = [f'<svg class="tl-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" '
           f'height="{height}" role="img" aria-label="{escape(note)}"><title>{escape(note)}</title>']
    for y0, axis, ys, cls, label, ticks in panels:
        def py(v: float, y0: int = y0, axis: Axis = axis) -> float:
            return y0 + (1 - axis.frac(v)) * PANEL

        title = "validation bits/char" if cls == "bpc" else f"best {noun} unit ({what})"
        out.append(f'<text class="tl-title" x="{LEFT}" y="{y0 - 7}">{escape(title)}</text>')
        out.append(f'<rect class="tl-frame" x="{LEFT}" y="{y0}" width="{W - LEFT - RIGHT}" height="{PANEL}"/>')
        for v, text in ticks:
            out.append(f'<line class="tl-grid" x1="{LEFT}" y1="{py(v):.1f}" x2="{W - RIGHT}" y2="{py(v):.1f}"/>'
                       f'<text class="tl-tick" x="{LEFT - 4}" y="{py(v) + 3.5:.1f}" text-anchor="end">{escape(text)}</text>')
        pts = [(px(s), py(v), s, v) for s, v in zip(steps, ys) if math.isfinite(v)]
        if len(pts) > 1:
            out.append(f'<polyline class="tl-{cls}" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)}"/>')
        for x, y, s, v in pts:
            cur = " now" if s == now else ""
            out.append(f'<circle class="tl-{cls}{cur}" cx="{x:.1f}" cy="{y:.1f}" r="{4.5 if cur else 2.6}">'
                       f"<title>step {s:,}: {v:.3f} {escape(label)}</title></circle>")
        if cls == "bpc" and final_bpc is not None and final_step is not None:
            x, y = px(final_step), py(final_bpc)
            cur = " now" if now is None else ""
            out.append(f'<rect class="tl-final{cur}" x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7">'
                       f"<title>final weights, step {final_step:,}: {final_bpc:.3f} bits/char</title></rect>")
    mark = now if now is not None else final_step
    if mark is not None:
        x = px(mark)
        out.append(f'<line class="tl-now" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}"/>')
    base = TOP + plot_h
    out.append(f'<text class="tl-tick" x="{LEFT:.1f}" y="{base + 13}" text-anchor="middle">0</text>')
    for e in range(0, hi_e + 1):
        x = px(10.0 ** e)
        out.append(f'<line class="tl-grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base}"/>'
                   f'<text class="tl-tick" x="{x:.1f}" y="{base + 13}" text-anchor="middle">{_decade(e)}</text>')
    out.append(f'<text class="tl-axis" x="{LEFT + (W - LEFT - RIGHT) / 2:.1f}" y="{height - 5}" '
               f'text-anchor="middle">training step (log scale; 0 at the left edge)</text>')
    out.append("</svg>")
    keys = [("tl-key-bpc", "validation bits/char")] + ([("tl-key-score", f"best {noun} unit, {what}")] if probe else [])
    return Markup("".join(out)), note, keys


def _three(axis: Axis) -> list[tuple[float, str]]:
    """Both ends and the middle: enough to read a small panel by."""
    return [(v, f"{v:g}") for v in (axis.lo, (axis.lo + axis.hi) / 2, axis.hi)]


def _decade(e: int) -> str:
    return {0: "1", 1: "10", 2: "100", 3: "1k", 4: "10k", 5: "100k", 6: "1M"}.get(e, f"1e{e}")
