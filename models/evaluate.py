"""Measure a checkpoint on its corpus's held-out split: bits-per-char and its best probe units.

For each probe, every unit of every state of every layer is scored on the validation text
(the same ranking the app uses); the best unit is what a model card names, e.g. the quote cell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import probes
from .charlm import CharLM
from .checkpoint import Checkpoint
from .trace import run_trace
from .train import evaluate_bpc

# Which probes are worth naming for which corpus.
CORPUS_PROBES = {
    "austen": ("quotes",),
    "python-stdlib": ("string", "short_string", "long_string", "comment", "indent"),
}


@dataclass
class BestUnit:
    probe: str
    layer: int
    state: str
    unit: int
    score: float
    sign: int
    metric: str
    chars: int


def best_units(ck: Checkpoint, text: str, probe_ids, max_chars: int = 100_000) -> list[BestUnit]:
    """Score all units against each probe on the first `max_chars` of `text`, one layer at a time."""
    text = text[:max_chars]
    found = []
    values = {p: probes.labels(p, text) for p in probe_ids}
    best: dict[str, probes.UnitScore] = {}
    for layer in range(ck.config.n_layers):
        tr = run_trace(ck.model, ck.vocab, text, layers=[layer], topk=0, half=True)
        blocks = {(layer, s): a for s, a in tr.states[layer].items()}
        del tr
        for p in probe_ids:
            for s, block in list(blocks.items()):
                top = probes.rank_units({s: block}, values[p], probes.PROBES[p].kind, top=1)[0]
                if p not in best or top.score > best[p].score:
                    best[p] = top
    for p in probe_ids:
        b = best[p]
        found.append(BestUnit(p, b.layer, b.state, b.unit, b.score, b.sign, b.metric, len(text)))
    return found


@torch.no_grad()
def validation_bpc(ck: Checkpoint, val_text: str) -> float:
    ids = torch.tensor(ck.vocab.encode(val_text), dtype=torch.int32)
    return evaluate_bpc(ck.model, ids, "cpu")


# Probes any text can be asked about; the Python ones only make sense on code.
PROSE_PROBES = ("quotes", "brackets", "bracket_depth", "line_position", "indent", "word_start", "vowel")
CODE_PROBES = ("string", "short_string", "long_string", "comment")
MIN_CLASS = 20  # a binary probe needs this many positions on each side to be scored at all


def exercised_probes(text: str, code: bool = False) -> list[str]:
    """The probes this text exercises: one that is (nearly) constant on it would only score noise."""
    out = []
    for p in PROSE_PROBES + (CODE_PROBES if code else ()):
        v = probes.labels(p, text)
        if probes.PROBES[p].kind == probes.BINARY:
            if min(int(v.sum()), int((~v).sum())) >= MIN_CLASS:
                out.append(p)
        elif float(np.std(v)) > 0:
            out.append(p)
    return out


QUOTE_UNIT_MIN_AUC = 0.9  # below this the best unit is recorded, but not named the quote unit
# Below these a probe's best unit follows it only loosely: still recorded and offered, marked weak.
STRONG_SCORE = {"auc": QUOTE_UNIT_MIN_AUC, "pearson": 0.8}


def is_weak(score: float, metric: str) -> bool:
    return score < STRONG_SCORE.get(metric, 1.1)


def describe(u: BestUnit) -> str:
    """'layer 1 h[77], AUC 0.999' (and ' (weak)'): one unit as the command line lists a card's units."""
    weak = " (weak)" if is_weak(u.score, u.metric) else ""
    return f"layer {u.layer} {u.state}[{u.unit}], {'AUC' if u.metric == 'auc' else '|r|'} {u.score:.3f}{weak}"


@torch.no_grad()
def bits_per_char(model: CharLM, ids: torch.Tensor, chunk: int = 1000) -> float:
    """Over the whole text as one stream, the state carried from chunk to chunk."""
    total, state = 0.0, None
    for s in range(0, len(ids) - 1, chunk):
        x = ids[s : s + chunk][None]  # (1, t)
        y = ids[s + 1 : s + chunk + 1][None]
        x = x[:, : y.shape[1]]
        logits, _, state = model(x, state)
        total += F.cross_entropy(logits[0], y[0], reduction="sum").item()
    return total / (len(ids) - 1) / math.log(2)


PROBE_CHARS = 100_000  # held-out characters the probe scores are taken on


def held_out_entries(ck: Checkpoint, text: str, label: str, dropped: int = 0,
                     code: bool = False) -> tuple[dict, list[BestUnit]]:
    """Card entries from held-out text: bits/char over all of it, and the best unit of every probe its first
    PROBE_CHARS exercise (imported and quickstart models alike); `dropped` counts characters left out."""
    out = {"val_bpc": round(bits_per_char(ck.model, ck.vocab.encode_tensor(text)), 4), "val_chars": len(text),
           "val_text": label, "val_dropped_chars": dropped}
    probe_ids = exercised_probes(text[:PROBE_CHARS], code)
    units = best_units(ck, text, probe_ids, max_chars=PROBE_CHARS) if probe_ids else []
    if units:
        out.update(card_entries(units))
    return out, units


def card_entries(units: list[BestUnit]) -> dict:
    """The model-card fields naming the best units; `quote_unit` (what the app opens on) only for a real one."""
    out = {"probe_units": {u.probe: {k: v for k, v in asdict(u).items() if k != "probe"} for u in units}}
    for u in units:
        if u.probe == "quotes" and u.score >= QUOTE_UNIT_MIN_AUC:
            out["quote_unit"] = {"layer": u.layer, "state": u.state, "unit": u.unit, "auc": u.score, "sign": u.sign}
    return out


def summarise(units: list[BestUnit]) -> str:
    return "; ".join(f"{u.probe}: layer {u.layer} {u.state}[{u.unit}] {u.metric} {u.score:.3f} ({'+' if u.sign > 0 else '-'})"
                     for u in units)


