"""Limits that keep one public server usable under load and hostile input.

- ModelSlots: at most N model runs at once (a 2-core box does not get faster with 10 runs in
  parallel, only slower for everyone); a request that cannot get a slot within the queue timeout,
  or whose run outlives the run timeout, gets a clean 503 with Retry-After instead of hanging.
  Slots go to waiting requests in arrival order (FifoSlots), so none starves behind newcomers.
  A run that outlives the run timeout is stopped (models/deadline.py: the model loops check the
  deadline between chunks and steps), so its slot is free again within a moment of the 503 instead
  of being held for however long the run would have taken. Identical runs in flight are shared
  (single flight), so a burst of the same view costs one run.
  A batched run (run_batched) also takes queued requests of its group along: one model pass for
  several texts costs less than one each (bench/batch_trace_speed.py).
- RateLimit: a token bucket per client address (OFF unless RNNSCOPE_RATE_LIMIT is set).
- BodyGuard: request bodies bounded in bytes before anything parses them; JSON bodies strictly
  checked (no NaN/Infinity, no lone surrogates, no absurd nesting) so no route ever sees them.
- bound_native_memory: memory stays flat under texts of every length (see its docstring).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from markupsafe import escape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models import deadline

T = TypeVar("T")

BUSY_RETRY_S = 5  # Retry-After when every model slot stayed busy for the whole queue timeout
SLOW_RETRY_S = 10  # Retry-After when one run outlived the run timeout (it was stopped)
# How long past the run timeout a request waits for its run to stop: the loops check their deadline
# every chunk or step (tens of ms), so the 503 normally comes with the slot already free again; a
# run stuck in one long operation still gets its request answered after this.
STOP_GRACE_S = 2.0
MAX_JSON_DEPTH = 32  # no request shape of this API nests deeper than a few levels
# When the request reached the app (set by RateLimit, the outermost limit): the queue timeout counts
# from here, so time spent waiting for a worker thread is queueing too. Worker threads see it because
# anyio runs sync routes in a copy of the request's context.
ARRIVED: ContextVar[float | None] = ContextVar("rnnscope_arrived", default=None)


class Overloaded(Exception):
    """The server cannot serve this request right now: not the user's input, so never an InputError (422)."""

    def __init__(self, message: str, retry_after: int, status: int = 503):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status


ONEDNN_CACHE = 8  # oneDNN primitives kept; a trace of a new length needs a new one anyway
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc mallopt() parameters
MMAP_THRESHOLD = 16 << 20  # blocks above this come from and go back to the OS
TRIM_THRESHOLD = 64 << 20  # free memory an arena keeps at its top for the next trace


def bound_native_memory() -> list[str]:
    """Stop two native caches from growing a long-running server without bound; returns what was set.

    Measured under bench/load.py (texts of 200-5,000 characters): RSS grew ~0.5 MB per request
    with the trace cache full and flat. oneDNN keeps a compiled LSTM primitive per sequence length
    (up to 1,024 of them, ~0.3 MB each), and glibc's heap fragmented under large float arrays freed
    from many threads. Trace outputs now come from mapped buffers outside malloc
    (models/buffers.py); what malloc still serves is each chunk's temporaries (a few MiB each).
    A fixed 16 MiB mmap threshold keeps those in two arenas for reuse: at 128 KiB every trace
    faulted in ~180 MB of fresh pages (0.68 s against 0.57 s for 2,000 characters on a 2x512
    LSTM). Must run before the first model pass; an operator's own ONEDNN_PRIMITIVE_CACHE_CAPACITY
    is kept.
    """
    done = []
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(ONEDNN_CACHE)
        done.append(f"oneDNN primitive cache {ONEDNN_CACHE}")
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                and libc.mallopt(M_ARENA_MAX, 2) == 1):
            done.append(f"malloc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB, "
                        "2 arenas")
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass
    return done


