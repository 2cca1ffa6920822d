"""The interventions page: clamp a unit or edit the text, and see what the predictions do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup

from models.dynamics import MAX_TOPK

from app.core.errors import InputError
from app.core.slots import Overloaded
from app.dynamics.results import DEFAULT_INTERVENE_TOPK, MAX_INTERVENE_CHARS, InterventionResult
from app.dynamics.service import DynamicsService
from app.dynamics.watch import WatchGroup
from app.dynamics.views.form import (Base, Cell, Picker, Reader, WATCH_ROWS, base, cells, picker, resolve_model,
    resolve_unit, show_char)
from app.ui import svg
from app.ui.scale import Swatch, legend, neuron_scale


@dataclass
class WatchRow:
    t: int
    context: str
    before: str
    after: str
    change: str
    kind: str = ""  # the row's group in the split ("closing", "opening", ...)


@dataclass
class WatchGroupRow:
    """One group of the watched character's places (closing quotes, ...): count and mean p, formatted."""

    key: str
    label: str
    places: str
    before: str
    after: str
    change: str
    cls: str  # "down", "up" or "same": which way the clamp moved its mean p


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
    watch_groups: list[WatchGroupRow] = field(default_factory=list)  # the split, then every place
    watch_rule: str = ""
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
    page = IntervenePage(**vars(base("intervene", query, service)))
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
            titles.append(f"{show_char(ch)} at 0: the first character has no prediction")
        else:
            titles.append(f"{show_char(ch)} at {t}: {s0[t]:.2f} → {s1[t]:.2f} bits ({s1[t] - s0[t]:+.2f})")
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
                [svg.Series(f"p({show_char(res.watch)} next), before", iv.prob_before[:n].tolist(), "before"),
                 svg.Series("after the clamp", iv.prob_after[:n].tolist(), "after")],
                list(range(n)), title=f"probability that the next character is {res.watch!r}",
                x_label="position t", y_label=f"p({show_char(res.watch)} next)", y_lo=0.0, y_hi=1.0, width=760,
                height=220, mark_x=float(res.start))
        split = res.watch_split
        assert split is not None  # a watched character always has its split
        where = split.all.places
        for t in where[:WATCH_ROWS]:
            b, a = float(iv.prob_before[t]), float(iv.prob_after[t])
            context = text[max(0, t - 24):t + 1].replace("\n", "↵")
            page.watch_rows.append(WatchRow(t, context, f"{b:.3f}", f"{a:.3f}", f"{a - b:+.3f}", split.kind_of(t)))
        if where:
            b, a = split.all.mean_before, split.all.mean_after
            page.watch_summary = (f"where {res.watch!r} really comes next ({len(where)} place"
                                  f"{'s' if len(where) != 1 else ''}): mean p {_p(b)} → {_p(a)}"
                                  + (f" ({a - b:+.3f})" if a is not None and b is not None else ""))
            page.watch_groups = [_group_row(g) for g in (*split.groups, split.all)]
            page.watch_rule = f"Split {split.rule}."
        else:
            page.watch_summary = f"{res.watch!r} never comes next in this text; the plot still shows its probability"


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _group_row(g: WatchGroup) -> WatchGroupRow:
    b, a = g.mean_before, g.mean_after
    d = None if a is None or b is None else a - b
    return WatchGroupRow(g.key, g.label, f"{g.count:,}", _p(b), _p(a), "—" if d is None else f"{d:+.3f}",
                         "same" if not d else ("down" if d < 0 else "up"))


def _counterfactual_section(page: IntervenePage, res) -> None:
    cf = res.result
    delta = np.array([np.nan if d is None else d for d in cf.delta], dtype=np.float32)
    scale = neuron_scale("c", delta)
    titles = []
    for j, ch in enumerate(cf.edited):
        if cf.before[j] is None:
            titles.append(f"{show_char(ch)} at {j}: no counterpart in the original (inserted or changed); "
                          f"value {cf.after[j]:+.4f}")
        else:
            titles.append(f"{show_char(ch)} at {j}: {cf.before[j]:+.4f} → {cf.after[j]:+.4f} ({delta[j]:+.4f})")
    page.cf_cells = cells(cf.edited, scale.positions(delta), titles, ~np.isfinite(delta),
                          set(res.entry.checkpoint.vocab.unknown_positions(cf.edited)))
    page.cf_legend, page.cf_note = legend(scale), f"change in {page.what}; {scale.label}"
    finite = delta[np.isfinite(delta)]
    stats = [f"{len(cf.edited):,} characters, {res.unaligned:,} without a counterpart (hatched)"]
    if finite.size:
        j = int(np.nanargmax(np.abs(np.where(np.isfinite(delta), delta, 0))))
        stats.append(f"largest change {float(delta[j]):+.4f} at position {j} ({show_char(cf.edited[j])})")
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
        out.append([show_char(ch), _pct(p), 1] if ch == actual else [show_char(ch), _pct(p)])
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
    return [PredRow(show_char(chars[i]), _pct(p) + "%", _pct(p), " actual" if chars[i] == actual else "")
            for i, p in zip(ids.tolist(), probs.tolist())]


def _pred_summary(iv, chars: list[str], text: str, start: int, t: int, what: str, value: float) -> PredSummary:
    actual = text[t + 1] if t + 1 < len(text) else None
    heading = f"Next-character predictions after {show_char(text[t])!r} at position {t}"
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
        bits = f"the actual next character {show_char(actual)!r}: {b:.2f} → {a:.2f} bits ({a - b:+.2f})"
    changes = []
    for i, b, a in zip(iv.change_ids[t].tolist(), iv.change_before[t].tolist(), iv.change_after[t].tolist()):
        d = a - b
        changes.append(ChangeRow(show_char(chars[i]), _pct(b) + "%", _pct(a) + "%", _points(d),
                                 "up" if d > 0 else "down" if d < 0 else "same"))
    return PredSummary(t, heading, note, bits,
                       _rows(iv.topk_ids_before[t], iv.topk_probs_before[t], chars, actual),
                       _rows(iv.topk_ids_after[t], iv.topk_probs_after[t], chars, actual), changes)
