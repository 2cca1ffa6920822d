"""The scalar RNN page: one unit, one weight each, stepped by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from markupsafe import Markup

from app.core.errors import InputError
from app.dynamics.service import DynamicsService
from app.dynamics.views.form import Base, Reader, base, sci
from app.ui.urls import NAV_TEXT_LIMIT
from app.ui import svg


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
    page = ToyPage(**vars(base("toy", query)))
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
    titles = [f"t={t}, x={sci(x)}" for t, x in zip(ts, xs)]
    page.plot_h = svg.line_plot([svg.Series("h_t", res.run.h, "h", dots)], ts, title="hidden state h_t",
                                x_label="step t", y_label="h_t", y_lo=-1.0, y_hi=1.0, point_titles=titles)
    page.plot_grad = svg.line_plot([svg.Series("|∂h_T/∂h_t|", grads, "jac", dots)], ts,
                                   title=f"gradient reaching each step from h_{T}", x_label="step t",
                                   y_label="|∂h_T/∂h_t| (log scale)", log_y=True, point_titles=titles)
    page.rows = [ToyRow(t, sci(x), f"{h:+.4f}", f"{loc:+.4g}", sci(g))
                 for t, x, h, loc, g in zip(ts, xs, res.run.h, res.local, res.run.dhT_dht)]
    first = res.run.dhT_dh1
    verdict = ("explodes" if not math.isfinite(first) or abs(first) > 1e2 else
               "vanishes" if abs(first) < 1e-2 else "shrinks" if abs(first) < 1 else "grows" if abs(first) > 1 else
               "stays the same")
    page.summary = (f"∂h_{T}/∂h_1 = {sci(first)}: over {T - 1} step{'s' if T != 2 else ''} back the gradient "
                    f"{verdict}" if T > 1 else "give two or more inputs to see the gradient travel back")
    return page
