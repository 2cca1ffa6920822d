"""The trace feature's routes. Thin: read the query or validate the body, call the service, shape.

- pages: the HTML page at / (app.trace.views builds it; render the page or a block);
- router: JSON under /api/v1 (in OpenAPI); health: /healthz.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from markupsafe import escape

from app.core.errors import ErrorDetail, InputError
from app.core.registry import ModelEntry
from app.core.slots import Overloaded, WithoutModelRuns
from app.deps import RegistryDep, ResponsesDep, TracesDep
from app.http.forms import read_form
from app.http.heavy import HEAVY_VALUES, ReadyResponse, accepts_gzip, encoded, json_chunks
from app.probe.views import find_units_panel
from app.trace.schemas import (Health, ModelInfo, SnapshotInfo, SnapshotTimeline, SnapshotUnit, TraceRequest, TraceResponse,
                               prediction_pieces, predictions, rounded, rounded_pieces)
from app.trace.service import TraceResult
from app.trace.views import FIELDS, build_page
from app.ui.levels import levels_css
from app.ui.render import render_block, render_page, wants_partial

router = APIRouter(prefix="/api/v1", tags=["api"])
health = APIRouter(tags=["ops"])

ERRORS = {
    404: {"model": ErrorDetail, "description": "unknown model, or a snapshot step the model has not got"},
    413: {"model": ErrorDetail, "description": "text or requested values over the limit"},
    422: {"model": ErrorDetail, "description": "bad input: empty text, layer/unit out of range, missing state, malformed JSON"},
}


@router.get("/models", response_model=list[ModelInfo], summary="Installed models")
def list_models(traces: TracesDep) -> list[ModelInfo]:
    traces.registry.refresh()
    return [_info(e) for e in traces.registry.entries.values()]


@router.get("/models/{model}/snapshots", response_model=SnapshotTimeline, responses={404: ERRORS[404]},
            summary="A model's training snapshots")
def model_snapshots(model: str, traces: TracesDep) -> SnapshotTimeline:
    """Each snapshot's step, characters seen, validation bits/char, fixed-prime sample and best probe units."""
    entry = traces.model(model)
    snaps = [SnapshotInfo(step=s.step, chars_seen=s.chars_seen, val_bpc=s.val_bpc, training_seconds=s.training_seconds,
                          sample=s.sample, probe_units=_probe_units(s.probe_units)) for s in entry.timeline.snapshots]
    return SnapshotTimeline(model=entry.name, prime=entry.timeline.prime, snapshots=snaps)


def _probe_units(found: dict) -> dict[str, SnapshotUnit]:
    """The timeline's recorded units that are well formed (a hand-edited entry is left out, not a 500)."""
    out = {}
    for probe, u in found.items():
        try:
            out[str(probe)] = SnapshotUnit.model_validate(u)
        except ValueError:
            continue
    return out


@router.post("/trace", response_model=TraceResponse, responses=ERRORS, summary="Trace text through a model")
def trace(body: TraceRequest, request: Request, traces: TracesDep, responses: ResponsesDep) -> JSONResponse:
    """Per-position values of the requested layers, states and units; omitted ones mean all.

    Position t holds the state after reading character t. Values are float16-precise.
    """
    entry = traces.model(body.model, body.snapshot)
    traces.check_text(body.text)
    layers = None if body.layer is None else [body.layer]
    states = None if body.state is None else [body.state]
    if layers is not None:
        traces.check_layer(entry, layers[0])
    if states is not None:
        traces.check_state(entry, states[0])
    units = None if body.units is None else list(dict.fromkeys(body.units))
    if units is not None:
        if not units:
            raise InputError("units is an empty list: omit it for every unit, or name at least one", field="unit")
        traces.check_units(entry, units)
    n_values = (len(body.text) * (entry.layers if layers is None else 1) * (len(entry.states) if states is None else 1)
                * (entry.hidden if units is None else len(units)))
    limit = traces.settings.max_api_values
    if n_values > limit:
        raise InputError(
            f"this request asks for {n_values:,} values; the limit is {limit:,}: name one layer, one state "
            "or fewer units, or send a shorter text",
            status=413,
        )
    result = traces.api_trace(entry, body.text, layers, states, units, body.topk)
    blocks = traces.api_blocks(entry, result.trace, layers, states, units)
    if n_values + 2 * len(body.text) * min(body.topk, entry.vocab_size) < HEAVY_VALUES:
        return JSONResponse(_trace_json(entry, body, result, blocks, units))
    # Tens of MB of JSON: built here in the worker thread, in pieces, on a response slot; gzipped here too.
    gzip_ok = accepts_gzip(request)
    key = (entry.name, entry.version, body.text, body.layer, body.state, None if units is None else tuple(units),
           body.topk, result.cached, gzip_ok)
    content, encoding = responses.build(key, lambda: encoded(
        json_chunks(_trace_json(entry, body, result, blocks, units, pieces=True)), gzip_ok))
    return ReadyResponse(content, encoding)


@health.get("/healthz", response_model=Health, summary="Liveness: cheap, runs no model")
def healthz(registry: RegistryDep) -> Health:
    return Health(status="ok", models=len(registry.entries))


def _info(e: ModelEntry) -> ModelInfo:
    return ModelInfo(name=e.name, cell=e.cell, layers=e.layers, hidden=e.hidden, vocab_size=e.vocab_size,
                     val_bpc=e.val_bpc, corpus=e.corpus, states=list(e.states), imported=e.card.get("imported") is True,
                     snapshots=e.steps)