def default_torch_threads(slots: int, cpus: int | None = None) -> int:
    """One share of the cores per concurrent run: 2 runs on 2 cores get 1 thread each, never 2 x 2."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, slots))


@dataclass(eq=False)
class Waiter:
    """One request queued for a slot. `group`, `key` and `item` let a batch run take it along
    (see FifoSlots.take_along); `joined` is then the future of its share of that run."""

    group: Hashable | None = None
    key: Hashable | None = None
    item: Any = None
    turn: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    joined: Future | None = None


class FifoSlots:
    """n slots handed out strictly in arrival order.

    threading.Semaphore lets a newly arrived thread take a slot that was freed for a thread
    already waiting (barging), so under load a few requests starve past the queue timeout while
    newcomers are served. Here release() gives the slot straight to the longest waiter.
    """

    def __init__(self, n: int):
        self._free = n
        self._lock = threading.Lock()
        self._waiters: deque[Waiter] = deque()

    def acquire(self, timeout: float, waiter: Waiter | None = None) -> Waiter | None:
        """The waiter once it holds a slot, or once a batch run took it along (waiter.joined is
        then set and it holds no slot); None when the timeout ran out first."""
        w = waiter or Waiter()
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return w
            if timeout <= 0:
                return None
            self._waiters.append(w)
        if w.turn.wait(timeout):
            return w
        with self._lock:
            if not (w.turn.is_set() or w.taken):
                self._waiters.remove(w)
                return None
        w.turn.wait()  # handed a slot or taken along just as the wait ran out: it is set at once
        return w

    def take_along(self, group: Hashable, limit: int, keys: set) -> list[Waiter]:
        """Waiters of `group`, oldest first, out of the queue: up to `limit` whose key is not yet
        in `keys` (added to it), and with them every one whose key is (it shares that item's run).

        The caller sets each one's `joined` and then its `turn`."""
        taken: list[Waiter] = []
        new = 0
        with self._lock:
            for w in list(self._waiters):
                if w.group != group or (new >= limit and w.key not in keys):
                    continue
                if w.key not in keys:
                    keys.add(w.key)
                    new += 1
                self._waiters.remove(w)
                w.taken = True
                taken.append(w)
        return taken

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().turn.set()
            else:
                self._free += 1


@dataclass(frozen=True)
class Batch:
    """How one run may serve several queued requests: those of the same `group`, oldest first,
    at most `size` in all; `work` maps the items to results (an exception in place of a result
    fails only that item's request)."""

    group: Hashable
    size: int
    work: Callable[[list[Any]], list[Any]]


class ModelSlots:
    """A bounded set of model-run slots with a queue timeout, a run timeout, single flight and
    optional batching (one run serves several queued requests; see Batch).

    Each run's work has a deadline (models/deadline.py) of run_timeout from the moment it got its
    slot: past it the model loops raise deadline.Overdue, the run ends, its slot goes to the next
    request, and every request it was serving gets the 503 (a batch ends as a whole)."""

    def __init__(self, slots: int, queue_timeout: float, run_timeout: float):
        self.slots = slots
        self.queue_timeout = queue_timeout
        self.run_timeout = run_timeout
        self._free = FifoSlots(slots)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="model-run")
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future] = {}
        self.waiting = 0  # requests queued for a slot now (for stats and tests)
        self.shared = 0  # requests served by joining an identical run already in flight
        self.batched = 0  # requests taken along by another request's batch run

    def run(self, key: Hashable | None, work: Callable[[], T]) -> T:
        """work() on a slot; raises Overloaded when no slot frees up in time or the run takes too long."""
        return self._run(key, work, None, None)

    def slow(self) -> Overloaded:
        """The 503 for a run stopped at the run timeout."""
        return Overloaded(
            f"this model run took longer than the {self.run_timeout:g} s limit and was stopped: a shorter text "
            f"(or a smaller request) is faster. Try again in {SLOW_RETRY_S} s.", SLOW_RETRY_S)

    def run_batched(self, key: Hashable, item: Any, batch: Batch) -> Any:
        """batch.work([item, ...])'s result for `item`, from a run that may serve other queued items too."""
        return self._run(key, None, item, batch)

    def stream(self, produce: Callable[[Callable[[Any], None]], None]) -> SlotStream:
        """Start produce(emit) on a slot and return an iterator over what it emits, as it emits it.

        Raises Overloaded when no slot frees up within the queue timeout (before anything is
        produced, so a stream can still answer 503). The run has the same deadline as any other:
        past the run timeout it stops, and the iterator raises deadline.Overdue. It never waits for
        the reader: the slot is held while producing, not while a slow client reads. Closing the
        iterator stops the run at its next emit."""
        self._acquire(None, None, None)
        stream = SlotStream()
        with self._lock:
            try:
                future = self._submit([None], lambda: [produce(stream.emit)])[0]
            except BaseException:
                self._free.release()  # never lose a slot
                raise
        stream.follow(future)  # (a stream has no batch group: no batch run takes it along)
        return stream

    def _acquire(self, key: Hashable | None, item: Any, batch: Batch | None) -> Waiter:
        """A slot for this request (or a batch run that took it along: waiter.joined is then set);
        Overloaded when none frees up within the queue timeout."""
        started = time.monotonic()
        arrived = min(ARRIVED.get() or started, started)
        ARRIVED.set(None)  # only a request's first run had to wait for a thread; its later runs queue afresh
        with self._lock:
            self.waiting += 1
        try:
            budget = self.queue_timeout - (started - arrived)  # what is left after waiting for a thread
            got = self._free.acquire(budget, Waiter(batch and batch.group, key, item))
        finally:
            with self._lock:
                self.waiting -= 1
        if got is None:
            raise Overloaded(
                f"the server is busy: every model slot stayed taken for {round(time.monotonic() - arrived, 1):g} s. "
                f"Try again in {BUSY_RETRY_S} s.", BUSY_RETRY_S)
        return got

    def _run(self, key: Hashable | None, work: Callable[[], T] | None, item: Any, batch: Batch | None) -> Any:
        future = self._joinable(key)
        if future is None:
            got = self._acquire(key, item, batch)
            future = got.joined if got.joined is not None else self._start(key, work, item, batch)
        else:
            ARRIVED.set(None)  # only a request's first run had to wait for a thread; its later runs queue afresh
        try:  # the run stops at its deadline; the grace only covers one stuck in a long operation
            return future.result(timeout=self.run_timeout + STOP_GRACE_S)
        except (FutureTimeout, deadline.Overdue):
            raise self.slow() from None

    def _start(self, key: Hashable | None, work: Callable[[], T] | None, item: Any, batch: Batch | None) -> Future:
        """On a slot just acquired: start the run (taking queued items of its batch group along),
        or hand the slot back and join an identical run that started meanwhile."""
        with self._lock:
            future = self._inflight.get(key) if key is not None else None
            if future is not None:  # an identical run started while this request queued: share it
                self._free.release()
                self.shared += 1
                return future
            if batch is None:
                try:
                    return self._submit([key], lambda: [work()])[0]
                except BaseException:
                    self._free.release()  # never lose a slot
                    raise
            keys, items, riders, twins = [key], [item], [], []
            for w in self._free.take_along(batch.group, batch.size - 1, {key}):
                running = self._inflight.get(w.key)
                if running is not None:  # its identical run started after it queued: share that one
                    self.shared += 1
                    self._hand(w, running)
                elif w.key in keys:  # the same request as one already in this batch
                    twins.append(w)
                else:
                    keys.append(w.key)
                    items.append(w.item)
                    riders.append(w)
            try:
                futures = self._submit(keys, lambda: batch.work(items))
            except BaseException as e:
                self._free.release()
                for w in riders + twins:  # out of the queue already: each must hear how it ended
                    failed: Future = Future()
                    failed.set_exception(e)
                    self._hand(w, failed)
                raise
            for w, f in zip(riders, futures[1:]):
                self._hand(w, f)
            for w in twins:
                self._hand(w, futures[keys.index(w.key)])
            self.batched += len(riders)
            self.shared += len(twins)
            return futures[0]

    @staticmethod
    def _hand(w: Waiter, future: Future) -> None:
        """Wake a waiter taken out of the queue with the future of its result."""
        w.joined = future
        w.turn.set()

    def _joinable(self, key: Hashable | None) -> Future | None:
        if key is None:
            return None
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                self.shared += 1
            return future

    def _submit(self, keys: list[Hashable | None], work: Callable[[], list]) -> list[Future]:
        """One future per key (the same one for repeated keys), all settled by one run of work().
        Called with self._lock held."""
        futures: list[Future] = []
        by_key: dict[Hashable, Future] = {}
        for key in keys:
            if key is None:
                futures.append(Future())
            else:
                futures.append(by_key.setdefault(key, Future()))
        try:
            self._pool.submit(self._job, keys, futures, work)
        except RuntimeError:  # closed by an earlier lifespan of the same app (tests reuse apps): start afresh
            self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="model-run")
            self._pool.submit(self._job, keys, futures, work)
        self._inflight.update(by_key)
        return futures

    def _job(self, keys: list[Hashable | None], futures: list[Future], work: Callable[[], list]) -> None:
        results: list | BaseException
        try:
            with deadline.until(time.monotonic() + self.run_timeout):  # the model loops stop past it
                results = work()  # an exception among them is that item's own failure
        except BaseException as e:
            results = e
        finally:
            # The slot first: a request that hears its run ended (a 503 for a stopped one) finds it free.
            with self._lock:
                for key, f in zip(keys, futures):
                    if key is not None and self._inflight.get(key) is f:
                        del self._inflight[key]
            self._free.release()
        for n, f in enumerate(futures):
            if f.done():
                continue
            if isinstance(results, BaseException):
                r = results
            else:
                r = results[n] if n < len(results) else RuntimeError("the run gave no result for this request")
            f.set_exception(r) if isinstance(r, BaseException) else f.set_result(r)

    def close(self) -> None:
        """Let the worker threads end once idle; runs in progress finish (and the next run starts a new pool)."""
        self._pool.shutdown(wait=False)


