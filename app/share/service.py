"""Share links over the trace service: a view's query params in, a checked canonical view and its id out.

A shared view is the dict of the page's URL query params (model, layer, state, unit, mode, text and
whatever settings the page grows later, e.g. unit2). The core settings are stored as the page
resolved them (defaults filled in), so a link keeps meaning the same view when defaults change and
the same view always gets the same id; other settings are kept verbatim when well-formed. A view is
only stored after the page itself accepts it, so a link never saves something the page would refuse.

The Find units panel's probe (and the regex probe's pattern) are checked here, as the panel would
take them: a known probe id, a pattern only with the regex probe, at most 500 characters, one that
compiles. The panel's default probe with no pattern is the same view as no probe and is not stored,
so a view that names no probe keeps exactly the id (and link) it had before probes were shared.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from models.errors import RnnscopeError
from models.probes import PROBES, regex_mask

from app.core.config import Settings
from app.core.errors import InputError
from app.core.slots import Overloaded
from app.http.guards import TokenBuckets, valid_unicode
from app.probe.schemas import DEFAULT_PROBE, MAX_PATTERN_CHARS
from app.share.store import ShareNotFound, ShareStore, ShareStoreError, ShareStoreFull, sqlite_url
from app.trace.service import TraceService
from app.trace.views import Page, build_page

log = logging.getLogger("rnnscope.share")

CORE = ("model", "layer", "state", "unit", "mode", "text")  # resolved by the page; always stored
KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_EXTRA_KEYS = 16
MAX_VALUE_CHARS = 200  # any setting but the text and the ones below
MAX_CHARS = {"pattern": MAX_PATTERN_CHARS}  # settings with their own length limit


class ShareUnavailable(InputError):
    """The share store cannot be used right now (not opened, locked, read-only): a 503, not the user's fault."""

    def __init__(self, message: str):
        super().__init__(message, field="share", status=503)


@dataclass(frozen=True)
class Shared:
    id: str
    view: dict[str, str]


def view_params(raw: Mapping[str, object], max_chars: int) -> dict[str, str]:
    """Query params (or JSON fields) -> a dict of strings, each bad one refused with its own message."""
    out: dict[str, str] = {}
    extras = 0
    for key, value in raw.items():
        if value is None:
            continue
        if not isinstance(key, str) or not KEY.match(key):
            raise InputError(f"{str(key)[:40]!r} is not a view setting: names are lowercase letters, digits and _",
                             field="share")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise InputError(f"{key} must be one value (text or a number), not a {type(value).__name__}", field=key)
        if not valid_unicode(value):
            raise InputError(f"{key} holds an unpaired UTF-16 surrogate: send valid Unicode text", field=key)
        limit = MAX_CHARS.get(key, MAX_VALUE_CHARS)
        if key != "text" and len(value) > limit:
            what = f"a {key} holds" if key in MAX_CHARS else "settings hold"
            raise InputError(f"{key} is {len(value):,} characters long; {what} at most {limit}", field=key)
        if key not in CORE:
            if value == "":
                continue  # an empty optional setting is the same view as no setting
            extras += 1
        out[key] = value
    if extras > MAX_EXTRA_KEYS:
        raise InputError(f"{extras} extra settings; a view holds at most {MAX_EXTRA_KEYS}", field="share")
    text = out.get("text")
    if text is None:
        raise InputError("text is missing: a shared view or export holds the text it colours", field="text")
    length = len(text.replace("\r\n", "\n"))
    if length > max_chars:
        raise InputError(f"the text is {length:,} characters long; the limit is {max_chars:,}: shorten it",
                         field="text", status=413)
    return out


def probe_settings(params: dict[str, str]) -> dict[str, str]:
    """The Find units panel's probe and pattern, checked and canonical: the params with them fixed up.

    probe: one of the panel's probe ids; the default probe without a pattern is dropped (the same view
    as no probe). pattern: only with the regex probe, and a regular expression that compiles (its
    length is capped by view_params)."""
    out = dict(params)
    probe, pattern = out.get("probe"), out.get("pattern")
    if probe is not None and probe not in PROBES:
        raise InputError(f"unknown probe {probe[:40]!r}: choose one of {', '.join(PROBES)}", field="probe")
    if pattern is not None:
        if probe != "regex":
            raise InputError(f"a pattern is only used by the regex probe, but the probe is {probe or DEFAULT_PROBE!r}: "
                             "send probe \"regex\" with it, or leave the pattern out", field="pattern")
        try:
            regex_mask("", pattern)  # compiles it (matching nothing yet: the panel time-limits the real run)
        except RnnscopeError as e:
            raise InputError(f"pattern: {e}", field="pattern") from None
    if probe == DEFAULT_PROBE:
        del out["probe"]
    return out


