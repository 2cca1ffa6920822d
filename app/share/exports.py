"""Downloads of the current view: a standalone HTML file, CSV and JSON of the per-character values.

The numbers come from the same cached trace the page shows, and the colours from the same scale
(app/ui/scale.py), so a file matches the page it was downloaded from. The HTML file carries its
colours as inline styles and has no script at all, so it opens anywhere, offline.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from app.share.service import checked_page, view_params
from app.trace.service import TraceService, unit_values
from app.trace.timeline import parse_step
from app.ui.levels import bar_positions, level_positions
from app.ui.render import render_page
from app.ui.scale import (COMPARE_LINE, COMPARE_LINE_LIGHT, DARK_TEXT, LIGHT_TEXT, STATE_INFO, Scale, legend,
                          neuron_scale, rgb, surprisal_scale, text_is_light)

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula triggers (OWASP CSV injection)


@dataclass
class ExportData:
    model: str
    layer: int
    state: str
    unit: int
    mode: str
    text: str
    values: np.ndarray  # (T,) the unit's value after reading each character
    surprisal: np.ndarray  # (T,) bits: -log2 p(char_t | text before it); NaN at position 0
    positions: np.ndarray  # (T,) where each character sits on the colour scale, in [-1, 1]
    scale: Scale
    unknown: list[int]  # positions of characters the model never saw
    compare: tuple[int, str, int] | None = None  # the second unit on screen (layer, state, unit); None = off
    snapshot: int | None = None  # the training step whose weights are on screen; None = the final weights
    values2: np.ndarray | None = None  # (T,) the second unit's value after reading each character
    positions2: np.ndarray | None = None  # (T,) its place on its own colour scale, in [-1, 1]
    scale2: Scale | None = None

    @property
    def compare_what(self) -> str:
        return "" if self.compare is None else "layer {} · {} · unit {}".format(*self.compare)

    @property
    def what(self) -> str:
        return f"layer {self.layer} · {self.state} · unit {self.unit}"

    @property
    def coloured_by(self) -> str:
        if self.mode == "surprisal":
            return "surprisal of each character (bits)"
        return f"{self.what} · {STATE_INFO.get(self.state, (self.state, ''))[0]}"

    def filename(self, ext: str) -> str:
        """Only registry names (no slashes or quotes) and numbers go in, so the header stays well-formed."""
        mode = "-surprisal" if self.mode == "surprisal" else ""
        step = f"-step{self.snapshot}" if self.snapshot is not None else ""
        return f"rnnscope-{self.model}{step}-l{self.layer}-{self.state}-u{self.unit}{mode}.{ext}"


def export_data(traces: TraceService, raw: Mapping[str, object]) -> ExportData:
    """Check the params as the page does, then read the unit's values and surprisal from the cached trace."""
    page = checked_page(traces, view_params(raw, traces.settings.max_chars))
    c = page.controls
    assert c is not None
    entry = traces.model(c.model)
    step = parse_step(str(raw.get("snapshot") or "") or None)  # checked with the page above
    if step is not None:
        entry = traces.snapshot(entry, step)  # the weights on screen at that training step
    trace = traces.view_trace(entry, c.text, c.layer, c.state).trace
    values = unit_values(trace, c.layer, c.state, c.unit)  # (T,)
    nxt = trace.surprisal_bits.astype(np.float32)  # (T,) surprisal of the character after each position
    arrived = np.concatenate([[np.nan], nxt[:-1]]).astype(np.float32)  # (T,) as the page's surprisal mode
    scale = surprisal_scale() if c.mode == "surprisal" else neuron_scale(c.state, values, entry.nonlinearity)
    shown = arrived if c.mode == "surprisal" else values
    positions = level_positions(shown, scale.hi)  # (T,) the colour levels the page shows (app.ui.levels)
    data = ExportData(c.model, c.layer, c.state, c.unit, c.mode, c.text, values, arrived, positions, scale,
                      sorted(int(t) for t in trace.unknown), snapshot=step)
    if c.compare:  # the page outlines a second unit: the export carries it too (a checked page: it is valid)
        data.compare = (c.layer2, c.state2, c.unit2)
        trace2 = traces.view_trace(entry, c.text, c.layer2, c.state2).trace  # the same trace when it holds both
        data.values2 = unit_values(trace2, c.layer2, c.state2, c.unit2)  # (T,)
        data.scale2 = neuron_scale(c.state2, data.values2, entry.nonlinearity)
        data.positions2 = bar_positions(data.values2, data.scale2.hi)  # (T,) the bars the page draws
    return data


