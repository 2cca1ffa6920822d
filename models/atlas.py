"""Neuron atlases: precomputed per-unit dashboards over a model's held-out text.

For every unit of every state of every layer: a histogram of its values, the positions where
it is most positive and most negative, samples at activation quantiles, how well it matches
each built-in probe and, for the top layer's h, which next characters it pushes up and down
through the output layer. Positions index one stored excerpt of held-out text, so the atlas
stays small and any context window can be cut from it when a page is served.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import probes
from .checkpoint import WEIGHTS, Checkpoint, file_sha256
from .errors import RnnscopeError
from .trace import run_trace

ATLAS_FILE = "atlas.json"
ATLAS_VERSION = 1
TEXT_PROBES = ("quotes", "brackets", "bracket_depth", "line_position", "indent", "comment", "string", "short_string",
               "long_string", "word_start", "vowel")
QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
PEAK_GAP = 50  # top/bottom contexts lie at least this far apart: the 40+10-character windows never overlap


def build_atlas(ck: Checkpoint, text: str, max_chars: int = 30_000, top: int = 8, bins: int = 24) -> dict:
    text = text[:max_chars]
    if len(text) < 100:
        raise RnnscopeError("the atlas needs at least 100 characters of held-out text")
    labels = {}
    for p in TEXT_PROBES:
        v = probes.labels(p, text)
        if np.unique(v).size > 1:  # a probe constant on this text says nothing
            labels[p] = v
    head_w = ck.model.head.weight.detach().numpy()  # (V, H)
    top_layer = ck.config.n_layers - 1
    layers = {}
    for layer in range(ck.config.n_layers):
        tr = run_trace(ck.model, ck.vocab, text, layers=[layer], topk=0)
        per_state = {}
        for state, x in tr.states[layer].items():
            per_state[state] = _state_block(x, labels, top, bins)
            if layer == top_layer and state == "h":
                per_state[state]["pushes"] = _pushes(head_w, ck.vocab.chars)
        layers[str(layer)] = per_state
        del tr
    return {"version": ATLAS_VERSION, "text": text, "probes": list(labels), "layers": layers,
            "card": {"chars": len(text), "source": ck.card.get("corpus")}}


def _state_block(x: np.ndarray, labels: dict, top: int, bins: int) -> dict:
    x = x.astype(np.float32, copy=False)  # (T, U)
    order = np.argsort(x, axis=0, kind="stable")  # ascending per unit
    T = x.shape[0]
    q_rows = [order[min(T - 1, int(q * T))] for q in QUANTILES]  # (Q, U) positions at quantiles
    lo, hi = x.min(axis=0), x.max(axis=0)
    hist = []
    for u in range(x.shape[1]):
        edges_hi = hi[u] if hi[u] > lo[u] else lo[u] + 1e-6
        counts, _ = np.histogram(x[:, u], bins=bins, range=(float(lo[u]), float(edges_hi)))
        hist.append(counts.tolist())
    scores = {}
    for p, v in labels.items():
        kind = probes.PROBES[p].kind
        if kind == probes.BINARY:
            auc = probes.auc_all(x, v)
            scores[p] = np.round(np.where(auc >= 0.5, auc, -(1 - auc)), 4).tolist()  # signed: -0.9 = AUC 0.9, lower inside
        else:
            scores[p] = np.round(probes.pearson_all(x, v), 4).tolist()
    return {
        "min": np.round(lo, 5).tolist(),
        "max": np.round(hi, 5).tolist(),
        "mean": np.round(x.mean(axis=0), 5).tolist(),
        "hist": hist,
        "top": _distinct_peaks(order[::-1], top),  # (U, top) most positive first
        "bottom": _distinct_peaks(order, top),  # (U, top) most negative first
        "quantiles": np.stack(q_rows, axis=1).tolist(),  # (U, Q)
        "probe_scores": scores,
    }


def _distinct_peaks(ranked: np.ndarray, top: int, gap: int = PEAK_GAP) -> list[list[int]]:
    """Per unit, the best `top` positions of `ranked` (T, U) (best first) that lie `gap` apart.

    A unit stays high for a stretch (a quote cell for a whole quotation), so the raw top
    positions are one run of neighbours; greedily skipping neighbours of kept ones shows
    different places. Where the text has too few such places, the rest is filled in rank order.
    """
    out = []
    for u in range(ranked.shape[1]):
        kept: list[int] = []
        for pos in ranked[:, u].tolist():
            if all(abs(pos - k) >= gap for k in kept):
                kept.append(pos)
                if len(kept) == top:
                    break
        if len(kept) < top:
            kept += [p for p in ranked[:, u].tolist() if p not in kept][: top - len(kept)]
        out.append(kept)
    return out


def _pushes(head_w: np.ndarray, chars: list[str], k: int = 8) -> dict:
    """Per unit, the characters whose logits it raises and lowers most (its output-layer column)."""
    up = np.argsort(-head_w, axis=0)[:k].T  # (H, k)
    down = np.argsort(head_w, axis=0)[:k].T
    return {
        "up": [[[chars[i], round(float(head_w[i, u]), 4)] for i in up[u]] for u in range(head_w.shape[1])],
        "down": [[[chars[i], round(float(head_w[i, u]), 4)] for i in down[u]] for u in range(head_w.shape[1])],
    }


def save_atlas(ckpt_dir: str | Path, atlas: dict) -> Path:
    path = Path(ckpt_dir) / ATLAS_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".atlas.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(atlas, f, ensure_ascii=False, separators=(",", ":"))
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a server running as another user must read it
    os.replace(tmp, path)
    return path


def write_atlas(ck: Checkpoint, text: str, name: str, max_chars: int = 30_000) -> Path:
    """Build and save the atlas of a saved checkpoint, stamped with the weights it describes."""
    atlas = build_atlas(ck, text, max_chars=max_chars)
    atlas["model"] = {"name": name, "weights_sha256": file_sha256(ck.path / WEIGHTS)}
    return save_atlas(ck.path, atlas)


def load_atlas(ckpt_dir: str | Path) -> dict | None:
    path = Path(ckpt_dir) / ATLAS_FILE
    if not path.is_file():
        return None
    try:
        atlas = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RnnscopeError(f"{path} is corrupt ({e}); rebuild it with `rnnscope atlas`") from None
    if atlas.get("version") != ATLAS_VERSION:
        raise RnnscopeError(f"{path} has version {atlas.get('version')}; rebuild it with `rnnscope atlas`")
    return atlas


def neuron_view(atlas: dict, layer: int, state: str, unit: int, context: int = 40) -> dict:
    """One unit's dashboard, with context windows cut from the stored excerpt."""
    try:
        block = atlas["layers"][str(layer)][state]
    except KeyError:
        raise RnnscopeError(f"the atlas has no layer {layer} state {state!r}") from None
    if not 0 <= unit < len(block["min"]):
        raise RnnscopeError(f"unit {unit} is out of range: this model has units 0..{len(block['min']) - 1}")
    text = atlas["text"]

    def ctx(pos: int) -> dict:
        a = max(0, pos - context)
        return {"position": pos, "before": text[a:pos], "char": text[pos], "after": text[pos + 1 : pos + 1 + context // 4]}

    scores = sorted(((p, s[unit]) for p, s in block["probe_scores"].items()), key=lambda kv: -abs(kv[1]))
    out = {
        "layer": layer, "state": state, "unit": unit,
        "min": block["min"][unit], "max": block["max"][unit], "mean": block["mean"][unit],
        "hist": block["hist"][unit],
        "top": [ctx(p) for p in block["top"][unit]],
        "bottom": [ctx(p) for p in block["bottom"][unit]],
        "quantiles": [dict(ctx(p), q=q) for p, q in zip(block["quantiles"][unit], QUANTILES)],
        "probes": [{"probe": p, "score": abs(s), "sign": 1 if s >= 0 else -1,
                    "metric": "auc" if probes.PROBES[p].kind == probes.BINARY else "pearson"} for p, s in scores],
    }
    if "pushes" in block:
        out["pushes_up"] = block["pushes"]["up"][unit]
        out["pushes_down"] = block["pushes"]["down"][unit]
    return out
