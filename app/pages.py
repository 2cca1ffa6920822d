"""HTML routes. Thin: read the query, let app.views build the page, render the page or a block."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import escape

from app.core.slots import Overloaded, WithoutModelRuns
from app.ui.render import render_block, render_page, wants_partial
from app.probe_views import find_units_panel
from app.views import FIELDS, build_page

router = APIRouter(include_in_schema=False)
PAGE = "index.html"


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request,
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
) -> HTMLResponse:
    params = {"model": model, "layer": layer, "state": state, "unit": unit, "mode": mode, "text": text,
              "layer2": layer2, "state2": state2, "unit2": unit2}
    headers = {"Vary": "HX-Request"}
    try:
        page = build_page(request.app.state.service, params)
        status = page.status
    except Overloaded as busy:  # no model slot in time: the form as sent, the reason beside the text
        page = build_page(WithoutModelRuns(request.app.state.service, busy), params)
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

