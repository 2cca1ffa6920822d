"""The uvicorn server `rnnscope serve` starts, hardened for a public demo.

Plain uvicorn keeps a connection open for as long as its client likes until it sends a request:
20,000 silent connections used up the file descriptors, /healthz timed out, and every refused
accept() logged a traceback (221,183 of them, 94 MB in 20 s). Here:

- GuardedH11 (uvicorn's h11 protocol) closes a connection that has not sent a whole request head
  within header_timeout s of connecting or of its last response (a silent client, or a slowloris
  trickling header bytes: the deadline does not move as bytes arrive), a request whose body has
  not all arrived within body_timeout s of its head, and a response that could not write a byte
  for send_timeout s (a client that does not read).
- At most `cap` connections are open: at the cap a new connection closes the one idle longest
  (no request in progress); when none is idle, the one that has been sending its body, or not
  reading its response, longest (for SLOW_GRACE s at least); failing that, the new one is closed
  at once. So holding every slot takes a stream of requests, not a pile of sockets. The cap stays
  FD_RESERVE below the open-file limit, whose soft value is raised to the hard one at start.
- More than max_requests requests in progress (counting those whose client has left) get a 503.
- RepeatFilter: one record of a kind per window, then a count of those it held back.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import time
from collections import OrderedDict
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.config import Settings
from app.http.guards import send_error

log = logging.getLogger("rnnscope.server")

FD_RESERVE = 256  # descriptors kept for everything that is not a client: models, SQLite, threads, logs
MIN_CONNECTIONS = 16
# The event loop asks a busy worker thread for the GIL every this many seconds (Python's default: 5 ms).
# Each request crosses threads several times (a sync route, its response model), so under big-body
# builds every crossing waited up to 5 ms: /healthz took ~300-600 ms behind six 18 MB bodies.
SWITCH_INTERVAL = 0.001
SLOW_GRACE = 1.0  # seconds a body upload or a stalled response runs before a newcomer may close it at the cap
REQUESTS_RETRY_S = 5


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def connection_cap(max_connections: int, nofile: int) -> int:
    """max_connections, but never closer than FD_RESERVE to the open-file limit."""
    if nofile == resource.RLIM_INFINITY:
        return max_connections
    return max(MIN_CONNECTIONS, min(max_connections, nofile - FD_RESERVE))


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with deadlines and a connection cap (see the module docstring).
    protocol_class() makes a subclass per server that sets the class attributes below."""

    cap: int = 1000
    header_timeout: float = 20.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    max_requests: int = 1000
    idle: OrderedDict[GuardedH11, None]  # connections waiting for a request head, oldest first
    receiving: OrderedDict[GuardedH11, float]  # connections sending a body -> since when (monotonic)
    stalled: OrderedDict[GuardedH11, float]  # connections whose client reads nothing -> since when
    stats: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind = ""
        self._write_stall: asyncio.TimerHandle | None = None
        self._inner_app = self.app
        self.app = self._bounded_app

    # ---- connections -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.cap:
            victim = self._victim()
            if victim is None:
                self.transport = transport
                self.stats["refused"] += 1
                log.warning("%d connections open, the most allowed, all busy: new connections are closed at once "
                            "(RNNSCOPE_MAX_CONNECTIONS)", self.cap)
                transport.abort()
                return
            self.stats["evicted"] += 1
            log.warning("%d connections open, the most allowed: closing the one idle or slow longest for a new one",
                        self.cap)
            victim._drop()
            self.connections.discard(victim)  # its connection_lost comes on the next loop turn
        super().connection_made(transport)
        self._check_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_write_stall()
        self._forget()
        super().connection_lost(exc)

    def _victim(self) -> GuardedH11 | None:
        """Who makes room at the cap: the longest idle, else the longest slow past SLOW_GRACE."""
        victim = next(iter(self.idle), None)
        if victim is not None:
            return victim
        now = time.monotonic()
        for slow in (self.receiving, self.stalled):
            oldest = next(iter(slow.items()), None)
            if oldest is not None and now - oldest[1] >= SLOW_GRACE:
                return oldest[0]
        return None

    def _forget(self) -> None:
        self.idle.pop(self, None)
        self.receiving.pop(self, None)
        self.stalled.pop(self, None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._check_state()

    def timeout_keep_alive_handler(self) -> None:
        self._drop()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_stall is None:
            self._write_stall = self.loop.call_later(self.send_timeout, self._expired, "send")
            self.stalled[self] = time.monotonic()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_stall()

    # ---- deadlines ---------------------------------------------------------------------------
    def _check_state(self) -> None:
        """Arm or clear the deadline for where the request now stands."""
        if self.transport is None or self.transport.is_closing():
            return
        theirs = self.conn.their_state
        if theirs is h11.IDLE:  # waiting for a request head: since connecting, or since the last response
            self.receiving.pop(self, None)
            if self._deadline_kind != "header":
                self.idle[self] = None
                self._arm("header", self.header_timeout)
        elif theirs is h11.SEND_BODY:
            self.idle.pop(self, None)
            if self._deadline_kind != "body":
                self.receiving[self] = time.monotonic()
                self._arm("body", self.body_timeout)
        else:  # the request is all here: the app has it (its own limits apply)
            self.idle.pop(self, None)
            self.receiving.pop(self, None)
            self._cancel_deadline()

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._expired, kind)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_kind = ""

    def _cancel_write_stall(self) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        self.stalled.pop(self, None)

    def _expired(self, kind: str) -> None:
        if kind == "send":
            self._write_stall = None
        else:
            self._deadline = None
            self._deadline_kind = ""
        self.stats[kind + "_timeout"] += 1
        self._drop()

    def _drop(self) -> None:
        """Close now; abort (drop unsent bytes) when the client is not reading what was sent."""
        self._forget()
        self._cancel_deadline()
        self._cancel_write_stall()
        if self.transport is None or self.transport.is_closing():
            return
        if self.conn.our_state not in (h11.ERROR, h11.CLOSED):
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    # ---- requests in progress ----------------------------------------------------------------
    async def _bounded_app(self, scope, receive, send) -> None:
        # this request's own task is already in self.tasks
        if len(self.tasks) > self.max_requests:
            self.stats["busy"] += 1
            log.warning("more than %d requests in progress: answering 503 (RNNSCOPE_MAX_REQUESTS)", self.max_requests)
            await send_error(scope, send, 503, "the server is handling too many requests; try again shortly",
                             {"Retry-After": str(REQUESTS_RETRY_S)})
            return
        await self._inner_app(scope, receive, send)


