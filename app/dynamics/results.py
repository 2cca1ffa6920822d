"""What the dynamics service takes and gives: its input limits and its result values (plain data,
no model runs), shared by the service, its schemas, its pages and its routes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from models.dynamics import Counterfactual, GradientFlow, Intervention, ScalarRun

from app.core.registry import ModelEntry
from app.dynamics.watch import WatchSplit, split_watch

SATURATION_CHARS = 20_000
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9
MAX_GENERATE = 2_000
MAX_TEMPERATURE = 10.0
MAX_SEED = 2**32 - 1
DEFAULT_LOOKBACK = 50
MAX_COMPARE = 3
# The one text-length limit of the intervention page and its two APIs (clamp and counterfactual).
# A clamp steps its layer one character at a time from `start` (~0.2 ms a step on a 2x512 LSTM, one
# core) and runs every layer fused over the text for the free run: 5,000 characters take ~2-4 s
# (bench/dynamics_speed.py); a counterfactual traces both texts and aligns them in bounded time.
MAX_INTERVENE_CHARS = 5_000
MAX_COUNTERFACTUAL_CHARS = MAX_INTERVENE_CHARS
DEFAULT_INTERVENE_TOPK = 5  # next-character predictions per position, before and after a clamp
MAX_TOY_STEPS = 500
TOY_LIMIT = 1e6  # |weight| bound: beyond it every step saturates and the plot says nothing more


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class GenerationPlan:
    entry: ModelEntry
    prime: str
    n: int
    temperature: float
    seed: int
    seed_given: bool
    layer: int
    state: str
    unit: int


@dataclass(frozen=True)
class FlowResult:
    entry: ModelEntry
    flow: GradientFlow
    target: str
    seconds: float
    cached: bool


@dataclass(frozen=True)
class ToyResult:
    run: ScalarRun
    w_hh: float
    w_xh: float
    b: float
    h0: float
    xs: list[float]
    local: list[float]  # dh_t/dh_(t-1) = tanh'(a_t) * w_hh


@dataclass(frozen=True)
class SaturationResult:
    entry: ModelEntry
    source: str  # a sentence saying which text was measured
    chars: int
    layers: dict[int, dict[str, dict[str, np.ndarray]]]  # layer -> gate -> {"left", "right"} (units,)
    seconds: float
    cached: bool
    held_out: bool = True  # measured on held-out text (else on a given text, and `warning` says why)
    warning: str = ""

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for per in self.layers.values() for g in per.values() for a in g.values()) + 512


@dataclass(frozen=True)
class InterventionResult:
    entry: ModelEntry
    text: str
    layer: int
    state: str
    unit: int
    value: float
    start: int
    watch: str | None
    result: Intervention
    seconds: float
    cached: bool = False

    @property
    def mean_before(self) -> float | None:
        return _nanmean(self.result.surprisal_before)

    @property
    def mean_after(self) -> float | None:
        return _nanmean(self.result.surprisal_after)

    @cached_property
    def watch_split(self) -> WatchSplit | None:
        """Where the watched character comes next, split (closing vs opening quotes, ...); None without one."""
        if self.watch is None:
            return None
        return split_watch(self.text, self.watch, self.result.prob_before, self.result.prob_after)


@dataclass(frozen=True)
class CounterfactualResult:
    entry: ModelEntry
    original: str
    layer: int
    state: str
    unit: int
    result: Counterfactual

    @property
    def unaligned(self) -> int:
        return sum(1 for d in self.result.delta if d is None)


def _nanmean(a: np.ndarray) -> float | None:
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else None
