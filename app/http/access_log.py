"""Request timing: a short access log line per request (path and query size, never the query: it
holds the user's text), and a Server-Timing header telling the client the server's own time to
the response's first byte (browsers show it in their network panel; bench/serve_speed.py reads it).
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from app.http.asgi import HttpMiddleware


log = logging.getLogger("rnnscope.access")


class AccessLog(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        status = 0

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                ms = (time.perf_counter() - t0) * 1000  # outermost: routing, handler, rendering, gzip
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={ms:.1f}")
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            query = len(scope.get("query_string", b""))
            hx = any(k == b"hx-request" for k, _ in scope.get("headers", []))
            # the path is the visitor's, %-decoded: app.http.log_safety (installed by create_app) escapes
            # %0A or %00 in it, as in every log record, so it cannot forge or break a line
            log.info("%s %s%s %d %.0f ms%s", scope["method"], scope["path"],
                     f" (query {query:,} bytes)" if query else "", status, (time.perf_counter() - t0) * 1000,
                     " htmx" if hx else "")
