"""Does `rnnscope train`'s loop add overhead over a bare PyTorch loop?

Trains the same model on the same text for the same number of steps, alternating the CLI's
training function and a minimal hand-written truncated-BPTT loop, and prints the chars/s of
each and their ratio (CLI / bare; target >= 0.95). Validation is pushed past the last step so
both loops do only training work.

    python bench/train_speed.py [--data data/austen.txt] [--hidden 256] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.charlm import CharLM, ModelConfig, detach_state
from models.corpora import load_corpus_files
from models.train import StreamBatcher, TrainConfig, train
from models.vocab import CharVocab


def bare_loop(text: str, args) -> float:
    vocab = CharVocab.from_text(text)
    torch.manual_seed(0)
    model = CharLM(ModelConfig(cell=args.cell, n_layers=args.layers, hidden=args.hidden, emb=64, vocab_size=len(vocab)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = torch.tensor(vocab.encode(text), dtype=torch.int32)
    batcher = StreamBatcher(data, args.batch, args.seq_len, 0, args.batch)
    state = None
    t0 = time.perf_counter()
    for _ in range(args.steps):
        x, y, _ = batcher.next()
        _, loss, state = model(x, state, y)
        state = detach_state(state)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return args.steps * args.batch * args.seq_len / (time.perf_counter() - t0)


def cli_loop(data_file: Path, args, workdir: Path) -> float:
    cfg = TrainConfig(data=str(data_file), out=str(workdir / "out"), run_dir=str(workdir / "run"), cell=args.cell,
                      layers=args.layers, hidden=args.hidden, emb=64, seq_len=args.seq_len, batch=args.batch,
                      steps=args.steps, eval_every=10**9, progress=True)
    cfg.val_chars = 1  # the one validation at the end is near-free
    t0 = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - t0
    del seconds  # setup (reading and encoding the corpus) is not the loop; result.seconds is,
    # less the one validation and checkpoint save at the end (TrainResult.eval_seconds)
    return result.chars_seen / (result.seconds - result.eval_seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/austen.txt"))
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data.is_file():
            data_file = args.data
        else:  # no corpus built: a synthetic text of the same kind keeps the benchmark runnable
            data_file = tmp / "text.txt"
            data_file.write_text('"Yes," said she, "it is so." He went out.\n' * 20000)
        text = load_corpus_files(data_file)[0]
        bare, cli = [], []
        for r in range(args.rounds):
            bare.append(bare_loop(text, args))
            cli.append(cli_loop(data_file, args, tmp / f"r{r}"))
        b, c = statistics.median(bare), statistics.median(cli)
        print(f"{args.cell} {args.layers}x{args.hidden}, batch {args.batch} x seq {args.seq_len}, {args.steps} steps, "
              f"median of {args.rounds} alternating rounds, {torch.get_num_threads()} threads")
        print(f"bare loop: {b:,.0f} chars/s   rnnscope train: {c:,.0f} chars/s   ratio {c / b:.3f}")


if __name__ == "__main__":
    main()
