"""The `rnnscope` command: corpus, train, sample, trace, atlas, import, quickstart, serve."""

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
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="training text (UTF-8); a corpus's .val twin is used for validation"),
    out: Path = typer.Option(..., "--out", help="serving checkpoint folder (best validation bpc)"),
    cell: str = typer.Option("lstm", help="rnn, lstm or gru"),
    layers: int = typer.Option(2, min=1, max=8),
    hidden: int = typer.Option(512, min=1),
    emb: int = typer.Option(64, min=1),
    dropout: float = typer.Option(0.0, min=0.0, max=0.9,
                                  help="between layers and before the head; applies to this run, also with --init"),
    seq_len: int = typer.Option(200, "--seq-len", min=1, help="truncated-BPTT chunk length"),
    batch: int = typer.Option(32, min=1, help="streams per process"),
    lr: float = typer.Option(2e-3, min=0.0),
    lr_min: float = typer.Option(2e-4, "--lr-min", min=0.0),
    steps: int = typer.Option(20000, min=1, help="schedule horizon and step limit"),
    clip: float = typer.Option(5.0, min=0.0),
    eval_every: int = typer.Option(500, "--eval-every", min=1),
    val_chars: int = typer.Option(0, "--val-chars", min=0, help="validate on this many chars (0 = all)"),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0.0, help="minutes (fractions allowed)"),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", min=1, help="stop after this step, keeping the "
                                          "schedule of --steps (a long run in parts: continue with --resume)"),
    seed: int = typer.Option(1337),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly where the last run stopped"),
    init: Optional[Path] = typer.Option(None, "--init", help="start from a checkpoint's weights, fresh optimizer"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="resume state folder (default runs/<out name>)"),
    half: bool = typer.Option(False, "--half", help="store serving weights as float16"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads"),
    snapshots: Optional[int] = typer.Option(None, "--snapshots", help="keep N float16 snapshots at log-spaced steps "
                                            "from 0 to --steps in <out>/snapshots, indexed by timeline.json"),
    snapshot_every: Optional[int] = typer.Option(None, "--snapshot-every", help="or one snapshot every STEPS steps "
                                                 "(and at the last); not with --snapshots"),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Train a char model with stateful truncated BPTT (torchrun-aware)."""
    import os

    from models.train import RUN_KEYS, TrainConfig
    from models.train import train as run_training

    # By the source's name: typer's context may come from its own copy of click, with its own enum.
    given = frozenset(k for k in RUN_KEYS
                      if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"))

    cfg = TrainConfig(data=str(data), out=str(out), cell=cell, layers=layers, hidden=hidden, emb=emb, dropout=dropout,
                      seq_len=seq_len, batch=batch, lr=lr, lr_min=lr_min, steps=steps, clip=clip, eval_every=eval_every,
                      val_chars=val_chars, time_budget_min=time_budget, stop_at=stop_at, seed=seed, device=device, resume=resume,
                      init=str(init) if init else None, run_dir=str(run_dir) if run_dir else None, half=half,
                      threads=threads, snapshots=snapshots, snapshot_every=snapshot_every, progress=not no_progress,
                      given=given)
    try:
        result = run_training(cfg)
    except RnnscopeError as e:
        _fail(str(e))
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 speaks for the run
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


@cli.command("trace")
def trace_cmd(
    text: Optional[str] = typer.Argument(None, help="text to trace; read from stdin when omitted"),
    model: Optional[str] = typer.Option(None, "--model", help="a checkpoint folder, or a model name in the model folder "
                                        "(RNNSCOPE_MODELS_DIR); default: the default model"),
    layer: Optional[int] = typer.Option(None, "--layer", help="layer (default: the card's quote unit, else 0)"),
    state: Optional[str] = typer.Option(None, "--state", help="h, c, i, f, g, o, kept, written (LSTM); h, r, z, n (GRU); h (RNN)"),
    unit: Optional[int] = typer.Option(None, "--unit", help="unit index (default: the card's quote unit, else 0)"),
):
    """Print the text coloured by one unit's value, with ANSI 24-bit background colours."""
    from app.ui.scale import neuron_scale
    from app.terminal import legend, paint
    from models.trace import run_trace

    if text is None:
        if sys.stdin is None or sys.stdin.isatty():
            _fail("give the text as an argument, or pipe it in on stdin")
        text = sys.stdin.read()
    if not text:
        _fail("the text is empty: give at least one character")
    try:
        name, ck = _resolve_model(model)
        q = _quote_unit(ck) if layer is None and state is None and unit is None else None
        layer_id = layer if layer is not None else (q[0] if q else 0)
        state_id = state if state is not None else (q[1] if q else "h")
        unit_id = unit if unit is not None else (q[2] if q else 0)
        tr = run_trace(ck.model, ck.vocab, text, layers=[layer_id], states=[state_id], units=[unit_id], topk=0)
    except RnnscopeError as e:
        _fail(str(e))
    values = tr.states[layer_id][state_id][:, 0]
    scale = neuron_scale(state_id, values, ck.config.nonlinearity)
    typer.echo(f"{name} · layer {layer_id} · {state_id} · unit {unit_id}   {legend(scale.lo, scale.hi)} ({scale.label})",
               err=True)
    sys.stdout.write(paint(text, scale.positions(values)))
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


# Where `rnnscope corpus NAME --out data/NAME.txt` leaves each corpus's held-out text.
HELD_OUT = {"austen": Path("data/austen.val.txt"), "python-stdlib": Path("data/python.val.txt")}


@cli.command()
def atlas(
    model: str = typer.Argument(..., help="a model name in the model folder (RNNSCOPE_MODELS_DIR), or a checkpoint folder"),
    text: Optional[Path] = typer.Option(None, "--text", help="held-out text to build from (default: the card "
                                        "corpus's .val file under data/)"),
    chars: int = typer.Option(30_000, "--chars", min=100, help="use the first N characters of the text"),
):
    """Precompute the neuron atlas (atlas.json beside the weights) that the neuron pages show."""
    import time

    from app.probe.service import weights_fingerprint
    from models.atlas import build_atlas, save_atlas

    try:
        name, ck = _resolve_model(model)
        source = text if text is not None else _held_out(ck.card.get("corpus"))
        try:
            held_out = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RnnscopeError(f"cannot read {source}: {getattr(e, 'strerror', None) or e}") from None
        t0 = time.perf_counter()
        loaded = weights_fingerprint(ck.path)  # the weights just loaded (a checkpoint is swapped in whole)
        built = build_atlas(ck, held_out, max_chars=chars)
        if weights_fingerprint(ck.path) != loaded:
            raise RnnscopeError(f"{ck.path} was rewritten while the atlas was being built (is it training?); "
                                "run `rnnscope atlas` again")
        built["model"] = {"name": name, "weights_sha256": loaded}
        path = save_atlas(ck.path, built)
    except RnnscopeError as e:
        _fail(str(e))
    size = path.stat().st_size
    typer.echo(f"{name}: atlas of {built['card']['chars']:,} characters from {source} "
               f"in {time.perf_counter() - t0:.1f}s -> {path} ({size / 1e6:.1f} MB)")


def _held_out(corpus) -> Path:
    """The card corpus's held-out text under ./data, where `rnnscope corpus` puts it."""
    if corpus not in HELD_OUT:
        raise RnnscopeError(f"the model card names corpus {corpus!r}, which has no default held-out text: "
                            "pass --text FILE")
    path = Path.cwd() / HELD_OUT[corpus]
    if path.is_file():
        return path
    stem = path.name.removesuffix(".val.txt")
    raise RnnscopeError(f"{HELD_OUT[corpus]} is missing (looked in {Path.cwd()}): build it with "
                        f"`rnnscope corpus {corpus} --out data/{stem}.txt` (it writes the held-out .val.txt beside "
                        "the training text), or pass --text FILE")


def _resolve_model(model: Optional[str]):
    """A folder path loads directly; a bare name must be one of the model folder's checkpoints."""
    from app.core.config import Settings
    from app.core.registry import is_model_folder
    from models.checkpoint import load_checkpoint

    settings = Settings()
    if model and ("/" in model or model in (".", "..")):
        return Path(model).name, load_checkpoint(model)
    root = settings.models_dir
    names = sorted(p.name for p in root.iterdir() if is_model_folder(p)) if root.is_dir() else []
    if model is None:
        if not names:
            raise RnnscopeError(f"no models are installed in {root}: train one with `rnnscope train`, "
                                "or pass --model FOLDER")
        model = settings.default_model if settings.default_model in names else names[0]
    if model not in names:
        if Path(model).is_dir():
            return Path(model).name, load_checkpoint(model)
        installed = ", ".join(names) or "none"
        raise RnnscopeError(f"unknown model {model!r} in {root} (installed: {installed}); or pass a folder path")
    return model, load_checkpoint(root / model)


def _quote_unit(ck) -> Optional[tuple[int, str, int]]:
    q = ck.card.get("quote_unit")
    if not isinstance(q, dict):
        return None
    try:
        return int(q["layer"]), str(q["state"]), int(q["unit"])
    except (KeyError, TypeError, ValueError):
        return None


@cli.command("import")
def import_cmd(
    src: Path = typer.Argument(..., help="a state_dict: .pt/.pth (torch.save(model.state_dict(), ...)) or .safetensors"),
    vocab: Path = typer.Option(..., "--vocab", help=".json list of characters in index order or object char -> index; "
                               "any other file is the training corpus (vocabulary = its sorted characters)"),
    out: Path = typer.Option(..., "--out", help="the checkpoint folder to write; with --name, the folder it goes in "
                             "(e.g. the server's RNNSCOPE_MODELS_DIR)"),
    name: Optional[str] = typer.Option(None, "--name", help="the model's name: writes OUT/NAME"),
    maps: list[str] = typer.Option([], "--map", help="OLD=NEW: rename a key (or a prefix, both ending in '.'), e.g. "
                                   "dec.weight=head.weight, my.emb=embed.weight; repeatable"),
    nonlinearity: str = typer.Option("tanh", "--nonlinearity", help="a vanilla RNN's: tanh or relu"),
    eval_text: Optional[Path] = typer.Option(None, "--eval", help="held-out text: bits/char, the quote unit and the "
                                             "neuron atlas"),
    force: bool = typer.Option(False, "--force", help="replace an existing, non-empty --out folder"),
):
    """Import a char-level RNN/LSTM/GRU trained elsewhere, checked against PyTorch's own modules."""
    from app.core.registry import NAME_RE
    from models.importer import import_model

    target = out / name if name is not None else out
    if not NAME_RE.match(name if name is not None else out.name):
        _fail(f"model name {name if name is not None else out.name!r} cannot be served: use letters, digits, '.', '_' "
              "and '-', starting with a letter or digit (pass --name NAME)")
    try:
        result = import_model(src, vocab, target, maps=maps, nonlinearity=nonlinearity, eval_path=eval_text,
                              force=force)
    except RnnscopeError as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - one line, never a traceback, for a file we could not foresee
        typer.echo(f"error: importing {src} failed unexpectedly: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(code=1)
    chk = result.check
    errs, trace_errs = (", ".join(f"{k} {v:.1e}" for k, v in chk[key].items()) for key in ("max_error", "trace_max_error"))
    typer.echo(f"{src.name}: {result.layout.describe()}")
    typer.echo(f"self-check against {chk['against']} on {chk['chars']} characters: largest error {errs} in float64 "
               f"(tolerance {chk['tolerance']:g}); the float32 trace: {trace_errs} (tolerance {chk['trace_tolerance']:g})")
    card = result.card
    if "val_bpc" in card:
        n = card["val_dropped_chars"]
        dropped = f" ({n:,} character{'s' if n != 1 else ''} outside the vocabulary left out)" if n else ""
        typer.echo(f"held-out: {card['val_bpc']:.4f} bits/char over {card['val_chars']:,} characters of "
                   f"{eval_text}{dropped}; atlas written")
        _echo_units(card)
    typer.echo(f"-> {result.path} (a server whose RNNSCOPE_MODELS_DIR is {result.path.parent} serves it as "
               f"{result.path.name!r})")


@cli.command()
def quickstart(
    text: Path = typer.Argument(..., help="your text file (UTF-8, at least 2,000 characters; the last 5% is held out)"),
    minutes: float = typer.Option(10.0, "--minutes", min=0.1, max=24 * 60, help="training time (fractions allowed)"),
    name: Optional[str] = typer.Option(None, "--name", help="the model's name (default: from the file's name)"),
    models_dir: Path = typer.Option(Path("my-models"), "--models", help="folder of models to write it into and serve"),
    cell: str = typer.Option("gru", help="rnn, lstm or gru (a GRU learns the most in a few minutes: docs/"
                             "bring-your-own-model.md)"),
    layers: int = typer.Option(2, min=1, max=8),
    hidden: int = typer.Option(256, min=1, max=4096),
    code: Optional[bool] = typer.Option(None, "--code/--prose", help="score the Python probes (strings, comments) "
                                        "too; default: --code for a .py file"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch CPU threads"),
    seed: int = typer.Option(1337),
    force: bool = typer.Option(False, "--force", help="replace a model of the same name"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    no_serve: bool = typer.Option(False, "--no-serve", help="train and measure, then exit"),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Train a small model on your text for N minutes, then serve it, opened on its clearest unit."""
    from urllib.parse import urlencode

    from app.core.registry import NAME_RE
    from models.charlm import ModelConfig
    from models.evaluate import describe
    from models.quickstart import Plan, default_name
    from models.quickstart import quickstart as run_quickstart

    name = name if name is not None else default_name(text)
    if not NAME_RE.match(name):
        _fail(f"model name {name!r} cannot be served: use letters, digits, '.', '_' and '-', starting with a letter "
              "or digit")
    try:
        ModelConfig(cell=cell, n_layers=layers, hidden=hidden, emb=64, vocab_size=1).validate()
    except RnnscopeError as e:
        _fail(str(e))
    if not no_serve:
        _check_port(host, port)  # before the minutes of training, not after

    def say(line: str) -> None:  # progress goes to stderr, the summary to stdout
        typer.echo(line, err=True)

    try:
        done = run_quickstart(text, models_dir / name, Plan(cell=cell, layers=layers, hidden=hidden, minutes=minutes,
                                                             seed=seed, threads=threads),
                              force=force, code=code, progress=not no_progress, say=say)
    except RnnscopeError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: nothing was written to {models_dir / name}", err=True)
        raise typer.Exit(code=130)
    r, card = done.result, done.card
    typer.echo(f"{name}: {r.steps:,} steps, {r.chars_seen:,} characters in {r.seconds:.0f} s (stopped by "
               f"{r.stopped_by}); held-out {card['val_bpc']:.4f} bits/char -> {done.path}")
    _echo_units(card)
    query = {"model": name}
    if done.opening is not None:
        query.update(layer=str(done.opening.layer), state=done.opening.state, unit=str(done.opening.unit))
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    typer.echo(f"open http://{shown}:{port}/?{urlencode(query)}"
               + (f"  (the {done.opening.probe} unit: {describe(done.opening)})" if done.opening else ""))
    typer.echo(f"later: rnnscope serve --models {models_dir} --with-shipped")
    sys.stdout.flush()  # the link before the server's own lines, also when stdout is a file
    if not no_serve:
        typer.echo(f"serving {models_dir} and the shipped models on {host}:{port}; Ctrl-C stops it", err=True)
        _serve(host, port, models_dir, "warning", default_model=name, with_shipped=True)


def _echo_units(card: dict) -> None:
    """The card's best unit per probe, one line each: the chips the page will show."""
    from models.evaluate import BestUnit, describe

    for probe, u in (card.get("probe_units") or {}).items():
        typer.echo(f"  {probe:14} {describe(BestUnit(probe=probe, **u))}")


def _check_port(host: str, port: int) -> None:
    import os
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        _fail(f"cannot listen on {host}:{port} ({why}): pass --port with a free port, or --no-serve")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    models_dir: Optional[Path] = typer.Option(None, "--models", "--models-dir", help="folder of model folders; "
                                              "overrides RNNSCOPE_MODELS_DIR"),
    with_shipped: bool = typer.Option(False, "--with-shipped", help="also serve the shipped models after the "
                                      "folder's own (RNNSCOPE_SERVE_SHIPPED)"),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Serve the web app and the JSON API (uvicorn)."""
    _serve(host, port, models_dir, log_level, with_shipped=with_shipped)


def _serve(host: str, port: int, models_dir: Optional[Path], log_level: str, default_model: Optional[str] = None,
           with_shipped: bool = False) -> None:
    import logging
    import os

    from pydantic import ValidationError

    from app.core.config import Settings

    if models_dir is not None:
        os.environ["RNNSCOPE_MODELS_DIR"] = str(models_dir)
    if default_model is not None:
        os.environ["RNNSCOPE_DEFAULT_MODEL"] = default_model
    if with_shipped:
        os.environ["RNNSCOPE_SERVE_SHIPPED"] = "1"
    try:
        settings = Settings()
    except ValidationError as e:
        _fail("bad RNNSCOPE_ setting: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    # uvicorn with h11, header/body/send deadlines, a connection cap and repeat-limited error logs.
    from app.http.server import serve as run_server

    run_server(settings, host, port, log_level)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
