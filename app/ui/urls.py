"""The links the pages write: a unit's neuron page, and the server's own absolute address (under
settings.public_url when set, so a forged Host header never reaches a link, a preview tag or an export)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from fastapi import Request


# What the nav links carry from one view to another (the page's URL holds it), and up to what text
# length a server-rendered link carries the text (static/app.js and dynamics.js carry any).
SHARED = ("model", "layer", "state", "unit", "text")
NAV_TEXT_LIMIT = 2_000


def nav_query(shared: Mapping[str, str]) -> str:
    """'?model=…&…' for a nav link: the shared fields that are set, the text only while it is short."""
    keep = {k: shared[k] for k in SHARED if shared.get(k) not in (None, "")}
    if len(keep.get("text", "")) > NAV_TEXT_LIMIT:
        keep.pop("text")
    return "?" + urlencode(keep) if keep else ""


def neuron_url(model: str, layer: int, state: str, unit: int) -> str:
    return f"/neuron/{quote(model, safe='')}/{layer}/{quote(state, safe='')}/{unit}"


def absolute_url(request: Request, name: str, **params: str) -> str:
    """The absolute URL of a route: under settings.public_url when set, so a forged Host header never
    reaches a link, a preview tag or an export; else from the request (as it came, Host and all)."""
    public = getattr(request.app.state.settings, "public_url", None)
    if public:
        return public + request.app.url_path_for(name, **params)
    return str(request.url_for(name, **params))


def base_url(request: Request) -> str:
    """The server's own address, ending in /: settings.public_url when set, else the request's."""
    public = getattr(request.app.state.settings, "public_url", None)
    return public + "/" if public else str(request.base_url)
