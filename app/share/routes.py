"""Share links (/api/v1/share, /share, /s/{id}), their preview image, and downloads (/export.*).

Thin: parse, call ShareService or app.share.exports, render. A share page is the main page exactly as
app.trace.routes.index renders it for the stored params (its params and template context keep growing),
with the link-preview tags and a one-line banner added at two fixed points of base.html.
"""

from __future__ import annotations

import inspect
import json
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from app.core.errors import ErrorDetail, InputError
from app.core.slots import Overloaded
from app.deps import SharesDep, TracesDep, shares_of
from app.http.forms import read_form
from app.http.guards import client_key
from app.share.exports import export_data, to_csv, to_html, to_json
from app.share.preview import PNG_CACHE, preview_png, preview_svg
from app.share.schemas import ShareLink, ShareRequest
from app.share.service import ShareService, ShareUnavailable
from app.trace import routes as trace_routes
from app.trace.service import TraceService
from app.ui.render import render_page
from app.ui.urls import absolute_url, base_url

router = APIRouter()
api = APIRouter(prefix="/api/v1", tags=["share"])
html = APIRouter(include_in_schema=False)

ERRORS = {
    404: {"model": ErrorDetail, "description": "unknown model, or no such link"},
    410: {"model": ErrorDetail, "description": "the stored view is damaged"},
    413: {"model": ErrorDetail, "description": "text over the limit"},
    422: {"model": ErrorDetail, "description": "a setting the page would refuse, or a malformed one"},
    503: {"model": ErrorDetail, "description": "the share database is unavailable, locked or read-only"},
}
CREATE_ERRORS = {
    **ERRORS,
    429: {"model": ErrorDetail, "description": "too many links from this address (RNNSCOPE_SHARE_RATE_LIMIT a "
                                               "minute); see Retry-After",
          "headers": {"Retry-After": {"description": "seconds until a link may be made again",
                                      "schema": {"type": "integer"}}}},
    507: {"model": ErrorDetail, "description": "the share store is full (RNNSCOPE_SHARE_STORE_BYTES): a view "
                                               "already shared still gets its link"},
}


def _link(request: Request, sid: str) -> str:
    return absolute_url(request, "share_page", sid=sid)


def _admit(request: Request, shares: ShareService) -> None:
    """One token of the client's share-creation bucket, or Overloaded (429 + Retry-After)."""
    shares.admit(client_key(request.scope))


# ---- JSON API ---------------------------------------------------------------------------
@api.post("/share", response_model=ShareLink, responses=CREATE_ERRORS, summary="Make a short link to a view")
def create_share(body: ShareRequest, request: Request, shares: SharesDep) -> ShareLink:
    """Checks the view as the page would, stores it and returns its link. Same view, same link.
    Each client address may make RNNSCOPE_SHARE_RATE_LIMIT links a minute (429 past it), and the store holds
    at most RNNSCOPE_SHARE_STORE_BYTES (507 for a new view past it)."""
    _admit(request, shares)
    shared = shares.create(body.model_dump(exclude_none=True))
    return ShareLink(id=shared.id, url=_link(request, shared.id), view=shared.view)


@api.get("/share/{sid}", response_model=ShareLink, responses=ERRORS, summary="Read a shared view's settings")
def read_share(sid: str, request: Request, shares: SharesDep) -> ShareLink:
    view = shares.get(sid, count_open=False)
    return ShareLink(id=sid, url=_link(request, sid), view=view)


# ---- the page's Share button (htmx) -----------------------------------------------------
@html.post("/share", response_class=HTMLResponse)
async def share_button(request: Request) -> HTMLResponse:
    """The form's fields in, a small partial out: the link and a copy button, or why there is none."""
    try:
        shares = shares_of(request)  # not ready is a message in the partial, as every other refusal
        _admit(request, shares)
        params = await read_form(request, shares.traces.settings.max_chars, field="share")
        shared = await run_in_threadpool(shares.create, params)
    except InputError as e:
        return HTMLResponse(render_page("share_result.html", {"error": e.message}), status_code=e.status)
    except Overloaded as e:
        return HTMLResponse(render_page("share_result.html", {"error": e.message}), status_code=e.status,
                            headers={"Retry-After": str(e.retry_after)})
    return HTMLResponse(render_page("share_result.html", {"url": _link(request, shared.id)}))


