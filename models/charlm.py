"""The character-level language model: embedding -> stacked recurrent layers -> linear head.

Each layer is its own single-layer fused PyTorch module (nn.RNN / nn.LSTM / nn.GRU), so the
same parameters are shared over every time step and every layer's h sequence is reachable by
the trace engine. Stacking single-layer modules computes exactly what one multi-layer module
does (tests check it against nn.LSTM(num_layers=L)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import RnnscopeError

CELLS = ("rnn", "lstm", "gru")

# Which per-timestep states the trace engine can report for each cell type.
CELL_STATES: dict[str, tuple[str, ...]] = {
    "rnn": ("h",),
    "lstm": ("h", "c", "i", "f", "g", "o", "kept", "written"),
    "gru": ("h", "r", "z", "n"),
}

_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
NONLINEARITIES = ("tanh", "relu")  # a vanilla RNN's; LSTM and GRU have their own fixed ones


@dataclass
class ModelConfig:
    cell: str = "lstm"
    n_layers: int = 2
    hidden: int = 512
    emb: int = 64
    vocab_size: int = 0
    dropout: float = 0.0  # between layers, training only
    nonlinearity: str = "tanh"  # vanilla RNN only: nn.RNN's tanh or relu (imported ReLU RNNs)

    def validate(self) -> "ModelConfig":
        if self.cell not in CELLS:
            raise RnnscopeError(f"unknown cell type {self.cell!r}: choose one of {', '.join(CELLS)}")
        for name in ("n_layers", "hidden", "emb", "vocab_size"):
            if int(getattr(self, name)) < 1:
                raise RnnscopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise RnnscopeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.nonlinearity not in NONLINEARITIES:
            raise RnnscopeError(f"unknown nonlinearity {self.nonlinearity!r}: choose tanh or relu")
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise RnnscopeError(f"nonlinearity {self.nonlinearity!r} applies only to cell 'rnn', not {self.cell!r}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["nonlinearity"] == "tanh":  # the default is left out: configs stay as they were before the field
            del d["nonlinearity"]
        return d


# A recurrent state: one entry per layer; an LSTM layer's entry is (h, c), others just h.
# Each tensor is (1, B, H), the shape PyTorch's modules use.
State = list


class CharLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.emb)
        module = _MODULES[config.cell]
        extra = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        self.layers = nn.ModuleList(
            module(config.emb if k == 0 else config.hidden, config.hidden, batch_first=True, **extra)
            for k in range(config.n_layers)
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    @property
    def states(self) -> tuple[str, ...]:
        return CELL_STATES[self.config.cell]

    def forward(self, idx: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """idx (B, T) int64 -> logits (B, T, V), mean cross-entropy loss (or None), new state."""
        x = self.embed(idx)  # (B, T, E)
        new_state: State = []
        for k, layer in enumerate(self.layers):
            if k > 0:
                x = self.drop(x)
            x, s = layer(x, None if state is None else state[k])  # (B, T, H)
            new_state.append(s)
        logits = self.head(self.drop(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, new_state

    def top_hidden(self, idx: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Only the top layer's h sequence (B, T, H): the cheapest full pass, the speed floor."""
        x = self.embed(idx)
        for k, layer in enumerate(self.layers):
            x, _ = layer(x, None if state is None else state[k])
        return x

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the graph between truncated-BPTT chunks while carrying the values forward."""
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]
