"""How long does ranking every unit take, beyond the trace itself?

A 2-layer, 512-unit LSTM (all 8 states: 8,192 units) on 2,000 characters of dialogue-like
text: prints the median time of the full trace, of ranking all units for a binary probe (ROC
AUC) and a numeric one (Pearson r), and the ratio of ranking to trace. Target: ranking
<= 100 ms on this CPU.

    python bench/probe_speed.py [--repeats 9] [--chars 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

from models import probes
from models.charlm import CharLM, ModelConfig
from models.trace import run_trace
from models.vocab import CharVocab

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_ms  # noqa: E402  (needs the root on the path)

WORDS = "the and she said it was not a very good day for walking but Elizabeth went out".split()


def dialogue(n: int, rng: random.Random) -> str:
    out = []
    while sum(map(len, out)) < n:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        out.append(f'"{sentence.capitalize()}," ' if rng.random() < 0.5 else f"{sentence.capitalize()}. ")
        if rng.random() < 0.1:
            out.append("\n\n")
    return "".join(out)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    text = dialogue(args.chars, rng)
    vocab = CharVocab.from_text(text)
    torch.manual_seed(0)
    model = CharLM(ModelConfig(cell="lstm", n_layers=2, hidden=512, emb=64, vocab_size=len(vocab))).eval()
    trace_ms = median_ms(lambda: run_trace(model, vocab, text, half=True), args.repeats)
    tr = run_trace(model, vocab, text, half=True)  # float16 blocks, as a probe of the server's cache works them out
    blocks = {(k, s): a for k, per in tr.states.items() for s, a in per.items()}
    units = sum(a.shape[1] for a in blocks.values())
    quotes = probes.labels("quotes", text)
    line = probes.labels("line_position", text)
    probes.rank_units(blocks, quotes, probes.BINARY)  # compiles the float16 AUC kernel (or loads numba's cache)
    auc_ms = median_ms(lambda: probes.rank_units(blocks, quotes, probes.BINARY, workers=args.threads), args.repeats)
    r_ms = median_ms(lambda: probes.rank_units(blocks, line, probes.NUMERIC, workers=args.threads), args.repeats)
    print(f"{units:,} units x {len(text):,} chars, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"trace {trace_ms:.0f} ms | rank by AUC {auc_ms:.0f} ms ({auc_ms / trace_ms:.2f} of trace) | "
          f"rank by Pearson {r_ms:.0f} ms ({r_ms / trace_ms:.2f} of trace)")


if __name__ == "__main__":
    main()
