"""Tiny random-weight models for fast tests."""

import torch

from models.charlm import CharLM, ModelConfig
from models.vocab import CharVocab

TEXT = 'She said, "Hello there." Then:\n"No," he replied, (quietly) and left.\n'


def tiny_model(cell: str = "lstm", layers: int = 2, hidden: int = 16, emb: int = 8, text: str = TEXT, seed: int = 0):
    torch.manual_seed(seed)
    vocab = CharVocab.from_text(text)
    model = CharLM(ModelConfig(cell=cell, n_layers=layers, hidden=hidden, emb=emb, vocab_size=len(vocab))).eval()
    return model, vocab
