"""Measure the seed's two dynamics claims on the shipped Austen models, on held-out text.

1. Vanishing gradients: ||dh_T/dh_t|| of the top layer, 1, 10 and 50 characters back from
   several positions T of the validation text, for austen-rnn, austen-lstm and austen-gru
   (median over positions), and the LSTM/RNN ratio at 50 back.
2. The quote cell is causal: clamp the unit the austen-lstm card names (`quote_unit`) to zero
   and to its typical outside-quotes value, and report the mean probability the model gives
   the closing `"` where one is due, before and after.

    rnnscope corpus austen --out data/austen.txt
    python bench/dynamics_claims.py [--positions 1000 2000 3000] [--chars 3000]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from models import probes
from models.checkpoint import load_checkpoint
from models.corpora import load_corpus_files
from models.dynamics import gradient_flow, intervene

MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"


def gradient_table(val: str, positions: list[int], names: list[str]) -> dict[str, list[float]]:
    out = {}
    for name in names:
        folder = MODELS_DIR / name
        if not (folder / "config.json").is_file():
            print(f"{name}: not installed, skipped")
            continue
        ck = load_checkpoint(folder)
        rows = []
        for T in positions:
            flow = gradient_flow(ck.model, ck.vocab, val[: T + 1], position=T, lookback=50)
            j = flow.jacobian_norm  # index -1 is t = T
            rows.append((j[-2], j[-11], j[0]))
        med = [statistics.median(r[k] for r in rows) for k in range(3)]
        est = "exact" if flow.probes is None else f"{flow.probes} probes"
        print(f"{name:12} ||dh_T/dh_t|| back 1: {med[0]:.3g}  back 10: {med[1]:.3g}  back 50: {med[2]:.3g}  ({est})")
        out[name] = med
    return out


def quote_test(val: str, chars: int) -> None:
    ck = load_checkpoint(MODELS_DIR / "austen-lstm")
    q = ck.card.get("quote_unit")
    if not q:
        print("austen-lstm's card names no quote_unit: run bench/zoo_eval.py --write-card first")
        return
    text = val[:chars]
    inside = probes.quotes(text)
    # A closing quote is due at t when the next character is a '"' that closes a span.
    due = np.array([t + 1 < len(text) and text[t + 1] == '"' and inside[t] for t in range(len(text))])
    layer, state, unit = q["layer"], q["state"], q["unit"]
    base = intervene(ck.model, ck.vocab, text, layer, state, unit, value=0.0, start=0, watch='"')
    outside_value = float(np.median(base.value_before[~inside]))
    inside_value = float(np.median(base.value_before[inside]))
    print(f"quote unit layer {layer} {state}[{unit}] (AUC {q['auc']:.3f}): median {inside_value:.2f} inside quotes, "
          f"{outside_value:.2f} outside; {int(due.sum())} closing quotes due in {len(text):,} held-out chars")
    for label, value in (("zeroed", 0.0), ("clamped to its outside value", outside_value)):
        r = intervene(ck.model, ck.vocab, text, layer, state, unit, value=value, start=0, watch='"')
        before, after = r.prob_before[due].mean(), r.prob_after[due].mean()
        bpc0, bpc1 = np.nanmean(r.surprisal_before), np.nanmean(r.surprisal_after)
        print(f"  {label:30} p(closing \") {before:.3f} -> {after:.3f}; bits/char {bpc0:.3f} -> {bpc1:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, nargs="+", default=[1000, 2000, 3000])
    ap.add_argument("--chars", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_corpus_files("data/austen.txt")[1]
    table = gradient_table(val, args.positions, ["austen-rnn", "austen-lstm", "austen-gru"])
    if "austen-rnn" in table and "austen-lstm" in table:
        lstm, rnn = table["austen-lstm"][2], table["austen-rnn"][2]
        if rnn > 0:
            print(f"50 back: austen-lstm / austen-rnn = {lstm / rnn:.3g}")
        else:  # float32 underflow: the product of 50 Jacobians is below the smallest float
            print(f"50 back: austen-rnn's norm is 0 in float32 (underflow), austen-lstm's {lstm:.3g}: "
                  "the ratio is unbounded")
    quote_test(val, args.chars)


if __name__ == "__main__":
    main()
