"""Small server-side SVG plots (line plot with linear or log y, scatter), drawn as plain markup.

Why server-side: the page stays readable without JavaScript, the CSP needs no exceptions, and
tests can count what was drawn. Every piece of text that goes into the markup is escaped here;
the result is Markup so templates insert it without escaping it twice. Colours come from CSS
classes (static/dynamics.css), never from input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 14, 26, 40
MAX_DECADES = 24  # a log axis spans at most this many powers of ten below its top
_CLS_RE = re.compile(r"^[a-z0-9-]{1,32}$")


@dataclass(frozen=True)
class Series:
    label: str
    ys: Sequence[float]  # NaN / inf leave a gap
    cls: str  # CSS class suffix: the line is drawn with class "s-<cls>"
    dots: bool = False  # a hoverable dot (with a <title>) per finite point


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    cls: str
    title: str
    href: str | None = None


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    log: bool

    def frac(self, v: float) -> float:
        """Value -> 0..1 along the axis (clamped: values beyond the ends sit on the edge)."""
        if self.log:
            v = math.log10(max(v, self.lo)) if v > 0 else math.log10(self.lo)
            lo, hi = math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        return 0.0 if hi == lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))


def log_axis(values: Sequence[float]) -> Axis:
    """Whole decades around the positive finite values (zeros are drawn on the floor)."""
    pos = [v for v in values if math.isfinite(v) and v > 0]
    if not pos:
        return Axis(1e-3, 1.0, True)
    hi_e = math.ceil(math.log10(max(pos)) - 1e-9)
    lo_e = math.floor(math.log10(min(pos)) + 1e-9)
    lo_e = max(lo_e, hi_e - MAX_DECADES)
    if lo_e >= hi_e:
        lo_e = hi_e - 1
    return Axis(10.0**lo_e, 10.0**hi_e, True)


def linear_axis(values: Sequence[float], lo: float | None = None, hi: float | None = None) -> Axis:
    finite = [v for v in values if math.isfinite(v)]
    a = min(finite, default=0.0) if lo is None else lo
    b = max(finite, default=1.0) if hi is None else hi
    if b <= a:
        a, b = a - 0.5, b + 0.5
    return Axis(float(a), float(b), False)


TICK_GAP = 18  # px between two labelled ticks on a y-axis at least: 10 px labels never touch
LOG_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 24)  # decades between labelled ticks on a log axis


def log_ticks(axis: Axis, room: float) -> list[tuple[float, str]]:
    """Powers of ten at a round step (multiples of it, so 1 is labelled whenever it is in range), as
    many as fit `room` pixels with TICK_GAP between them: a span of 1e-18 .. 100 reads 1e-18, 1e-15, ... 1."""
    lo, hi = round(math.log10(axis.lo)), round(math.log10(axis.hi))
    fit = max(2, int(room // TICK_GAP) + 1)
    for step in LOG_STEPS:
        es = [e for e in range(hi, lo - 1, -1) if e % step == 0]
        if len(es) <= fit:
            break
    es = es or [hi]
    plain = all(-3 <= e <= 3 for e in es)  # one style per axis: 0.001 .. 1000, or 1e-18 .. 1
    return [(10.0**e, _pow10(e) if plain or e == 0 else f"1e{e}") for e in es]


def _ticks(axis: Axis, count: int = 5, integer: bool = False, room: float = 164.0) -> list[tuple[float, str]]:
    if axis.log:
        return log_ticks(axis, room)
    span = axis.hi - axis.lo
    raw = span / max(1, count - 1)
    if integer:
        raw = max(raw, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer and mag < 10 else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw)
    first = math.ceil(axis.lo / step - 1e-9) * step
    out = []
    v = first
    while v <= axis.hi + step * 1e-9:
        out.append((v, _num(v)))
        v += step
    return out


def _pow10(e: int) -> str:
    """0.001 .. 1000 written out; beyond, 1e-18 or 1e6."""
    if -3 <= e <= 3:
        return f"{10.0**e:.{max(0, -e)}f}"
    return f"1e{e}"


def axis_label(v: float) -> str:
    """A power of ten as its tick reads: 1, 1e-18, 1e2."""
    e = round(math.log10(v))
    return "1" if e == 0 else f"1e{e}"


def _num(v: float) -> str:
    if abs(v) < 1e-12:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def _cls(name: str) -> str:
    if not _CLS_RE.match(name):
        raise ValueError(f"bad CSS class suffix {name!r}")
    return name


def line_plot(series: Sequence[Series], xs: Sequence[float], *, title: str, x_label: str, y_label: str,
              log_y: bool = False, y_lo: float | None = None, y_hi: float | None = None, width: int = 380,
              height: int = 230, point_titles: Sequence[str] | None = None, mark_x: float | None = None,
              y_axis: Axis | None = None) -> Markup:
    """Lines over shared xs. Non-finite values break a line; on a log axis, values at or below
    the floor (including exact zeros) are drawn on it. point_titles label the dots (per x).
    `y_axis`: a y-axis shared with other plots (e.g. log_axis of all their values), so they compare."""
    all_y = [float(y) for s in series for y in s.ys]
    if y_axis is None:
        y_axis = log_axis(all_y) if log_y else linear_axis(all_y, y_lo, y_hi)
    x_axis = linear_axis([float(x) for x in xs])
    pw, ph = width - MARGIN_L - MARGIN_R, height - MARGIN_T - MARGIN_B

    def px(x: float) -> float:
        return MARGIN_L + x_axis.frac(x) * pw

    def py(y: float) -> float:
        return MARGIN_T + (1 - y_axis.frac(y)) * ph

    out = [_open(width, height, title)]
    integer_x = all(float(x).is_integer() for x in xs)
    out.append(_frame(x_axis, y_axis, px, py, pw, ph, x_label, y_label, height, integer_x))
    if mark_x is not None:
        x = px(mark_x)
        out.append(f'<line class="mark" x1="{x:.1f}" y1="{MARGIN_T}" x2="{x:.1f}" y2="{MARGIN_T + ph}"/>')
    for s in series:
        cls = _cls(s.cls)
        runs: list[list[str]] = [[]]
        dots = []
        for k, (x, y) in enumerate(zip(xs, s.ys)):
            y = float(y)
            if not math.isfinite(y):
                runs.append([])
                continue
            X, Y = px(float(x)), py(y)
            runs[-1].append(f"{X:.1f},{Y:.1f}")
            if s.dots:
                label = point_titles[k] if point_titles is not None else f"x={_num(float(x))}"
                dots.append(f'<circle class="dot" cx="{X:.1f}" cy="{Y:.1f}" r="2.2"><title>'
                            f"{escape(s.label)}: {_num(y) if y else '0'} · {escape(label)}</title></circle>")
        out.append(f'<g class="s-{cls}">')
        for run in runs:
            if run:
                out.append(f'<polyline points="{" ".join(run)}"/>')
        out.extend(dots)
        out.append("</g>")
    out.append(_legend([(s.cls, s.label) for s in series], width))
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Keys:
    """Makes a scatter one keyboard widget (one tab stop) instead of a link per dot: static/dynamics.js
    moves a highlight with the arrow keys, writes the dot's title into the element with id `live`,
    and opens the dot's href on Enter or click. `label` names the widget and says how to use it."""

    live: str
    label: str


