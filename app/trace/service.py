"""Traces text through a model once and serves every later view of it from the cache.

The cache (models.cache.ByteLRU) is keyed by (model, model version, text, warmup, scope); a training
snapshot is the model with other weights and a version of its own (app.core.registry), so its traces
never mix with the final weights' or another step's.
For texts whose whole trace (every layer, state and unit) fits a share of the cache, scope is
"everything", so switching neuron, layer or state never re-runs the model. Longer texts keep
one (layer, state) with all its units, so stepping through neurons is still free.
A whole trace is lazy (models.trace.RecomputedStates): it keeps each layer's h and works out
the state on screen, for the unit on screen, when a view reads it (milliseconds), so tracing a new
text runs only the fused forwards and the cache holds three times as many texts as float16 copies
of every gate would allow. What views read is float16: about three significant digits.
Every model pass runs on one of a bounded set of slots (app.core.slots.ModelSlots): a request that
waits or runs too long gets a 503 with Retry-After instead of piling more work on the cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from models.cache import ByteLRU
from models.errors import RnnscopeError
from models.trace import FEW_UNITS, RecomputedStates, Trace, check_request, lazy_trace_bytes, run_trace, run_traces

from app.core.config import Settings
from app.core.errors import InputError
from app.core.registry import ModelEntry, Registry, SnapshotUnreadable, UnknownModel, UnknownSnapshot
from app.core.slots import Batch, ModelSlots

VIEW_TOPK = 5  # predictions kept per character for the page (and the cached trace)


@dataclass(frozen=True)
class TraceResult:
    trace: Trace
    cached: bool
    seconds: float  # time spent tracing (0 on a cache hit)


class TraceService:
    def __init__(self, registry: Registry, settings: Settings):
        self.registry = registry
        self.settings = settings
        self.cache: ByteLRU[Trace] = ByteLRU(settings.cache_bytes, lambda t: t.nbytes)
        self.traces_run = 0  # model passes actually run (cache misses), for tests and stats
        # Every model pass goes through a bounded set of slots: a queue timeout and a run timeout (503s).
        self.slots = ModelSlots(settings.max_concurrent_traces, settings.queue_timeout, settings.trace_timeout)
        # Ranking units of a trace already cached takes a fraction of a second on one core: it gets
        # its own single slot, so a probe of the text on screen never queues behind new traces.
        self.scoring = ModelSlots(1, settings.queue_timeout, settings.trace_timeout)

    # ---- inputs -------------------------------------------------------------------------
    def model(self, name: str, snapshot: int | None = None) -> ModelEntry:
        """The installed model `name`; with `snapshot`, the same model with the weights of that training step."""
        self.registry.refresh()
        try:
            entry = self.registry.get(name)
        except UnknownModel as e:
            raise InputError(str(e), field="model", status=404) from None
        return entry if snapshot is None else self.snapshot(entry, snapshot)

    def snapshot(self, entry: ModelEntry, step: int) -> ModelEntry:
        """`entry` at training step `step` (404 naming the steps there are; 503 if its file cannot be read now)."""
        try:
            return self.registry.snapshot(entry, step)
        except UnknownSnapshot as e:
            raise InputError(str(e), field="snapshot", status=404) from None
        except SnapshotUnreadable as e:
            raise InputError(str(e), field="snapshot", status=503) from None

    def check_text(self, text: str) -> None:
        if not text:
            raise InputError("the text is empty: type or paste at least one character", field="text")
        if len(text) > self.settings.max_chars:
            raise InputError(
                f"the text is {len(text):,} characters long; the limit is {self.settings.max_chars:,}: "
                "shorten it",
                field="text",
                status=413,
            )

    @staticmethod
    def check_layer(entry: ModelEntry, layer: int) -> None:
        _checked(lambda: check_request(entry.checkpoint.model, [layer], [], None), "layer")

    @staticmethod
    def check_state(entry: ModelEntry, state: str) -> None:
        _checked(lambda: check_request(entry.checkpoint.model, [], [state], None), "state")

    @staticmethod
    def check_units(entry: ModelEntry, units: list[int]) -> None:
        _checked(lambda: check_request(entry.checkpoint.model, [], [], units), "unit")

    # ---- tracing ------------------------------------------------------------------------
    def full_trace_bytes(self, entry: ModelEntry, length: int) -> int:
        return lazy_trace_bytes(entry.checkpoint.config, length, VIEW_TOPK)

    def fits_whole(self, entry: ModelEntry, length: int) -> bool:
        return self.full_trace_bytes(entry, length) <= self.settings.cache_bytes * self.settings.full_trace_share

    def view_trace(self, entry: ModelEntry, text: str, layer: int, state: str, warmup: str = "") -> TraceResult:
        """All units of (layer, state) plus top-k and surprisal: from the cache when it has them."""
        if self.fits_whole(entry, len(text)):
            return self._cached(entry, text, warmup, None)
        whole = self.cache.get(_key(entry, text, warmup, None))
        if whole is not None:
            return TraceResult(whole, True, 0.0)
        return self._cached(entry, text, warmup, (layer, state))

    def api_trace(
        self,
        entry: ModelEntry,
        text: str,
        layers: list[int] | None,
        states: list[str] | None,
        units: list[int] | None,
        topk: int,
    ) -> TraceResult:
        """What the JSON API asked for: sliced from a cached trace where possible."""
        topk = min(topk, entry.vocab_size)
        if topk <= VIEW_TOPK:
            if self.fits_whole(entry, len(text)) or self.cache.get(_key(entry, text, "", None)) is not None:
                return self._cached(entry, text, "", None)
            if layers is not None and states is not None and len(layers) == 1 and len(states) == 1:
                return self._cached(entry, text, "", (layers[0], states[0]))
        def compute() -> tuple[Trace, float]:
            t0 = time.perf_counter()
            try:
                trace = run_trace(entry.checkpoint.model, entry.checkpoint.vocab, text, layers=layers, states=states,
                                  units=units, topk=topk, half=True)
            except RnnscopeError as e:
                raise InputError(str(e)) from None
            self.traces_run += 1
            return trace, time.perf_counter() - t0

        key = ("api", entry.name, entry.version, text, _tuple(layers), _tuple(states), _tuple(units), topk)
        trace, seconds = self.slots.run(key, compute)
        return TraceResult(trace, False, seconds)

    def _cached(self, entry: ModelEntry, text: str, warmup: str, scope: tuple[int, str] | None) -> TraceResult:
        key = _key(entry, text, warmup, scope)
        hit = self.cache.get(key)
        if hit is not None:
            return TraceResult(hit, True, 0.0)
        trace, seconds = self.slots.run_batched(key, text, self._batch(entry, warmup, scope))  # 503 when busy or slow
        return TraceResult(trace, False, seconds)

    def _batch(self, entry: ModelEntry, warmup: str, scope: tuple[int, str] | None) -> Batch:
        """Traces of one model, warm-up and scope: queued texts share the run that gets a slot.

        Under load the text that waited longest may share its run with longer ones: it then ends
        later than alone (at most the longest rider's time), while every rider ends sooner than its
        own turn in the queue would have come."""

        def work(texts: list[str]) -> list[tuple[Trace, float]]:
            # Runs on a model slot; caches its own results, so a run that outlives its requests still pays off.
            t0 = time.perf_counter()
            keys = [_key(entry, text, warmup, scope) for text in texts]
            done = {n: hit for n, key in enumerate(keys) if (hit := self.cache.get(key)) is not None}
            todo = [n for n in range(len(texts)) if n not in done]  # identical runs finished while these queued
            if todo:
                traced = self._trace_each(entry, [texts[n] for n in todo], warmup, scope)
                for n, trace in zip(todo, traced):
                    if isinstance(trace, Trace):
                        self.cache.put(keys[n], trace)
                    done[n] = trace
            seconds = time.perf_counter() - t0
            return [done[n] if isinstance(done[n], InputError) else (done[n], seconds if n in todo else 0.0)
                    for n in range(len(texts))]

        return Batch(group=("trace", entry.name, entry.version, warmup, scope), size=self.settings.trace_batch,
                     work=work)

    def _trace_each(self, entry: ModelEntry, texts: list[str], warmup: str,
                    scope: tuple[int, str] | None) -> list[Trace | InputError]:
        """One batch; should it refuse, each text alone, so one bad text costs only its own request."""
        what = {"lazy": True} if scope is None else {"layers": [scope[0]], "states": [scope[1]]}
        try:
            traces: list[Trace | InputError] = run_traces(
                entry.checkpoint.model, entry.checkpoint.vocab, texts, topk=VIEW_TOPK, warmup=warmup, half=True,
                **what)
        except RnnscopeError as e:
            if len(texts) == 1:
                return [InputError(str(e))]
            return [self._trace_each(entry, [text], warmup, scope)[0] for text in texts]
        self.traces_run += len(traces)
        return traces

    def api_blocks(self, entry: ModelEntry, trace: Trace, layers: list[int] | None, states: list[str] | None,
                   units: list[int] | None) -> dict[int, dict[str, np.ndarray]]:
        """{layer: {state: (T, U) values}} for an API response (None: every layer, every state).
        Every unit of a gate of a lazy trace costs what recording it did (a second for the largest
        request), so that runs on the scoring slot, bounded like any model work (503 when busy);
        h and a few units do not."""
        layers = list(range(entry.layers)) if layers is None else layers
        states = list(entry.states) if states is None else states
        subset = units if units is not None and trace.units is None else None  # a whole trace: pick the units

        def build() -> dict[int, dict[str, np.ndarray]]:
            return {k: trace.states[k].arrays(states, subset) for k in layers}

        lazy = any(isinstance(trace.states[k], RecomputedStates) for k in layers)
        heavy = lazy and bool(set(states) - {"h"}) and (subset is None or len(subset) > FEW_UNITS)
        return self.scoring.run(None, build) if heavy else build()


def unit_values(trace: Trace, layer: int, state: str, unit: int) -> np.ndarray:
    """One unit's value at every position, as float32 (T,)."""
    column = unit if trace.units is None else trace.units.index(unit)
    return trace.states[layer].column(state, column).astype(np.float32)


def _key(entry: ModelEntry, text: str, warmup: str, scope) -> tuple:
    return (entry.name, entry.version, text, warmup, scope)


def _tuple(items: list | None) -> tuple | None:
    return None if items is None else tuple(items)


def _checked(call, field: str) -> None:
    try:
        call()
    except RnnscopeError as e:
        raise InputError(str(e), field=field) from None
