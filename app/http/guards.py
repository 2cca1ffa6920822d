"""Request-side limits, outside the routers: answers from middleware, a per-client rate limit, and
request bodies bounded in bytes and strictly checked as JSON before anything parses them.

- RateLimit: a token bucket per client address (OFF unless RNNSCOPE_RATE_LIMIT is set).
- BodyGuard: request bodies bounded in bytes before anything parses them; JSON bodies strictly
  checked (no NaN/Infinity, no lone surrogates, no absurd nesting) so no route ever sees them.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from markupsafe import escape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.slots import ARRIVED

MAX_JSON_DEPTH = 32  # no request shape of this API nests deeper than a few levels


# ---- responses from middleware (outside the routers, so no exception handlers) -------------
def error_response(scope: Scope, status: int, message: str, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    """JSON {"detail": ...} for the API (and clients that ask for JSON); a small HTML page otherwise."""
    path = scope.get("path", "")
    accept = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"accept"), "")
    if path.startswith("/api/") or ("application/json" in accept and "text/html" not in accept):
        body = json.dumps({"detail": message}).encode()
        kind = "application/json"
    else:
        body = (f'<!doctype html><html lang="en"><meta charset="utf-8"><title>{status}</title>'
                f'<p class="err" role="alert">{escape(message)}</p></html>').encode()
        kind = "text/html; charset=utf-8"
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
                         *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]}
    return start, body


async def send_error(scope: Scope, send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    start, body = error_response(scope, status, message, headers)
    await send(start)
    await send({"type": "http.response.body", "body": body})


# ---- per-client rate limit -------------------------------------------------------------------
class TokenBuckets:
    """rate tokens per minute, up to `burst` saved, per client key; the least recently seen keys are dropped."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 50_000,
                 clock: Callable[[], float] = time.monotonic):
        self.per_second = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last refill)

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is back."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_second
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)  # a forgotten client starts again with a full bucket
        return wait


def client_key(scope: Scope) -> str:
    """The client's address (uvicorn has applied X-Forwarded-For from trusted proxies); IPv6 by its /64."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))  # one subscriber usually holds a whole /64
    return str(ip)


class RateLimit:
    """429 + Retry-After once a client has spent its bucket; static files and /healthz are free."""

    EXEMPT = ("/static/", "/healthz", "/favicon")

    def __init__(self, app: ASGIApp, per_minute: int, burst: int | None = None):
        self.app = app
        self.buckets = TokenBuckets(per_minute, burst or per_minute) if per_minute > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ARRIVED.set(time.monotonic())
        if self.buckets is None or scope["type"] != "http" or scope["path"].startswith(self.EXEMPT):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        await send_error(scope, send, 429, f"too many requests from your address: this server allows "
                         f"{self.buckets.per_second * 60:g} a minute. Try again in {retry} s.",
                         {"Retry-After": str(retry)})


# ---- request bodies --------------------------------------------------------------------------
class _NonFinite(Exception):
    pass


class _TooDeep(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


class _HugeInt:
    """An integer literal too long to convert (Python refuses over 4,300 digits): kept as its length, so the
    walk below can say which field holds it, instead of the parser's field-less 400."""

    def __init__(self, digits: int):
        self.digits = digits


MAX_INT_DIGITS = 4300  # Python's default int-string conversion limit; no field of this API comes near it


def _parse_int(literal: str) -> int | _HugeInt:
    digits = len(literal) - literal.startswith("-")
    return _HugeInt(digits) if digits > MAX_INT_DIGITS else int(literal)


def json_problem(body: bytes) -> str | None:
    """Why a JSON body must be refused before any route sees it, or None (malformed JSON is the route's to name)."""
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"the request body is not UTF-8 text (byte {body[e.start]:#04x} at offset {e.start:,}): send JSON in UTF-8"
    try:
        value = json.loads(decoded, parse_constant=_reject_constant, parse_int=_parse_int)
    except _NonFinite as e:
        return f"the request body holds {e.args[0]}, which is not a JSON number: send a finite number"
    except RecursionError:
        return f"the request body nests deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return None  # not JSON: FastAPI says where in its own words
    try:
        where = _bad_string(value, "", 0)
    except _TooDeep:
        return f"the request body nests deeper than {MAX_JSON_DEPTH} levels"
    if where is not None:
        return f"{where or 'the body'} holds an unpaired UTF-16 surrogate (e.g. \\ud800): send valid Unicode text"
    huge = _huge_int(value, "")
    if huge is not None:
        where, digits = huge
        return (f"{where or 'the body'} is a {digits:,}-digit integer; numbers in a request have at most "
                f"{MAX_INT_DIGITS:,} digits")
    return None


def _huge_int(value: Any, where: str) -> tuple[str, int] | None:
    """The path and length of the first integer too long to convert, or None (depth is bounded already)."""
    if isinstance(value, _HugeInt):
        return where, value.digits
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        path = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _huge_int(item, path)
        if found is not None:
            return found
    return None


def _bad_string(value: Any, where: str, depth: int) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, or None."""
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    if isinstance(value, str):
        return None if valid_unicode(value) else where
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_string(item, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if not valid_unicode(key):
                return where or "a field name"
            found = _bad_string(item, path, depth + 1)
            if found is not None:
                return found
    return None


def valid_unicode(s: str) -> bool:
    """False for a str holding a lone surrogate (JSON's \\ud800 parses into one; nothing can encode it)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


JSON_TYPES = ("application/json",)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind in JSON_TYPES or kind.endswith("+json")


class BodyGuard:
    """Bounds every request body in bytes; API bodies must be JSON (415 otherwise) and clean JSON (422)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > self.max_bytes:
            await send_error(scope, send, 413, self._too_big(int(declared)))
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await send_error(scope, send, 413, self._too_big(len(body), at_least=True))
                return
        content_type = headers.get("content-type", "")
        if scope["path"].startswith("/api/") and body and not _is_json(content_type):
            kind = content_type.split(";")[0].strip()[:60] or "a body without a Content-Type"
            await send_error(scope, send, 415, f"send the request body as JSON (Content-Type: application/json), "
                                               f"not {kind}")
            return
        if body and (not content_type or _is_json(content_type)):
            problem = json_problem(bytes(body))
            if problem is not None:
                await send_error(scope, send, 422, problem)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would say it

        await self.app(scope, replay, send)

    def _too_big(self, size: int, at_least: bool = False) -> str:
        return (f"the request body is {'over ' if at_least else ''}{size:,} bytes; the limit is "
                f"{self.max_bytes:,}: send a shorter text")
