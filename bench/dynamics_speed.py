"""Time the intervention and counterfactual runs on a shipped model (default models/zoo/austen-lstm).

    python bench/dynamics_speed.py [--model austen-lstm] [--repeat 1] [--skip-counterfactual]

Clamped runs: 2,462 characters from position 0, and 20,000 characters from position 16,000 with
top-k 20 (the shapes the hardening issue measured). Counterfactual: the adversarial alignment
("a" * n against "ab" * (n/2)) at 1,100, 2,000 and 5,000 characters, timed for the alignment alone
(models.dynamics.align) and for the whole counterfactual (two traces and the alignment).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.dynamics import counterfactual, intervene

MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
PASSAGE = ('It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in '
           'want of a wife. "My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield '
           'Park is let at last?" Mr. Bennet replied that he had not.\n')


def text_of(n: int) -> str:
    return (PASSAGE * (n // len(PASSAGE) + 1))[:n]


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="austen-lstm")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a server slot gets cores / slots)")
    ap.add_argument("--skip-intervene", action="store_true")
    ap.add_argument("--skip-counterfactual", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_checkpoint(MODELS_DIR / args.model)
    cfg = ck.model.config
    print(f"{args.model}: {cfg.cell} {cfg.n_layers}x{cfg.hidden}, {args.threads} torch thread(s)")
    top = cfg.n_layers - 1
    if not args.skip_intervene:
        for n, start, topk, layer, state in ((2_462, 0, 5, top, "c" if cfg.cell == "lstm" else "h"),
                                             (2_462, 0, 5, 0, "h"),
                                             (20_000, 16_000, 20, top, "h")):
            text = text_of(n)
            s = timed(lambda: intervene(ck.model, ck.vocab, text, layer, state, 3, 0.5, start, '"', topk), args.repeat)
            print(f"intervene {n:>6,} chars, start {start:>6,}, topk {topk:>2}, {state}[{layer}]: {s:7.2f} s")
    if not args.skip_counterfactual:
        from models.dynamics import align

        for n in (1_100, 2_000, 5_000):
            a, b = "a" * n, "ab" * (n // 2)
            s = timed(lambda: align(a, b), args.repeat)
            w = timed(lambda: counterfactual(ck.model, ck.vocab, a, b, top, "h", 3), args.repeat)
            print(f"counterfactual {n:>5,} + {len(b):>5,} adversarial: alignment {s:7.3f} s, whole {w:7.2f} s")


if __name__ == "__main__":
    main()
