"""Routes for matching units across models: POST /api/v1/match and the /compare page. Thin: validate,
call app.compare.service (through app.compare.views for the page), shape or render."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from models.ranking import UnitScore

from app.compare.schemas import MatchRequest, MatchResponse, MatchUnit, ModelMatch
from app.compare.service import Match
from app.compare.views import FIELDS, build_compare
from app.core.errors import ErrorDetail
from app.core.selection import UnitRef
from app.deps import CompareDep
from app.ui.render import render_block, render_page, wants_partial

api = APIRouter(prefix="/api/v1", tags=["compare"])
pages = APIRouter(include_in_schema=False)
PAGE = "compare.html"

ERRORS = {
    404: {"model": ErrorDetail, "description": "unknown model (the anchor's or one of `models`)"},
    413: {"model": ErrorDetail, "description": "text over the length limit"},
    422: {"model": ErrorDetail, "description": "bad input: empty text, no or too many models, both or neither of "
                                               "anchor and probe, a unit that does not exist, an anchor constant on "
                                               "this text, an unknown probe or bad regex, malformed JSON"},
}


@api.post("/match", response_model=MatchResponse, responses=ERRORS, summary="Match a unit across models")
def match(body: MatchRequest, compare: CompareDep) -> MatchResponse:
    """For each model, the units whose activation on this text correlates most with the anchor unit's
    (|Pearson r|, any layer and state; `r` keeps the sign), best first, each (layer, unit) once at its
    best state. Or, with `probe`, each model's own best units for that probe. One numeric-probe ranking
    per model beyond the traces, which come from the same cache as the page's."""
    entries = compare.models(body.models)
    if body.anchor is not None:
        a = body.anchor
        matches = compare.match_unit(body.text, compare.traces.model(a.model), UnitRef(a.layer, a.state, a.unit),
                                     entries, body.top)
    else:
        matches = compare.match_probe(body.text, body.probe or "", body.pattern, entries, body.top)
    return MatchResponse(length=len(body.text), anchor=body.anchor, probe=body.probe,
                         matches=[_model_match(m) for m in matches])


def _model_match(m: Match) -> ModelMatch:
    return ModelMatch(model=m.entry.name, units=[_unit(u) for u in m.units], scored=m.scored, unseen=len(m.unseen),
                      note=m.note, cached=m.cached, trace_seconds=round(m.trace_seconds, 4),
                      rank_seconds=round(m.rank_seconds, 4))


def _unit(u: UnitScore) -> MatchUnit:
    r = round(u.sign * u.score, 6) if u.metric == "pearson" else None
    return MatchUnit(layer=u.layer, state=u.state, unit=u.unit, r=r, score=u.score, sign=1 if u.sign > 0 else -1,
                     metric="pearson" if u.metric == "pearson" else "auc")


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, compare: CompareDep) -> HTMLResponse:
    """The page, or (htmx) its result block with every field's message refreshed out of band. A busy
    server is a 503 with the result block saying so (static/compare.js swaps it in)."""
    q = request.query_params
    page = build_compare(compare, q, q.getlist)
    page.self_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    partial = wants_partial(request)
    context = {"page": page, "partial": partial, "fields": FIELDS, "nav_query": page.nav_query,
               "nav_active": "compare"}
    headers = {"Vary": "HX-Request"}
    if page.status == 503:
        headers["Retry-After"] = str(page.retry_after)
    if partial:
        return HTMLResponse(render_block(PAGE, "result", context), status_code=page.status, headers=headers)
    return HTMLResponse(render_page(PAGE, context), status_code=page.status, headers=headers)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
