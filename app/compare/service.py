"""Matching units across models: the anchor unit's values on a text are a numeric probe for the others.

Ranking every unit of another model by |Pearson r| with the anchor is exactly the numeric-probe
ranking of the Find units panel, so it runs through ProbeService's ranking (the trace cache, the
float16 blocks worked out one layer at a time, the compiled Pearson kernel, the scoring slot): one
probe ranking per model beyond the traces, and no second scorer. Matching by a probe is that
ranking per model as it is.

Rankings are kept (a small LRU of their best units, keyed by model versions, the anchor or probe,
and a digest of the text), so a candidate click on the page re-colours a panel without ranking
again. Vocabularies differ between models (Austen vs Python corpora): a character a model never
saw is read as its unknown character, which the trace engine does; here it is only counted, so the
page and the API can say when a text is largely unseen by a model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import probes as mprobes
from models.ranking import UnitScore

from app.compare.schemas import MAX_MODELS
from app.core.errors import InputError
from app.core.model_list import entries_for_models_field
from app.core.registry import ModelEntry
from app.core.selection import UnitRef
from app.probe.service import ProbeService, Ranking, probe_values
from app.trace.service import TraceResult, TraceService, unit_values

UNSEEN_WARN = 0.05  # a share of unseen characters worth a warning beside the model's match
RANKINGS_KEPT = 64  # recent rankings (a few units each): candidate clicks and reloads rank nothing
Kept = tuple[list[UnitScore], int, list[int], str | None]  # a kept ranking: units, scored, unseen positions, note


@dataclass(frozen=True)
class Match:
    """One model's best-matching units on the text."""

    entry: ModelEntry
    units: list[UnitScore]  # each (layer, unit) once, at its best-scoring state; best first
    scored: int
    cached: bool  # the trace came from the cache (the model did not run)
    trace_seconds: float
    rank_seconds: float
    reused: bool  # the whole ranking came from this service's LRU
    unseen: list[int]  # positions of characters the model never saw
    note: str | None  # a warning when many of them are


