"""Training snapshots: float16 copies of a model at chosen steps, for watching units being born.

A run started with `--snapshots N` (log-spaced steps) or `--snapshot-every STEPS` writes
`<out>/snapshots/step-000123.safetensors` at each scheduled step and keeps `timeline.json`
beside them: the model config and vocabulary (so the folder loads on its own), the schedule, and
one entry per snapshot in step order with the characters seen, validation bits/char of the
weights as stored (float16) and a sample generated from a fixed prime and seed, so samples are
comparable across steps. Snapshots are only ever taken on the schedule, never at an early stop,
so a stopped and resumed run has the same snapshots as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .charlm import CharLM, ModelConfig
from .checkpoint import Checkpoint, save_checkpoint
from .errors import RnnscopeError
from .sample import generate
from .vocab import CharVocab

SNAPSHOT_DIR = "snapshots"
TIMELINE = "timeline.json"
TIMELINE_VERSION = 1
# One prime, seed and temperature for every snapshot of every run: samples differ only by the weights.
# The prime is a sentence, not a character: training carries the state across chunks, so a model rarely
# starts from the zero state and babbles until its state settles; a quote opens at its end.
SAMPLE = {"prime": 'It was a fine morning, and the whole party set out early. "I', "length": 300, "seed": 1,
          "temperature": 0.8}


def log_schedule(n: int, last: int) -> list[int]:
    """`n` distinct steps from 0 to `last`, log-spaced in between: dense early, where the most changes.

    Step 0 (the untrained weights) comes first and `last` always ends it; n=1 is just `last`.
    """
    if n < 1:
        raise RnnscopeError(f"--snapshots must be at least 1, got {n}")
    if last < 1:
        raise RnnscopeError(f"a snapshot schedule needs at least one step, got --steps {last}")
    if n > last + 1:
        raise RnnscopeError(f"--snapshots {n} asks for more snapshots than there are steps (0 to {last}); "
                            f"use at most {last + 1}")
    if n == 1:
        return [last]
    raw = np.geomspace(1, last, n - 1) if n > 2 else np.array([float(last)])
    steps = [0]
    for v in raw:  # rounding merges the first few (1, 1, 2, ...): push each past the one before
        steps.append(max(int(round(v)), steps[-1] + 1))
    steps[-1] = last
    for i in range(len(steps) - 2, 0, -1):  # and pull any pushed past `last` back below the next one
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


def every_schedule(every: int, last: int) -> list[int]:
    """Steps 0, every, 2*every, ... and always `last`."""
    if every < 1:
        raise RnnscopeError(f"--snapshot-every must be at least 1 step, got {every}")
    if last < 1:
        raise RnnscopeError(f"a snapshot schedule needs at least one step, got --steps {last}")
    steps = list(range(0, last + 1, every))
    return steps if steps[-1] == last else steps + [last]


def schedule_for(snapshots: int | None, snapshot_every: int | None, last: int) -> list[int]:
    """The run's snapshot steps from its two options (at most one of them); [] when neither is set."""
    if snapshots is not None and snapshot_every is not None:
        raise RnnscopeError("--snapshots N and --snapshot-every STEPS are two ways to set one schedule: give one of them")
    if snapshots is not None:
        return log_schedule(snapshots, last)
    if snapshot_every is not None:
        return every_schedule(snapshot_every, last)
    return []


def snapshot_file(step: int) -> str:
    return f"step-{step:06d}.safetensors"


def snapshot_dir(folder: str | Path) -> Path:
    """A checkpoint folder's snapshots folder; a snapshots folder itself is accepted too."""
    folder = Path(folder)
    return folder if (folder / TIMELINE).is_file() or folder.name == SNAPSHOT_DIR else folder / SNAPSHOT_DIR


