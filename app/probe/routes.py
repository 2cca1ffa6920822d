"""Routes for finding the neuron: probe and span rankings (JSON and the page's panel) and the
neuron page. Thin: validate, call app.probe.service, shape or render."""

from __future__ import annotations

import math

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from app.core.errors import ErrorDetail, InputError
from app.core.selection import whole_number
from app.core.slots import Overloaded
from app.deps import ProbesDep
from app.probe.contexts import Context as ContextPlace
from app.probe.schemas import Context, Histogram, NeuronResponse, ProbeMatch, ProbeRequest, Push, SpanRequest, UnitRank
from app.probe.service import NeuronReport, Ranking
from app.probe.views import (DEFAULT_THRESHOLD, DEFAULT_TOP, RankingView, current_unit, neuron_page, probe_summary,
                          ranking_view, span_summary)
from app.trace.timeline import parse_step
from app.trace.views import DEFAULT_TEXT
from app.ui.render import render_block, render_page

api = APIRouter(prefix="/api/v1", tags=["probes"])
pages = APIRouter(include_in_schema=False)

ERRORS = {
    404: {"model": ErrorDetail, "description": "unknown model (or, for /probe, a snapshot step the model has not got)"},
    413: {"model": ErrorDetail, "description": "text over the length limit"},
    422: {"model": ErrorDetail, "description": "bad input: unknown probe, invalid or too slow regex, a probe constant "
                                               "on this text, an empty or out-of-range span, malformed JSON"},
}
PANEL = "_find_units.html"




@api.post("/probe", response_model=list[UnitRank], responses=ERRORS, summary="Rank units against a probe")
def probe(body: ProbeRequest, probes: ProbesDep) -> list[UnitRank]:
    """Every unit of every state of every layer, scored against the probe's per-character labels
    on this text (ROC AUC for binary probes, |Pearson r| for numeric ones); best first."""
    entry = probes.traces.model(body.model, body.snapshot)
    ranking = probes.rank_probe(entry, body.text, body.probe, body.pattern, body.top)
    return _ranks(ranking)


@api.post("/span", response_model=list[UnitRank], responses=ERRORS, summary="Rank units by a selected span")
def span(body: SpanRequest, probes: ProbesDep) -> list[UnitRank]:
    """Units that are on (above `threshold` on their own colour scale) inside text[start:end] and off
    elsewhere (sign +1), or off inside and on elsewhere (sign -1), best first, as LSTMVis's selection
    does. A span of 4 or more characters counts its first and last on neither side: a unit switches
    as it reads a boundary character (a closing quote)."""
    entry = probes.traces.model(body.model)
    return _ranks(probes.rank_span(entry, body.text, body.start, body.end, body.threshold, body.top))


@api.get("/neurons/{model}/{layer}/{state}/{unit}", response_model=NeuronResponse, responses=ERRORS,
         summary="One unit's dashboard from the model's atlas")
def neuron(model: str, state: str, probes: ProbesDep, layer: int = Path(ge=0),
           unit: int = Path(ge=0)) -> NeuronResponse:
    """Histogram, top and bottom contexts, quantile samples and probe matches come from the atlas
    (`rnnscope atlas MODEL`); without one they are empty and `atlas_problem` says how to build it.
    Next-character pushes (top layer h only) come from the weights when the atlas has none."""
    entry = probes.traces.model(model)
    return _neuron_json(probes.neuron(entry, layer, state, unit))


def _ranks(ranking: Ranking) -> list[UnitRank]:
    return [UnitRank(layer=u.layer, state=u.state, unit=u.unit, score=u.score, sign=u.sign, metric=u.metric,
                     roughness=_finite(u.roughness)) for u in ranking.units]


def _finite(x: float | None) -> float | None:
    """JSON has no inf: a unit that never varies has no roughness to report."""
    return round(x, 6) if x is not None and math.isfinite(x) else None