def protocol_class(settings: Settings, cap: int) -> type[GuardedH11]:
    """A GuardedH11 for one server: its own settings, idle list and counters."""
    return type("GuardedH11", (GuardedH11,), {
        "cap": cap,
        "header_timeout": settings.header_timeout,
        "body_timeout": settings.body_timeout,
        "send_timeout": settings.send_timeout,
        "max_requests": settings.max_requests,
        "idle": OrderedDict(),
        "receiving": OrderedDict(),
        "stalled": OrderedDict(),
        "stats": {"refused": 0, "evicted": 0, "header_timeout": 0, "body_timeout": 0, "send_timeout": 0,
                  "busy": 0},
    })


# ---- logs ---------------------------------------------------------------------------------------
class RepeatFilter(logging.Filter):
    """Lets the first warning or error of a kind through, holds back the same kind for `window` s,
    then lets one through again saying how many it held back. A kind: logger, level, the message
    with its arguments (first 200 characters) and exception type. Records below WARNING always pass."""

    def __init__(self, window: float = 10.0, max_kinds: int = 512, clock=time.monotonic):
        super().__init__()
        self.window = window
        self.max_kinds = max_kinds
        self.clock = clock
        self._kinds: OrderedDict[tuple, list] = OrderedDict()  # kind -> [time let through, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_rnnscope_repeat", None)  # one record may reach several handlers
        if verdict is None:
            verdict = self._decide(record)
            record._rnnscope_repeat = verdict
        return verdict

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        # The message as written, arguments in: the same warning about two different models is two kinds.
        kind = (record.name, record.levelno, record.getMessage()[:200], exc)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window:
            seen[1] += 1
            self._kinds.move_to_end(kind)
            return False
        if seen is not None and seen[1]:
            held = f"{seen[1]:,} more like this held back in the last {now - seen[0]:.0f} s"
            record.msg = f"{record.getMessage()} [{held}]"
            record.args = ()
            record.exc_info = None  # the first one had the traceback
            record.exc_text = None
        self._kinds[kind] = [now, 0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > self.max_kinds:
            self._kinds.popitem(last=False)
        return True


def install_repeat_filter(window: float) -> RepeatFilter:
    """One RepeatFilter on every handler configured now (the root's and uvicorn's)."""
    filt = RepeatFilter(window)
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                handler.addFilter(filt)
    return filt


# ---- the server ---------------------------------------------------------------------------------
def build(settings: Settings, host: str, port: int, log_level: str) -> uvicorn.Config:
    soft_before, nofile = raise_nofile()
    sys.setswitchinterval(SWITCH_INTERVAL)
    cap = connection_cap(settings.max_connections, nofile)
    # The whole view lives in the URL: let a request line carry the longest allowed text, %-encoded.
    max_line = settings.max_chars * 12 + 64 * 1024
    config = uvicorn.Config(
        "app.main:create_app", factory=True, host=host, port=port,
        http=protocol_class(settings, cap), h11_max_incomplete_event_size=max_line,
        log_level=log_level, proxy_headers=True,
        access_log=False,  # app.http.access_log logs requests without their query (the user's text)
        timeout_keep_alive=settings.keep_alive_timeout,
        backlog=min(2048, cap),
    )
    install_repeat_filter(settings.log_repeat_window)
    log.info("connections: at most %d open (open-file limit %s, was %s); request head within %g s, body within "
             "%g s, idle keep-alive %g s; at most %d requests in progress", cap, nofile, soft_before,
             settings.header_timeout, settings.body_timeout, settings.keep_alive_timeout, settings.max_requests)
    return config


def serve(settings: Settings, host: str, port: int, log_level: str) -> None:
    """What uvicorn.run() does for one worker without reload, with build()'s config."""
    config = build(settings, host, port, log_level)
    config.load_app()
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


__all__ = ["GuardedH11", "RepeatFilter", "build", "connection_cap", "install_repeat_filter", "protocol_class",
           "raise_nofile", "serve"]
