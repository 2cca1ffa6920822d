"""One unit, one character at a time: the value a trace would report, for text that is still being written."""

from __future__ import annotations

import math

import numpy as np
import torch

from models import deadline
from models.charlm import CharLM
from models.trace import _record_layer, gate_weights  # the trace's own per-layer maths: a stepped value equals a traced one
from models.vocab import CharVocab

PRIME_CHUNK = 512  # characters of the prime per fused forward in UnitStepper, as in a trace


class UnitStepper:
    """Feeds characters one at a time and reports one unit of one (layer, state) after each.

    Uses the trace engine's own per-layer maths on one-step slices, so the value after a
    generated character equals what a trace of prime + generated text reports there.
    Layers above the chosen one never influence it, so they are not run.
    """

    def __init__(self, model: CharLM, vocab: CharVocab, prime: str, layer: int, state: str, unit: int):
        self.model = model
        self.vocab = vocab
        self.cell = model.config.cell
        self.layer, self.state = layer, state
        self.keep = torch.tensor([unit])
        with torch.no_grad():
            self.weights = gate_weights(self.cell, self.model.layers[layer], self.keep)
            ids = self.vocab.encode_tensor(prime)
            self.carry = [None] * (layer + 1)
            for a in range(0, len(ids), PRIME_CHUNK):  # a chunk at a time, so a run past its deadline stops
                deadline.check()
                x = self.model.embed(ids[None, a : a + PRIME_CHUNK])  # (1, t, E)
                for k in range(layer + 1):
                    x, self.carry[k] = self.model.layers[k](x, self.carry[k])  # (1, t, H)

    @torch.no_grad()
    def step(self, ch: str) -> float:
        x = self.model.embed(self.vocab.encode_tensor(ch)[None])  # (1, 1, E)
        value = math.nan
        for k in range(self.layer + 1):
            mod, s0 = self.model.layers[k], self.carry[k]
            h_seq, s1 = mod(x, s0)  # (1, 1, H)
            if k == self.layer:
                into = {self.state: np.empty((1, 1), dtype=np.float32)}  # one step, one unit
                _record_layer(self.cell, x[0], h_seq[0], s0, [self.state], self.keep, into, 0, self.weights)
                value = float(into[self.state][0, 0])
            self.carry[k] = s1
            x = h_seq
        return value
