"""Routes of the dynamics views: HTML pages and their /api/v1 JSON (and SSE) twins. Thin:
read the request, let app.dynamics.service / app.dynamics.views do the work, render or shape.

Model work runs in plain `def` routes (the threadpool); only the event stream is `async`, and
it steps the model in the threadpool too.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from app.core.errors import ErrorDetail
from app.deps import DynamicsDep, StreamsDep
from app.dynamics.results import SATURATION_HIGH, SATURATION_LOW, GenerationPlan
from app.dynamics.schemas import (
    EVENT_STREAM_CONTENT,
    CounterfactualRequest,
    CounterfactualResponse,
    EventStreamResponse,
    GateSaturation,
    GradientsRequest,
    GradientsResponse,
    InterveneRequest,
    InterveneResponse,
    LayerSaturation,
    ModelFlow,
    SaturationResponse,
    ToyResponse,
)
from app.dynamics.service import DynamicsService
from app.dynamics.watch import WatchGroup, WatchSplit
from app.dynamics.views.form import Base
from app.ui.urls import SHARED
from app.dynamics.views.generate import build_generate
from app.dynamics.views.gradients import build_gradients
from app.dynamics.views.intervene import build_intervene
from app.dynamics.views.saturation import build_saturation
from app.dynamics.views.toy import build_toy, parse_inputs
from app.http.heavy import StreamTicket
from app.trace.schemas import predictions, rounded
from app.ui.render import render_block, render_page, wants_partial

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["dynamics"])
router = APIRouter()

ERRORS = {
    404: {"model": ErrorDetail, "description": "unknown model"},
    413: {"model": ErrorDetail, "description": "text, length or number of steps over the limit"},
    422: {"model": ErrorDetail, "description": "bad input: empty text, out-of-range position/layer/unit, "
                                               "non-finite number, state that cannot be clamped, malformed JSON"},
}
def _page(request: Request, template: str, page: Base) -> HTMLResponse:
    partial = wants_partial(request)
    page.self_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    context = {"page": page, "partial": partial, "nav_query": page.nav_query, "nav_active": page.active}
    headers = {"Vary": "HX-Request"}
    if partial:
        # htmx swaps 2xx and 422 only; "busy" (503) still has to replace the "computing…" placeholder.
        status = 200 if page.status == 503 else page.status
        if page.status == 503:
            headers["Retry-After"] = "5"
        return HTMLResponse(render_block(template, "result", context), status_code=status, headers=headers)
    return HTMLResponse(render_page(template, context), status_code=page.status, headers=headers)


def _carried_from_referer(request: Request) -> RedirectResponse | None:
    """A nav link from another rnnscope view (sent with its URL as Referer) opens this view on
    the same model, unit and text: the current page's state lives in its URL, which htmx keeps
    up to date, so this also works after in-place updates. Only a bare request is redirected."""
    if request.url.query:
        return None
    ref = urlsplit(request.headers.get("referer", ""))
    if not ref.query or ref.netloc != request.headers.get("host", ""):
        return None
    q = parse_qs(ref.query, keep_blank_values=True)
    carried = {k: q[k][0] for k in SHARED if k in q}
    if not carried:
        return None
    return RedirectResponse(request.url.path + "?" + urlencode(carried), status_code=303)


PageBuilder = Callable[[DynamicsService, Request], Base]

# path → (template, how its page is built from the service and the request); every view page
# is served the same way: a bare nav link carries the previous view's state, the rest renders.
VIEW_PAGES: dict[str, tuple[str, PageBuilder]] = {
    "/generate": ("dynamics_generate.html", lambda d, r: build_generate(d, r.query_params)),
    "/gradients": ("dynamics_gradients.html",
                   lambda d, r: build_gradients(d, r.query_params, r.query_params.getlist, wants_partial(r))),
    "/toy": ("dynamics_toy.html", lambda d, r: build_toy(d, r.query_params)),
    "/saturation": ("dynamics_saturation.html", lambda d, r: build_saturation(d, r.query_params, wants_partial(r))),
    "/intervene": ("dynamics_intervene.html", lambda d, r: build_intervene(d, r.query_params, wants_partial(r))),
}


def _add_view_page(path: str, template: str, build: PageBuilder) -> None:
    def view_page(request: Request, dynamics: DynamicsDep):
        return _carried_from_referer(request) or _page(request, template, build(dynamics, request))

    pages.add_api_route(path, view_page, methods=["GET"], response_class=HTMLResponse,
                        name=path.strip("/") + "_page")


for _path, (_template, _build) in VIEW_PAGES.items():
    _add_view_page(_path, _template, _build)


# ------------------------------------------------------------------ JSON API


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _floats(a, nullable: bool = True) -> list:
    """JSON-ready floats: NaN / inf become null (JSON has neither)."""
    vals = np.asarray(a, dtype=np.float64).tolist()
    return [x if math.isfinite(x) else None for x in vals] if nullable else vals


@api.post("/gradients", response_model=GradientsResponse, responses=ERRORS,
          summary="Gradient flow and input saliency back from one position")
def gradients(body: GradientsRequest, dynamics: DynamicsDep) -> GradientsResponse:
    """For each model: ||dh_T/dh_t||_F of its top layer and the saliency ||d log p(next char at T)/d x_t||
    for t = T - lookback .. T. One backward pass per model: exact up to 128 units, estimated from
    32 fixed random probes above (`jacobian_probes`); cached per model version."""
    entries = dynamics.compare_models(body.models)
    position = dynamics.default_position(body.text) if body.position is None else body.position
    results = dynamics.gradients(entries, body.text, position, body.lookback)
    flows = [ModelFlow(model=r.entry.name, cell=r.entry.cell, layer=r.flow.layer, position=r.flow.position,
                       start=r.flow.start, target=r.target, jacobian_norm=_floats(r.flow.jacobian_norm, False),
                       jacobian_probes=r.flow.probes,
                       saliency=_floats(r.flow.saliency, False), seconds=round(r.seconds, 3), cached=r.cached)
             for r in results]
    return GradientsResponse(text=body.text, position=position, lookback=body.lookback, flows=flows)


@api.get("/toy", response_model=ToyResponse, responses={422: ERRORS[422]},
         summary="The notes' scalar RNN h_t = tanh(w_hh h_(t-1) + w_xh x_t + b)")
def toy(dynamics: DynamicsDep, w_hh: float = 3.0, w_xh: float = 2.0, b: float = 1.0, h0: float = 0.0,
        xs: str = Query("1 0 0", description="inputs x_1..x_T, separated by spaces or commas")) -> ToyResponse:
    """States h_t and the gradient dh_T/dh_t for every t: watch it explode or vanish as w_hh moves."""
    res = dynamics.toy(w_hh, w_xh, b, parse_inputs(xs), h0)
    return ToyResponse(w_hh=res.w_hh, w_xh=res.w_xh, b=res.b, h0=res.h0, xs=res.xs, h=res.run.h, local=res.local,
                       dhT_dht=_floats(res.run.dhT_dht), dhT_dh1=_floats([res.run.dhT_dh1])[0])


@api.get("/saturation/{model}", response_model=SaturationResponse, responses=ERRORS,
         summary="Gate saturation per unit on held-out text")
def saturation(model: str, dynamics: DynamicsDep, text: str | None = Query(
        None, description="measured on this only when the server has no held-out text for the model "
                          "(`held_out` is then false)")) -> SaturationResponse:
    """Each gate unit's fraction of steps below 0.1 (left-saturated) and above 0.9 (right-saturated),
    on the first 20,000 characters of the model's held-out corpus text: rebuilt from the corpus source
    as `rnnscope corpus` builds it (the same deterministic split) and kept in memory. Cached per model version.
    A corpus whose source is not installed, and no `text`: 503 saying how to install it."""
    entry = dynamics.model(model)
    res = dynamics.saturation(entry, text)
    layers = [LayerSaturation(layer=k, gates={g: GateSaturation(left=_floats(d["left"], False),
                                                                right=_floats(d["right"], False))
                                              for g, d in per.items()})
              for k, per in sorted(res.layers.items())]
    return SaturationResponse(model=entry.name, cell=entry.cell, source=res.source, held_out=res.held_out,
                              warning=res.warning or None, chars=res.chars,
                              low=SATURATION_LOW, high=SATURATION_HIGH, layers=layers, cached=res.cached)


@api.post("/intervene", response_model=InterveneResponse, responses=ERRORS,
          summary="Clamp one unit of h (or c) from a position and compare the predictions")
def intervene(body: InterveneRequest, dynamics: DynamicsDep) -> JSONResponse:
    """Per-character surprisal, p(watch next) and the `topk` likeliest next characters with the unit free
    (before) and clamped (after), and per position the `topk` largest changes in next-character probability.
    All from the same two runs; the result is cached per model version."""
    entry = dynamics.model(body.model)
    res = dynamics.intervention(entry, body.text, body.layer, body.state, body.unit, body.value, body.start,
                           body.watch or None, body.topk)
    iv = res.result
    chars = entry.checkpoint.vocab.chars
    # Built as plain JSON (as the trace API does): per-position top-k lists are too many for pydantic to
    # re-validate quickly; the shape is InterveneResponse's, which the OpenAPI schema documents.
    return JSONResponse({
        "model": entry.name, "length": len(body.text), "layer": body.layer, "state": body.state, "unit": body.unit,
        "value": float(body.value), "start": body.start, "watch": res.watch,
        "surprisal_before": _floats(iv.surprisal_before), "surprisal_after": _floats(iv.surprisal_after),
        "prob_before": _floats(iv.prob_before), "prob_after": _floats(iv.prob_after),
        "value_before": _floats(iv.value_before, False), "value_after": _floats(iv.value_after, False),
        "mean_bits_before": _finite(res.mean_before), "mean_bits_after": _finite(res.mean_after), "topk": iv.topk,
        "topk_before": predictions(chars, iv.topk_ids_before, iv.topk_probs_before, 6),
        "topk_after": predictions(chars, iv.topk_ids_after, iv.topk_probs_after, 6),
        "top_changes": _changes(chars, iv.change_ids, iv.change_before, iv.change_after),
        "watch_summary": _watch_summary(res.watch_split),
    })


def _watch_summary(split: WatchSplit | None) -> dict | None:
    if split is None:
        return None

    def group(g: WatchGroup) -> dict:
        return {"group": g.key, "label": g.label, "places": g.count,
                "mean_p_before": _rounded_or_none(g.mean_before), "mean_p_after": _rounded_or_none(g.mean_after)}

    return {"split": split.rule, "all": group(split.all), "groups": [group(g) for g in split.groups]}


def _rounded_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def _round(a: np.ndarray | None) -> list:
    return rounded(a, 6)


def _changes(chars: list[str], ids: np.ndarray | None, before: np.ndarray | None,
             after: np.ndarray | None) -> list[list[dict]] | None:
    """Per position [{char, before, after, change}], largest |change| first."""
    if ids is None or before is None or after is None:
        return None
    change = _round(np.asarray(after, np.float64) - np.asarray(before, np.float64))
    return [[{"char": chars[i], "before": b, "after": a, "change": d} for i, b, a, d in zip(ri, rb, ra, rd)]
            for ri, rb, ra, rd in zip(ids.tolist(), _round(before), _round(after), change)]


@api.post("/counterfactual", response_model=CounterfactualResponse, responses=ERRORS,
          summary="How one unit changes when the text is edited")
def counterfactual(body: CounterfactualRequest, dynamics: DynamicsDep) -> CounterfactualResponse:
    """Both texts are traced; each edited character's value is compared with its aligned original
    character (a shortest edit script after the common prefix and suffix, models.dynamics.align). Characters
    with no counterpart get null."""
    entry = dynamics.model(body.model)
    res = dynamics.counterfactual(entry, body.original, body.edited, body.layer, body.state, body.unit)
    cf = res.result
    return CounterfactualResponse(model=entry.name, layer=body.layer, state=body.state, unit=body.unit,
                                  edited=cf.edited, delta=cf.delta, before=cf.before, after=cf.after,
                                  unaligned=res.unaligned)


STREAM_DOC = {
    200: {
        "description": "text/event-stream: `meta` (seed, scale, unit), one `char` event per sampled character "
                       "({i, ch, v: the unit's value after it, pos: its position on the colour scale}), then `done` "
                       "({n, text, seed, seconds}) or `fail` ({detail}).",
        "content": EVENT_STREAM_CONTENT,
    },
    # the refusals are JSON: said outright, as the route's own media type (text/event-stream) is not theirs
    **{status: {"description": doc["description"],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}}
       for status, doc in ERRORS.items()},
}


def _plan(svc: DynamicsService, model: str, text: str, n: int, temperature: float, seed: int | None,
          layer: int | None, state: str | None, unit: int | None) -> GenerationPlan:
    entry = svc.model(model)
    d_layer, d_state, d_unit = svc.default_unit(entry)
    return svc.plan_generation(entry.name, text, n, temperature, seed, d_layer if layer is None else layer,
                               state or d_state, d_unit if unit is None else unit)


@api.get("/generate/stream", response_class=EventStreamResponse, responses=STREAM_DOC,
         summary="Sample characters, streamed as server-sent events, each with the chosen unit's value")
async def generate_stream(
    dynamics: DynamicsDep, streams: StreamsDep,
    model: str = Query(..., min_length=1, max_length=128),
    text: str = Query(..., description="the prime text the model reads first"),
    n: int = Query(300, description="characters to sample, 1 to 2,000"),
    temperature: float = Query(0.8, description="0 = greedy (argmax); higher = more random"),
    seed: int | None = Query(None, description="the same seed (and inputs) reproduce the same text"),
    layer: int | None = Query(None, description="the unit to report: layer (default: the card's quote unit or 0)"),
    state: str | None = Query(None, description="the unit to report: state (default h)"),
    unit: int | None = Query(None, description="the unit to report: index (default 0)"),
) -> StreamingResponse:
    ticket = streams.take()  # at most max_streams at once: one more is a 503 now
    try:
        plan = await run_in_threadpool(_plan, dynamics, model, text, n, temperature, seed, layer, state, unit)
        _, scale = await run_in_threadpool(dynamics.prime_scale, plan)  # before the stream: a refusal is still a 4xx/503
    except BaseException:
        ticket.release()
        raise
    events = await run_in_threadpool(dynamics.generation_events, plan, scale)  # takes a model slot: busy is a 503 here
    stream = _in_threadpool(events, ticket)
    ticket.bind(stream)  # released when the stream ends, or is dropped unstarted
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _in_threadpool(events: Iterator[str], ticket: StreamTicket | None = None) -> AsyncIterator[str]:
    """Step the model in the threadpool. When the reader goes away Starlette stops iterating;
    closing the generator then ends the run (unless a step is still running in its thread)."""
    try:
        async for chunk in iterate_in_threadpool(events):
            yield chunk
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # "generator already executing": that step finishes, no further one starts
                pass
        if ticket is not None:
            ticket.release()


router.include_router(pages)
router.include_router(api)