def scatter(points: Sequence[Point], *, title: str, x_label: str, y_label: str, legend: Sequence[tuple[str, str]],
            x_range: tuple[float, float] = (0.0, 1.0), y_range: tuple[float, float] = (0.0, 1.0), width: int = 380,
            height: int = 380, diagonal: bool = False, keys: Keys | None = None) -> Markup:
    """One circle per point, coloured by its class, with a <title>. No dot is ever a link of its own
    (thousands of tab stops, and links nested in the plot): with `keys` the plot is a single focusable
    widget and each dot carries its href as data; without, hrefs are dropped."""
    x_axis = Axis(x_range[0], x_range[1], False)
    y_axis = Axis(y_range[0], y_range[1], False)
    pw, ph = width - MARGIN_L - MARGIN_R, height - MARGIN_T - MARGIN_B

    def px(x: float) -> float:
        return MARGIN_L + x_axis.frac(x) * pw

    def py(y: float) -> float:
        return MARGIN_T + (1 - y_axis.frac(y)) * ph

    out = [_open(width, height, title, keys), _frame(x_axis, y_axis, px, py, pw, ph, x_label, y_label, height)]
    if diagonal:  # x + y = 1: a unit on this line is always saturated one way or the other
        out.append(f'<line class="diag" x1="{px(0):.1f}" y1="{py(1):.1f}" x2="{px(1):.1f}" y2="{py(0):.1f}"/>')
    # The dots are left out of the accessibility tree: the widget announces the highlighted one itself.
    out.append('<g class="pts" aria-hidden="true">' if keys else '<g class="pts">')
    for p in points:
        href = f' data-href="{escape(p.href)}"' if keys and p.href else ""
        out.append(f'<circle class="pt p-{_cls(p.cls)}" cx="{px(p.x):.1f}" cy="{py(p.y):.1f}" r="3.2"{href}>'
                   f"<title>{escape(p.title)}</title></circle>")
    out.append("</g>")
    if keys:  # the highlight ring, placed by static/dynamics.js
        out.append('<circle class="cursor" cx="0" cy="0" r="6.5" visibility="hidden"/>')
    out.append(_legend(legend, width, dot=True))
    out.append("</svg>")
    return Markup("".join(out))