def half_copy(model: CharLM) -> CharLM:
    """A float32 copy of `model` whose weights went through float16: exactly what a snapshot holds."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(p.half().float())
    return twin.eval()


def fixed_sample(model: CharLM, vocab: CharVocab) -> str:
    """The comparable sample: the same prime, seed and temperature at every step."""
    return "".join(generate(model, vocab, SAMPLE["prime"], SAMPLE["length"], SAMPLE["temperature"], SAMPLE["seed"]))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def read_timeline(folder: str | Path) -> dict:
    path = snapshot_dir(folder) / TIMELINE
    if not path.is_file():
        raise RnnscopeError(f"{path} is missing: this folder has no training snapshots")
    try:
        tl = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RnnscopeError(f"{path} is corrupt ({e})") from None
    if not isinstance(tl, dict) or not isinstance(tl.get("snapshots"), list) or "model" not in tl or "vocab" not in tl:
        raise RnnscopeError(f"{path} lacks its 'model', 'vocab' or 'snapshots' section")
    if tl.get("format_version", 0) > TIMELINE_VERSION:
        raise RnnscopeError(f"{path} has format version {tl['format_version']}, newer than this rnnscope understands")
    return tl


@dataclass
class SnapshotInfo:
    step: int
    chars_seen: int
    val_bpc: float | None
    path: Path


def list_snapshots(folder: str | Path) -> list[SnapshotInfo]:
    """The folder's snapshots in step order (a checkpoint folder or its snapshots folder)."""
    d = snapshot_dir(folder)
    return [SnapshotInfo(int(e["step"]), int(e["chars_seen"]), e.get("val_bpc"), d / e["file"])
            for e in sorted(read_timeline(d)["snapshots"], key=lambda e: e["step"])]


def load_snapshot(folder: str | Path, step: int, device: str = "cpu") -> Checkpoint:
    """One snapshot as a float32 model; its timeline entry is the card."""
    d = snapshot_dir(folder)
    tl = read_timeline(d)
    entry = next((e for e in tl["snapshots"] if e["step"] == step), None)
    if entry is None:
        have = ", ".join(str(e["step"]) for e in tl["snapshots"]) or "none"
        raise RnnscopeError(f"{d} has no snapshot of step {step} (steps: {have})")
    try:
        vocab = CharVocab.from_json(tl["vocab"])
        model = CharLM(ModelConfig(**tl["model"]))
    except (TypeError, ValueError) as e:
        raise RnnscopeError(f"{d / TIMELINE} has an invalid model or vocab section: {e}") from None
    path = d / entry["file"]
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RnnscopeError(f"snapshot {path} is missing or corrupt ({e})") from None
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as e:
        raise RnnscopeError(f"{path} does not match {d / TIMELINE} ({str(e).splitlines()[0]})") from None
    return Checkpoint(model=model.to(device).eval(), vocab=vocab, card=dict(entry), path=path)