def checked_page(traces: TraceService, params: dict[str, str], with_view: bool = True) -> Page:
    """The page for these params, or an InputError saying what the page would say beside its controls."""
    page = build_page(traces, dict(params), with_view)
    if page.controls is None:
        raise ShareUnavailable("no models are installed on this server, so there is no view to share or export")
    if page.errors:
        status = 404 if "model" in page.errors and params.get("model") not in traces.registry.entries else 422
        field = next(iter(page.errors))
        raise InputError("; ".join(page.errors.values()), field=field, status=status)
    return page


def canonical_view(page: Page, params: dict[str, str]) -> dict[str, str]:
    """The core settings as the page resolved them, plus the other settings as given."""
    assert page.controls is not None
    view = {k: v for k, v in params.items() if k not in CORE}
    for key in CORE:
        view[key] = str(getattr(page.controls, key))
    return view


def stored_params(view: Mapping[str, object]) -> dict[str, str]:
    """A stored view back to query params; tolerant of rows written by older or other versions."""
    out: dict[str, str] = {}
    for key, value in view.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            out[key] = str(value)
    return out


class ShareService:
    """Creates and opens share links; knows why sharing is off when the store could not be opened.

    Link creation is limited per client address (a token bucket: settings.share_rate_limit a minute,
    share_rate_burst at once; admit() answers 429 with Retry-After past it), and the store by its size
    budget (settings.share_store_bytes: a 507 for a new view past it; a view already stored still works).
    """

    def __init__(self, traces: TraceService, store: ShareStore | None, unavailable: str = ""):
        self.traces = traces
        self.store = store
        self.unavailable = unavailable
        rate, burst = traces.settings.share_rate_limit, traces.settings.share_rate_burst
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None
        self._bucket_lock = threading.Lock()  # admit() runs on the event loop and in worker threads

    def admit(self, client: str) -> None:
        """Take one link-creation token for this client, or raise Overloaded (429, with Retry-After)."""
        if self.buckets is None:
            return
        with self._bucket_lock:
            wait = self.buckets.take(client)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            per_minute = self.buckets.per_second * 60
            raise Overloaded(f"too many share links from your address: this server makes at most {per_minute:g} "
                             f"a minute ({self.buckets.burst:g} at once) per client. Try again in {retry} s.",
                             retry, status=429)

    @classmethod
    def open(cls, settings: Settings, traces: TraceService) -> ShareService:
        """Never raises: a store that cannot be opened turns sharing off, with the reason, and traces still serve."""
        url = settings.database_url or sqlite_url(settings.data_dir)
        try:
            store = ShareStore(url, max_text_chars=settings.max_chars, max_bytes=settings.share_store_bytes)
        except ShareStoreError as e:
            reason = str(e)
        except Exception as e:  # noqa: BLE001 - a broken store must never take the trace pages down
            reason = f"the share database cannot be opened ({type(e).__name__}: {e})"
        else:
            log.info("share links are stored in %s", _describe(url))
            return cls(traces, store)
        log.error("sharing is unavailable: %s", reason)
        return cls(traces, None, reason)

    def _store(self) -> ShareStore:
        if self.store is None:
            raise ShareUnavailable(f"sharing is unavailable on this server: {self.unavailable}. "
                                   "Traces and downloads still work.")
        return self.store

    def create(self, raw: Mapping[str, object]) -> Shared:
        store = self._store()
        params = probe_settings(view_params(raw, self.traces.settings.max_chars))
        # Checked like the page would check it, but not traced: a link costs no model run, even under load.
        view = canonical_view(checked_page(self.traces, params, with_view=False), params)
        try:
            return Shared(store.create(view), view)
        except ShareStoreFull as e:  # the size budget: a 507 naming it, not a 503 (waiting does not help)
            raise InputError(str(e), field="share", status=507) from None
        except ShareStoreError as e:  # locked, read-only, gone: the links already made are untouched
            raise ShareUnavailable(f"cannot save the link: {e}") from None

    def get(self, sid: str, count_open: bool = True) -> dict[str, str]:
        store = self._store()
        try:
            view = store.get(sid, count_open=count_open)
        except ShareNotFound as e:
            raise InputError(str(e), field="share", status=404) from None
        except ShareStoreError as e:
            raise ShareUnavailable(f"cannot read the link: {e}") from None
        if not isinstance(view, Mapping) or not isinstance(view.get("text"), str):
            raise InputError(f"the shared view {sid!r} is damaged in the database (no text): it cannot be opened",
                             field="share", status=410)
        return stored_params(view)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _describe(url: str) -> str:
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else "the configured database"
