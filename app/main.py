"""create_app(): settings, model registry (loaded in the lifespan), routers, static files, error mapping."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from models import __version__, cell_scan
from models.buffers import POOL
from models.errors import RnnscopeError
from models.score_kernels import compile_in_background

from app.compare import routes as compare_routes
from app.compare.service import CompareService
from app.core.config import Settings
from app.core.errors import InputError
from app.core.registry import Registry
from app.core.runtime import bound_native_memory, default_torch_threads
from app.core.slots import Overloaded
from app.dynamics import routes as dynamics_routes
from app.dynamics.service import DynamicsService
from app.http.access_log import AccessLog
from app.http.fallbacks import HeadAsGet, PublicLocation, install_not_found_page
from app.http import log_safety
from app.http.guards import BodyGuard, RateLimit, error_response
from app.http.heavy import ResponseSlots, StreamSlots
from app.http.openapi import document_limits
from app.http.security import HEADERS as SECURITY_HEADERS
from app.http.security import SecurityHeaders
from app.probe import routes as probe_routes
from app.probe.service import ProbeService
from app.share import routes as share_routes
from app.share.service import ShareService
from app.trace import routes as trace_routes
from app.trace.service import TraceService
from app.ui.render import STATIC_DIR, render_page

log = logging.getLogger("rnnscope")
HTMX = STATIC_DIR / "vendor" / "htmx.min.js"


# Level 1, not Starlette's 9: compression runs on the event loop and stalls every other request.
# Measured on a 2,000-character view (185 KB): level 1 takes 2.4 ms for 46.7 KB, level 5 5.3 ms for
# 40.3 KB, level 9 several times that. bench/serve_speed.py reports sizes at this level.
GZIP_LEVEL = 1


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    log_safety.install()  # visitors' text reaches the log (paths, errors): no record may hold a raw control character
    registry = Registry(settings.models_dir, settings.rescan_seconds, also=settings.also_models_dirs())
    service = TraceService(registry, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tuned = bound_native_memory()  # before the first model pass
        compile_in_background()  # the probe ranking's compiled kernels, ready before the first probe
        cell_scan.compile_in_background()  # and the cell recurrence's, before the first trace
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        import torch

        # Deliberate, not torch's default (every core per run): N concurrent runs share the cores.
        threads_before = torch.get_num_threads()
        threads = settings.torch_threads or default_torch_threads(settings.max_concurrent_traces)
        torch.set_num_threads(threads)
        pool_before = POOL.limit_bytes
        POOL.resize(settings.buffer_pool_bytes)
        log.info("model runs: at most %d at once, %d torch thread(s) each; queue timeout %g s, run timeout %g s; "
                 "%d worker threads%s", settings.max_concurrent_traces, threads, settings.queue_timeout,
                 settings.trace_timeout, settings.worker_threads,
                 f"; rate limit {settings.rate_limit}/min per client" if settings.rate_limit else "")
        if tuned:
            log.info("native memory bounded: %s", "; ".join(tuned))
        if not HTMX.is_file():
            log.error("%s is missing: the page cannot update in place. Run `npm ci` in the project folder "
                      "(its postinstall copies htmx into static/vendor/).", HTMX)
        registry.refresh(force=True)
        if registry.entries:
            log.info("serving %d model(s) from %s: %s", len(registry.entries),
                     " and ".join(map(str, (settings.models_dir, *registry.also))), ", ".join(registry.entries))
        else:
            log.warning("no models found in %s: the page will say how to train one", settings.models_dir)
        app.state.shares = ShareService.open(settings, service)  # never raises: sharing off, traces still serve
        yield
        app.state.shares.close()
        service.slots.close()
        service.scoring.close()
        torch.set_num_threads(threads_before)  # several apps may live in one process (tests)
        POOL.resize(pool_before)

    app = FastAPI(
        title="rnnscope",
        version=__version__,
        summary="Look inside character-level RNN, LSTM and GRU language models.",
        docs_url=None,  # served below from static/vendor, so the strict CSP holds there too
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.service = service
    app.state.probes = ProbeService(service)
    app.state.dynamics = DynamicsService(service)
    app.state.compare = CompareService(app.state.probes)  # units matched across models (the probe ranking, reused)
    app.state.responses = ResponseSlots(settings.response_slots, settings.queue_timeout)  # big bodies (app/http/heavy.py)
    app.state.streams = StreamSlots(settings.max_streams)  # generation streams at once

    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=GZIP_LEVEL)
    app.add_middleware(BodyGuard, max_bytes=settings.body_limit)  # bounded, clean bodies before any parsing
    app.add_middleware(RateLimit, per_minute=settings.rate_limit, burst=settings.rate_burst)  # off when 0
    app.add_middleware(SecurityHeaders)
    app.add_middleware(PublicLocation, public_url=settings.public_url)  # redirects: no Host-derived URL
    app.add_middleware(HeadAsGet)  # HEAD wherever GET is answered (health checkers send HEAD)
    app.add_middleware(AccessLog)  # outermost: its time (log line, Server-Timing) covers everything inside
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(trace_routes.pages)
    app.include_router(trace_routes.router)
    app.include_router(trace_routes.health)
    app.include_router(share_routes.router)  # share links, preview image, downloads
    app.include_router(probe_routes.router)  # probe/span rankings, neuron pages
    app.include_router(dynamics_routes.router)  # generate, gradient flow, scalar RNN, saturation, interventions
    app.include_router(compare_routes.router)  # /compare and POST /api/v1/match: a unit matched across models

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_page("docs.html", {}))

    _add_error_handlers(app)
    install_not_found_page(app)  # unknown paths: an HTML page for browsers, JSON for the API
    document_limits(app)  # 413/415/429/503 from app.http.guards and app.core.slots, in OpenAPI
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RnnscopeError)
    async def rnnscope_error(request: Request, exc: RnnscopeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> Response:
        start, body = error_response(request.scope, exc.status, exc.message, {"Retry-After": str(exc.retry_after)})
        headers = {k.decode(): v.decode() for k, v in start["headers"] if k != b"content-length"}
        return Response(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # Starlette answers this one outside every middleware: the security headers are added here.
        return JSONResponse({"detail": "internal error: the server log has the details"}, status_code=500,
                            headers=SECURITY_HEADERS)


def validation_message(errors) -> str:
    """pydantic's error list -> one sentence a person can act on."""
    parts = []
    for err in errors:
        kind = err.get("type", "")
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        if kind == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "cannot be parsed")
            return f"the request body is not valid JSON ({reason})"
        if kind == "missing" and not where:
            return 'the request body is missing: send JSON such as {"model": "austen-lstm", "text": "Hi"}'
        if kind in ("model_attributes_type", "dict_type") and not where:
            return "the request body must be a JSON object"
        if kind == "extra_forbidden":
            parts.append(f"{where} is not a field of this request")
            continue
        msg = err.get("msg", "is invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"