class StreamClosed(Exception):
    """The reader of a SlotStream went away: its run stops at its next emit."""


_END = object()


class SlotStream:
    """What a run started by ModelSlots.stream emits, in order, as it emits it (see there)."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        self._future: Future | None = None

    def emit(self, item: Any) -> None:
        """Called by the run on its slot; raises StreamClosed once nobody reads any more."""
        if self._closed.is_set():
            raise StreamClosed
        self._items.put(item)

    def follow(self, future: Future) -> None:
        self._future = future
        future.add_done_callback(lambda f: self._items.put(_END))

    def __iter__(self) -> SlotStream:
        return self

    def __next__(self) -> Any:
        if self._closed.is_set():
            raise StopIteration
        item = self._items.get()
        if item is _END:
            self._closed.set()
            error = self._future.exception() if self._future is not None else None
            if error is not None and not isinstance(error, StreamClosed):
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        self._closed.set()


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
        return None if _valid_unicode(value) else where
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_string(item, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if not _valid_unicode(key):
                return where or "a field name"
            found = _bad_string(item, path, depth + 1)
            if found is not None:
                return found
    return None


def _valid_unicode(s: str) -> bool:
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


class WithoutModelRuns:
    """A TraceService stand-in whose traces refuse with the overload message, so a page that could not
    get a model slot still renders its form, with the reason beside the text, instead of an error page."""

    def __init__(self, service: Any, busy: Overloaded):
        self._service = service
        self._busy = busy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def view_trace(self, *args: Any, **kwargs: Any) -> Any:
        from app.core.errors import InputError

        raise InputError(self._busy.message, field="text", status=self._busy.status)


LIMIT_RESPONSES = {
    "413": "the request body is over the size limit",
    "415": "the request body is not JSON",
    "429": "too many requests from this address (when the server sets a rate limit); see Retry-After",
    "503": "the server is busy, or the model run took longer than its limit (and was stopped); see Retry-After",
}


def document_limits(app: Any) -> None:
    """Add the statuses the limits above can answer with to every /api operation in the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        ref = {"$ref": "#/components/schemas/ErrorDetail"}
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/api/"):
                continue
            for method, op in operations.items():
                statuses = ("429", "503") if method in ("get", "head") else tuple(LIMIT_RESPONSES)
                for status in statuses:
                    op.setdefault("responses", {}).setdefault(status, {
                        "description": LIMIT_RESPONSES[status], "content": {"application/json": {"schema": ref}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
