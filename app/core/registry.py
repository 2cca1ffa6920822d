"""Discovers checkpoint folders and keeps each model loaded once.

A folder is a model when it holds config.json. Folders are re-checked at most every
`rescan_seconds`, so a checkpoint that appears or is rewritten while training is picked up
without a restart; a folder that fails to load is skipped with its reason logged, and the
last good version of a model keeps serving if its rewrite is unreadable.
Model names only ever come from this discovered set: nothing a request says becomes a path.

A model trained with `--snapshots` keeps float16 copies of itself in `<model>/snapshots` (see
models.snapshots). That folder is never a model of its own; its timeline.json is re-read when it
changes (a run still training adds steps), and a snapshot's weights are loaded on demand and kept
in a small LRU (SNAPSHOTS_KEPT): they are the same model at another step, so a view of one is the
model's entry with other weights and a version of its own (every cache key tells them apart).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from models.charlm import CELL_STATES, ModelConfig
from models.checkpoint import CONFIG, WEIGHTS, Checkpoint, load_checkpoint
from models.errors import RnnscopeError
from models.snapshots import SAMPLE, SNAPSHOT_DIR, TIMELINE, load_snapshot, read_timeline
from models.vocab import CharVocab

log = logging.getLogger("rnnscope.registry")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


SNAPSHOTS_KEPT = 4  # loaded snapshots kept in memory (each is a float32 copy of the model's weights)


class UnknownModel(RnnscopeError):
    """The request named a model that is not installed."""


class UnknownSnapshot(RnnscopeError):
    """The request named a training step the model has no snapshot of (or the model has none)."""


class SnapshotUnreadable(RnnscopeError):
    """A listed snapshot's file could not be loaded (e.g. a resumed run is retaking it): not the user's fault."""


@dataclass(frozen=True)
class Snapshot:
    """One timeline entry: what the page and the API say about a step without loading its weights."""

    step: int
    chars_seen: int
    val_bpc: float | None
    sample: str
    file: str
    probe_units: dict  # probe id -> {layer, state, unit, score, sign, metric}: the step's best unit per probe
    training_seconds: float | None = None


@dataclass(frozen=True)
class Timeline:
    snapshots: tuple[Snapshot, ...]
    prime: str  # the fixed prime every sample continues
    stamp: tuple | None  # timeline.json's stat when read: re-read when it changes

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snapshots]

    def at(self, step: int) -> Snapshot | None:
        return next((s for s in self.snapshots if s.step == step), None)


NO_TIMELINE = Timeline((), "", None)


@dataclass(frozen=True)
class QuoteUnit:
    layer: int
    state: str
    unit: int
    auc: float | None = None


@dataclass
class ModelEntry:
    name: str
    path: Path
    checkpoint: Checkpoint
    version: tuple  # changes whenever the files on disk change; part of every cache key
    timeline: Timeline = NO_TIMELINE  # training snapshots (none for most models)
    snapshot: int | None = None  # the training step these weights are from; None = the final weights

    @property
    def cell(self) -> str:
        return self.checkpoint.config.cell

    @property
    def layers(self) -> int:
        return self.checkpoint.config.n_layers

    @property
    def hidden(self) -> int:
        return self.checkpoint.config.hidden

    @property
    def vocab_size(self) -> int:
        return self.checkpoint.config.vocab_size

    @property
    def nonlinearity(self) -> str:
        return self.checkpoint.config.nonlinearity  # a vanilla RNN's h: tanh, or relu (unbounded above)

    @property
    def states(self) -> tuple[str, ...]:
        return CELL_STATES[self.cell]

    @property
    def card(self) -> dict:
        return self.checkpoint.card

    @property
    def val_bpc(self) -> float | None:
        v = self.card.get("val_bpc")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def corpus(self) -> str | None:
        v = self.card.get("corpus")
        return str(v) if v is not None else None

    @property
    def steps(self) -> list[int]:
        """The training steps of this model's snapshots, in order; [] when it has none."""
        return self.timeline.steps

    def has_unit(self, layer: int, state: str, unit: int) -> bool:
        """Whether (layer, state, unit) names a unit of this model (card entries may be stale or wrong)."""
        return 0 <= layer < self.layers and state in self.states and 0 <= unit < self.hidden

    @property
    def quote_unit(self) -> QuoteUnit | None:
        """The card's named quote-detector unit, if it names one that exists in this model."""
        q = self.card.get("quote_unit")
        if not isinstance(q, dict):
            return None
        try:
            layer, state, unit = int(q["layer"]), str(q["state"]), int(q["unit"])
        except (KeyError, TypeError, ValueError):
            return None
        if not self.has_unit(layer, state, unit):
            return None
        auc = q.get("auc")
        return QuoteUnit(layer, state, unit, float(auc) if isinstance(auc, (int, float)) else None)