def _trace_json(entry: ModelEntry, body: TraceRequest, result: TraceResult, blocks: dict, units,
                pieces: bool = False) -> dict:
    """The response; with `pieces`, its big arrays are Pieces for app.http.heavy.json_chunks to write a few rows at a time."""
    trace = result.trace
    values = (lambda a: rounded_pieces(a, 4)) if pieces else (lambda a: rounded(a, 4))
    out_layers = [{"layer": k, "states": {s: values(a) for s, a in per.items()}} for k, per in blocks.items()]
    topk = None
    k_top = min(body.topk, entry.vocab_size)
    if k_top and trace.topk_ids is not None:
        chars, ids, probs = entry.checkpoint.vocab.chars, trace.topk_ids[:, :k_top], trace.topk_probs[:, :k_top]
        topk = prediction_pieces(chars, ids, probs, 4) if pieces else predictions(chars, ids, probs, 4)
    surprisal = [None if not np.isfinite(x) else x for x in rounded(trace.surprisal_bits, 4)]
    return {
        "model": entry.name,
        "text": body.text,
        "length": len(body.text),
        "units": units,
        "layers": out_layers,
        "topk": topk,
        "surprisal_bits": surprisal,
        "unknown_positions": list(trace.unknown),
        "cached": result.cached,
        "snapshot": entry.snapshot,
    }


# ---- the page at / ---------------------------------------------------------------------------
pages = APIRouter(include_in_schema=False)
PAGE = "index.html"


@pages.get("/ui/levels.css")
def levels_stylesheet() -> Response:
    """The main view's colour classes, written from app.ui.scale (see app.ui.levels)."""
    return Response(levels_css(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@pages.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    traces: TracesDep,
    model: str | None = None,
    layer: str | None = None,
    state: str | None = None,
    unit: str | None = None,
    mode: str | None = None,
    text: str | None = None,
    layer2: str | None = None,
    state2: str | None = None,
    unit2: str | None = None,
    probe: str | None = None,
    pattern: str | None = None,
    snapshot: str | None = None,
) -> HTMLResponse:
    params = {"model": model, "layer": layer, "state": state, "unit": unit, "mode": mode, "text": text,
              "layer2": layer2, "state2": state2, "unit2": unit2, "snapshot": snapshot, "probe": probe}
    headers = {"Vary": "HX-Request"}
    try:
        page = build_page(traces, params)
        status = page.status
    except Overloaded as busy:  # no model slot in time: the form as sent, the reason beside the text
        page = build_page(WithoutModelRuns(traces, busy), params)
        status = busy.status
        headers["Retry-After"] = str(busy.retry_after)
    # The Find units panel's probe and pattern are part of the view (URL, share links); the panel is
    # outside the htmx-swapped view block, so only a full page (load, reload, back, /s/{id}) reads them.
    context = {"page": page, "fields": FIELDS, "find": find_units_panel(probe, pattern)}
    if not wants_partial(request):
        return HTMLResponse(render_page(PAGE, context), status_code=status, headers=headers)
    if page.errors:
        # Keep the view the user has; put each message beside its control; leave the URL alone.
        # (On success htmx pushes the request URL; static/app.js turns text-only changes into replaces.)
        headers.update({"HX-Reswap": "none", "HX-Push-Url": "false"})
        return HTMLResponse(render_block(PAGE, "errors_oob", context), status_code=status, headers=headers)
    body = render_block(PAGE, "view", context) + render_block(PAGE, "errors_oob", context)
    if page.view is not None:
        body = f"<title>{escape(page.view.title)}</title>" + body
    return HTMLResponse(body, headers=headers)



# The form's fields that make a view; the Find units panel's probe and pattern do not change its colours
# (the probe only picks which recorded unit the time-lapse chart follows).
VIEW_FIELDS = ("model", "layer", "state", "unit", "mode", "text", "layer2", "state2", "unit2", "snapshot", "probe")


@pages.post("/ui/paint")
async def paint(request: Request, traces: TracesDep) -> JSONResponse:
    """A unit, layer, state or compare change of the view on screen: the new values in a compact form
    (float16, base64) and the few parts of the view that name the unit, for static/app.js to repaint the
    spans it has instead of swapping ~85 bytes of HTML a character. The form's fields in, as GET / reads
    them; `errors` always maps every field to its message ("" for none), so stale messages are cleared.
    A training-step change (`snapshot`) is a repaint too: the same text on other weights. With
    `predictions=1` the answer carries the surprisal and guesses (`preds`) the tooltip shows, which
    other weights change, and always the time-lapse panel (`timeline`, HTML) and `snapshot`."""
    try:
        form = await read_form(request, traces.settings.max_chars, field="text")
    except InputError as e:
        return _paint_refused({e.field: e.message}, e.status)
    params = {k: form.get(k) for k in VIEW_FIELDS}
    try:
        page = await run_in_threadpool(build_page, traces, params, True, False, form.get("predictions") == "1")
    except Overloaded as busy:
        return _paint_refused({"text": busy.message}, busy.status, {"Retry-After": str(busy.retry_after)})
    if page.errors or page.view is None:
        return _paint_refused(page.errors, 422)
    view = page.view
    if not view.painted:
        return _paint_refused({"mode": "only a unit's colours can be repainted: surprisal mode swaps the view"}, 422)
    context = {"page": page, "fields": FIELDS}
    top = render_block(PAGE, "view_top", context)
    extra = {"snapshot": view.snapshot, "timeline": render_block(PAGE, "timeline", context)} if view.snapshot else {}
    if view.preds:
        extra["preds"] = view.preds
    return JSONResponse({"errors": _all_fields({}), "painted": view.painted, "title": view.title, "top": top,
                         "stats": " · ".join(view.stats), **view.paint, **extra})


def _all_fields(errors: dict[str, str]) -> dict[str, str]:
    return {**{f: "" for f in FIELDS}, **errors}


def _paint_refused(errors: dict[str, str], status: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"errors": _all_fields(errors)}, status_code=status, headers=headers)
