"""Checkpoint folders: model.safetensors + config.json. Loading never unpickles.

config.json holds the model config, the vocabulary and a model card (corpus, training facts,
validation bits-per-char). Saves are atomic: a new folder is written beside the old one and
swapped in, so a crash mid-save never loses what was already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .charlm import CharLM, ModelConfig
from .errors import RnnscopeError
from .vocab import CharVocab

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class Checkpoint:
    model: CharLM
    vocab: CharVocab
    card: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def save_checkpoint(ckpt_dir: str | Path, model: CharLM, vocab: CharVocab, card: dict, half: bool = False) -> Path:
    """Write the folder atomically; `half` stores float16 weights (loaded back as float32)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ckpt_dir.name}.", dir=ckpt_dir.parent))
    try:
        dtype = torch.float16 if half else torch.float32
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        config = {
            "format_version": FORMAT_VERSION,
            "code_version": __version__,
            "model": model.config.to_dict(),
            "vocab": vocab.to_json(),
            "card": card,
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        # mkdtemp makes a private folder; a checkpoint is meant to be read by the serving user.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        _swap_in(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt_dir


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB pieces: weights name the file they came from by it."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _swap_in(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def read_config(ckpt_dir: str | Path) -> dict:
    """The parsed config.json, checked for presence, syntax and format version."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise RnnscopeError(f"checkpoint folder {ckpt_dir} does not exist")
    cfg_path = ckpt_dir / CONFIG
    if not cfg_path.is_file():
        raise RnnscopeError(f"{cfg_path} is missing: this folder is not an rnnscope checkpoint")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RnnscopeError(f"{cfg_path} is corrupt ({e}); restore it or retrain the model") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "vocab" not in cfg:
        raise RnnscopeError(f"{cfg_path} lacks the 'model' or 'vocab' section; restore it or retrain")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RnnscopeError(
            f"{cfg_path} has format version {version}, newer than this rnnscope understands "
            f"({FORMAT_VERSION}); upgrade rnnscope to load it"
        )
    return cfg


def load_checkpoint(ckpt_dir: str | Path, device: str = "cpu") -> Checkpoint:
    ckpt_dir = Path(ckpt_dir)
    cfg = read_config(ckpt_dir)
    try:
        config = ModelConfig(**cfg["model"])
        vocab = CharVocab.from_json(cfg["vocab"])
    except (TypeError, ValueError) as e:
        raise RnnscopeError(f"{ckpt_dir / CONFIG} has an invalid model or vocab section: {e}") from None
    if config.vocab_size != len(vocab):
        raise RnnscopeError(f"{ckpt_dir / CONFIG}: vocab_size {config.vocab_size} != {len(vocab)} characters")
    model = CharLM(config)
    weights = ckpt_dir / WEIGHTS
    if not weights.is_file():
        raise RnnscopeError(f"{weights} is missing; restore it or retrain the model")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise RnnscopeError(f"{weights} is corrupt ({e}); restore it or retrain the model") from None
    tensors = {k: v.float() for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "shape mismatch"
        raise RnnscopeError(f"{weights} does not match config.json ({first})") from None
    model.to(device).eval()
    return Checkpoint(model=model, vocab=vocab, card=dict(cfg.get("card") or {}), path=ckpt_dir)
