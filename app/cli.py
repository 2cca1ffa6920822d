"""The `rnnscope` command: corpus, train, sample, trace, serve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from models.errors import RnnscopeError

cli = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, no_args_is_help=True, help="Look inside character-level RNN/LSTM/GRU language models.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@cli.command()
def corpus(name: str = typer.Argument(..., help="austen or python-stdlib"),
           out: Path = typer.Option(..., "--out", help="training text file; .val and .meta.json are written beside it")):
    """Build a training corpus from sources on this machine, split by document."""
    from models.corpora import build, companion_paths, write_corpus

    try:
        meta = write_corpus(build(name), out)
    except RnnscopeError as e:
        _fail(str(e))
    val, meta_path = companion_paths(out)
    typer.echo(f"{name}: {meta['train_chars']:,} training chars -> {out}; {meta['val_chars']:,} validation chars -> {val}")
    typer.echo(f"split: {meta['split']}; card: {meta_path}")


@cli.command()
def train(
    data: Path = typer.Option(..., "--data", help="training text (UTF-8); a corpus's .val twin is used for validation"),
    out: Path = typer.Option(..., "--out", help="serving checkpoint folder (best validation bpc)"),
    cell: str = typer.Option("lstm", help="rnn, lstm or gru"),
    layers: int = typer.Option(2, min=1, max=8),
    hidden: int = typer.Option(512, min=1),
    emb: int = typer.Option(64, min=1),
    dropout: float = typer.Option(0.0, min=0.0, max=0.9),
    seq_len: int = typer.Option(200, "--seq-len", min=1, help="truncated-BPTT chunk length"),
    batch: int = typer.Option(32, min=1, help="streams per process"),
    lr: float = typer.Option(2e-3, min=0.0),
    lr_min: float = typer.Option(2e-4, "--lr-min", min=0.0),
    steps: int = typer.Option(20000, min=1, help="schedule horizon and step limit"),
    clip: float = typer.Option(5.0, min=0.0),
    eval_every: int = typer.Option(500, "--eval-every", min=1),
    val_chars: int = typer.Option(0, "--val-chars", min=0, help="validate on this many chars (0 = all)"),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0.0, help="minutes (fractions allowed)"),
    seed: int = typer.Option(1337),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly where the last run stopped"),
    init: Optional[Path] = typer.Option(None, "--init", help="start from a checkpoint's weights, fresh optimizer"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="resume state folder (default runs/<out name>)"),
    half: bool = typer.Option(False, "--half", help="store serving weights as float16"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads"),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Train a char model with stateful truncated BPTT (torchrun-aware)."""
    from models.train import TrainConfig
    from models.train import train as run_training

    cfg = TrainConfig(data=str(data), out=str(out), cell=cell, layers=layers, hidden=hidden, emb=emb, dropout=dropout,
                      seq_len=seq_len, batch=batch, lr=lr, lr_min=lr_min, steps=steps, clip=clip, eval_every=eval_every,
                      val_chars=val_chars, time_budget_min=time_budget, seed=seed, device=device, resume=resume,
                      init=str(init) if init else None, run_dir=str(run_dir) if run_dir else None, half=half,
                      threads=threads, progress=not no_progress)
    try:
        result = run_training(cfg)
    except RnnscopeError as e:
        _fail(str(e))
    best = "n/a" if result.best_val_bpc is None else f"{result.best_val_bpc:.4f}"
    typer.echo(f"stopped by {result.stopped_by} at step {result.steps}: {result.chars_seen:,} chars in "
               f"{result.seconds:.0f}s, best validation {best} bits/char -> {out}", err=True)


@cli.command()
def sample(
    ckpt: Path = typer.Argument(..., help="checkpoint folder"),
    prime: str = typer.Option("\n", "--prime"),
    length: int = typer.Option(500, "--length", min=0),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy"),
    seed: Optional[int] = typer.Option(None, "--seed"),
):
    """Generate text by feeding each sampled character back in, streamed to stdout."""
    from models.checkpoint import load_checkpoint
    from models.sample import generate

    try:
        ck = load_checkpoint(ckpt)
        sys.stdout.write(prime)
        for ch in generate(ck.model, ck.vocab, prime, length, temperature, seed):
            sys.stdout.write(ch)
            sys.stdout.flush()
    except RnnscopeError as e:
        _fail(str(e))
    sys.stdout.write("\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
