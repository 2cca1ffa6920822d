"""The dynamics views' work: checks every input, runs models/dynamics and models/sample, caches.

Routes and pages call this; it never renders. Each bad input becomes an InputError naming the
field it belongs to, so the page shows it beside that control and the API answers 4xx JSON.
Expensive results (gradient flow, gate saturation) are cached per model version, so a retrained
checkpoint is never answered from a stale entry. Model runs go through the app's bounded model
slots (app.core.slots.ModelSlots), like every trace: busy or too slow is a 503, never a hang.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.cache import ByteLRU
from models.dynamics import (
    MAX_LOOKBACK,
    MAX_TOPK,
    Intervention,
    counterfactual,
    gate_saturation,
    gradient_flow,
    intervene,
    scalar_rnn,
)
from models import deadline
from models.deadline import Overdue
from models.errors import RnnscopeError
from models.sample import generate
from models.stepper import UnitStepper

from app.core.errors import InputError
from app.core.model_list import entries_for_models_field
from app.core.registry import ModelEntry
from app.core.selection import UnitRef
from app.core.slots import ModelSlots, SlotStream
from app.dynamics.heldout import HeldOut, HeldOutTexts, NoHeldOut
from app.dynamics.results import (
    CounterfactualResult,
    DEFAULT_INTERVENE_TOPK,
    FlowResult,
    GenerationPlan,
    InterventionResult,
    MAX_COMPARE,
    MAX_GENERATE,
    MAX_INTERVENE_CHARS,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOY_STEPS,
    SATURATION_CHARS,
    SATURATION_HIGH,
    SATURATION_LOW,
    SaturationResult,
    TOY_LIMIT,
    ToyResult,
)
from app.trace.service import TraceService, unit_values
from app.ui.render import ROOT
from app.ui.scale import STATE_INFO, Scale, neuron_scale

log = logging.getLogger("rnnscope.dynamics")
T = TypeVar("T")

DATA_DIR = ROOT / "data"  # where `rnnscope corpus --out data/...` writes held-out files (README)
# ------------------------------------------------------------------ the service


class DynamicsService:
    def __init__(self, traces: TraceService, data_dir: Path = DATA_DIR, heldout: HeldOutTexts | None = None):
        self.traces = traces
        self.settings = traces.settings
        self.data_dir = data_dir
        self.heldout = heldout if heldout is not None else HeldOutTexts(data_dir, SATURATION_CHARS)
        self._flows: ByteLRU[FlowResult] = ByteLRU(16 * 1024 * 1024, lambda r: r.flow.jacobian_norm.nbytes * 2 + 512)
        self._saturation: ByteLRU[SaturationResult] = ByteLRU(32 * 1024 * 1024, lambda r: r.nbytes)
        # So picking another position to compare (the page's "at") never runs the model again.
        self._interventions: ByteLRU[Intervention] = ByteLRU(32 * 1024 * 1024, lambda r: r.nbytes + 512)
        self.saturation_runs = 0  # saturation passes actually run (cache misses), for tests

    # ---- shared checks ------------------------------------------------------------------
    @property
    def registry(self):
        return self.traces.registry

    def model(self, name: str | None) -> ModelEntry:
        if not name:
            self.registry.refresh()
            if not self.registry.entries:
                raise InputError("no models are installed: train one first (see the main page)", field="model",
                                 status=404)
            raise InputError("choose a model", field="model")
        return self.traces.model(name)

    def check_text(self, text: str, field: str = "text", what: str = "the text", limit: int | None = None) -> None:
        limit = self.settings.max_chars if limit is None else min(limit, self.settings.max_chars)
        if not text:
            raise InputError(f"{what} is empty: type or paste at least one character", field=field)
        if len(text) > limit:
            raise InputError(f"{what} is {len(text):,} characters long; the limit here is {limit:,}: shorten it",
                             field=field, status=413)

    def check_unit(self, entry: ModelEntry, layer: int, state: str, unit: int) -> None:
        self.traces.check_layer(entry, layer)
        self.traces.check_state(entry, state)
        self.traces.check_units(entry, [unit])

    @staticmethod
    def default_unit(entry: ModelEntry) -> tuple[int, str, int]:
        """The card's quote unit if it names one, else layer 0, h, unit 0 (as the main page)."""
        return UnitRef.default_for(entry).as_tuple()

    # ---- generation ---------------------------------------------------------------------
    def plan_generation(self, model: str | None, prime: str, n: int, temperature: float, seed: int | None,
                        layer: int, state: str, unit: int) -> GenerationPlan:
        entry = self.model(model)
        self.check_text(prime, what="the prime text")
        self.check_unit(entry, layer, state, unit)
        self.check_length(n)
        self.check_temperature(temperature)
        self.check_seed(seed)
        given = seed is not None
        return GenerationPlan(entry, prime, n, float(temperature), seed if given else secrets.randbelow(MAX_SEED + 1),
                              given, layer, state, unit)

    @staticmethod
    def check_length(n: int) -> None:
        if not 1 <= n <= MAX_GENERATE:
            raise InputError(f"length must be between 1 and {MAX_GENERATE:,} characters, got {n:,}", field="n",
                             status=413 if n > MAX_GENERATE else 422)

    @staticmethod
    def check_temperature(temperature: float) -> None:
        if not math.isfinite(temperature):
            raise InputError("temperature must be a finite number (0 = greedy)", field="temperature")
        if not 0.0 <= temperature <= MAX_TEMPERATURE:
            raise InputError(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {temperature:g}",
                             field="temperature")

    @staticmethod
    def check_seed(seed: int | None) -> None:
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed}", field="seed")

    def prime_scale(self, plan: GenerationPlan) -> tuple[np.ndarray, Scale]:
        """The chosen unit over the prime, and the colour scale the whole run uses (set by the prime)."""
        values = unit_values(self.traces.view_trace(plan.entry, plan.prime, plan.layer, plan.state).trace,
                             plan.layer, plan.state, plan.unit)
        return values, neuron_scale(plan.state, values)

    def generation_events(self, plan: GenerationPlan, scale: Scale) -> Iterator[str]:
        """Server-sent events: `meta`, one `char` per sampled character, then `done` (or `fail`).

        Blocks until a model slot is free (Overloaded, a 503, when none is in time: call it before
        the response starts). The sampling runs on that slot like any model run, at its own pace
        (never waiting for the reader), and stops at the run timeout: the stream then ends with `fail`."""
        slots = self.traces.slots
        return self._events(plan, scale, slots.stream(lambda emit: _sample(plan, emit)), slots)

    def _events(self, plan: GenerationPlan, scale: Scale, stream: SlotStream, slots: ModelSlots) -> Iterator[str]:
        try:
            yield sse("meta", {"model": plan.entry.name, "n": plan.n, "temperature": plan.temperature,
                               "seed": plan.seed, "seed_given": plan.seed_given,
                               "what": f"{plan.state}[{plan.layer}][{plan.unit}]",
                               "scale": {"lo": scale.lo, "hi": scale.hi, "label": scale.label,
                                         "bounded": STATE_INFO.get(plan.state, ("", "free"))[1] != "free"}})
            t0 = time.perf_counter()
            out: list[str] = []
            for i, (ch, v) in enumerate(stream):
                out.append(ch)
                pos = float(scale.positions(np.array([v]))[0])
                yield sse("char", {"i": i, "ch": ch, "v": round(v, 4), "pos": round(pos, 3)})
            yield sse("done", {"n": len(out), "text": "".join(out), "seed": plan.seed,
                               "seconds": round(time.perf_counter() - t0, 3)})
        except RnnscopeError as e:
            yield sse("fail", {"detail": str(e)})
        except Overdue:
            yield sse("fail", {"detail": slots.slow().message})
        except Exception:  # noqa: BLE001 - a stream cannot change its status any more: say so in-band
            log.exception("generation stream failed")
            yield sse("fail", {"detail": "internal error: the server log has the details"})
        finally:
            stream.close()  # a reader that went away stops the sampling at its next character

    # ---- gradient flow ------------------------------------------------------------------
    def compare_models(self, names: list[str]) -> list[ModelEntry]:
        names = list(dict.fromkeys(n for n in names if n))
        if not names:
            raise InputError("choose at least one model to compare", field="models")
        if len(names) > MAX_COMPARE:
            raise InputError(f"compare at most {MAX_COMPARE} models at once, got {len(names)}", field="models")
        return entries_for_models_field(self.traces.model, names)

    def default_compare(self, first: str | None) -> list[str]:
        """The page's model first, then other installed models, up to MAX_COMPARE."""
        self.registry.refresh()
        names = self.registry.names()
        lead = [first] if first in names else []
        return (lead + [n for n in names if n not in lead])[:MAX_COMPARE]

    @staticmethod
    def default_position(text: str) -> int:
        """The second-last character, so the saliency differentiates a true next character."""
        return max(0, len(text) - 2)

    def check_flow_request(self, text: str, position: int, lookback: int) -> None:
        self.check_text(text)
        if not 0 <= position < len(text):
            raise InputError(f"position {position} is out of range: the text has positions 0..{len(text) - 1}",
                             field="position")
        if not 1 <= lookback <= MAX_LOOKBACK:
            raise InputError(f"lookback must be between 1 and {MAX_LOOKBACK} steps, got {lookback}", field="lookback")

    def gradients(self, entries: list[ModelEntry], text: str, position: int, lookback: int) -> list[FlowResult]:
        self.check_flow_request(text, position, lookback)
        return [self._flow(e, text, position, lookback) for e in entries]

    def _flow(self, entry: ModelEntry, text: str, position: int, lookback: int) -> FlowResult:
        key = ("flow", entry.name, entry.version, _digest(text), position, lookback)

        def compute() -> FlowResult:
            t0 = time.perf_counter()
            model, vocab = entry.checkpoint.model, entry.checkpoint.vocab
            flow = _refusal(lambda: gradient_flow(model, vocab, text, position=position, lookback=lookback),
                            "position")
            if position + 1 < len(text):
                target = text[position + 1]
            else:  # gradient_flow differentiates the model's top guess here: name it
                target = vocab.chars[flow.target_id]
            return FlowResult(entry, flow, target, time.perf_counter() - t0, False)

        result, hit = self._once(key, self._flows, compute)
        return result if not hit else FlowResult(entry, result.flow, result.target, result.seconds, True)

    # ---- the seed's scalar RNN ----------------------------------------------------------
    def toy(self, w_hh: float, w_xh: float, b: float, xs: list[float], h0: float = 0.0) -> ToyResult:
        for name, v in (("w_hh", w_hh), ("w_xh", w_xh), ("b", b), ("h0", h0)):
            if not math.isfinite(v):
                raise InputError(f"{name} must be a finite number", field=name)
            if abs(v) > TOY_LIMIT:
                raise InputError(f"{name} must be between -{TOY_LIMIT:g} and {TOY_LIMIT:g}", field=name)
        if not xs:
            raise InputError("give at least one input x_t (numbers separated by spaces or commas)", field="xs")
        if len(xs) > MAX_TOY_STEPS:
            raise InputError(f"give at most {MAX_TOY_STEPS} inputs, got {len(xs)}", field="xs")
        for k, x in enumerate(xs):
            if not math.isfinite(x) or abs(x) > TOY_LIMIT:
                raise InputError(f"input {k + 1} must be a finite number between -{TOY_LIMIT:g} and {TOY_LIMIT:g}",
                                 field="xs")
        run = _refusal(lambda: scalar_rnn(w_hh, w_xh, b, xs, h0), "xs")
        local = [(1 - h * h) * w_hh for h in run.h]
        return ToyResult(run, w_hh, w_xh, b, h0, list(xs), local)

    # ---- gate saturation ----------------------------------------------------------------
    def held_out(self, entry: ModelEntry) -> HeldOut:
        """The model's held-out text (rebuilt from its corpus source, cached), or NoHeldOut saying why not."""
        sha = entry.card.get("corpus_sha256")
        return self.heldout.get(entry.corpus, sha if isinstance(sha, str) else None)

    def missing_held_out(self, entry: ModelEntry) -> str | None:
        """Why there is no held-out text for this model here (None: there is)."""
        try:
            self.held_out(entry)
        except NoHeldOut as e:
            return e.reason
        return None

    @staticmethod
    def check_gated(entry: ModelEntry) -> None:
        if entry.cell not in ("lstm", "gru"):
            raise InputError(f"{entry.name} is a vanilla RNN: it has no gates to saturate; pick an LSTM or GRU model",
                             field="model")

    def saturation(self, entry: ModelEntry, text: str | None) -> SaturationResult:
        """On held-out text whenever there is any (a given text is then ignored); else on `text`, with a
        warning saying why it is not held-out text; with neither, a refusal that says why."""
        self.check_gated(entry)
        warning = ""
        try:
            held = self.held_out(entry)
        except NoHeldOut as e:
            if text is None:
                raise InputError(f"{entry.name} has no held-out text here: {e.reason}. Send a text to measure on "
                                 "instead", field="model" if e.installable else "text",
                                 status=503 if e.installable else 422) from None
            self.check_text(text)
            sample, held_out = text, False
            source = f"the current text ({len(text):,} characters), not held-out text"
            warning = f"{entry.name} has no held-out text here: {e.reason}"
            key: tuple = ("sat", entry.name, entry.version, "text", _digest(text))
        else:
            sample, source, held_out = held.text, held.source, True
            key = ("sat", entry.name, entry.version, "held-out", held.corpus, _digest(held.text))

        def compute() -> SaturationResult:
            t0 = time.perf_counter()
            model, vocab = entry.checkpoint.model, entry.checkpoint.vocab
            raw = _refusal(lambda: gate_saturation(model, vocab, sample, SATURATION_LOW, SATURATION_HIGH), "model")
            self.saturation_runs += 1
            layers = {int(k): {g: {side: np.asarray(a, dtype=np.float32) for side, a in d.items()}
                               for g, d in per.items()} for k, per in raw.items()}
            return SaturationResult(entry, source, len(sample), layers, time.perf_counter() - t0, False,
                                    held_out, warning)

        result, hit = self._once(key, self._saturation, compute)
        return replace(result, cached=True) if hit else result

    # ---- interventions ------------------------------------------------------------------
    @staticmethod
    def check_clampable(entry: ModelEntry, state: str) -> None:
        allowed = ("h", "c") if entry.cell == "lstm" else ("h",)
        if state not in allowed:
            names = "h (the hidden state) or c (the cell state)" if entry.cell == "lstm" else "h (the hidden state)"
            raise InputError(f"only a state can be clamped, not {state!r}: choose {names}", field="state")

    @staticmethod
    def check_topk(topk: int) -> None:
        if isinstance(topk, bool) or not isinstance(topk, int) or not 0 <= topk <= MAX_TOPK:
            raise InputError(f"topk must be a whole number from 0 to {MAX_TOPK} (next-character "
                             f"predictions per position), got {topk!r}", field="topk")

    def check_intervention(self, entry: ModelEntry, text: str, layer: int, state: str, unit: int, value: float,
                           start: int, watch: str | None, topk: int = DEFAULT_INTERVENE_TOPK) -> None:
        self.check_text(text, limit=MAX_INTERVENE_CHARS)
        self.traces.check_layer(entry, layer)
        self.traces.check_state(entry, state)
        self.check_clampable(entry, state)
        self.traces.check_units(entry, [unit])
        if not math.isfinite(value):
            raise InputError("the clamp value must be a finite number", field="value")
        if not 0 <= start < len(text):
            raise InputError(f"start {start} is out of range: the text has positions 0..{len(text) - 1}", field="start")
        if watch is not None:
            if len(watch) != 1:
                raise InputError(f"watch must be exactly one character, got {len(watch)}", field="watch")
            if watch not in entry.checkpoint.vocab:
                raise InputError(f"{entry.name} never saw {watch!r} in training, so it never predicts it: "
                                 "watch another character", field="watch")
        self.check_topk(topk)

    def intervention(self, entry: ModelEntry, text: str, layer: int, state: str, unit: int, value: float, start: int,
                     watch: str | None, topk: int = DEFAULT_INTERVENE_TOPK) -> InterventionResult:
        """Both runs (unit free and clamped) once; the result, top-k predictions included, is cached
        per model version, so the page can compare another position without running the model."""
        self.check_intervention(entry, text, layer, state, unit, value, start, watch, topk)
        model, vocab = entry.checkpoint.model, entry.checkpoint.vocab
        t0 = time.perf_counter()
        key = ("intervene", entry.name, entry.version, _digest(text), layer, state, unit, value, start, watch, topk)
        res, cached = self._once(key, self._interventions, lambda: _refusal(
            lambda: intervene(model, vocab, text, layer, state, unit, value, start, watch, topk), "state"))
        return InterventionResult(entry, text, layer, state, unit, float(value), start, watch, res,
                                  time.perf_counter() - t0, cached)

    def check_counterfactual(self, entry: ModelEntry, original: str, edited: str, layer: int, state: str,
                             unit: int) -> None:
        self.check_text(original, what="the original text", limit=MAX_INTERVENE_CHARS)
        self.check_text(edited, field="edited", what="the edited text", limit=MAX_INTERVENE_CHARS)
        self.check_unit(entry, layer, state, unit)

    def counterfactual(self, entry: ModelEntry, original: str, edited: str, layer: int, state: str,
                       unit: int) -> CounterfactualResult:
        self.check_counterfactual(entry, original, edited, layer, state, unit)
        model, vocab = entry.checkpoint.model, entry.checkpoint.vocab
        key = ("counterfactual", entry.name, entry.version, _digest(original), _digest(edited), layer, state, unit)
        res = self._run(key, lambda: _refusal(
            lambda: counterfactual(model, vocab, original, edited, layer, state, unit), "edited"))
        return CounterfactualResult(entry, original, layer, state, unit, res)

    # ---- model runs ---------------------------------------------------------------------
    def _run(self, key: tuple, compute: Callable[[], T]) -> T:
        """On one of the app's bounded model slots (app.core.slots.ModelSlots): identical runs in flight
        are shared; a full queue or an over-long run raises Overloaded (503 with Retry-After)."""
        return self.traces.slots.run(("dynamics", *key), compute)

    def _once(self, key: tuple, cache: ByteLRU, compute: Callable[[], T]) -> tuple[T, bool]:
        """From the cache, or run on a slot. The run fills the cache itself, so one that outlives
        its request (and answered 503) still makes the retry instant."""
        hit = cache.get(key)
        if hit is not None:
            return hit, True

        def work() -> T:
            value = compute()
            cache.put(key, value)
            return value

        return self._run(key, work), False


def _sample(plan: GenerationPlan, emit: Callable[[tuple[str, float]], None]) -> None:
    """On a model slot: each sampled character and the unit's value after it, checking the run's
    deadline between characters."""
    model, vocab = plan.entry.checkpoint.model, plan.entry.checkpoint.vocab
    stepper = UnitStepper(model, vocab, plan.prime, plan.layer, plan.state, plan.unit)
    for ch in generate(model, vocab, plan.prime, plan.n, plan.temperature, plan.seed):
        deadline.check()
        emit((ch, stepper.step(ch)))


def sse(event: str, data: dict) -> str:
    """One server-sent event; JSON keeps newlines in the data on one line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _refusal(call: Callable, field: str):
    """models/ raise RnnscopeError with a message for a person: keep it, name the field."""
    try:
        return call()
    except InputError:
        raise
    except RnnscopeError as e:
        raise InputError(str(e), field=field) from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