def _neuron_json(r: NeuronReport) -> NeuronResponse:
    def ctx(items: list[ContextPlace]) -> list[Context]:
        out = []
        for c in items:
            (a, b), p, lead = c.main, c.position, c.lead
            out.append(Context(position=p, before=r.text[a:p], char=r.text[p], after=r.text[p + 1:b], q=c.q,
                               value=None if c.value is None else round(c.value, 5),
                               lead=r.text[lead[0]:lead[1]] if lead else None, skipped=a - lead[1] if lead else 0))
        return out

    def pushes(items) -> list[Push] | None:
        return None if items is None else [Push(char=c, weight=w) for c, w in items]

    return NeuronResponse(
        model=r.model, layer=r.layer, state=r.state, unit=r.unit, atlas=r.atlas_chars is not None,
        atlas_problem=r.atlas_problem, atlas_chars=r.atlas_chars, min=r.minimum, max=r.maximum, mean=r.mean,
        histogram=Histogram(edges=r.edges, counts=r.hist) if r.hist else None,
        top=ctx(r.top), bottom=ctx(r.bottom), quantiles=ctx(r.quantiles), contexts_problem=r.contexts_problem,
        probes=[ProbeMatch(**p) for p in r.probes],
        pushes_up=pushes(r.pushes_up), pushes_down=pushes(r.pushes_down))


# ---- HTML: the page's "Find units" panel and the neuron page ------------------------------
@pages.get("/ui/find-units", response_class=HTMLResponse)
def find_units(
    probes: ProbesDep,
    model: str | None = None,
    text: str | None = None,
    source: str = "probe",
    probe: str = "quotes",
    pattern: str | None = None,
    start: str | None = None,
    end: str | None = None,
    threshold: str | None = None,
    top: str | None = None,
    layer: str | None = None,
    state: str | None = None,
    unit: str | None = None,
    snapshot: str | None = None,
) -> HTMLResponse:
    """The panel's results block: a ranking, or one message saying what to fix (422). `snapshot` (the main
    form's training step) ranks the units of that step's weights, the ones on screen."""
    text = DEFAULT_TEXT if text is None else text.replace("\r\n", "\n")
    try:
        registry = probes.traces.registry
        registry.refresh()
        name = model or registry.default_name(probes.traces.settings.default_model) or ""
        entry = probes.traces.model(name, parse_step(snapshot))
        n_top = whole_number(top, "top", DEFAULT_TOP, lo=1, hi=200)
        if source == "selection":
            if not (start or "").strip() and not (end or "").strip():
                raise InputError("no span is selected: drag over the text to select part of it, or focus a "
                                 "character and press shift+→", field="span")
            s, e = whole_number(start, "start", 0), whole_number(end, "end", 0)
            t = _float(threshold, "threshold", DEFAULT_THRESHOLD)
            ranking = probes.rank_span(entry, text, s, e, t, n_top)
            what = span_summary(text, s, e, t)
        elif source == "probe":
            ranking = probes.rank_probe(entry, text, probe, pattern, n_top)
            what = probe_summary(probe, ranking, pattern)
        else:
            raise InputError(f"source {source[:40]!r} is not one of: probe, selection", field="source")
    except InputError as err:
        view = RankingView(error=err.message, error_field=err.field)
        return HTMLResponse(render_block(PANEL, "results", {"r": view}), status_code=err.status)
    except Overloaded as busy:  # not the user's input: 503 + Retry-After; static/probe.js shows it in the panel
        view = RankingView(error=busy.message, error_field="busy")
        return HTMLResponse(render_block(PANEL, "results", {"r": view}), status_code=busy.status,
                            headers={"Retry-After": str(busy.retry_after)})
    view = ranking_view(entry.name, ranking, what, current_unit(layer, state, unit))
    return HTMLResponse(render_block(PANEL, "results", {"r": view}))


@pages.get("/neuron/{model}/{layer}/{state}/{unit}", response_class=HTMLResponse)
def neuron_html(model: str, layer: str, state: str, unit: str, probes: ProbesDep) -> HTMLResponse:
    try:
        entry = probes.traces.model(model)
        report = probes.neuron(entry, whole_number(layer, "layer", 0), state, whole_number(unit, "unit", 0))
    except InputError as err:
        # A unit that does not exist is a page that does not exist: 404, with the reason.
        return HTMLResponse(render_page("neuron.html", {"page": None, "error": err.message}), status_code=404)
    page = neuron_page(report, entry.hidden)
    return HTMLResponse(render_page("neuron.html", {"page": page, "error": ""}))


def _float(raw: str | None, name: str, default: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw.strip())
    except ValueError:
        raise InputError(f"{name} must be a number, got {raw[:40]!r}", field=name) from None


router = APIRouter()
router.include_router(api)
router.include_router(pages)
