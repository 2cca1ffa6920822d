"""Shared fixtures: tiny random-weight checkpoints in a temp folder (never the shipped weights)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
import torch

from models.charlm import CharLM, ModelConfig
from models.checkpoint import save_checkpoint
from models.vocab import CharVocab

# The main view's character spans (app.ui.render.char_spans): colour level and compare bar as classes.
CHAR_SPAN = re.compile(r'<span class="ch ([^"]*)"(?: title="[^"]*")?>(.*?)</span>', re.S)


@dataclass(frozen=True)
class CharSpan:
    cls: str  # the other classes, each with a leading space (" nl", " unk", " na"), as the page writes them
    v: float  # the colour position in [-1, 1], to the level's 0.02
    w: float | None  # the compare bar's position (0.1 steps; 0.0 for no bar), None with no bar on the page
    ch: str


def char_spans(html: str) -> list[CharSpan]:
    """Every character span of the main view in a page or partial, with its classes read back."""
    out, any_bar = [], False
    parsed = []
    for classes, ch in CHAR_SPAN.findall(html):
        q, bar, rest = None, None, []
        for c in classes.split():
            if re.fullmatch(r"q\d+", c):
                q = round(int(c[1:]) / 50 - 1, 3)
            elif re.fullmatch(r"[uo]\d+", c):
                bar = round((1 if c[0] == "u" else -1) * int(c[1:]) / 10, 3)
            else:
                rest.append(" " + c)
        any_bar = any_bar or bar is not None
        parsed.append((q, bar, "".join(rest), unescape(ch)))
    for q, bar, rest, ch in parsed:
        assert q is not None, f"a character span without a colour level: {ch!r}"
        out.append(CharSpan(rest, q, (bar or 0.0) if any_bar else None, ch))
    return out


# The vocabulary: everything here. Characters outside it (e.g. "~", "€") are "unseen".
VOCAB_TEXT = ('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?"\'()-\n'
              "<>/=&")


def write_tiny_model(folder: Path, cell: str = "lstm", layers: int = 2, hidden: int = 16, seed: int = 0,
                     card: dict | None = None) -> Path:
    torch.manual_seed(seed)
    vocab = CharVocab.from_text(VOCAB_TEXT)
    model = CharLM(ModelConfig(cell=cell, n_layers=layers, hidden=hidden, emb=8, vocab_size=len(vocab))).eval()
    return save_checkpoint(folder, model, vocab, card if card is not None else {"corpus": "tiny", "val_bpc": 6.25})


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """tiny-lstm (default-ish, with a quote unit on its card), tiny-gru, tiny-rnn."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root / "tiny-lstm", "lstm", card={"corpus": "tiny", "val_bpc": 6.25,
                                                       "quote_unit": {"layer": 1, "state": "c", "unit": 3, "auc": 0.9}})
    write_tiny_model(root / "tiny-gru", "gru", seed=1)
    write_tiny_model(root / "tiny-rnn", "rnn", layers=1, hidden=8, seed=2)
    return root


@pytest.fixture(scope="session", autouse=True)
def share_data_dir(tmp_path_factory):
    """Apps and servers the tests start keep their share database in a temp folder, not the working tree."""
    if "RNNSCOPE_DATA_DIR" in os.environ:
        yield Path(os.environ["RNNSCOPE_DATA_DIR"])
        return
    folder = tmp_path_factory.mktemp("data-dir")
    os.environ["RNNSCOPE_DATA_DIR"] = str(folder)
    yield folder
    os.environ.pop("RNNSCOPE_DATA_DIR", None)