def to_csv(d: ExportData) -> str:
    """position,char,value,surprisal (and compare_value with a second unit); text cells that a spreadsheet
    would run as a formula get a leading '."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["position", "char", "value", "surprisal"] + (["compare_value"] if d.compare else []))
    second = d.values2.tolist() if d.values2 is not None else None
    for t, (ch, v, s) in enumerate(zip(d.text, d.values.tolist(), d.surprisal.tolist())):
        w.writerow([t, guard_cell(ch), _num(v, 4), _num(s, 3)] + ([_num(second[t], 4)] if second else []))
    return buf.getvalue()


def guard_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def to_json(d: ExportData) -> dict:
    return {
        "model": d.model,
        "snapshot": d.snapshot,
        "layer": d.layer,
        "state": d.state,
        "unit": d.unit,
        "mode": d.mode,
        "text": d.text,
        "length": len(d.text),
        "values": [_num(v, 4) for v in d.values.tolist()],
        "surprisal_bits": [_num(s, 3) for s in d.surprisal.tolist()],
        "colour_positions": [round(p, 3) for p in d.positions.tolist()],
        "scale": {"lo": d.scale.lo, "hi": d.scale.hi, "label": d.scale.label},
        "unknown_positions": d.unknown,
        "compare": None if d.compare is None else {
            "layer": d.compare[0], "state": d.compare[1], "unit": d.compare[2],
            "values": [_num(v, 4) for v in d.values2.tolist()],
            "colour_positions": [round(p, 3) for p in d.positions2.tolist()],
            "scale": {"lo": d.scale2.lo, "hi": d.scale2.hi, "label": d.scale2.label},
        },
        "notes": {
            "values": f"{d.state}[{d.layer}][{d.unit}] after reading each character (float16 precision)",
            "surprisal_bits": "-log2 p(character | the text before it); null for the first character",
            "colour_positions": "where the downloaded page coloured each character, -1 (purple) .. 1 (orange)",
        },
    }


@dataclass
class Cell:
    ch: str
    style: str
    title: str
    cls: str


def to_html(d: ExportData, source_url: str = "") -> str:
    """One page, inline styles only, no scripts: the text coloured as on the page, with a legend."""
    unknown = set(d.unknown)
    cells = []
    second = None if d.compare is None else (d.values2.tolist(), d.positions2.tolist())
    for t, (ch, p, v, s) in enumerate(zip(d.text, d.positions.tolist(), d.values.tolist(), d.surprisal.tolist())):
        title = f"#{t} · value {_fmt(v, 4)} · surprisal {_fmt(s, 2)} bits"
        style = _style(p)
        if second is not None:  # the second unit as a bar under the character, as on the page
            title += f" · compare {_fmt(second[0][t], 4)}"
            style += _bar(p, second[1][t])
        cls = ("nl " if ch == "\n" else "") + ("unk" if t in unknown else "")
        cells.append(Cell(ch, style, title + (" · never seen in training" if t in unknown else ""), cls.strip()))
    context = {
        "d": d,
        "cells": cells,
        "legend": [(_style(s.position), s.label) for s in legend(d.scale)],
        "legend2": [] if d.scale2 is None else [(_style(s.position), s.label) for s in legend(d.scale2)],
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "source_url": source_url,
    }
    return render_page("export.html", context)


def hex_colour(position: float) -> str:
    r, g, b = rgb(position)
    return f"#{r:02x}{g:02x}{b:02x}"


def _hex(rgb_triple: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb_triple)


def _style(position: float) -> str:
    fg = LIGHT_TEXT if text_is_light(position) else DARK_TEXT
    return f"background:{hex_colour(position)};color:{_hex(fg)}"


def _bar(position: float, bar: float) -> str:
    """The compare bar as the page draws it: below for positive, above for negative, 5 px at full size,
    in the line colour that stands out from this character's background."""
    if not bar:
        return ""
    line = COMPARE_LINE_LIGHT if text_is_light(position) else COMPARE_LINE
    return f";box-shadow:inset 0 {-5 * bar:g}px 0 {_hex(line)}"


def _num(x: float, digits: int) -> float | None:
    return None if not math.isfinite(x) else round(x, digits)


def _fmt(x: float, digits: int) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"
