"""HTTP edges every route shares, in one place: HEAD answered wherever GET is, and a page for unknown paths.

- HeadAsGet: FastAPI routes a GET-only path's HEAD to 405, but health checkers and link checkers send
  HEAD. The request goes in as a GET; the response goes out with the GET's status and headers
  (Content-Length included) and no body. A streamed response (the generation stream) is told the
  client went away as soon as its headers are out, so a HEAD never runs a whole generation.
- PublicLocation: with RNNSCOPE_PUBLIC_URL set, a redirect to this server's own address (Starlette's
  trailing-slash redirect builds an absolute URL from the Host header) points at the public URL instead.
- not_found: an unknown path answers a browser (Accept: text/html, outside /api/) with an HTML page in
  the site's layout; the API and every other client keep FastAPI's JSON {"detail": "Not Found"}.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ui.render import render_page


class HeadAsGet:
    """Serve HEAD as the GET of the same URL, without its body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        started = anyio.Event()
        asked = False
        finished = False

        async def head_receive() -> Message:
            nonlocal asked
            if not asked:  # a GET has no body to read
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await started.wait()  # then "gone" once the headers are out: a stream stops there
            return {"type": "http.disconnect"}

        async def head_send(message: Message) -> None:
            nonlocal finished
            if finished:
                return  # the rest of a body nobody asked for
            if message["type"] == "http.response.start":
                await send(message)
                started.set()
                return
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, head_receive, head_send)


class PublicLocation:
    """Move a redirect's Location from the request's own base URL (Host header and all) onto the public URL."""

    def __init__(self, app: ASGIApp, public_url: str | None):
        self.app = app
        self.public = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.public or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = str(Request(scope).base_url)  # scheme://host[:port][root_path]/ as the request names it

        async def public_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = MutableHeaders(scope=message)
                location = headers.get("location", "")
                if location.startswith(own):
                    headers["location"] = f"{self.public}/{location[len(own):]}"
            await send(message)

        await self.app(scope, receive, public_send)


def wants_html(request: Request) -> bool:
    """A browser asking for a page: not an /api/ path, and text/html in its Accept header."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def install_not_found_page(app: FastAPI) -> None:
    """Unknown paths get an HTML page for browsers; FastAPI's own JSON answer otherwise (and for other statuses)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and wants_html(request):
            detail = exc.detail if isinstance(exc.detail, str) and exc.detail != "Not Found" else ""
            context = {"path": request.url.path[:200], "detail": detail}
            return HTMLResponse(render_page("not_found.html", context), status_code=404, headers=exc.headers)
        return await http_exception_handler(request, exc)
