"""The watched character's places, split into the kinds a clamp should affect differently.

One mean over every place a `"` comes next mixes closing quotes (the model has to remember a quote
is open: what a quote cell is for) with opening ones (nothing to remember), so a clamp that wrecks the
first and leaves the second alone reads as a small change. The split uses the quotes probe
(models.probes.quotes: each " toggles, a blank line resets), the same labels the units are ranked by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.probes import quotes


@dataclass(frozen=True)
class WatchGroup:
    key: str  # "closing", "opening", "inside", "outside", or "all"
    label: str  # for a person
    places: list[int]  # positions t whose next character, text[t + 1], is the watched one
    mean_before: float | None  # mean p(watch next) over those places, unit free; None for no places
    mean_after: float | None  # ... with the unit clamped

    @property
    def count(self) -> int:
        return len(self.places)


@dataclass(frozen=True)
class WatchSplit:
    watch: str
    rule: str  # how the places were split, one sentence
    all: WatchGroup
    groups: list[WatchGroup]  # the split (two groups); every place is in exactly one

    def kind_of(self, t: int) -> str:
        return next((g.key for g in self.groups if t in g.places), "")


def split_watch(text: str, watch: str, prob_before: np.ndarray, prob_after: np.ndarray) -> WatchSplit:
    """Every place the watched character really comes next, and its split by the quotes probe: for `"`,
    a quote already open before it (closing) or not (opening); for any other character, whether it
    comes inside or outside double quotes."""
    places = [t for t in range(len(text) - 1) if text[t + 1] == watch]
    open_after = quotes(text) if places else np.zeros(0, dtype=bool)  # (T,) a quote is open after reading t

    def group(key: str, label: str, where: list[int]) -> WatchGroup:
        return WatchGroup(key, label, where, _mean(prob_before, where), _mean(prob_after, where))

    inside = [t for t in places if open_after[t]]
    outside = [t for t in places if not open_after[t]]
    if watch == '"':
        rule = 'by the quotes probe: a " with a quote already open before it closes it; any other opens one'
        groups = [group("closing", 'closing quotes (a quote is open before the ")', inside),
                  group("opening", 'opening quotes (no quote is open before the ")', outside)]
    else:
        rule = f"by the quotes probe: whether {watch!r} comes inside or outside double quotes"
        groups = [group("inside", f"{watch!r} inside double quotes", inside),
                  group("outside", f"{watch!r} outside double quotes", outside)]
    return WatchSplit(watch, rule, group("all", "all places", places), groups)


def _mean(p: np.ndarray, where: list[int]) -> float | None:
    if not where:
        return None
    vals = np.asarray(p, dtype=np.float64)[where]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else None