class CompareService:
    def __init__(self, probes: ProbeService):
        self.probes = probes
        self.traces: TraceService = probes.traces
        self._rankings: OrderedDict[tuple, Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.rankings_run = 0  # rankings actually computed (not from the LRU), for tests and the bench

    # ---- inputs -------------------------------------------------------------------------
    def models(self, names: list[str], least: int = 1) -> list[ModelEntry]:
        """The named models, duplicates dropped, in order; unknown ones are a 404 naming the field."""
        names = list(dict.fromkeys(n for n in names if n))
        if len(names) > MAX_MODELS:
            raise InputError(f"compare at most {MAX_MODELS} models at once, got {len(names)}: untick some",
                             field="models")
        if len(names) < least:
            raise InputError(f"tick at least {least} models to compare side by side" if least > 1 else
                             "name at least one model to find matches in", field="models")
        return entries_for_models_field(self.traces.model, names)

    def default_models(self, first: str) -> list[str]:
        """The anchor's model first, then the models trained on the same corpus, then the rest, up to MAX_MODELS."""
        reg = self.traces.registry
        reg.refresh()
        corpus = reg.entries[first].corpus if first in reg.entries else None
        rest = [n for n in reg.names() if n != first]
        rest.sort(key=lambda n: reg.entries[n].corpus != corpus)  # stable: the registry's order within each group
        return ([first] if first in reg.entries else []) + rest[: MAX_MODELS - 1]

    # ---- values -------------------------------------------------------------------------
    def unit_trace(self, entry: ModelEntry, text: str, ref: UnitRef) -> tuple[np.ndarray, TraceResult]:
        """One unit's values on the text (float32 (T,)) from the cached trace, and the trace's result."""
        result = self.traces.view_trace(entry, text, ref.layer, ref.state)
        return unit_values(result.trace, ref.layer, ref.state, ref.unit), result

    def anchor_values(self, entry: ModelEntry, text: str, ref: UnitRef) -> tuple[np.ndarray, TraceResult]:
        """The anchor's values (and its trace's result), checked usable as a probe: finite, and not the same
        at every character."""
        self.traces.check_text(text)
        ref.check(self.traces, entry)
        values, result = self.unit_trace(entry, text, ref)
        what = f"{entry.name}'s layer {ref.layer} · {ref.state} · unit {ref.unit}"
        if not np.isfinite(values).all():
            raise InputError(f"{what} has no finite value at some characters of this text, so it cannot be "
                             "matched: pick another unit", field="unit")
        if float(values.min()) == float(values.max()):
            raise InputError(f"{what} is {float(values[0]):g} at every character of this text, so nothing can "
                             "match it: pick another unit or a longer text", field="unit")
        return values, result

    # ---- matching -----------------------------------------------------------------------
    def match_unit(self, text: str, anchor: ModelEntry, ref: UnitRef, targets: list[ModelEntry],
                   top: int) -> list[Match]:
        """Each target model's units, best |Pearson r| with the anchor's values on the text first."""
        values, _ = self.anchor_values(anchor, text, ref)
        return self.match_values(text, anchor, ref, values, targets, top)

    def match_values(self, text: str, anchor: ModelEntry, ref: UnitRef, values: np.ndarray,
                     targets: list[ModelEntry], top: int) -> list[Match]:
        """match_unit with the anchor's values already read (anchor_values)."""
        key = ("unit", anchor.name, anchor.version, ref.as_tuple())
        return [self._match(key, entry, text, top, lambda entry: self.probes.rank_values(entry, text, values, top))
                for entry in targets]

    def match_probe(self, text: str, probe: str, pattern: str | None, targets: list[ModelEntry],
                    top: int) -> list[Match]:
        """Each model's own best units for the probe (as POST /api/v1/probe ranks them)."""
        self.traces.check_text(text)
        probe_values(probe, text, pattern)  # one refusal for all models: no characters inside quotes, bad regex, …
        key = ("probe", probe, pattern if probe == "regex" else None)
        return [self._match(key, entry, text, top,
                            lambda entry: self.probes.rank_probe(entry, text, probe, pattern, top))
                for entry in targets]

    def _match(self, key: tuple, entry: ModelEntry, text: str, top: int, rank: Callable[[ModelEntry], Ranking]) -> Match:
        full = (*key, entry.name, entry.version, _digest(text), len(text), top)
        with self._lock:
            kept = self._rankings.get(full)
            if kept is not None:
                self._rankings.move_to_end(full)
                units, scored, unseen, note = kept
                return Match(entry, units, scored, True, 0.0, 0.0, True, unseen, note)
        ranking = rank(entry)
        self.rankings_run += 1
        unseen = entry.checkpoint.vocab.unknown_positions(text)
        match = Match(entry, [g.lead for g in ranking.groups], ranking.scored, ranking.cached, ranking.trace_seconds,
                      ranking.rank_seconds, False, unseen, unseen_note(entry, text, unseen))
        with self._lock:
            self._rankings[full] = (match.units, match.scored, match.unseen, match.note)  # not the model: none is pinned
            while len(self._rankings) > RANKINGS_KEPT:
                self._rankings.popitem(last=False)
        return match

    def score_unit(self, column: np.ndarray, probe: np.ndarray, kind: str, ref: UnitRef) -> UnitScore:
        """One unit's score against the anchor's values or a probe's labels: a unit picked on the page that
        is not among the candidates still says how well it matches (the same scorer, on one column)."""
        block = {(ref.layer, ref.state): np.asarray(column, dtype=np.float16)[:, None]}  # (T, 1), as a trace's
        score, sign, metric = mprobes.unit_scores(block, probe, kind)
        return UnitScore(ref.layer, ref.state, ref.unit, round(float(score[0]), 6), int(sign[0]), metric)


def unseen_note(entry: ModelEntry, text: str, unseen: list[int]) -> str | None:
    """A warning when a model never saw a good share of the text's characters, naming a few of them."""
    if not text or len(unseen) / len(text) < UNSEEN_WARN:
        return None
    return (f"{entry.name} never saw {len(unseen):,} of these {len(text):,} characters ({len(unseen) / len(text):.0%}: "
            f"{unseen_chars(text, unseen)}) in training and reads each as its unknown character, so its units see "
            "a different text")


def unseen_chars(text: str, unseen: list[int], most: int = 5) -> str:
    """The distinct unseen characters, first seen first, up to `most`: 'é' '—'."""
    shown = list(dict.fromkeys(text[t] for t in unseen))
    return " ".join(repr(c) for c in shown[:most]) + (" …" if len(shown) > most else "")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
