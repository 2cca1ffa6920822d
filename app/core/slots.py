"""Model-run slots that keep one public server usable under load.

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
- SlotStream: a generator run in a slot, handed out item by item.
- WithoutModelRuns: a page's TraceService stand-in once no slot could be had.

The request-side limits (RateLimit, BodyGuard) live in app/http/guards.py, the process-wide memory
and thread settings in app/core/runtime.py.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from models import deadline

T = TypeVar("T")

BUSY_RETRY_S = 5  # Retry-After when every model slot stayed busy for the whole queue timeout
SLOW_RETRY_S = 10  # Retry-After when one run outlived the run timeout (it was stopped)
# How long past the run timeout a request waits for its run to stop: the loops check their deadline
# every chunk or step (tens of ms), so the 503 normally comes with the slot already free again; a
# run stuck in one long operation still gets its request answered after this.
STOP_GRACE_S = 2.0
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
