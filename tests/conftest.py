"""Shared fixtures: tiny random-weight checkpoints in a temp folder (never the shipped weights)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.charlm import CharLM, ModelConfig
from models.checkpoint import save_checkpoint
from models.vocab import CharVocab

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
