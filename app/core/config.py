"""Settings read from the environment (prefix RNNSCOPE_), so one image serves any model folder."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import models

# Shipped checkpoint folders (models/zoo/austen-lstm/ ...) live inside the models package.
SHIPPED_MODELS_DIR = Path(models.__file__).resolve().parent / "zoo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RNNSCOPE_", extra="ignore")

    models_dir: Path = Field(SHIPPED_MODELS_DIR, description="folder whose sub-folders holding config.json are models")
    max_chars: int = Field(20_000, ge=1, description="longest text one request may trace")
    cache_bytes: int = Field(256 * 1024 * 1024, ge=0, description="byte budget of the trace cache")
    buffer_pool_bytes: int = Field(128 * 1024 * 1024, ge=0, description="memory of dropped traces kept mapped for "
                                   "the next ones (models/buffers.py): fresh pages cost ~2-4 s/GB to fault in on a VM")
    # A whole-model trace may take at most this share of the cache; longer texts cache one (layer, state).
    full_trace_share: float = Field(0.25, gt=0.0, le=1.0)
    max_api_values: int = Field(4_000_000, ge=1, description="most activation numbers one API response may hold")
    data_dir: Path = Field(Path("data-dir"), description="writable folder: the share store lives here by default")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the share store "
                                     "(default: SQLite at <data_dir>/shares.sqlite3)")
    serve_shipped: bool = Field(False, description="also serve the shipped models (models/zoo) after models_dir's "
                                "own; a name in models_dir wins")
    default_model: str = Field("austen-lstm", description="the model the page opens on, when installed")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads per model run (None = the "
                                      "usable cores divided by max_concurrent_traces, at least 1, so concurrent "
                                      "runs never oversubscribe the cores)")
    rescan_seconds: float = Field(2.0, ge=0.0, description="how often the model folder is re-checked for changes")
    # Load limits for a public server (app/core/slots.py, app/http/guards.py).
    max_concurrent_traces: int = Field(2, ge=1, le=64, description="model runs at once; more requests queue")
    trace_batch: int = Field(4, ge=1, le=16, description="traces one model run may serve at once: queued requests "
                             "for the same model, warm-up and scope ride along with the run that gets a slot "
                             "(bench/batch_trace_speed.py)")
    # 30 s: at 64 clients without think time on 2 shared cores, 20 s shed ~1 request in 500 (bench/load.py).
    queue_timeout: float = Field(30.0, gt=0.0, description="seconds a request waits for a model slot before a 503")
    trace_timeout: float = Field(30.0, gt=0.0, description="seconds one model run may take before its request gets "
                                 "a 503 (the run is then stopped, freeing its slot)")
    worker_threads: int = Field(128, ge=8, le=1024, description="threads for plain-def routes (anyio's default is "
                                "40): requests blocked on a model slot must not keep cache hits waiting")
    rate_limit: int = Field(0, ge=0, description="requests per minute per client address; 0 = off (local use)")
    rate_burst: int | None = Field(None, ge=1, description="requests a client may make at once (None = rate_limit)")
    max_body_bytes: int | None = Field(None, ge=1024, description="largest request body (None = enough for "
                                       "max_chars of text, %-encoded or JSON-escaped, plus 64 KiB)")
    # Connections (app/http/server.py: what `rnnscope serve` runs). See docs/threat-model.md, "Connections".
    header_timeout: float = Field(20.0, gt=0.0, le=300.0, description="seconds a connection may take to send a "
                                  "whole request head, from connecting or from its last response; the deadline "
                                  "does not move as bytes arrive, so a silent client and a slowloris both go")
    body_timeout: float = Field(30.0, gt=0.0, le=600.0, description="seconds a request body may take to arrive, "
                                "from the end of its head")
    send_timeout: float = Field(30.0, gt=0.0, le=600.0, description="seconds a response may stall with the client "
                                "reading nothing before the connection is dropped")
    keep_alive_timeout: float = Field(5.0, gt=0.0, le=300.0, description="seconds an idle keep-alive connection "
                                      "stays open after a response (uvicorn's timeout_keep_alive)")
    max_connections: int = Field(1000, ge=16, description="open client connections; at the cap a new one closes "
                                 "the connection idle (or slow) longest, or is closed when none is. Kept 256 below "
                                 "the open-file limit, whose soft value is raised to the hard one at start")
    max_requests: int = Field(1000, ge=1, description="requests in progress at once, counting those whose client "
                              "has gone; more get a 503 with Retry-After")
    log_repeat_window: float = Field(10.0, ge=0.0, description="seconds the log holds back repeats of one warning "
                                     "or error (then one line says how many); 0 = log every one")
    # Work outside the model slots (app/http/heavy.py).
    response_slots: int = Field(1, ge=1, le=16, description="large API responses (from ~200,000 values) built and "
                                "compressed at once; more queue, up to queue_timeout, then a 503")
    max_streams: int = Field(4, ge=1, le=256, description="generation streams (GET /api/v1/generate/stream) at "
                             "once; one more is a 503 with Retry-After")

    # Share store growth (app/share/store.py, app/share/service.py): on by default, as any visitor can create links.
    share_rate_limit: int = Field(30, ge=0, description="share links a client address may create per minute "
                                  "(POST /api/v1/share and the page's Share button); 0 = off")
    share_rate_burst: int = Field(10, ge=1, description="share links a client may create at once")
    share_store_bytes: int = Field(512 * 1024 * 1024, ge=0, description="total size of the stored views (their "
                                   "canonical JSON, UTF-8); a new link past it is a 507, existing links still "
                                   "open and re-sharing one still works; 0 = no budget")
    public_url: str | None = Field(None, description="the server's public base URL (e.g. https://rnnscope.example"
                                   ".org or https://example.org/rnnscope): share links, link-preview tags and "
                                   "export source URLs use it instead of the request's Host header")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return check_public_url(value)

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or self.max_chars * 12 + 64 * 1024

    def also_models_dirs(self) -> tuple[Path, ...]:
        """The folders served after models_dir: the shipped models, when asked for and not already it."""
        if not self.serve_shipped or self.models_dir.resolve() == SHIPPED_MODELS_DIR:
            return ()
        return (SHIPPED_MODELS_DIR,)


def check_public_url(value: str | None) -> str | None:
    """RNNSCOPE_PUBLIC_URL: an absolute http(s) URL without query or fragment; its trailing slash dropped."""
    if value is None or not value.strip():
        return None
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("public_url must be an absolute http:// or https:// URL such as "
                         f"https://rnnscope.example.org, not {url[:80]!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"public_url must not hold a query (?...) or fragment (#...): {url[:80]!r}")
    if parts.username or parts.password:
        raise ValueError("public_url must not hold a user name or password")
    return url.rstrip("/")