class Snapshotter:
    """Takes a run's scheduled snapshots into `<out>/snapshots` and keeps its timeline.json current."""

    def __init__(self, out: str | Path, schedule: list[int], model_config: ModelConfig, vocab: CharVocab):
        self.dir = Path(out) / SNAPSHOT_DIR
        self.schedule = list(schedule)
        self.timeline = {"format_version": TIMELINE_VERSION, "model": model_config.to_dict(), "vocab": vocab.to_json(),
                         "schedule": self.schedule, "sample": dict(SAMPLE), "snapshots": []}

    def due(self, step: int) -> bool:
        return step in self.schedule

    def refuse_fresh_start(self) -> None:
        """A fresh run must not mix its snapshots with another run's."""
        if self.dir.is_dir() and any(self.dir.iterdir()):
            raise RnnscopeError(f"{self.dir} already holds snapshots of another run: continue that run with --resume, "
                                f"or move {self.dir} away (or choose another --out)")

    def resume_at(self, step: int) -> None:
        """Continue the timeline at `step`: every earlier scheduled snapshot must be there; later ones are retaken.

        A run killed between a snapshot and its next resume save comes back at an earlier step; the
        snapshots it took past that step are dropped, and taken again when it gets there.
        """
        if not (self.dir / TIMELINE).is_file():
            tl = {"schedule": self.schedule, "snapshots": []}
        else:
            tl = read_timeline(self.dir)
        if tl.get("schedule") != self.schedule:
            raise RnnscopeError(f"{self.dir / TIMELINE} was written for the snapshot steps {tl.get('schedule')}, "
                                f"not this run's {self.schedule}; move {self.dir} away to start its timeline over")
        kept = [e for e in tl["snapshots"] if e["step"] <= step]
        missing = sorted(set(s for s in self.schedule if s < step) - {e["step"] for e in kept})  # `step` is taken now
        if missing:
            raise RnnscopeError(f"the run stands at step {step}, but its snapshots of steps {missing} are not in "
                                f"{self.dir} (was the run started without these snapshot options?): a timeline "
                                "must start with its run; start a new run with --out elsewhere")
        for e in tl["snapshots"]:
            if e["step"] > step:
                (self.dir / e["file"]).unlink(missing_ok=True)
        if "model" in tl:
            self.timeline = {**tl, "snapshots": kept}
        else:
            self.timeline["snapshots"] = kept
        if self.dir.is_dir():
            _write_json(self.dir / TIMELINE, self.timeline)

    def take(self, step: int, half_model: CharLM, vocab: CharVocab, chars_seen: int, val_bpc: float, val_chars: int,
             seconds: float) -> dict:
        """Write one snapshot of the float16-rounded `half_model` and add it to the timeline."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = snapshot_file(step)
        bpc = None if math.isnan(val_bpc) else round(val_bpc, 4)
        meta = {"step": str(step), "chars_seen": str(chars_seen), "val_bpc": str(bpc)}
        tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in half_model.state_dict().items()}
        tmp = self.dir / (name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.chmod(0o644)  # read by the serving user, as checkpoints are
        os.replace(tmp, self.dir / name)
        entry = {"step": step, "file": name, "chars_seen": chars_seen, "val_bpc": bpc, "val_chars": val_chars,
                 "training_seconds": round(seconds, 1), "sample": fixed_sample(half_model, vocab)}
        snaps = [e for e in self.timeline["snapshots"] if e["step"] != step] + [entry]
        self.timeline["snapshots"] = sorted(snaps, key=lambda e: e["step"])
        _write_json(self.dir / TIMELINE, self.timeline)
        return entry


def save_keeping_snapshots(out: str | Path, model: CharLM, vocab: CharVocab, card: dict, half: bool = False) -> Path:
    """save_checkpoint, but the folder's snapshots survive: save_checkpoint swaps in a whole new folder.

    The new checkpoint is staged beside `out`, the snapshots are hard-linked into it (no copy; a
    copy where links are not possible), and the staged folder is swapped in as save_checkpoint does.
    """
    out = Path(out)
    snaps = out / SNAPSHOT_DIR
    if not snaps.is_dir():
        return save_checkpoint(out, model, vocab, card, half=half)
    staged = out.with_name(f".{out.name}.staged")
    shutil.rmtree(staged, ignore_errors=True)
    save_checkpoint(staged, model, vocab, card, half=half)
    try:
        shutil.copytree(snaps, staged / SNAPSHOT_DIR, copy_function=_link_or_copy)
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def probe_timeline(folder: str | Path, text: str, probe_ids, max_chars: int = 100_000) -> list[dict]:
    """Each snapshot's best unit per probe on `text` (held-out text): how a unit is born, step by step."""
    from .evaluate import best_units  # evaluate imports train, which imports this module

    rows = []
    for info in list_snapshots(folder):
        ck = load_snapshot(folder, info.step)
        units = best_units(ck, text, probe_ids, max_chars)
        rows.append({"step": info.step, "chars_seen": info.chars_seen, "val_bpc": info.val_bpc,
                     "units": {u.probe: {"layer": u.layer, "state": u.state, "unit": u.unit, "score": round(u.score, 4),
                                         "sign": u.sign, "metric": u.metric} for u in units}})
    return rows


def record_probe_units(folder: str | Path, text: str, probe_ids, max_chars: int = 100_000) -> list[dict]:
    """Measure probe_timeline and keep it in timeline.json: each entry gains `probe_units` (what a viewer
    of the timeline shows as the unit's birth) and `probe_chars`, the held-out characters scored."""
    d = snapshot_dir(folder)
    rows = {r["step"]: r for r in probe_timeline(d, text, probe_ids, max_chars)}
    tl = read_timeline(d)
    for e in tl["snapshots"]:
        e["probe_units"] = rows[e["step"]]["units"]
        e["probe_chars"] = min(len(text), max_chars)
    _write_json(d / TIMELINE, tl)
    return [rows[s] for s in sorted(rows)]


def timeline_size(folder: str | Path) -> int:
    """Bytes of the snapshot files and the timeline together (what shipping them costs)."""
    d = snapshot_dir(folder)
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())

