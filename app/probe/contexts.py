"""A neuron page's contexts: where in the atlas's held-out text a unit is highest, lowest and at its
quantiles, each from its own passage and wide enough to show what set the unit off.

Pure numpy on one unit's values over the text (the trace the page runs once per layer and state).
A context is one or two stretches of the text: the characters around the one just read (more
before it than after: causes come first) and, where the unit's run began further back than that,
a lead-in around where it began (an opening quote), with the characters between left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

BEFORE, AFTER = 90, 30  # a context shows 120 characters around the one just read
LEAD_BEFORE, LEAD_AFTER = 20, 30  # the lead-in around where the unit's run began
REACH = 2000  # look no further back than this for where a run began
QUANTILE_BAND = 0.02  # a quantile's sample may sit this far (in rank) from the quantile, to find a fresh passage
PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Context:
    position: int  # the character just read
    value: float | None  # the unit's value after reading it (None: not traced, see ProbeService.neuron)
    pieces: tuple[tuple[int, int], ...]  # [start, end) stretches of the text shown, in order; gaps left out
    q: float | None = None  # the quantile this sample stands for

    @property
    def lead(self) -> tuple[int, int] | None:
        """The lead-in stretch, where the run began, when it is shown apart from the main one."""
        return self.pieces[0] if len(self.pieces) == 2 else None

    @property
    def main(self) -> tuple[int, int]:
        return self.pieces[-1]


def passages(text: str) -> np.ndarray:
    """(T,) the paragraph each character is in: paragraphs are split by blank lines."""
    ids = np.zeros(len(text), dtype=np.int64)
    for m in PARAGRAPH.finditer(text):
        ids[m.end():] += 1
    return ids


def run_start(x: np.ndarray, p: int, rest: float, high: bool) -> int | None:
    """Where the unit's excursion that holds at p began: the character after the last one (within REACH
    before p) at which it was at or on the far side of its resting level `rest` (the median). None
    when it never was there: the run is older than REACH, or the unit was already past rest when the
    text began."""
    lo = max(0, p - REACH)
    back = x[lo:p]
    idx = np.flatnonzero(back <= rest) if high else np.flatnonzero(back >= rest)
    if idx.size == 0:
        return None
    return lo + int(idx[-1]) + 1


def window(T: int, p: int, onset: int | None) -> tuple[tuple[int, int], ...]:
    """The stretches shown for a context at p: the 120 characters around it, and a lead-in around the
    run's start when that lies before them (one stretch when the two meet)."""
    main = (max(0, p - BEFORE), min(T, p + 1 + AFTER))
    if onset is None or onset >= main[0]:
        return (main,)
    lead = (max(0, onset - LEAD_BEFORE), min(T, onset + LEAD_AFTER))
    if lead[1] >= main[0]:
        return ((lead[0], main[1]),)
    return (lead, main)


class _Taken:
    """Stretches and passages already shown in one list: a new context may share neither."""

    def __init__(self, T: int, ids: np.ndarray):
        self.mask = np.zeros(T, dtype=bool)
        self.used: set[int] = set()
        self.ids = ids

    def free(self, pieces: tuple[tuple[int, int], ...], passage: int | None) -> bool:
        if passage is not None and passage in self.used:
            return False
        return not any(self.mask[a:b].any() for a, b in pieces)

    def take(self, pieces: tuple[tuple[int, int], ...], p: int) -> None:
        for a, b in pieces:
            self.mask[a:b] = True
        self.used.add(int(self.ids[p]))


def extremes(text: str, x: np.ndarray, k: int, high: bool) -> list[Context]:
    """The k places where the unit is highest (or lowest), most extreme first, from distinct passages.

    Each passage offers its own extreme; they are taken best first while their stretches do not
    overlap those already taken. A text with fewer passages than k fills the list with the next
    extremes whose stretches do not overlap (never the same characters twice)."""
    T = len(x)
    if T == 0 or k <= 0:
        return []
    ids = passages(text)
    rest = float(np.median(x))
    signed = x if high else -x
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    best = [int(a + np.argmax(signed[a:b])) for a, b in zip(starts, np.r_[starts[1:], T])]
    best.sort(key=lambda p: (-signed[p], p))
    taken = _Taken(T, ids)
    out: list[Context] = []

    def offer(p: int, distinct: bool) -> None:
        passage = int(ids[p]) if distinct else None
        if not taken.free(window(T, p, None), passage):  # the cheap test first: most places fail it
            return
        pieces = window(T, p, run_start(x, p, rest, high))
        if taken.free(pieces, passage):
            taken.take(pieces, p)
            out.append(Context(p, float(x[p]), pieces))

    for p in best:
        if len(out) == k:
            break
        offer(p, distinct=True)
    if len(out) < k:  # too few passages: further places, still never overlapping
        for p in np.argsort(-signed, kind="stable").tolist():
            if len(out) == k:
                break
            if not taken.mask[p]:
                offer(p, distinct=False)
        out.sort(key=lambda c: (-c.value if high else c.value, c.position))
    return out


def quantile_samples(text: str, x: np.ndarray, qs: tuple[float, ...]) -> list[Context]:
    """One place per quantile q, where the unit's value is its q-quantile on this text (the value
    ranked q of the way up), each from a passage of its own where the rank band (QUANTILE_BAND
    either side) offers one, else the closest place there whose stretch is free, else (a short
    text) the closest place: a sample stays at its quantile rather than move away to stay apart."""
    T = len(x)
    if T == 0:
        return []
    ids = passages(text)
    order = np.argsort(x, kind="stable")  # ascending
    taken = _Taken(T, ids)
    out: list[Context] = []
    band = max(1, int(QUANTILE_BAND * T))
    for q in qs:
        r = min(T - 1, int(q * T))
        target = float(x[order[r]])
        near = order[max(0, r - band): r + band + 1]
        near = near[np.argsort(np.abs(x[near] - target), kind="stable")].tolist()
        chosen = next((p for p in near if taken.free(window(T, p, None), int(ids[p]))), None)
        if chosen is None:
            chosen = next((p for p in near if taken.free(window(T, p, None), None)), near[0])
        pieces = window(T, chosen, None)
        taken.take(pieces, chosen)
        out.append(Context(chosen, float(x[chosen]), pieces, q))
    return out
