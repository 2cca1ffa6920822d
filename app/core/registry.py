"""Discovers checkpoint folders and keeps each model loaded once.

A folder is a model when it holds config.json. Folders are re-checked at most every
`rescan_seconds`, so a checkpoint that appears or is rewritten while training is picked up
without a restart; a folder that fails to load is skipped with its reason logged, and the
last good version of a model keeps serving if its rewrite is unreadable.
Model names only ever come from this discovered set: nothing a request says becomes a path.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from models.charlm import CELL_STATES
from models.checkpoint import CONFIG, WEIGHTS, Checkpoint, load_checkpoint
from models.errors import RnnscopeError

log = logging.getLogger("rnnscope.registry")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnknownModel(RnnscopeError):
    """The request named a model that is not installed."""


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
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # folder name -> why it is not served
    _last_scan: float = field(default=-1e18, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        try:
            children = sorted(self.models_dir.iterdir())
        except OSError as e:
            if not self.skipped.get("*"):
                log.error("model folder %s cannot be read: %s", self.models_dir, e)
            self.skipped = {"*": f"model folder {self.models_dir} cannot be read ({e.strerror or e})"}
            self.entries = {}
            return
        for child in children:
            if is_model_folder(child):
                found[child.name] = (child, _version(child))
        entries: dict[str, ModelEntry] = {}
        skipped: dict[str, str] = {}
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
        self.entries = entries
        self.skipped = skipped

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
    """A servable name (no dots first, no slashes) naming a folder that holds config.json."""
    return bool(NAME_RE.match(path.name)) and path.is_dir() and (path / CONFIG).is_file()


def _version(folder: Path) -> tuple:
    out = []
    for fname in (CONFIG, WEIGHTS):
        try:
            st = (folder / fname).stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