def _open(width: int, height: int, title: str, keys: Keys | None = None) -> str:
    t = escape(title)
    size = f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
    if keys is None:
        return f'<svg class="plot" {size} role="img" aria-label="{t}"><title>{t}</title>'
    # role=application: screen readers pass the arrow keys through to the widget
    return (f'<svg class="plot keys" {size} tabindex="0" role="application" aria-roledescription="scatter plot" '
            f'aria-label="{t}: {escape(keys.label)}" aria-describedby="{escape(keys.live)}" '
            f'data-live="{escape(keys.live)}"><title>{t}</title>')


def _frame(x_axis: Axis, y_axis: Axis, px, py, pw: float, ph: float, x_label: str, y_label: str, height: int,
           integer_x: bool = False) -> str:
    out = [f'<rect class="frame" x="{MARGIN_L}" y="{MARGIN_T}" width="{pw:.1f}" height="{ph:.1f}"/>']
    for v, label in _ticks(y_axis, room=ph):
        y = py(v)
        out.append(f'<line class="grid" x1="{MARGIN_L}" y1="{y:.1f}" x2="{MARGIN_L + pw:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{MARGIN_L - 5}" y="{y + 3.5:.1f}" text-anchor="end">{escape(label)}</text>')
    for v, label in _ticks(x_axis, 6, integer_x):
        x = px(v)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{MARGIN_T}" x2="{x:.1f}" y2="{MARGIN_T + ph:.1f}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{MARGIN_T + ph + 14:.1f}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<text class="axis-label" x="{MARGIN_L + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
               f"{escape(x_label)}</text>")
    cy = MARGIN_T + ph / 2
    out.append(f'<text class="axis-label" x="12" y="{cy:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {cy:.1f})">{escape(y_label)}</text>')
    return "".join(out)


def _legend(items: Sequence[tuple[str, str]], width: int, dot: bool = False) -> str:
    out = ['<g class="legend-svg">']
    x = MARGIN_L
    for cls, label in items:
        mark = (f'<circle class="pt p-{_cls(cls)}" cx="{x + 5}" cy="12" r="4"/>' if dot
                else f'<line class="s-{_cls(cls)}" x1="{x}" y1="12" x2="{x + 14}" y2="12"/>')
        out.append(f'{mark}<text x="{x + 18}" y="16">{escape(label)}</text>')
        x += 26 + 6.2 * len(label)
    out.append("</g>")
    return "".join(out)