# ---- the link itself --------------------------------------------------------------------
@html.get("/s/{sid}", response_class=HTMLResponse, name="share_page")
def share_page(sid: str, request: Request) -> HTMLResponse:
    try:
        shares = shares_of(request)  # not ready is the share error page, as every other refusal
        params = shares.get(sid)
    except InputError as e:
        context = {"status": e.status, "message": e.message, "unavailable": isinstance(e, ShareUnavailable)}
        return HTMLResponse(render_page("share_error.html", context), status_code=e.status)
    page = _index_page(request, shares, params)
    installed = shares.traces.registry.entries
    info = {"sid": sid, "url": _link(request, sid), "preview": absolute_url(request, "share_preview_png", sid=sid),
            "title": _title(params), "description": _description(params.get("text", "")),
            "model": params.get("model", ""), "missing_model": params.get("model") not in installed,
            "no_models": not installed, "refused": page.status_code != 200, "text": params.get("text", "")}
    body = page.body.decode("utf-8")
    body = _insert(body, "</head>", render_page("share_meta.html", {"share": info}), before=True)
    body = _insert(body, "<main>", render_page("share_banner.html", {"share": info}), before=False)
    return HTMLResponse(body, headers={"Vary": "HX-Request"})


def _index_page(request: Request, shares: ShareService, params: dict[str, str]) -> HTMLResponse:
    """trace_routes.index for these params: every query param it reads is passed by name (absent ones as None)."""
    names = [n for n in inspect.signature(trace_routes.index).parameters if n not in ("request", "traces")]
    return trace_routes.index(request, shares.traces, **{n: params.get(n) for n in names})


def _insert(body: str, marker: str, fragment: str, before: bool) -> str:
    """Add a fragment at a tag that base.html writes exactly once (user text is escaped, so it cannot forge it)."""
    at = body.find(marker)
    if at < 0:
        return body
    at = at if before else at + len(marker)
    return body[:at] + fragment + body[at:]


def _title(params: dict[str, str]) -> str:
    if params.get("mode") == "surprisal":
        what = "surprisal"
    else:
        what = f"layer {params.get('layer', '?')} · {params.get('state', '?')} · unit {params.get('unit', '?')}"
    return f"{params.get('model', '?')} · {what}"


def _description(text: str, limit: int = 200) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@html.get("/s/{sid}/preview.svg", name="share_preview")
def share_preview(sid: str, shares: SharesDep) -> Response:
    """The link-preview card; cached for an hour (a retrained model may recolour it)."""
    params = shares.get(sid, count_open=False)
    data = export_data(shares.traces, params)
    svg = preview_svg(data, _title(params))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=3600"})


@html.get("/s/{sid}/preview.png", name="share_preview_png")
def share_preview_png(sid: str, shares: SharesDep) -> Response:
    """The same card as a PNG (what og:image points at: most sites do not render SVG previews). Drawn once
    per view and model version, then served from PNG_CACHE; cached for an hour like the SVG."""
    params = shares.get(sid, count_open=False)
    registry = shares.traces.registry
    registry.refresh()
    entry = registry.entries.get(params.get("model", ""))
    key = (sid, str(entry.path), entry.version) if entry is not None else None
    png = PNG_CACHE.get(key) if key is not None else None
    if png is None:  # export_data refuses a missing model or a stale view with the page's own message
        data = export_data(shares.traces, params)

        def draw() -> bytes:
            return preview_png(data, _title(params))

        png = PNG_CACHE.get_or_draw(key, draw) if key is not None else draw()
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


# ---- downloads --------------------------------------------------------------------------
def _download(request: Request, traces: TraceService, ext: str):
    data = export_data(traces, dict(request.query_params))
    return data, {"Content-Disposition": f'attachment; filename="{data.filename(ext)}"', "Cache-Control": "no-store"}


@html.get("/export.html")
def export_html(request: Request, traces: TracesDep) -> Response:
    data, headers = _download(request, traces, "html")
    return HTMLResponse(to_html(data, base_url(request)), headers=headers)


@html.get("/export.csv")
def export_csv(request: Request, traces: TracesDep) -> Response:
    data, headers = _download(request, traces, "csv")
    return Response(to_csv(data), media_type="text/csv; charset=utf-8", headers=headers)


@html.get("/export.json")
def export_json(request: Request, traces: TracesDep) -> Response:
    data, headers = _download(request, traces, "json")
    body = json.dumps(to_json(data), ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json", headers=headers)


router.include_router(api)
router.include_router(html)