@dataclass
class Registry:
    models_dir: Path
    rescan_seconds: float = 2.0
    also: tuple[Path, ...] = ()  # more folders of models after models_dir; a name found earlier wins
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # folder name -> why it is not served
    _last_scan: float = field(default=-1e18, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # (model, step, snapshot file stamp) -> (model, vocab): the LRU of loaded snapshot weights
    _snapshots: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _snapshot_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    snapshot_loads: int = 0  # snapshot files actually read (LRU misses), for tests and stats

    def refresh(self, force: bool = False) -> None:
        """Re-check the folder if the last look is older than rescan_seconds (or if forced)."""
        now = time.monotonic()
        if not force and now - self._last_scan < self.rescan_seconds:
            return
        with self._lock:
            if not force and time.monotonic() - self._last_scan < self.rescan_seconds:
                return
            self._scan()
            self._last_scan = time.monotonic()

    def _scan(self) -> None:
        found: dict[str, tuple[Path, tuple]] = {}
        skipped: dict[str, str] = {}
        for folder in (self.models_dir, *self.also):
            try:
                children = sorted(folder.iterdir())
            except OSError as e:
                if folder != self.models_dir:  # an extra folder gone: serve the rest
                    skipped[f"* {folder}"] = f"model folder {folder} cannot be read ({e.strerror or e})"
                    continue
                if not self.skipped.get("*"):
                    log.error("model folder %s cannot be read: %s", self.models_dir, e)
                self.skipped = {"*": f"model folder {self.models_dir} cannot be read ({e.strerror or e})"}
                self.entries = {}
                return
            for child in children:
                if not is_model_folder(child):
                    continue
                if child.name in found:
                    kept = found[child.name][0].parent
                    skipped[f"{child.name} ({folder})"] = f"the model of the same name in {kept} is served"
                    continue
                found[child.name] = (child, _version(child))
        entries: dict[str, ModelEntry] = {}
        for name, (path, version) in found.items():
            old = self.entries.get(name)
            if old is not None and old.version == version:
                entries[name] = old
                continue
            try:
                ckpt = load_checkpoint(path)
            except RnnscopeError as e:
                if self.skipped.get(name) != str(e):
                    log.warning("skipping model %s: %s", name, e)
                skipped[name] = str(e)
                if old is not None:
                    entries[name] = old  # keep serving the last good version
                continue
            except Exception as e:  # noqa: BLE001 - any unreadable folder is skipped, never fatal
                log.warning("skipping model %s: unexpected %s: %s", name, type(e).__name__, e)
                skipped[name] = f"could not be loaded ({type(e).__name__})"
                if old is not None:
                    entries[name] = old
                continue
            if old is not None:
                log.info("model %s changed on disk: reloaded", name)
            else:
                log.info("model %s loaded from %s", name, path)
            entries[name] = ModelEntry(name=name, path=path, checkpoint=ckpt, version=version)
        for name, entry in entries.items():
            timeline = self._timeline(entry)
            if timeline is not entry.timeline:
                entries[name] = replace(entry, timeline=timeline)
        self.entries = entries
        self.skipped = skipped

    def _timeline(self, entry: ModelEntry) -> Timeline:
        """The model's snapshot timeline, re-read only when timeline.json changed; none when it has none
        or its timeline cannot be used (logged once: the model itself is still served)."""
        path = entry.path / SNAPSHOT_DIR / TIMELINE
        try:
            st = path.stat()
            stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino, entry.version)
        except OSError:
            return NO_TIMELINE
        if entry.timeline.stamp == stamp:
            return entry.timeline
        try:
            timeline = read_snapshot_timeline(entry, stamp)
        except RnnscopeError as e:
            log.warning("snapshots of model %s not served: %s", entry.name, e)
            return Timeline((), "", stamp)
        log.info("model %s: %d training snapshots", entry.name, len(timeline.snapshots))
        return timeline

    def snapshot(self, entry: ModelEntry, step: int) -> ModelEntry:
        """`entry` with the weights of its snapshot at `step`: its own version (the snapshot file's), the
        final model's card (so the page's default and measured units stay the same at every step).

        Loaded weights are kept in an LRU of SNAPSHOTS_KEPT; a file rewritten on disk is loaded afresh."""
        info = entry.timeline.at(step)
        if info is None:
            if not entry.steps:
                raise UnknownSnapshot(f"{entry.name} has no training snapshots: leave the snapshot out for its "
                                      "final weights")
            raise UnknownSnapshot(f"{entry.name} has no snapshot at step {step}; its snapshots are at steps "
                                  f"{', '.join(map(str, entry.steps))}")
        path = entry.path / SNAPSHOT_DIR / info.file
        try:
            st = path.stat()
        except OSError as e:
            raise SnapshotUnreadable(f"the snapshot of {entry.name} at step {step} cannot be read "
                                     f"({e.strerror or e})") from None
        key = (entry.name, step, st.st_mtime_ns, st.st_size, st.st_ino)
        with self._snapshot_lock:
            held = self._snapshots.get(key)
            if held is not None:
                self._snapshots.move_to_end(key)
            else:
                try:
                    ck = load_snapshot(entry.path, step)
                except RnnscopeError as e:
                    raise SnapshotUnreadable(f"the snapshot of {entry.name} at step {step} cannot be loaded: {e}") from None
                self.snapshot_loads += 1
                held = (ck.model, ck.vocab)
                self._snapshots[key] = held
                while len(self._snapshots) > SNAPSHOTS_KEPT:
                    self._snapshots.popitem(last=False)
        model, vocab = held
        ckpt = Checkpoint(model=model, vocab=vocab, card=entry.card, path=path)
        return replace(entry, checkpoint=ckpt, version=("snapshot", step) + key[2:], snapshot=step)

    def snapshots_loaded(self) -> int:
        return len(self._snapshots)

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            if not self.entries:
                raise UnknownModel(f"unknown model {name!r}: no models are installed")
            raise UnknownModel(f"unknown model {name!r}; installed models: {', '.join(self.entries)}")
        return entry

    def default_name(self, preferred: str) -> str | None:
        if preferred in self.entries:
            return preferred
        return next(iter(self.entries), None)


