"""From "I have a text file" to a model worth looking inside, in one call.

`rnnscope quickstart TEXT --minutes N` trains a small GRU on the text for N minutes of wall time
(the cosine decay spread over those minutes, so a short run still anneals), then measures what it
learned on the held-out tail: bits per character, the best unit for every probe the text exercises
(the page's one-click chips) and the neuron atlas. The folder only gets its servable name once all
of that is written, so a server watching the models folder never sees half a model.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import probes
from .atlas import write_atlas
from .checkpoint import CONFIG, _swap_in, file_sha256, load_checkpoint, read_config
from .corpora import load_corpus_files
from .errors import RnnscopeError
from .evaluate import STRONG_SCORE, BestUnit, describe, held_out_entries, is_weak
from .import_vocab import read_user_text
from .train import TrainConfig, TrainResult, train

MIN_CHARS = 2_000  # 5% of it held out: 100 characters, the least a probe score or an atlas can stand on
MAX_BYTES = 100_000_000  # a 10-minute CPU run reads ~30M characters; more would only cost memory
MEASURE_CHARS = 200_000  # held-out characters for the final bits/char (the probes take the first 100,000)
ATLAS_CHARS = 30_000
EXAMPLE_CHARS = 800  # the page's opening text (app.trace.views.default_text takes up to 2,000)


@dataclass(frozen=True)
class Plan:
    """What quickstart trains and for how long (the stream shape follows from the text: stream_shape)."""

    cell: str = "gru"  # in 10 minutes a 2x256 GRU grew a quote cell (AUC 0.999), an LSTM of that size did not (0.647)
    layers: int = 2
    hidden: int = 256
    emb: int = 64
    minutes: float = 10.0
    seed: int = 1337
    threads: int | None = None


@dataclass
class Outcome:
    path: Path
    result: TrainResult
    card: dict
    opening: BestUnit | None  # the unit the page should open on: the quote cell, else the clearest probe unit


def default_name(text_path: Path) -> str:
    """A servable model name from the file's name: 'My Notes (2).txt' -> 'my-notes-2'."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", text_path.stem.lower()).strip("-._")
    return stem[:60] or "my-model"


def read_text(path: Path) -> tuple[str, str]:
    """(training text, held-out text), split as `rnnscope train` splits it, or one clear error."""
    label = f"TEXT {path}"
    if path.is_dir():
        raise RnnscopeError(f"{label} is a folder: give one UTF-8 text file (concatenate several with cat)")
    if path.is_file() and path.stat().st_size > MAX_BYTES:
        raise RnnscopeError(f"{label} is {path.stat().st_size / 1e6:,.0f} MB; quickstart reads at most "
                            f"{MAX_BYTES / 1e6:.0f} MB (a 10-minute CPU run reads about 30 MB): cut it with "
                            f"`head -c 100M`, or use `rnnscope train` for a long run")
    whole = read_user_text(path, label)
    if len(whole) < MIN_CHARS:
        raise RnnscopeError(f"{label} has {len(whole):,} characters; quickstart needs at least {MIN_CHARS:,} "
                            "(5% is held out to measure the model)")
    train_text, val_text, _ = load_corpus_files(path)
    if len(val_text) < 100:
        raise RnnscopeError(f"the held-out text beside {path} has {len(val_text)} characters; it needs at least 100")
    return train_text, val_text


