"""What does tracing queued texts as one batch buy a server slot?

For a 2-layer, 512-unit LSTM and GRU (random weights: speed does not depend on training), B texts
of random lengths (200 to --max-chars, fixed seed) are traced the way the server traces a page's
whole text (every layer, state and gate, top 5, float16), measured side by side in one run:
  (s) one run_trace per text, one after the other,
  (t) one run_traces call for all B texts (the fused forwards run them as one batch),
and the ratio s/t: how many times more texts a model slot finishes per second when B requests
queue for it. The two take turns in every round; medians of --repeats rounds. First, the part
that batching speeds up: one 512->512 nn.LSTM / nn.GRU layer over 1,000 steps, time per text
at batch sizes 1, 2, 4 and 8.

    python bench/batch_trace_speed.py [--batches 2 4 8] [--repeats 5] [--threads 1] [--max-chars 4000]
"""

from __future__ import annotations

import argparse
import random

import torch

from models.buffers import POOL
from models.charlm import CharLM, ModelConfig
from models.trace import run_trace, run_traces
from models.vocab import CharVocab

from trace_speed import ALPHABET, median_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the server gives each slot one share)")
    ap.add_argument("--max-chars", type=int, default=4000, help="longest text (whole traces of austen-lstm: ~4,000)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rnd = random.Random(0)
    vocab = CharVocab.from_text(ALPHABET)
    print(f"torch {torch.__version__}, {args.threads} thread(s); texts of 200-{args.max_chars} characters; "
          f"median of {args.repeats}")
    for cls in (torch.nn.LSTM, torch.nn.GRU):
        layer = cls(512, 512, batch_first=True).eval()
        sizes = (1, 2, 4, 8)
        xs = [torch.randn(b, 1000, 512) for b in sizes]
        with torch.inference_mode():
            for x in xs:
                layer(x)  # warm-up
            times = median_times([lambda x=x: layer(x) for x in xs], args.repeats)
        per_text = ", ".join(f"B={b}: {t / b * 1000:.0f} ms" for b, t in zip(sizes, times))
        print(f"one {cls.__name__} layer, 1,000 steps, per text: {per_text}")
    print(f"{'cell':5s} {'B':>3s} {'chars':>7s} {'(s) one by one':>15s} {'(t) batch':>10s} {'s/t':>6s}")
    for cell in ("lstm", "gru"):
        torch.manual_seed(0)
        model = CharLM(ModelConfig(cell=cell, n_layers=2, hidden=512, emb=64, vocab_size=len(vocab))).eval()
        for B in args.batches:
            texts = ["".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(200, args.max_chars))) for _ in range(B)]
            POOL.limit_bytes = 3 * sum(len(t) for t in texts) * 2 * 512 * 8 * 2  # room for both routes' outputs
            run_traces(model, vocab, texts, topk=5, half=True)  # warm-up: allocator, pool, kernels
            s, t = median_times([lambda: [run_trace(model, vocab, x, topk=5, half=True) for x in texts],
                                 lambda: run_traces(model, vocab, texts, topk=5, half=True)], args.repeats)
            chars = sum(len(x) for x in texts)
            print(f"{cell:5s} {B:3d} {chars:7d} {s:14.3f}s {t:9.3f}s {s / t:6.2f}")


if __name__ == "__main__":
    main()