def is_model_folder(path: Path) -> bool:
    """A servable name (no dots first, no slashes) naming a folder that holds config.json; never a
    snapshots folder (a model's training snapshots are its own, not a model beside it)."""
    return (bool(NAME_RE.match(path.name)) and path.name != SNAPSHOT_DIR and path.is_dir()
            and (path / CONFIG).is_file() and not (path / TIMELINE).exists())


def read_snapshot_timeline(entry: ModelEntry, stamp: tuple | None) -> Timeline:
    """timeline.json as a Timeline, refused when it describes another model than the one beside it
    (its snapshots would not be this model at another step)."""
    tl = read_timeline(entry.path / SNAPSHOT_DIR)
    try:
        config = ModelConfig(**tl["model"])
        chars = CharVocab.from_json(tl["vocab"]).chars
    except (TypeError, ValueError) as e:
        raise RnnscopeError(f"its timeline has an invalid model or vocab section: {e}") from None
    mine = entry.checkpoint.config
    if _shape(config) != _shape(mine) or chars != entry.checkpoint.vocab.chars:
        raise RnnscopeError(f"its timeline describes another model ({config.cell} {config.n_layers}×{config.hidden}, "
                            f"{len(chars)} characters) than the checkpoint beside it ({mine.cell} "
                            f"{mine.n_layers}×{mine.hidden}, {len(entry.checkpoint.vocab.chars)} characters)")
    snaps = []
    for e in tl["snapshots"]:
        try:
            bpc = e.get("val_bpc")
            secs = e.get("training_seconds")
            units = e.get("probe_units")
            snaps.append(Snapshot(step=int(e["step"]), chars_seen=int(e["chars_seen"]),
                                  val_bpc=float(bpc) if isinstance(bpc, (int, float)) else None,
                                  sample=str(e.get("sample") or ""), file=_file_name(e["file"]),
                                  probe_units=units if isinstance(units, dict) else {},
                                  training_seconds=float(secs) if isinstance(secs, (int, float)) else None))
        except (KeyError, TypeError, ValueError) as err:
            raise RnnscopeError(f"its timeline has a malformed entry ({type(err).__name__}: {err})") from None
    snaps.sort(key=lambda s: s.step)
    if len({s.step for s in snaps}) != len(snaps):
        raise RnnscopeError("its timeline lists a step twice")
    sample = tl.get("sample") if isinstance(tl.get("sample"), dict) else SAMPLE
    return Timeline(tuple(snaps), str(sample.get("prime", "")), stamp)


def _shape(c: ModelConfig) -> tuple:
    return c.cell, c.n_layers, c.hidden, c.emb, c.vocab_size, c.nonlinearity


def _file_name(name: object) -> str:
    """A snapshot's file as the timeline names it: a plain file name, never a path out of its folder."""
    if not isinstance(name, str) or not re.fullmatch(r"step-\d{1,12}\.safetensors", name):
        raise ValueError(f"{str(name)[:60]!r} is not a snapshot file name")
    return name


def _version(folder: Path) -> tuple:
    out = []
    for fname in (CONFIG, WEIGHTS):
        try:
            st = (folder / fname).stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