def stream_shape(n_chars: int) -> tuple[int, int]:
    """(batch, seq_len): up to 32 streams of 200-character chunks, each stream at least two chunks long."""
    for seq_len in (200, 100, 50):
        batch = min(32, (n_chars - 1) // (2 * seq_len))
        if batch >= 8:
            return batch, seq_len
    return max(1, min(32, (n_chars - 1) // 50)), 25


def opening_unit(units: list[BestUnit]) -> BestUnit | None:
    """The quote cell when there is one; else the unit that clears its strength bar by the most."""
    for u in units:
        if u.probe == "quotes" and not is_weak(u.score, u.metric):
            return u
    return max(units, key=lambda u: u.score - STRONG_SCORE.get(u.metric, 1.0), default=None)


def quickstart(text_path: Path, target: Path, plan: Plan, force: bool = False, code: bool | None = None,
               progress: bool = True, say: Callable[[str], None] = print) -> Outcome:
    """Train, measure and write `target`; nothing under its name exists until all of it is done."""
    _check_target(target, force)
    train_text, val_text = read_text(text_path)
    code = text_path.suffix == ".py" if code is None else code
    batch, seq_len = stream_shape(len(train_text))
    staging = target.parent / f".{target.name}.quickstart"
    shutil.rmtree(staging, ignore_errors=True)
    run_dir = Path(tempfile.mkdtemp(prefix="rnnscope-quickstart-"))  # resume state: quickstart runs are not resumed
    seconds = plan.minutes * 60
    cfg = TrainConfig(data=str(text_path), out=str(staging), cell=plan.cell, layers=plan.layers, hidden=plan.hidden,
                      emb=plan.emb, seq_len=seq_len, batch=batch, steps=10**9, eval_every=100, val_chars=20_000,
                      time_budget_min=plan.minutes, anneal_seconds=seconds, seed=plan.seed, threads=plan.threads,
                      run_dir=str(run_dir), progress=progress, stop_on_interrupt=True)
    try:
        say(f"training a {plan.layers}×{plan.hidden} {plan.cell.upper()} on {len(train_text):,} characters of "
            f"{text_path.name} for {plan.minutes:g} min ({batch} streams of {seq_len}; Ctrl-C stops early and keeps it)")
        result = train(cfg)
        if not (staging / CONFIG).is_file():
            raise RnnscopeError("training stopped before its first validation, so there is no model to serve: "
                                "give it more --minutes")
        card, opening = _measure(staging, target.name, text_path, val_text, code, plan, say)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return Outcome(target, result, card, opening)


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise RnnscopeError(f"{target} is a file, not a model folder")
    if target.is_dir() and any(target.iterdir()):
        if not (target / CONFIG).is_file():
            raise RnnscopeError(f"{target} is a folder that is not an rnnscope model: choose another --name")
        if not force:
            raise RnnscopeError(f"{target} already holds a model: pass --force to replace it, --name NAME for "
                                f"another one, or look at it with `rnnscope serve --models {target.parent}`")


def _measure(folder: Path, name: str, text_path: Path, val_text: str, code: bool, plan: Plan,
             say: Callable[[str], None]) -> tuple[dict, BestUnit | None]:
    """Held-out bits/char, the best unit per probe and the atlas, written into the (staged) folder."""
    ck = load_checkpoint(folder)
    known = "".join(ch for ch in val_text if ch in ck.vocab)  # a character training never saw has no fair score
    held = known[:MEASURE_CHARS]
    t0 = time.perf_counter()
    entries, units = held_out_entries(ck, held, text_path.name, dropped=len(val_text) - len(known), code=code)
    say(f"held-out: {entries['val_bpc']:.4f} bits/char over {len(held):,} characters; {len(units)} probes scored "
        f"in {time.perf_counter() - t0:.0f} s")
    card = dict(ck.card)
    card.update(entries, quickstart={"text": text_path.name, "text_sha256": file_sha256(text_path),
                                     "minutes": plan.minutes, "probes": [u.probe for u in units], "code_probes": code})
    opening = opening_unit(units)
    card["example_text"] = example_text(held, opening.probe if opening else None)
    _rewrite_card(folder, card)
    ck.card, ck.path = card, folder
    t0 = time.perf_counter()
    write_atlas(ck, held, name, ATLAS_CHARS)
    say(f"neuron atlas of {min(len(held), ATLAS_CHARS):,} characters in {time.perf_counter() - t0:.0f} s")
    (folder / "README.md").write_text(model_card(name, text_path, card, units, plan), encoding="utf-8")
    return card, opening


def example_text(held: str, probe: str | None, limit: int = EXAMPLE_CHARS) -> str:
    """Held-out text for the page to open on, from a paragraph start; for the quote cell, one with quotes ahead.

    Never from a quote mark itself: the first character is read from the zero state, which training
    (state carried between chunks) hardly ever shows, and a quote cell can misread it there.
    """
    starts = [m.end() for m in re.finditer(r'\n\n(?=[^"\s])', held)]  # the tail's first paragraph may be cut
    if probe == "quotes":
        starts = [p for p in starts if '"' in held[p : p + limit // 2]]
    start = starts[0] if starts else held.find("\n") + 1  # else from the second line
    chunk = held[start : start + limit]
    end = chunk.rfind("\n")
    return chunk[: end + 1] if end >= limit // 2 else chunk


def _rewrite_card(folder: Path, card: dict) -> None:
    config = read_config(folder)
    config["card"] = card
    (folder / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(name: str, text_path: Path, card: dict, units: list[BestUnit], plan: Plan) -> str:
    """A short README.md: what was trained on what, for how long, and what it learned."""
    lines = [f"# {name}", "",
             f"Trained with `rnnscope quickstart {text_path.name} --minutes {plan.minutes:g}`.", "",
             f"- **Model:** {plan.layers}×{plan.hidden} {plan.cell.upper()}, {card['params']:,} parameters",
             f"- **Training:** {card['train_steps']:,} steps, {card['chars_seen']:,} characters in "
             f"{card['training_seconds']:.0f} s on {card['hardware']}",
             f"- **Held-out:** {card['val_bpc']:.4f} bits per character over {card['val_chars']:,} characters "
             f"({card.get('corpus_split', 'the tail of the file')})"]
    if units:
        lines += ["", "## Best unit per probe (held-out)", "", "| probe | unit |", "|---|---|"]
        lines += [f"| {probes.PROBES[u.probe].title} | {describe(u)} |" for u in units]
    return "\n".join(lines) + "\n"


