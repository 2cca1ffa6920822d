"""Rankings of scored units: best first, and grouped by unit.

Every column of every (layer, state) block has a score (models.probes); a ranking lists the best
columns, and also the best units (layer, unit), each once with all its states: an LSTM's h, c and
kept of the quote cell score alike and would otherwise fill three rows. A unit is shown as the state
that reads cleanest on screen (`roughness`) among those that score within TIE of its best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class UnitScore:
    layer: int
    state: str
    unit: int
    score: float  # AUC in [0.5, 1] or |r| in [0, 1]
    sign: int  # +1: higher where the probe is positive / larger; -1: lower
    metric: str  # "auc" or "pearson"
    roughness: float | None = None  # see roughness(); None where it was not worked out


TIE = 0.005  # scores this close are a tie: the state that reads cleaner is shown for its unit
SCORE_DIGITS = 6  # scores are compared (and reported) rounded to this many decimals
MAX_TIED_RUN = 512  # a longer run of equal scores keeps block order: sorting it by roughness costs more than it shows
ROUGHNESS_CHUNK = 64  # columns worked on at once (a 20,000-character text: 10 MB of float64 each time)


def roughness(x: np.ndarray) -> np.ndarray:
    """Per column of x (T, N): how much it flickers, the mean step between neighbouring characters
    over its spread (5th to 95th percentile).

    This is what reads cleanest on screen: a unit that holds its colour and switches in a few clear
    steps scores near 0 (austen-lstm's quote cell c[336]: ~0.02), one whose colour jumps at every
    character scores high (the same unit's h = o * tanh(c), speckled by its output gate: ~0.24).
    Dividing by the spread makes it scale-free, so an unbounded c and a tanh-bounded h compare
    fairly. A column with no spread (constant, or fewer than 2 characters) shows nothing: inf.
    """
    v = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=65504.0, neginf=-65504.0)
    if v.ndim != 2 or v.shape[0] < 2:
        return np.full(v.shape[-1] if v.ndim else 1, np.inf)
    lo, hi = np.percentile(v, [5, 95], axis=0)
    spread = hi - lo
    steps = np.abs(np.diff(v, axis=0)).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, steps / np.where(spread > 0, spread, 1.0), np.inf)


@dataclass
class UnitGroup:
    """Every state of one (layer, unit), as one entry of a ranking."""

    layer: int
    unit: int
    states: list[UnitScore]  # the one to show first (see order_states), then the rest, best score first
    lead: UnitScore  # its best-scoring state: where the unit stands in the ranking


@dataclass
class Ranked:
    units: list[UnitScore]  # the best `top` columns, best first (exact ties: the smoother first)
    groups: list[UnitGroup]  # the best `top` units, each with all its states


def rank_key(u: UnitScore) -> tuple[float, float]:
    """Best score first; on an exact tie, the smoother state (lower roughness) first."""
    return (-u.score, np.inf if u.roughness is None else u.roughness)


def order_states(states: list[UnitScore], tie: float = TIE) -> list[UnitScore]:
    """A unit's states, the one to show first: among those within `tie` of its best score, the
    least rough (it reads cleanest on screen); the others after them, best score first."""
    if not states:
        return []
    best = max(u.score for u in states)
    near = [u for u in states if u.score >= best - tie - 1e-12]
    rest = [u for u in states if u.score < best - tie - 1e-12]
    return (sorted(near, key=lambda u: np.inf if u.roughness is None else u.roughness)
            + sorted(rest, key=rank_key))


def _roughness_of(blocks: dict, keys: list, widths: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """roughness() of the given global column indices, one block at a time."""
    out = np.empty(len(cols))
    where = np.searchsorted(widths, cols, side="right") - 1
    for b in np.unique(where):
        picked = np.flatnonzero(where == b)
        for k in range(0, len(picked), ROUGHNESS_CHUNK):  # float64 copies of a few columns at a time
            part = picked[k:k + ROUGHNESS_CHUNK]
            out[part] = roughness(blocks[keys[b]][:, cols[part] - widths[b]])
    return out


def ranked(blocks: dict[tuple[int, str], np.ndarray], score: np.ndarray, sign: np.ndarray, metric: str,
           top: int, tie: float = TIE) -> Ranked:
    """The best `top` columns and the best `top` units (layer, unit) by `score`, which runs over
    every column of every block in turn.

    Columns go best score first (rounded to SCORE_DIGITS); a run of equal scores goes smoothest
    first (roughness), then in block order. A unit stands where its first column stands, and lists
    every state of its layer's blocks, in order_states' order.
    """
    keys = list(blocks)
    widths = np.cumsum([0] + [blocks[k].shape[1] for k in keys])
    rounded = np.round(np.asarray(score, dtype=np.float64), SCORE_DIGITS)
    order = np.argsort(-rounded, kind="stable")
    descending = -rounded[order]  # ascending: each run of equal scores found by searchsorted
    top = max(1, top)
    picked: list[int] = []
    group_of: dict[tuple[int, int], int] = {}
    firsts: list[int] = []  # each unit's first column
    i = 0
    while i < len(order) and (len(picked) < top or len(firsts) < top):
        j = int(np.searchsorted(descending, descending[i], side="right"))
        run = order[i:j]
        if 1 < len(run) <= MAX_TIED_RUN:
            run = run[np.argsort(_roughness_of(blocks, keys, widths, run), kind="stable")]
        for col in run.tolist():
            b = int(np.searchsorted(widths, col, side="right") - 1)
            key = (keys[b][0], col - int(widths[b]))
            if len(picked) < top:
                picked.append(col)
            if key not in group_of and len(firsts) < top:
                group_of[key] = len(firsts)
                firsts.append(col)
            if len(picked) >= top and len(firsts) >= top:
                break
        i = j

    def unit_score(col: int, rough: float) -> UnitScore:
        b = int(np.searchsorted(widths, col, side="right") - 1)
        layer, state = keys[b]
        return UnitScore(layer, state, col - int(widths[b]), float(rounded[col]), int(sign[col]), metric,
                         float(rough))

    # every state of each unit: the same unit index in each block of its layer
    members = {key: [int(widths[b]) + key[1] for b, k in enumerate(keys)
                     if k[0] == key[0] and key[1] < blocks[k].shape[1]] for key in group_of}
    needed = np.array(sorted(set(picked) | {c for cols in members.values() for c in cols}), dtype=np.int64)
    rough = dict(zip(needed.tolist(), _roughness_of(blocks, keys, widths, needed).tolist())) if needed.size else {}
    units = [unit_score(c, rough[c]) for c in picked]
    groups = []
    for key, first in zip(group_of, firsts):
        states = [unit_score(c, rough[c]) for c in members[key]]
        groups.append(UnitGroup(key[0], key[1], order_states(states, tie), unit_score(first, rough[first])))
    return Ranked(units, groups)


def merge_ranked(parts: list[Ranked], top: int) -> Ranked:
    """Rankings of disjoint blocks (one per layer, in layer order) as one: what `ranked` gives on all of them."""
    units = sorted((u for p in parts for u in p.units), key=rank_key)[: max(1, top)]
    groups = sorted((g for p in parts for g in p.groups), key=lambda g: rank_key(g.lead))[: max(1, top)]
    return Ranked(units, groups)


def top_units(blocks: dict[tuple[int, str], np.ndarray], score: np.ndarray, sign: np.ndarray, metric: str,
              top: int) -> list[UnitScore]:
    """The best `top` columns by `score`, as `ranked` orders them."""
    return ranked(blocks, score, sign, metric, top).units
